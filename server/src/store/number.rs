//! The decimal number `incr`/`decr` find in a stored value, read the way
//! memcached reads it (`safe_strtoull` on the item's data): leading
//! whitespace and a sign, at least one digit, then the end or whitespace
//! (memcached pads a shrunken number with spaces); no overflow, and no
//! negative number that would wrap to a huge one.

/// The value's number, or `None` when it is not one memcached would count.
pub fn parse_counter(value: &[u8]) -> Option<u64> {
    let space = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r');
    let start = value.iter().position(|b| !space(b))?;
    let rest = &value[start..];
    let (negative, rest) = match rest.first() {
        Some(b'-') => (true, &rest[1..]),
        Some(b'+') => (false, &rest[1..]),
        _ => (false, rest),
    };
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || rest.get(digits).is_some_and(|b| !space(b)) {
        return None;
    }
    let magnitude = rest[..digits].iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })?;
    let number = if negative {
        magnitude.wrapping_neg()
    } else {
        magnitude
    };
    // memcached refuses a number that reads as negative when signed if a
    // minus sign appears anywhere in the value.
    if (number as i64) < 0 && value.contains(&b'-') {
        return None;
    }
    Some(number)
}

#[cfg(test)]
mod tests {
    use super::parse_counter;

    #[test]
    fn reads_numbers_as_memcached_does() {
        assert_eq!(parse_counter(b"42"), Some(42));
        assert_eq!(parse_counter(b"7   "), Some(7));
        assert_eq!(parse_counter(b"  +9"), Some(9));
        assert_eq!(parse_counter(b"-0"), Some(0));
        assert_eq!(parse_counter(b"18446744073709551615"), Some(u64::MAX));
    }

    #[test]
    fn refuses_what_memcached_refuses() {
        assert_eq!(parse_counter(b""), None);
        assert_eq!(parse_counter(b"abc"), None);
        assert_eq!(parse_counter(b"12abc"), None);
        assert_eq!(parse_counter(b"-5"), None);
        assert_eq!(parse_counter(b"18446744073709551616"), None);
    }
}
