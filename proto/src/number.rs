//! Number parsing exactly as memcached's `safe_strto*` helpers do it.
//!
//! memcached parses numbers with C's `strtol` family: leading whitespace and a
//! sign are allowed, at least one digit is required, and the number may be
//! followed by whitespace (anything after that is ignored). Matching these
//! quirks is what makes our replies byte-identical to memcached's.

/// C's `isspace` in the "C" locale.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// What `strtoul`/`strtol` saw: a sign, the magnitude, and whether it overflowed.
struct Scanned {
    negative: bool,
    magnitude: u64,
    overflow: bool,
}

/// Scans like `strto*l(…, 10)` and applies the `safe_strto*` end check.
fn scan(s: &[u8]) -> Option<Scanned> {
    let mut i = 0;
    while i < s.len() && is_c_space(s[i]) {
        i += 1;
    }
    let mut negative = false;
    if i < s.len() && (s[i] == b'+' || s[i] == b'-') {
        negative = s[i] == b'-';
        i += 1;
    }
    let digits_start = i;
    let mut magnitude: u64 = 0;
    let mut overflow = false;
    while i < s.len() && s[i].is_ascii_digit() {
        let d = u64::from(s[i] - b'0');
        match magnitude.checked_mul(10).and_then(|m| m.checked_add(d)) {
            Some(m) => magnitude = m,
            None => overflow = true,
        }
        i += 1;
    }
    if i == digits_start {
        return None;
    }
    // The safe_ wrappers accept the number when it ends the string or is
    // followed by whitespace.
    if i < s.len() && !is_c_space(s[i]) {
        return None;
    }
    Some(Scanned {
        negative,
        magnitude,
        overflow,
    })
}

/// memcached's `safe_strtoull`: a u64; negative input is refused when it would
/// wrap to a value that looks negative as a signed number.
pub fn parse_u64(s: &[u8]) -> Option<u64> {
    let n = scan(s)?;
    if n.overflow {
        return None;
    }
    let value = if n.negative {
        n.magnitude.wrapping_neg()
    } else {
        n.magnitude
    };
    if (value as i64) < 0 && s.contains(&b'-') {
        return None;
    }
    Some(value)
}

/// memcached's `safe_strtoul` into a 32-bit slot: parsed as an unsigned long
/// (64-bit) and then truncated, as memcached does for client flags.
pub fn parse_u32(s: &[u8]) -> Option<u32> {
    parse_u64(s).map(|v| v as u32)
}

/// memcached's `safe_strtol` into an `int32_t`: parsed as a `long`
/// (64-bit; refused on overflow, as `strtol` sets `ERANGE`) and then
/// truncated to 32 bits, as memcached 1.6.18 does for exptime, data lengths
/// and meta `T`/`N`/`R`: `2147483648` is `-2147483648` (already expired),
/// `4294967297` is `1`.
pub fn parse_i32(s: &[u8]) -> Option<i32> {
    let n = scan(s)?;
    if n.overflow {
        return None;
    }
    let value: i64 = if n.negative {
        if n.magnitude > (i64::MAX as u64) + 1 {
            return None; // ERANGE for a long
        }
        (n.magnitude as i64).wrapping_neg()
    } else {
        if n.magnitude > i64::MAX as u64 {
            return None;
        }
        n.magnitude as i64
    };
    Some(value as i32)
}

/// Appends the decimal form of `v` to `out`.
pub fn push_u64(out: &mut bytes::BytesMut, v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut v = v;
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Appends the decimal form of a signed `v` to `out`.
pub fn push_i64(out: &mut bytes::BytesMut, v: i64) {
    if v < 0 {
        out.extend_from_slice(b"-");
    }
    push_u64(out, v.unsigned_abs());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u64_like_strtoull() {
        assert_eq!(parse_u64(b"0"), Some(0));
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        assert_eq!(parse_u64(b"-1"), None);
        assert_eq!(parse_u64(b"-0"), Some(0));
        assert_eq!(parse_u64(b"+7"), Some(7));
        assert_eq!(parse_u64(b"\t7"), Some(7));
        assert_eq!(parse_u64(b"7\tjunk"), Some(7));
        assert_eq!(parse_u64(b"7x"), None);
        assert_eq!(parse_u64(b""), None);
        assert_eq!(parse_u64(b"-"), None);
    }

    #[test]
    fn u32_truncates_like_memcached_flags() {
        assert_eq!(parse_u32(b"4294967295"), Some(u32::MAX));
        assert_eq!(parse_u32(b"4294967296"), Some(0));
        assert_eq!(parse_u32(b"-5"), None);
    }

    #[test]
    fn i32_like_safe_strtol() {
        assert_eq!(parse_i32(b"-1"), Some(-1));
        assert_eq!(parse_i32(b"2147483647"), Some(i32::MAX));
        assert_eq!(parse_i32(b"2147483648"), Some(i32::MIN));
        assert_eq!(parse_i32(b"4294967297"), Some(1));
        assert_eq!(parse_i32(b"-2147483649"), Some(i32::MAX));
        assert_eq!(parse_i32(b"9223372036854775808"), None);
        assert_eq!(parse_i32(b"-2147483648"), Some(i32::MIN));
        assert_eq!(parse_i32(b"99999999999999999999"), None);
        assert_eq!(parse_i32(b"abc"), None);
    }

    #[test]
    fn push_numbers() {
        let mut b = bytes::BytesMut::new();
        push_u64(&mut b, 0);
        b.extend_from_slice(b" ");
        push_u64(&mut b, u64::MAX);
        b.extend_from_slice(b" ");
        push_i64(&mut b, -42);
        assert_eq!(&b[..], b"0 18446744073709551615 -42");
    }
}
