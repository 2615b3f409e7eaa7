//! The differential fuzzer's binary-protocol generator: seeded requests of
//! every opcode (quiet forms and unknown ones too) with edge numbers in
//! their extras, 0/250/251-byte and binary keys, and now and then a header
//! that lies (body lengths off by a little or by megabytes, extras of the
//! wrong size, a wrong magic byte, a flipped byte), one to three pipelined.

use crate::binary::Request;
use crate::fuzz::Rng;

/// Expiries that mean the same on two servers whose clocks tick a second
/// apart: none, far away, an absolute time long past, beyond 2^31.
const EXPIRIES: &[u32] = &[
    0,
    1000,
    2_592_000,
    2_592_001,
    1_000_000_000,
    2_147_483_647,
    2_147_483_648,
    4_000_000_000,
    u32::MAX,
];

const NUMBERS: &[u64] = &[
    0,
    1,
    2,
    100,
    (1 << 32) - 1,
    1 << 32,
    (1 << 63) - 1,
    1 << 63,
    u64::MAX - 1,
    u64::MAX,
];

/// CAS values no item has on either server (see `fuzz::CASES`).
const CASES: &[u64] = &[1_099_511_627_776, u64::MAX];

const STATS: &[&[u8]] = &[
    b"",
    b"reset",
    b"resetx",
    b"settings",
    b"items",
    b"slabs",
    b"sizes",
    b"detail on",
    b"detail off",
    b"detail dump",
    b"detail",
    b"conns",
    b"bogus",
];

const VALUES: &[&[u8]] = &[
    b"",
    b"0",
    b"10",
    b"18446744073709551615",
    b"18446744073709551616",
    b" 12",
    b"abc",
    b"hello world",
];

fn key(rng: &mut Rng) -> Vec<u8> {
    match rng.below(30) {
        0 => Vec::new(),
        1 => vec![b'k'; 250],
        2 => vec![b'k'; 251],
        3 => b"k \x00\r\n".to_vec(),
        _ => format!("k{}", rng.below(6)).into_bytes(),
    }
}

fn number(rng: &mut Rng) -> u64 {
    match rng.below(3) {
        0 => *rng.pick(NUMBERS),
        _ => rng.below(50) as u64,
    }
}

/// The extras an opcode expects (after folding quietness away).
fn extras(rng: &mut Rng, opcode: u8) -> Vec<u8> {
    let expiry = |rng: &mut Rng| rng.pick(EXPIRIES).to_be_bytes();
    match opcode {
        0x01..=0x03 | 0x11..=0x13 => {
            let mut e = (rng.below(3) as u32 * 7).to_be_bytes().to_vec();
            e.extend_from_slice(&expiry(rng));
            e
        }
        0x05 | 0x06 | 0x15 | 0x16 => {
            let mut e = number(rng).to_be_bytes().to_vec();
            e.extend_from_slice(&number(rng).to_be_bytes());
            e.extend_from_slice(&expiry(rng));
            e
        }
        0x1c..=0x1e | 0x23 | 0x24 => expiry(rng).to_vec(),
        // A delayed flush would land a second apart on the two servers.
        0x08 | 0x18 if rng.one_in(2) => 0u32.to_be_bytes().to_vec(),
        _ => Vec::new(),
    }
}

/// One request, perhaps lying about itself.
fn one(rng: &mut Rng) -> Vec<u8> {
    let opcode = if rng.one_in(15) {
        *rng.pick(&[0x1b, 0x1f, 0x25, 0x30, 0x50, 0xff])
    } else {
        rng.below(0x25) as u8
    };
    let key = match opcode {
        0x07 | 0x08 | 0x0a | 0x0b | 0x17 | 0x18 | 0x20 => Vec::new(),
        0x10 => rng.pick(STATS).to_vec(),
        0x21 | 0x22 => b"PLAIN".to_vec(),
        _ => key(rng),
    };
    let key = if rng.one_in(25) { b"k1".to_vec() } else { key };
    let mut extras = extras(rng, opcode);
    if rng.one_in(20) {
        extras = vec![1; rng.below(24)];
    }
    let stores =
        matches!(opcode, 0x01..=0x03 | 0x0e | 0x0f | 0x11..=0x13 | 0x19 | 0x1a | 0x21 | 0x22);
    let value: Vec<u8> = if stores || rng.one_in(20) {
        rng.pick(VALUES).to_vec()
    } else {
        Vec::new()
    };
    let natural = (extras.len() + key.len() + value.len()) as u32;
    let body_len = match rng.below(30) {
        0 => natural.saturating_sub(1 + rng.below(3) as u32),
        1 => natural + 1 + rng.below(3) as u32,
        2 => natural + (2 << 20),
        _ => natural,
    };
    let mut bytes = Request {
        magic: rng.one_in(60).then_some(0x81),
        opcode,
        key: &key,
        extras: &extras,
        value: &value,
        cas: if rng.one_in(6) { *rng.pick(CASES) } else { 0 },
        opaque: rng.next_u64() as u32,
        body_len: Some(body_len),
    }
    .bytes();
    if rng.one_in(40) {
        let at = rng.below(bytes.len());
        bytes[at] ^= 1 << rng.below(8);
    }
    bytes
}

/// One packet of a request as a server reads it: by its declared lengths.
pub struct Sent<'a> {
    pub opcode: u8,
    pub extras: &'a [u8],
    pub key: &'a [u8],
}

/// The packets of `request`, walked by their declared lengths (as far as
/// they are whole and start with the request magic).
pub fn sent(request: &[u8]) -> Vec<Sent<'_>> {
    let mut out = Vec::new();
    let mut rest = request;
    while rest.len() >= 24 && rest[0] == 0x80 {
        let key_len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        let extras = usize::from(rest[4]);
        let body = u32::from_be_bytes([rest[8], rest[9], rest[10], rest[11]]) as usize;
        let Some(fields) = rest.get(24..24 + extras + key_len) else {
            break;
        };
        out.push(Sent {
            opcode: rest[1],
            extras: &fields[..extras],
            key: &fields[extras..],
        });
        rest = rest.get(24 + body..).unwrap_or_default();
    }
    out
}

/// Whether `request` holds a flush with a delay. memcached keeps a single
/// flush time, which such a flush replaces (with a time to come, or with
/// none when the delay is an absolute time already past), so items an
/// earlier flush hid and nothing has reaped yet are served again;
/// zonecached keeps them flushed (`tests/ACCEPTED_DIFFERENCES.md`, 17).
pub fn delays_a_flush(request: &[u8]) -> bool {
    sent(request)
        .iter()
        .any(|p| matches!(p.opcode, 0x08 | 0x18) && p.extras.len() == 4 && p.extras != [0; 4])
}

/// Whether `request` holds a `stat` whose group memcached may read from
/// the bytes after its key: it compares `reset`, `settings` and
/// `detail on|off|dump` with `strncmp`, past a shorter key into the next
/// request or a stale buffer (`tests/ACCEPTED_DIFFERENCES.md`, 19).
pub fn stat_group_read_past_key(request: &[u8]) -> bool {
    const GROUPS: &[&[u8]] = &[
        b"reset",
        b"settings",
        b"detail on",
        b"detail off",
        b"detail dump",
    ];
    sent(request).iter().any(|p| {
        p.opcode == 0x10
            && !p.key.is_empty()
            && GROUPS
                .iter()
                .any(|g| g.len() > p.key.len() && g.starts_with(p.key))
    })
}

/// The keys of the `incr`/`decr` packets in `request`.
pub fn counted_keys(request: &[u8]) -> Vec<&[u8]> {
    sent(request)
        .into_iter()
        .filter(|p| matches!(p.opcode, 0x05 | 0x06 | 0x15 | 0x16))
        .map(|p| p.key)
        .collect()
}

/// One to three pipelined requests.
pub fn request(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..1 + rng.below(3) {
        out.extend(one(rng));
    }
    out
}
