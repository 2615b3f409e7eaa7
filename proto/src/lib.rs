//! # zonecache-proto
//!
//! The memcached wire protocol as memcached 1.6 speaks it — the text commands
//! and the meta commands — with no I/O: parsing works on a `BytesMut` read
//! buffer and encoding appends to a `BytesMut` write buffer.
//!
//! - [`RequestParser`] turns a read buffer holding half a request or many
//!   pipelined ones into [`Command`]s, one at a time, consuming exactly each
//!   request's bytes. Keys and data blocks are zero-copy `Bytes` slices.
//! - [`Command::encode`] writes requests (for clients and peers).
//! - [`Response`] and [`parse_response`] are the reply side; servers usually
//!   write replies straight into their buffer with [`Response::encode`] or
//!   [`push_value`].
//!
//! - [`binary`] is memcached's binary protocol, translated to and from the
//!   meta commands.
//!
//! Limits and error replies are memcached's (see `doc/protocol.txt` and
//! `proto_text.c` in memcached 1.6): 250-byte keys, the item size limit with
//! the data block swallowed, the 2048-byte bound on a line without newline,
//! `ERROR` for unknown commands, `CLIENT_ERROR …` for malformed ones.

pub mod binary;
mod meta;
pub mod number;
mod parse;
mod request;
mod response;

pub use meta::{push_key, MetaFlags, MetaToken, MAX_META_TOKENS, MAX_OPAQUE_LEN};
pub use parse::{Fatal, ParserConfig, RequestParser, KEY_MAX_LENGTH, MAX_LINE_WITHOUT_NEWLINE};
pub use request::{Command, ErrorKind, ErrorReply, Meta, Store, StoreMode};
pub use response::{
    is_shed_message, parse_response, push_value, DumpItem, DumpPage, MetaCode, MetaResponse,
    Response, ResponseError, Value, BATCH_SHED_MESSAGE, TOO_LARGE_MESSAGE,
};
