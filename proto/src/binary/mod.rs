//! memcached's binary protocol, as memcached 1.6.18 speaks it
//! (`proto_bin.c`), with no I/O.
//!
//! A binary request is not executed on its own terms: [`BinaryParser`]
//! turns it into the meta command that means the same (`mg` for the gets
//! and touches, `ms` for the stores, `md`, `ma`), so the executor and the
//! cluster's routing serve both protocols with one code path, and
//! [`encode_reply`] turns the meta reply back into memcached's binary
//! response, byte for byte. What has no meta equivalent (SASL, malformed
//! headers) comes out as an [`Action`] of its own.

mod parse;
mod reply;

pub use parse::{Action, BinaryParser, BinaryRequest};
pub use reply::{encode_reply, push_error, push_packet, push_success};

/// The first byte of every binary request (memcached tells a binary
/// connection from a text one by it).
pub const REQUEST_MAGIC: u8 = 0x80;
/// The first byte of every binary response.
pub const RESPONSE_MAGIC: u8 = 0x81;
/// Request and response headers are this long.
pub const HEADER_LEN: usize = 24;
/// memcached refuses SASL mechanism names longer than this.
pub const MAX_MECHANISM_LEN: usize = 32;

/// The opcodes memcached 1.6.18 knows (`protocol_binary.h`); the `…Q`
/// ("quiet") forms answer only what is not the usual outcome.
pub mod opcode {
    pub const GET: u8 = 0x00;
    pub const SET: u8 = 0x01;
    pub const ADD: u8 = 0x02;
    pub const REPLACE: u8 = 0x03;
    pub const DELETE: u8 = 0x04;
    pub const INCREMENT: u8 = 0x05;
    pub const DECREMENT: u8 = 0x06;
    pub const QUIT: u8 = 0x07;
    pub const FLUSH: u8 = 0x08;
    pub const GETQ: u8 = 0x09;
    pub const NOOP: u8 = 0x0a;
    pub const VERSION: u8 = 0x0b;
    pub const GETK: u8 = 0x0c;
    pub const GETKQ: u8 = 0x0d;
    pub const APPEND: u8 = 0x0e;
    pub const PREPEND: u8 = 0x0f;
    pub const STAT: u8 = 0x10;
    pub const SETQ: u8 = 0x11;
    pub const ADDQ: u8 = 0x12;
    pub const REPLACEQ: u8 = 0x13;
    pub const DELETEQ: u8 = 0x14;
    pub const INCREMENTQ: u8 = 0x15;
    pub const DECREMENTQ: u8 = 0x16;
    pub const QUITQ: u8 = 0x17;
    pub const FLUSHQ: u8 = 0x18;
    pub const APPENDQ: u8 = 0x19;
    pub const PREPENDQ: u8 = 0x1a;
    pub const TOUCH: u8 = 0x1c;
    pub const GAT: u8 = 0x1d;
    pub const GATQ: u8 = 0x1e;
    pub const SASL_LIST_MECHS: u8 = 0x20;
    pub const SASL_AUTH: u8 = 0x21;
    pub const SASL_STEP: u8 = 0x22;
    pub const GATK: u8 = 0x23;
    pub const GATKQ: u8 = 0x24;

    /// The loud form of a quiet opcode (memcached's `dispatch_bin_command`
    /// folds them before it dispatches); `None` for a loud one.
    pub fn loud(op: u8) -> Option<u8> {
        Some(match op {
            SETQ => SET,
            ADDQ => ADD,
            REPLACEQ => REPLACE,
            DELETEQ => DELETE,
            INCREMENTQ => INCREMENT,
            DECREMENTQ => DECREMENT,
            QUITQ => QUIT,
            FLUSHQ => FLUSH,
            APPENDQ => APPEND,
            PREPENDQ => PREPEND,
            GETQ => GET,
            GETKQ => GETK,
            GATQ => GAT,
            GATKQ => GATK,
            _ => return None,
        })
    }
}

/// A response status, with memcached's wording for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Success = 0x00,
    KeyNotFound = 0x01,
    KeyExists = 0x02,
    TooLarge = 0x03,
    InvalidArguments = 0x04,
    NotStored = 0x05,
    NonNumeric = 0x06,
    AuthError = 0x20,
    AuthContinue = 0x21,
    UnknownCommand = 0x81,
    OutOfMemory = 0x82,
    /// Not used by memcached: a cluster that cannot promise an answer
    /// (the text protocol's `SERVER_ERROR`), the message says why.
    InternalError = 0x84,
    /// Not used by memcached: a request shed for load; retry later.
    Busy = 0x85,
}

impl Status {
    /// The body memcached's `write_bin_error` sends with this status.
    pub fn message(self) -> &'static str {
        match self {
            Status::Success | Status::AuthContinue => "",
            Status::OutOfMemory => "Out of memory",
            Status::UnknownCommand => "Unknown command",
            Status::KeyNotFound => "Not found",
            Status::InvalidArguments => "Invalid arguments",
            Status::KeyExists => "Data exists for key.",
            Status::TooLarge => "Too large.",
            Status::NonNumeric => "Non-numeric server-side value for incr or decr",
            Status::NotStored => "Not stored.",
            Status::AuthError => "Auth failure.",
            Status::InternalError => "Internal error",
            Status::Busy => "Busy",
        }
    }
}

/// The fields of a request header a reply needs, in host order (the
/// opaque is kept as sent: memcached echoes its bytes unchanged).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    pub opcode: u8,
    pub key_len: u16,
    pub extras_len: u8,
    pub body_len: u32,
    pub opaque: [u8; 4],
    pub cas: u64,
}

impl Header {
    /// Reads a header from the first [`HEADER_LEN`] bytes of `b`.
    pub fn read(b: &[u8]) -> Header {
        Header {
            opcode: b[1],
            key_len: u16::from_be_bytes([b[2], b[3]]),
            extras_len: b[4],
            body_len: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
            opaque: [b[12], b[13], b[14], b[15]],
            cas: u64::from_be_bytes(b[16..24].try_into().expect("8 bytes")),
        }
    }

    /// Whether this is a quiet opcode.
    pub fn quiet(&self) -> bool {
        opcode::loud(self.opcode).is_some()
    }

    /// The opcode with quietness folded away.
    pub fn loud(&self) -> u8 {
        opcode::loud(self.opcode).unwrap_or(self.opcode)
    }
}
