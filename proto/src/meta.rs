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

    /// The TTL an item created by `N` ends with: memcached applies `T` and
    /// `N` in the order they were written, so a `T` after `N` wins.
    /// `None` without `N`.
    pub fn vivified_ttl(&self) -> Option<i32> {
        let vivify = self.vivify?;
        let last = self
            .tokens
            .iter()
            .rev()
            .find(|t| matches!(t.flag, b'T' | b'N'));
        match (last.map(|t| t.flag), self.ttl) {
            (Some(b'T'), Some(ttl)) => Some(ttl),
            _ => Some(vivify),
        }
    }

    /// Whether flag `first` was written before flag `then` (both present):
    /// memcached applies some flags (`T`, `N`, `R`) in the order written.
    pub fn written_before(&self, first: u8, then: u8) -> bool {
        let at = |flag| self.tokens.iter().position(|t| t.flag == flag);
        matches!((at(first), at(then)), (Some(a), Some(b)) if a < b)
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
            match decode_key(key) {
                Some(decoded) => *key = decoded,
                None => error = Some("error decoding key"),
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

/// A base64 key (meta `b`) decoded as memcached 1.6.18 decodes it: bytes
/// outside the alphabet are skipped, the rest must come in whole groups of
/// four, and decoding stops after the first group with padding. `None`
/// where memcached fails (nothing decoded).
pub fn decode_key(encoded: &[u8]) -> Option<Bytes> {
    fn value(b: u8) -> Option<u8> {
        match b {
            b'A'..=b'Z' => Some(b - b'A'),
            b'a'..=b'z' => Some(b - b'a' + 26),
            b'0'..=b'9' => Some(b - b'0' + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            b'=' => Some(0),
            _ => None,
        }
    }
    let count = encoded.iter().filter(|&&b| value(b).is_some()).count();
    if count == 0 || count % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(count / 4 * 3);
    let (mut block, mut filled, mut pad) = ([0u8; 4], 0, 0);
    for &b in encoded {
        let Some(v) = value(b) else { continue };
        pad += usize::from(b == b'=');
        block[filled] = v;
        filled += 1;
        if filled == 4 {
            out.push(block[0] << 2 | block[1] >> 4);
            out.push(block[1] << 4 | block[2] >> 2);
            out.push(block[2] << 6 | block[3]);
            filled = 0;
            if pad > 0 {
                if pad > 2 {
                    return None;
                }
                out.truncate(out.len() - pad);
                break;
            }
        }
    }
    (!out.is_empty()).then(|| Bytes::from(out))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_decode_as_memcached_decodes_them() {
        assert_eq!(decode_key(b"AAE=").as_deref(), Some(&b"\x00\x01"[..]));
        assert_eq!(decode_key(b"a2V5").as_deref(), Some(&b"key"[..]));
        // Bytes outside the alphabet are skipped, not refused.
        assert_eq!(
            decode_key(b"k51M-").as_deref(),
            decode_key(b"k51M").as_deref()
        );
        assert_eq!(decode_key(b"a2-V5").as_deref(), Some(&b"key"[..]));
        // Decoding stops after the first padded group.
        assert_eq!(decode_key(b"AA==a2V5").as_deref(), Some(&b"\x00"[..]));
        // Not whole groups of four, nothing to decode, or too much padding.
        assert_eq!(decode_key(b"a2V"), None);
        assert_eq!(decode_key(b"---"), None);
        assert_eq!(decode_key(b"A==="), None);
    }

    #[test]
    fn t_and_n_apply_in_the_order_written() {
        let mut f = MetaFlags::default();
        f.set(b'N', "30").unwrap();
        f.set(b'T', "100").unwrap();
        assert_eq!(f.vivified_ttl(), Some(100));
        let mut g = MetaFlags::default();
        g.set(b'T', "100").unwrap();
        g.set(b'N', "30").unwrap();
        assert_eq!(g.vivified_ttl(), Some(30));
        assert!(g.written_before(b'T', b'N') && !g.written_before(b'N', b'T'));
        assert_eq!(MetaFlags::default().vivified_ttl(), None);
    }
}
