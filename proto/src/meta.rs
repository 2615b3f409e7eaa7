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

    /// Sets `flag` to `arg` (replacing an earlier one) and keeps the parsed
    /// view in step: the one way to change a command's flags, so the tokens
    /// sent on and the fields the executor reads never disagree. Fails (and
    /// changes nothing) when `arg` is not valid for `flag`.
    pub fn set(&mut self, flag: u8, arg: impl Into<Bytes>) -> Result<(), &'static str> {
        let arg: Bytes = arg.into();
        let mut token = Vec::with_capacity(arg.len() + 1);
        token.push(flag);
        token.extend_from_slice(&arg);
        let token = Bytes::from(token);
        let mut next = self.clone();
        next.remove(flag);
        next.apply(&token).map_err(|(message, _)| message)?;
        next.tokens.push(MetaToken {
            flag,
            arg: token.slice(1..),
        });
        *self = next;
        Ok(())
    }

    /// Removes `flag` and resets what it meant.
    pub fn remove(&mut self, flag: u8) {
        self.tokens.retain(|t| t.flag != flag);
        match flag {
            b'b' => self.base64 = false,
            b'q' => self.quiet = false,
            b'u' => self.no_update = false,
            b'v' => self.value = false,
            b'I' => self.invalidate = false,
            b'x' => self.remove_value = false,
            b'O' => self.opaque = None,
            b'N' => self.vivify = None,
            b'T' => self.ttl = None,
            b'R' => self.recache = None,
            b'F' => self.client_flags = None,
            b'C' => self.compare_cas = None,
            b'E' => self.new_cas = None,
            b'M' => self.mode = None,
            b'D' => self.delta = None,
            b'J' => self.initial = None,
            _ => {}
        }
    }

    /// Records what one flag token (flag character and argument) means.
    /// `Err((message, keep_earlier))` for a bad argument: the `CLIENT_ERROR`
    /// message, and whether an earlier flag's message takes precedence
    /// (memcached's order for `F`).
    fn apply(&mut self, token: &Bytes) -> Result<(), (&'static str, bool)> {
        let (flag, arg) = (token[0], &token[1..]);
        fn num<T>(v: Option<T>, message: &'static str) -> Result<T, (&'static str, bool)> {
            v.ok_or((message, false))
        }
        match flag {
            b'b' => self.base64 = true,
            b'N' => self.vivify = Some(num(parse_i32(arg), BAD_TOKEN)?),
            b'T' => self.ttl = Some(num(parse_i32(arg), BAD_TOKEN)?),
            b'R' => self.recache = Some(num(parse_i32(arg), BAD_TOKEN)?),
            b'F' => {
                self.client_flags = Some(parse_u32(arg).ok_or(("bad command line format", true))?)
            }
            b'C' => self.compare_cas = Some(num(parse_u64(arg), BAD_TOKEN)?),
            b'E' => self.new_cas = Some(num(parse_u64(arg), BAD_TOKEN)?),
            b'M' => match arg {
                [mode] => self.mode = Some(*mode),
                _ => return Err(("incorrect length for M token", false)),
            },
            b'J' => self.initial = Some(num(parse_u64(arg), "invalid numeric initial value")?),
            b'D' => self.delta = Some(num(parse_u64(arg), "invalid numeric delta value")?),
            b'O' => self.opaque = Some(token.clone()),
            b'v' => self.value = true,
            b'u' => self.no_update = true,
            b'q' => self.quiet = true,
            b'I' => self.invalidate = true,
            b'x' => self.remove_value = true,
            b'k' | b's' | b't' | b'c' | b'f' | b'h' | b'l' => {}
            // Proxy hints: memcached 1.6.18 takes and ignores them.
            b'P' | b'L' => {}
            _ => return Err(("invalid flag", false)),
        }
        Ok(())
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
/// `deletes`: the command is `md`, the only one `x` (remove the value,
/// keep the item) belongs to.
pub(crate) fn parse_flags(
    key: &mut Bytes,
    tokens: &[Bytes],
    errors: FlagErrors,
    deletes: bool,
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
        if flag == b'x' && !deletes {
            return Err(generic("invalid flag"));
        }
        let arg = token.slice(1..);
        if flag == b'b' {
            match base64::engine::general_purpose::STANDARD.decode(&key[..]) {
                Ok(decoded) if !decoded.is_empty() => *key = Bytes::from(decoded),
                _ => error = Some("error decoding key"),
            }
        }
        match flags.apply(token) {
            Ok(()) => {}
            Err(("invalid flag", _)) => return Err(generic("invalid flag")),
            Err((message, true)) => error = Some(error.unwrap_or(message)),
            Err((message, false)) => error = Some(message),
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
