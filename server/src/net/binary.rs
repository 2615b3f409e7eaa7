//! A binary-protocol connection's requests on their way in: memcached's
//! checks that come before a command runs (SASL sign-in, malformed
//! headers, refusals), after which a request is its meta command and takes
//! the text protocol's path through the executor or the cluster.
//!
//! Also when memcached sends what it has answered: at once after an
//! error, a `NOOP` or a `quit`, else when it runs out of input between
//! requests. A connection that closes while memcached holds replies (it
//! waits inside a body, or meets a wrong magic byte) never gets them; the
//! connection loop follows the same rule ([`Frame::flushes`]).

use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use zonecache_proto::binary::{
    encode_reply, opcode, push_error, push_success, Action, BinaryRequest, Header, Status,
};
use zonecache_proto::{Command, Response};

use super::Front;

/// The SASL mechanisms a node offers (memcached lists what its SASL
/// library is configured with; PLAIN is what clients speak).
const MECHANISMS: &[u8] = b"PLAIN";

/// What a reply answers: the request's header and key.
#[derive(Debug, Clone)]
pub struct Frame {
    pub header: Header,
    pub key: Bytes,
    /// Answer nothing (the client left; see `BinaryParser::end_of_input`).
    pub silent: bool,
    /// Its body was refused and swallowed.
    pub swallowed: bool,
}

impl Frame {
    /// Whether memcached sends everything it holds once it has answered
    /// this request with `written`: after an error (other than a refused
    /// body's, or a keyed get's miss), a `NOOP` or a `quit`.
    pub fn flushes(&self, written: &[u8]) -> bool {
        let loud = self.header.loud();
        let status = match written {
            [_, _, _, _, _, _, hi, lo, ..] => u16::from_be_bytes([*hi, *lo]),
            _ => 0,
        };
        let keyed_miss = matches!(loud, opcode::GETK | opcode::GATK);
        matches!(loud, opcode::NOOP | opcode::QUIT)
            || (status != 0 && !self.swallowed && !keyed_miss)
    }

    /// Writes the binary response to this request for `response`.
    pub fn answer(&self, response: &Response, wbuf: &mut BytesMut) {
        if !self.silent {
            encode_reply(&self.header, &self.key, response, wbuf);
        }
    }
}

/// What the connection does with a binary request. (Taken apart at once,
/// one per request: boxing the large variant would cost an allocation.)
#[allow(clippy::large_enum_variant)]
pub enum Step {
    /// Run the command and answer the frame with its response.
    Run(Command, Frame),
    /// Answered already (the reply is in the write buffer); `flushes`:
    /// memcached sends what it holds now (see [`Frame::flushes`]).
    Answered { flushes: bool },
    /// Send what is buffered, then close (memcached's `close_after_write`).
    CloseAfterWrite,
    /// Close, sending only what memcached had already sent (a wrong magic
    /// byte: not the binary protocol).
    Close,
}

/// Admits `req`: sign-in first (under `-S` only the SASL opcodes and
/// `version` are served before it), then what the parser already decided.
pub fn admit(front: &Front, req: BinaryRequest, signed_in: &mut bool, wbuf: &mut BytesMut) -> Step {
    let h = req.header;
    if !*signed_in && !req.allowed_before_sign_in() {
        push_error(wbuf, &h, Status::AuthError, None);
        return Step::CloseAfterWrite;
    }
    match req.action {
        Action::Close => Step::Close,
        Action::Malformed => {
            push_error(wbuf, &h, Status::UnknownCommand, None);
            Step::CloseAfterWrite
        }
        Action::Refuse { status, close } => {
            push_error(wbuf, &h, status, None);
            if close {
                Step::CloseAfterWrite
            } else {
                Step::Answered {
                    flushes: !req.swallowed,
                }
            }
        }
        // memcached starts a new SASL session for each of these, which
        // signs the connection out until it succeeds again.
        Action::ListMechanisms => {
            *signed_in = false;
            push_success(wbuf, &h, MECHANISMS, 0);
            Step::Answered { flushes: false }
        }
        Action::Authenticate {
            mechanism,
            data,
            step,
        } => {
            *signed_in = !step && &mechanism[..] == MECHANISMS && plain(front, &data);
            let stats = &front.exec.stats;
            stats.auth_cmds.fetch_add(1, Ordering::Relaxed);
            if *signed_in {
                push_success(wbuf, &h, b"Authenticated", 0);
            } else {
                stats.auth_errors.fetch_add(1, Ordering::Relaxed);
                push_error(wbuf, &h, Status::AuthError, None);
            }
            Step::Answered {
                flushes: !*signed_in,
            }
        }
        Action::Run(cmd) => Step::Run(
            cmd,
            Frame {
                header: h,
                key: req.key,
                silent: req.silent,
                swallowed: req.swallowed,
            },
        ),
    }
}

/// SASL PLAIN's message, `[authzid] NUL authcid NUL password`, checked
/// against the password file; an authorization identity other than the
/// user's own is refused (as Cyrus SASL refuses it without a policy).
fn plain(front: &Front, data: &[u8]) -> bool {
    let Some(auth) = &front.auth else {
        return false;
    };
    let mut parts = data.split(|&b| b == 0);
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    (authzid.is_empty() || authzid == user) && auth.verify(user, password)
}

/// Whether `h` is a `quit` (answered, unless quiet, before the close).
pub fn is_quit(h: &Header) -> bool {
    h.loud() == opcode::QUIT
}
