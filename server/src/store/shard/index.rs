//! The shard's index: open addressing over 8-byte entries that pack a tag
//! of the key's hash with the item's segment and offset, so a lookup
//! touches the item only when the tag matches. Beside it the ghost table:
//! fingerprints of keys recently evicted from the small queue, which
//! S3-FIFO admits straight to the main queue when they come back.

use super::Shard;

/// Initial index slots per shard.
pub(super) const INITIAL_INDEX: usize = 1024;
/// Empty index slot.
pub(super) const EMPTY: u64 = 0;
/// Deleted index slot (probing continues past it).
pub(super) const TOMBSTONE: u64 = 1;

/// Where an item lives: packed into index entries as
/// `tag (16 bits) | segment (28 bits) | offset (20 bits)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Location {
    pub(super) segment: u32,
    pub(super) offset: u32,
}

pub(super) fn tag_of(hash: u64) -> u64 {
    ((hash >> 40) & 0xffff) | 1
}

pub(super) fn pack(hash: u64, loc: Location) -> u64 {
    (tag_of(hash) << 48) | (u64::from(loc.segment) << 20) | u64::from(loc.offset)
}

pub(super) fn unpack(entry: u64) -> Location {
    Location {
        segment: ((entry >> 20) & 0x0fff_ffff) as u32,
        offset: (entry & 0xf_ffff) as u32,
    }
}

/// A key's index slot and its item's location.
#[derive(Debug, Clone, Copy)]
pub(super) struct Found {
    pub(super) slot: usize,
    pub(super) loc: Location,
}

impl Shard {
    pub(super) fn find(&self, hash: u64, key: &[u8]) -> Option<Found> {
        let tag = tag_of(hash);
        let mask = self.index.len() - 1;
        let mut slot = hash as usize & mask;
        loop {
            let entry = self.index[slot];
            if entry == EMPTY {
                return None;
            }
            if entry != TOMBSTONE && entry >> 48 == tag {
                let loc = unpack(entry);
                if self.item(loc).key() == key {
                    return Some(Found { slot, loc });
                }
            }
            slot = (slot + 1) & mask;
        }
    }

    /// The slot holding exactly this entry (used when walking a segment).
    pub(super) fn slot_of(&self, hash: u64, loc: Location) -> Option<usize> {
        let wanted = pack(hash, loc);
        let mask = self.index.len() - 1;
        let mut slot = hash as usize & mask;
        loop {
            match self.index[slot] {
                EMPTY => return None,
                e if e == wanted => return Some(slot),
                _ => slot = (slot + 1) & mask,
            }
        }
    }

    pub(super) fn insert_entry(&mut self, hash: u64, loc: Location) {
        let mask = self.index.len() - 1;
        let mut slot = hash as usize & mask;
        loop {
            match self.index[slot] {
                EMPTY => break,
                TOMBSTONE => {
                    self.index_tombstones -= 1;
                    break;
                }
                _ => slot = (slot + 1) & mask,
            }
        }
        self.index[slot] = pack(hash, loc);
        self.index_len += 1;
    }

    pub(super) fn remove_slot(&mut self, slot: usize) {
        self.index[slot] = TOMBSTONE;
        self.index_len -= 1;
        self.index_tombstones += 1;
    }

    /// Makes room in the index for one more entry, rebuilding or doubling it
    /// (and the ghost table with it) when it is 3/4 full.
    pub(super) fn reserve_index(&mut self) -> bool {
        let cap = self.index.len();
        if (self.index_len + self.index_tombstones + 1) * 4 <= cap * 3 {
            return true;
        }
        let new_cap = if (self.index_len + 1) * 2 > cap {
            cap * 2
        } else {
            cap
        };
        let extra = (new_cap - cap) * 8 + (new_cap - cap) / 2 * 4;
        if extra > 0 && !self.ensure_space(extra) {
            return false;
        }
        // Evictions may have freed enough that a same-size rebuild suffices.
        let new_cap = if (self.index_len + 1) * 2 > cap {
            cap * 2
        } else {
            cap
        };
        let old = std::mem::replace(&mut self.index, vec![EMPTY; new_cap]);
        self.index_epoch = self.index_epoch.wrapping_add(1);
        if new_cap != cap {
            self.ghost = vec![0; new_cap / 2];
        }
        self.index_len = 0;
        self.index_tombstones = 0;
        for entry in old {
            if entry > TOMBSTONE {
                let loc = unpack(entry);
                let hash = self.hash(self.item(loc).key());
                self.insert_entry(hash, loc);
            }
        }
        self.shrink(cap * 8 + cap / 2 * 4);
        self.grow(self.index_bytes());
        self.release_reserved();
        true
    }

    pub(super) fn ghost_slot(&self, hash: u64) -> (usize, u32) {
        let slot = (hash >> 20) as usize & (self.ghost.len() - 1);
        (slot, (hash >> 32) as u32 | 1)
    }
}
