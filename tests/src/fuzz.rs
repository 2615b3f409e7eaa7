//! The differential fuzzer's generator: seeded, valid-but-mutated text and
//! meta commands — numbers at the 2^31/2^32/2^63/2^64 boundaries and
//! negative, 250/251-byte keys, repeated and unknown meta flags, data
//! lengths that do not match the data, flipped bytes — replayed against
//! stock memcached and zonecached (`tests/tests/differential_fuzz.rs`).
//! Keys come from a small set so commands meet the items earlier ones made.

/// A small, seeded generator (splitmix64): the same seed gives the same
/// commands on every machine and with every crate version.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True one time in `n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Numbers where parsers break: signs, 2^31, 2^32, 2^63, 2^64, beyond,
/// and words that are not numbers.
const EDGES: &[&str] = &[
    "0",
    "1",
    "-1",
    "2",
    "30",
    "-30",
    "2147483647",
    "2147483648",
    "-2147483648",
    "-2147483649",
    "4294967295",
    "4294967296",
    "4294967297",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999",
    "+5",
    "0x10",
    "1e3",
    "abc",
    "",
];

/// Expiry times that mean the same on two servers whose clocks tick a
/// second apart: none, already expired, or far away (a small positive TTL
/// would expire on one a tick before the other). 4294967297 is left out:
/// truncated to 32 bits it is 1 s.
const TTLS: &[&str] = &[
    "0",
    "-1",
    "-30",
    "1000",
    "3600",
    "2592000",
    "2592001",
    "2147483647",
    "2147483648",
    "-2147483648",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "18446744073709551616",
    "99999999999999999999",
    "abc",
    "",
];

/// CAS values no item has on either server (memcached counts from 1,
/// zonecached from about 2^20), so a compare fails on both alike.
const CASES: &[&str] = &[
    "0",
    "-1",
    "1099511627776",
    "18446744073709551615",
    "18446744073709551616",
    "abc",
];

fn ttl(rng: &mut Rng) -> String {
    rng.pick(TTLS).to_string()
}

fn cas(rng: &mut Rng) -> String {
    rng.pick(CASES).to_string()
}

/// A number: usually a small one, sometimes an edge.
fn number(rng: &mut Rng) -> String {
    match rng.below(4) {
        0 => rng.pick(EDGES).to_string(),
        _ => rng.below(100).to_string(),
    }
}

fn key(rng: &mut Rng) -> String {
    match rng.below(40) {
        0 => "k".repeat(250),
        1 => "k".repeat(251),
        2 => "k\x01".into(),
        _ => format!("k{}", rng.below(6)),
    }
}

/// `len` bytes of value: digits now and then (for incr), text otherwise.
fn value(rng: &mut Rng, len: usize) -> Vec<u8> {
    if rng.one_in(3) {
        let digits = rng.below(100_000).to_string();
        let mut v = digits.into_bytes();
        v.resize(len, b'0');
        return v;
    }
    (0..len).map(|i| b'a' + (i % 26) as u8).collect()
}

/// Meta flags valid for `command` in memcached 1.6.18 (the newer `E`,
/// `md`'s `x` and `ms`'s `N` are left out: tests/ACCEPTED_DIFFERENCES.md, 1).
fn meta_flags(command: &str) -> &'static [u8] {
    match command {
        // No `l` (seconds since last access: a clock reading).
        "mg" => b"bcfhkOqstuvNRT",
        "ms" => b"bcCFIkOqsSTM",
        "md" => b"bCIkOqT",
        // No `T` on `ma`: when the number grows longer, memcached 1.6.18
        // sets it on the item it just replaced (ACCEPTED_DIFFERENCES.md, 11).
        _ => b"bCNJDMOqtcvk",
    }
}

/// A flag token: the letter and, for flags that take one, an argument.
fn flag(rng: &mut Rng, command: &str) -> String {
    let letter = match rng.below(12) {
        0 => *rng.pick(b"aAgGjKLmPrUwWXyYzZ!?"),
        _ => *rng.pick(meta_flags(command)),
    } as char;
    let arg = match letter {
        'N' | 'T' => ttl(rng),
        'C' => cas(rng),
        'R' | 'F' | 'J' | 'D' => number(rng),
        // An over-long opaque on `ma` and `mg` changes memcached's item
        // anyway (tests/ACCEPTED_DIFFERENCES.md, 3).
        'O' => match rng.below(4) {
            0 if !matches!(command, "ma" | "mg") => "o".repeat(33),
            _ => format!("o{}", rng.below(9)),
        },
        'M' => rng
            .pick(&["S", "E", "A", "P", "R", "I", "+", "-", "D", "X", "SS", ""])
            .to_string(),
        _ if rng.one_in(8) => number(rng),
        _ => String::new(),
    };
    format!("{letter}{arg}")
}

fn flags(rng: &mut Rng, command: &str) -> String {
    let mut out = String::new();
    for _ in 0..rng.below(5) {
        out.push(' ');
        out.push_str(&flag(rng, command));
    }
    if rng.one_in(8) {
        // A flag twice.
        let f = flag(rng, command);
        out.push_str(&format!(" {f} {f}"));
    }
    out
}

/// A length for a data block of `len` bytes: usually right, sometimes off,
/// sometimes an edge number (the block then is whatever follows).
fn declared(rng: &mut Rng, len: usize) -> String {
    match rng.below(10) {
        0 => (len + 1).to_string(),
        1 => len.saturating_sub(1).to_string(),
        2 => rng.pick(EDGES).to_string(),
        _ => len.to_string(),
    }
}

/// One command line (and its data block), mutated.
pub fn command(rng: &mut Rng) -> Vec<u8> {
    let mut out = match rng.below(14) {
        0..=3 => {
            let name = rng.pick(&["set", "add", "replace", "append", "prepend", "cas"]);
            let len = rng.below(12);
            let mut line = format!(
                "{name} {} {} {} {}",
                key(rng),
                number(rng),
                ttl(rng),
                declared(rng, len)
            );
            if *name == "cas" {
                line.push_str(&format!(" {}", cas(rng)));
            }
            if rng.one_in(6) {
                line.push_str(" noreply");
            }
            let mut bytes = format!("{line}\r\n").into_bytes();
            bytes.extend_from_slice(&value(rng, len));
            bytes.extend_from_slice(b"\r\n");
            bytes
        }
        4 | 5 => {
            let name = rng.pick(&["get", "gets", "gat", "gats"]);
            let mut line = name.to_string();
            if name.starts_with("gat") {
                line.push_str(&format!(" {}", ttl(rng)));
            }
            for i in 0..1 + rng.below(3) {
                let mut key = key(rng);
                // memcached reads (and touches) the keys before an
                // over-long one, then refuses the line; zonecached refuses
                // it whole (tests/ACCEPTED_DIFFERENCES.md, 10).
                if i > 0 {
                    key.truncate(250);
                }
                line.push_str(&format!(" {key}"));
            }
            format!("{line}\r\n").into_bytes()
        }
        6 => {
            let name = rng.pick(&["incr", "decr"]);
            format!("{name} {} {}\r\n", key(rng), number(rng)).into_bytes()
        }
        7 => format!("touch {} {}\r\n", key(rng), ttl(rng)).into_bytes(),
        8 => {
            let tail = rng.pick(&["", " noreply", " 0", " 0 noreply", " 5"]);
            format!("delete {}{tail}\r\n", key(rng)).into_bytes()
        }
        9 => {
            let len = rng.below(12);
            let mut bytes = format!(
                "ms {} {}{}\r\n",
                key(rng),
                declared(rng, len),
                flags(rng, "ms")
            )
            .into_bytes();
            bytes.extend_from_slice(&value(rng, len));
            bytes.extend_from_slice(b"\r\n");
            bytes
        }
        10 | 11 => format!("mg {}{}\r\n", key(rng), flags(rng, "mg")).into_bytes(),
        12 => format!("md {}{}\r\n", key(rng), flags(rng, "md")).into_bytes(),
        _ => format!("ma {}{}\r\n", key(rng), flags(rng, "ma")).into_bytes(),
    };
    if rng.one_in(10) {
        // A flipped byte in the command line, never its line end.
        let line_end = out.iter().position(|&b| b == b'\r').unwrap_or(out.len());
        if line_end > 0 {
            let at = rng.below(line_end);
            out[at] = *rng.pick(b" 0129-+xXkK\x00\x7f");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_commands() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..1000 {
            assert_eq!(command(&mut a), command(&mut b));
        }
        let mut c = Rng::new(8);
        assert_ne!(
            (0..10).map(|_| command(&mut c)).collect::<Vec<_>>(),
            (0..10)
                .map(|_| command(&mut Rng::new(7)))
                .collect::<Vec<_>>()
        );
    }
}
