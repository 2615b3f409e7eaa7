//! memcached's binary protocol from the client's side, for byte-level
//! tests: requests written by hand (so malformed ones too), responses cut
//! into packets, and the normalising the differential tests apply (CAS
//! values, the version string), as for the text protocol.

use crate::Conn;

/// `NOOP`'s opcode: the sync marker of [`Conn::binary_request`].
pub const NOOP: u8 = 0x0a;

/// One request; `body_len` overrides the length the header claims.
#[derive(Debug, Clone, Default)]
pub struct Request<'a> {
    pub magic: Option<u8>,
    pub opcode: u8,
    pub key: &'a [u8],
    pub extras: &'a [u8],
    pub value: &'a [u8],
    pub cas: u64,
    pub opaque: u32,
    pub body_len: Option<u32>,
}

impl Request<'_> {
    pub fn bytes(&self) -> Vec<u8> {
        let body = (self.extras.len() + self.key.len() + self.value.len()) as u32;
        let mut out = vec![self.magic.unwrap_or(0x80), self.opcode];
        out.extend_from_slice(&(self.key.len() as u16).to_be_bytes());
        out.push(self.extras.len() as u8);
        out.extend_from_slice(&[0, 0, 0]);
        out.extend_from_slice(&self.body_len.unwrap_or(body).to_be_bytes());
        out.extend_from_slice(&self.opaque.to_be_bytes());
        out.extend_from_slice(&self.cas.to_be_bytes());
        out.extend_from_slice(self.extras);
        out.extend_from_slice(self.key);
        out.extend_from_slice(self.value);
        out
    }
}

/// A request with just an opcode and a key.
pub fn keyed(opcode: u8, key: &[u8]) -> Vec<u8> {
    Request {
        opcode,
        key,
        ..Request::default()
    }
    .bytes()
}

/// A set-family request: flags and expiry in the extras.
pub fn store(opcode: u8, key: &[u8], value: &[u8], flags: u32, exptime: u32, cas: u64) -> Vec<u8> {
    let mut extras = flags.to_be_bytes().to_vec();
    extras.extend_from_slice(&exptime.to_be_bytes());
    Request {
        opcode,
        key,
        extras: &extras,
        value,
        cas,
        ..Request::default()
    }
    .bytes()
}

/// An incr/decr: delta, initial value and expiry (all ones: do not create).
pub fn arith(opcode: u8, key: &[u8], delta: u64, initial: u64, exptime: u32) -> Vec<u8> {
    let mut extras = delta.to_be_bytes().to_vec();
    extras.extend_from_slice(&initial.to_be_bytes());
    extras.extend_from_slice(&exptime.to_be_bytes());
    Request {
        opcode,
        key,
        extras: &extras,
        ..Request::default()
    }
    .bytes()
}

/// A touch-family request: the expiry in the extras.
pub fn touch(opcode: u8, key: &[u8], exptime: u32) -> Vec<u8> {
    Request {
        opcode,
        key,
        extras: &exptime.to_be_bytes(),
        ..Request::default()
    }
    .bytes()
}

/// One response packet (or the bytes left over that make none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Response {
        magic: u8,
        opcode: u8,
        status: u16,
        extras: Vec<u8>,
        key: Vec<u8>,
        value: Vec<u8>,
        opaque: u32,
        cas: u64,
    },
    Partial(Vec<u8>),
}

/// Cuts `bytes` into packets.
pub fn packets(bytes: &[u8]) -> Vec<Packet> {
    let mut out = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= 24 {
        let b = &bytes[at..];
        let key_len = u16::from_be_bytes([b[2], b[3]]) as usize;
        let ext_len = b[4] as usize;
        let body = u32::from_be_bytes([b[8], b[9], b[10], b[11]]) as usize;
        if b.len() < 24 + body || key_len + ext_len > body {
            break;
        }
        out.push(Packet::Response {
            magic: b[0],
            opcode: b[1],
            status: u16::from_be_bytes([b[6], b[7]]),
            extras: b[24..24 + ext_len].to_vec(),
            key: b[24 + ext_len..24 + ext_len + key_len].to_vec(),
            value: b[24 + ext_len + key_len..24 + body].to_vec(),
            opaque: u32::from_be_bytes([b[12], b[13], b[14], b[15]]),
            cas: u64::from_be_bytes(b[16..24].try_into().unwrap()),
        });
        at += 24 + body;
    }
    if at < bytes.len() {
        out.push(Packet::Partial(bytes[at..].to_vec()));
    }
    out
}

/// What the differential tests compare: CAS values only as present or
/// not (each server numbers writes its own way; zonecached's engine may
/// give two keys the same one, as CAS is only compared per item) and the
/// version string blanked (zonecached's names itself); `STAT` packets
/// other than the one that ends a reply dropped (each server's own names
/// and numbers, as the text suite drops `STAT` lines).
pub fn normalize(packets: &mut Vec<Packet>) {
    packets.retain(
        |p| !matches!(p, Packet::Response { opcode: 0x10, status: 0, key, .. } if !key.is_empty()),
    );
    for p in packets {
        if let Packet::Response {
            opcode,
            cas,
            value,
            status,
            ..
        } = p
        {
            *cas = u64::from(*cas != 0);
            if *opcode == 0x0b && *status == 0 {
                *value = b"<version>".to_vec();
            }
        }
    }
}

impl Conn {
    /// Sends binary `bytes` then a `NOOP` marker with an opaque no test
    /// uses, and returns the packets before the marker's reply.
    pub fn binary_request(&mut self, bytes: &[u8]) -> Vec<Packet> {
        const MARK: u32 = 0x7a63_7379; // "zcsy"
        let marker = Request {
            opcode: NOOP,
            opaque: MARK,
            ..Request::default()
        };
        self.send(bytes);
        self.send(&marker.bytes());
        let raw = self.read_while(|got| {
            !packets(got).iter().any(|p| {
                matches!(
                    p,
                    Packet::Response {
                        opcode: NOOP,
                        opaque: MARK,
                        ..
                    }
                )
            })
        });
        let mut out = packets(&raw);
        out.pop();
        out
    }
}
