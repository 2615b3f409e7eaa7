//! Meta-command flags (`mg`, `ms`, `md`, `ma`), parsed the way memcached
//! 1.6 parses them: one character per flag, optionally followed by a token.

use base64::Engine;
use bytes::{Bytes, BytesMut};

use crate::number::{parse_i32, parse_u32, parse_u64};

/// memcached refuses meta lines with more than this many tokens
/// (command and key included, plus its terminal token).
pub const MAX_META_TOKENS: usize = 20;
/// Longest opaque token (`O` included) memcached echoes.
pub const MAX_OPAQUE_LEN: usize = 32;

/// One flag as the client wrote it, kept so replies can echo return flags in
/// request order, as memcached does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaToken {
    /// The flag character (`v`, `T`, `O`, …).
    pub flag: u8,
    /// Whatever followed the flag character in the same token.
    pub arg: Bytes,
}

/// The flags of one meta command: the raw tokens plus what they mean.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetaFlags {
    /// Every flag token in request order (return flags are echoed in this order).
    pub tokens: Vec<MetaToken>,
    /// `b`: the key was base64-encoded on the wire (and is returned so).
    pub base64: bool,
    /// `q`: quiet mode, the nominal reply is suppressed.
    pub quiet: bool,
    /// `u`: don't bump the item in the eviction order.
    pub no_update: bool,
    /// `v`: return the value.
    pub value: bool,
    /// `I`: invalidate; mark stale instead of removing (md) or accept an older CAS (ms).
    pub invalidate: bool,
    /// `x`: md removes the value but keeps the item (newer 1.6 releases).
    pub remove_value: bool,
    /// `O`: opaque token echoed in the reply (the whole token, `O` included).
    pub opaque: Option<Bytes>,
    /// `N`: vivify on miss with this TTL.
    pub vivify: Option<i32>,
    /// `T`: update the TTL.
    pub ttl: Option<i32>,
    /// `R`: win the recache race if the remaining TTL is below this.
    pub recache: Option<i32>,
    /// `F`: client flags for ms.
    pub client_flags: Option<u32>,
    /// `C`: compare CAS.
    pub compare_cas: Option<u64>,
    /// `E`: use this as the new CAS value (newer 1.6 releases).
    pub new_cas: Option<u64>,
    /// `M`: mode switch for ms/ma.
    pub mode: Option<u8>,
    /// `D`: delta for ma.
    pub delta: Option<u64>,
    /// `J`: initial value for ma on autovivify.
    pub initial: Option<u64>,
}

impl MetaFlags {
    /// Whether the request asked for the given return flag.
    pub fn has(&self, flag: u8) -> bool {
        self.tokens.iter().any(|t| t.flag == flag)
    }
}

/// How flag errors are reported: mg and ms report the precise message,
/// md and ma a generic one (as memcached does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlagErrors {
    Precise,
    Generic,
}

const BAD_TOKEN: &str = "bad token in command line format";

/// Parses flag tokens after the key (and after the data length for ms).
/// `key` is decoded in place when `b` is present. The returned error is the
/// `CLIENT_ERROR` message.
pub(crate) fn parse_flags(
    key: &mut Bytes,
    tokens: &[Bytes],
    errors: FlagErrors,
) -> Result<MetaFlags, &'static str> {
    let mut flags = MetaFlags {
        tokens: Vec::with_capacity(tokens.len()),
        ..MetaFlags::default()
    };
    let mut seen = [false; 128];
    let mut error: Option<&'static str> = None;
    let generic = |e: &'static str| match errors {
        FlagErrors::Precise => e,
        FlagErrors::Generic => "invalid or duplicate flag",
    };
    for token in tokens {
        let flag = token[0];
        if flag >= 127 || seen[flag as usize] {
            return Err(generic("duplicate flag"));
        }
        seen[flag as usize] = true;
        let arg = token.slice(1..);
        match flag {
            b'b' => {
                flags.base64 = true;
                match base64::engine::general_purpose::STANDARD.decode(&key[..]) {
                    Ok(decoded) if !decoded.is_empty() => *key = Bytes::from(decoded),
                    _ => error = Some("error decoding key"),
                }
            }
            b'N' => match parse_i32(&arg) {
                Some(v) => flags.vivify = Some(v),
                None => error = Some(BAD_TOKEN),
            },
            b'T' => match parse_i32(&arg) {
                Some(v) => flags.ttl = Some(v),
                None => error = Some(BAD_TOKEN),
            },
            b'R' => match parse_i32(&arg) {
                Some(v) => flags.recache = Some(v),
                None => error = Some(BAD_TOKEN),
            },
            b'F' => match parse_u32(&arg) {
                Some(v) => flags.client_flags = Some(v),
                None => error = Some(error.unwrap_or("bad command line format")),
            },
            b'C' => match parse_u64(&arg) {
                Some(v) => flags.compare_cas = Some(v),
                None => error = Some(BAD_TOKEN),
            },
            b'E' => match parse_u64(&arg) {
                Some(v) => flags.new_cas = Some(v),
                None => error = Some(BAD_TOKEN),
            },
            b'M' => {
                if token.len() != 2 {
                    error = Some("incorrect length for M token");
                } else {
                    flags.mode = Some(token[1]);
                }
            }
            b'J' => match parse_u64(&arg) {
                Some(v) => flags.initial = Some(v),
                None => error = Some("invalid numeric initial value"),
            },
            b'D' => match parse_u64(&arg) {
                Some(v) => flags.delta = Some(v),
                None => error = Some("invalid numeric delta value"),
            },
            b'O' => flags.opaque = Some(token.clone()),
            b'v' => flags.value = true,
            b'u' => flags.no_update = true,
            b'q' => flags.quiet = true,
            b'I' => flags.invalidate = true,
            b'x' => flags.remove_value = true,
            b'k' | b's' | b't' | b'c' | b'f' | b'h' | b'l' => {}
            _ => return Err(generic("invalid flag")),
        }
        flags.tokens.push(MetaToken { flag, arg });
    }
    match error {
        Some(e) => Err(generic(e)),
        None => Ok(flags),
    }
}

/// Writes a key, base64-encoding it when it travels as binary.
pub fn push_key(out: &mut BytesMut, key: &[u8], base64: bool) {
    if base64 {
        let encoded = base64::engine::general_purpose::STANDARD.encode(key);
        out.extend_from_slice(encoded.as_bytes());
    } else {
        out.extend_from_slice(key);
    }
}
