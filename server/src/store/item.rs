//! The byte layout of one item inside a segment. Items are packed back to
//! back with a 15-byte header; flags and an explicit CAS take space only
//! when present. A CAS is otherwise derived from where the item was written
//! (segment generation and offset), which is unique per write and costs
//! nothing to store.
//!
//! ```text
//! 0      key length (u8)
//! 1      bits (u8): see the `BIT_*` constants
//! 2      access frequency for S3-FIFO (u8, saturating at 3)
//! 3..7   value length (u32 LE)
//! 7..11  expiry, clock seconds, 0 = never (u32 LE)
//! 11..15 last access, clock seconds (u32 LE)
//! [4]    client flags, when BIT_HAS_FLAGS
//! [8]    explicit CAS, when BIT_HAS_CAS
//! key, value
//! ```

/// Fixed part of the header.
pub const HEADER: usize = 15;

/// Client flags are stored (non-zero).
pub const BIT_HAS_FLAGS: u8 = 1;
/// An explicit CAS is stored (it was moved, or the client chose it).
pub const BIT_HAS_CAS: u8 = 2;
/// Marked stale by an invalidation (meta `I`).
pub const BIT_STALE: u8 = 4;
/// A recache win token was handed out (meta `W`/`Z`).
pub const BIT_TOKEN_SENT: u8 = 8;
/// Fetched at least once since written.
pub const BIT_FETCHED: u8 = 16;
/// The key is binary and travels base64-encoded.
pub const BIT_KEY_BINARY: u8 = 32;
/// Replaced, deleted or reclaimed: the bytes are garbage.
pub const BIT_DEAD: u8 = 64;
/// A tombstone: the key was deleted at the version in its CAS; no value.
pub const BIT_TOMBSTONE: u8 = 128;

/// Highest access frequency S3-FIFO keeps.
pub const MAX_FREQ: u8 = 3;

/// What a new item holds.
#[derive(Debug, Clone, Copy)]
pub struct NewItem<'a> {
    pub key: &'a [u8],
    /// The value as up to two pieces (append/prepend write both without a copy).
    pub value: (&'a [u8], &'a [u8]),
    pub flags: u32,
    pub exptime: u32,
    pub atime: u32,
    pub bits: u8,
    pub freq: u8,
    pub cas: Option<u64>,
}

impl NewItem<'_> {
    /// Bytes this item takes in a segment.
    pub fn size(&self) -> usize {
        item_size(
            self.key.len(),
            self.value.0.len() + self.value.1.len(),
            self.flags != 0,
            self.cas.is_some(),
        )
    }

    /// Appends the item to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        let mut bits = self.bits & !(BIT_HAS_FLAGS | BIT_HAS_CAS | BIT_DEAD);
        if self.flags != 0 {
            bits |= BIT_HAS_FLAGS;
        }
        if self.cas.is_some() {
            bits |= BIT_HAS_CAS;
        }
        let vlen = self.value.0.len() + self.value.1.len();
        out.push(self.key.len() as u8);
        out.push(bits);
        out.push(self.freq);
        out.extend_from_slice(&(vlen as u32).to_le_bytes());
        out.extend_from_slice(&self.exptime.to_le_bytes());
        out.extend_from_slice(&self.atime.to_le_bytes());
        if self.flags != 0 {
            out.extend_from_slice(&self.flags.to_le_bytes());
        }
        if let Some(cas) = self.cas {
            out.extend_from_slice(&cas.to_le_bytes());
        }
        out.extend_from_slice(self.key);
        out.extend_from_slice(self.value.0);
        out.extend_from_slice(self.value.1);
    }
}

/// Size of an item with these parts.
pub fn item_size(key_len: usize, value_len: usize, has_flags: bool, has_cas: bool) -> usize {
    HEADER + key_len + value_len + if has_flags { 4 } else { 0 } + if has_cas { 8 } else { 0 }
}

/// A view of an item at some offset of a segment's bytes.
#[derive(Debug, Clone, Copy)]
pub struct ItemRef<'a> {
    bytes: &'a [u8],
}

impl<'a> ItemRef<'a> {
    /// The item starting at `offset`.
    pub fn at(data: &'a [u8], offset: usize) -> ItemRef<'a> {
        ItemRef {
            bytes: &data[offset..],
        }
    }
    pub fn key_len(&self) -> usize {
        self.bytes[0] as usize
    }
    pub fn bits(&self) -> u8 {
        self.bytes[1]
    }
    pub fn freq(&self) -> u8 {
        self.bytes[2]
    }
    pub fn value_len(&self) -> usize {
        u32::from_le_bytes(self.bytes[3..7].try_into().expect("4 bytes")) as usize
    }
    pub fn exptime(&self) -> u32 {
        u32::from_le_bytes(self.bytes[7..11].try_into().expect("4 bytes"))
    }
    pub fn atime(&self) -> u32 {
        u32::from_le_bytes(self.bytes[11..15].try_into().expect("4 bytes"))
    }
    fn extras(&self) -> usize {
        let bits = self.bits();
        (if bits & BIT_HAS_FLAGS != 0 { 4 } else { 0 })
            + if bits & BIT_HAS_CAS != 0 { 8 } else { 0 }
    }
    pub fn flags(&self) -> u32 {
        if self.bits() & BIT_HAS_FLAGS == 0 {
            return 0;
        }
        u32::from_le_bytes(self.bytes[HEADER..HEADER + 4].try_into().expect("4 bytes"))
    }
    /// The stored CAS, if one was stored explicitly.
    pub fn explicit_cas(&self) -> Option<u64> {
        let bits = self.bits();
        if bits & BIT_HAS_CAS == 0 {
            return None;
        }
        let at = HEADER + if bits & BIT_HAS_FLAGS != 0 { 4 } else { 0 };
        Some(u64::from_le_bytes(
            self.bytes[at..at + 8].try_into().expect("8 bytes"),
        ))
    }
    pub fn key(&self) -> &'a [u8] {
        let start = HEADER + self.extras();
        &self.bytes[start..start + self.key_len()]
    }
    pub fn value(&self) -> &'a [u8] {
        let start = HEADER + self.extras() + self.key_len();
        &self.bytes[start..start + self.value_len()]
    }
    /// Total bytes of this item in its segment.
    pub fn size(&self) -> usize {
        HEADER + self.extras() + self.key_len() + self.value_len()
    }
}

/// Mutable access to the header fields an access updates in place.
pub struct ItemMut<'a> {
    bytes: &'a mut [u8],
}

impl<'a> ItemMut<'a> {
    pub fn at(data: &'a mut [u8], offset: usize) -> ItemMut<'a> {
        ItemMut {
            bytes: &mut data[offset..],
        }
    }
    pub fn set_bits(&mut self, bits: u8) {
        self.bytes[1] = bits;
    }
    pub fn set_freq(&mut self, freq: u8) {
        self.bytes[2] = freq;
    }
    pub fn set_exptime(&mut self, exptime: u32) {
        self.bytes[7..11].copy_from_slice(&exptime.to_le_bytes());
    }
    pub fn set_atime(&mut self, atime: u32) {
        self.bytes[11..15].copy_from_slice(&atime.to_le_bytes());
    }
}

/// memcached's total size of an item (header 48, key + 1, flags 4 when set,
/// value + 2, CAS 8), reported by `me` so it reads like memcached's.
pub fn memcached_size(key_len: usize, value_len: usize, flags: u32) -> usize {
    48 + key_len + 1 + if flags != 0 { 4 } else { 0 } + value_len + 2 + 8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_roundtrip() {
        let item = NewItem {
            key: b"key",
            value: (b"val", b"ue"),
            flags: 7,
            exptime: 100,
            atime: 5,
            bits: BIT_FETCHED,
            freq: 2,
            cas: Some(99),
        };
        let mut buf = vec![0xAA; 3];
        item.write(&mut buf);
        assert_eq!(buf.len(), 3 + item.size());
        let r = ItemRef::at(&buf, 3);
        assert_eq!(r.key(), b"key");
        assert_eq!(r.value(), b"value");
        assert_eq!(r.flags(), 7);
        assert_eq!(r.explicit_cas(), Some(99));
        assert_eq!(r.exptime(), 100);
        assert_eq!(r.atime(), 5);
        assert_eq!(r.freq(), 2);
        assert_eq!(r.size(), item.size());
        assert_eq!(r.bits() & BIT_FETCHED, BIT_FETCHED);
    }

    #[test]
    fn compact_when_no_flags_or_cas() {
        let item = NewItem {
            key: &[b'k'; 16],
            value: (&[b'v'; 64], b""),
            flags: 0,
            exptime: 0,
            atime: 0,
            bits: 0,
            freq: 0,
            cas: None,
        };
        assert_eq!(item.size(), 15 + 16 + 64);
    }
}
