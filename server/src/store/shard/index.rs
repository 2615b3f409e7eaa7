//! The shard's index: open addressing over 8-byte entries that pack a tag
//! of the key's hash with the item's segment and offset, so a lookup
//! touches the item only when the tag matches. Beside it the ghost table:
//! fingerprints of keys recently evicted from the small queue, which
//! S3-FIFO admits straight to the main queue when they come back.
//!
//! The index is any length (a key's first slot is its hash scaled to the
//! length), sized at a rebuild so live entries fill 60 % of it, and rebuilt
//! once entries and deleted slots fill 80 %. Powers of two would leave it
//! between a quarter and half full after a doubling, and a shard that
//! crossed half full once during a fill kept the doubled index under
//! churn: a tenth of `-m` held empty slots instead of items. The ghost
//! table, half the index's length, keeps its fingerprints when resized.

use super::Shard;

/// Initial index slots per shard, and the step index lengths are rounded to.
pub(super) const INITIAL_INDEX: usize = 1024;

/// Percent of the index live entries fill after a rebuild.
const FILL_AFTER_REBUILD: usize = 60;

/// Percent of the index that live entries and deleted slots together may
/// fill before a rebuild.
const FILL_BEFORE_REBUILD: usize = 80;
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
    /// The slot a probe for `hash` starts at: the hash's low 32 bits
    /// scaled to the index's length.
    fn home(&self, hash: u64) -> usize {
        (((hash & 0xffff_ffff) * self.index.len() as u64) >> 32) as usize
    }

    /// The slot after `slot`, wrapping.
    fn next(&self, slot: usize) -> usize {
        if slot + 1 == self.index.len() {
            0
        } else {
            slot + 1
        }
    }

    pub(super) fn find(&self, hash: u64, key: &[u8]) -> Option<Found> {
        let tag = tag_of(hash);
        let mut slot = self.home(hash);
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
            slot = self.next(slot);
        }
    }

    /// The slot holding exactly this entry (used when walking a segment).
    pub(super) fn slot_of(&self, hash: u64, loc: Location) -> Option<usize> {
        let wanted = pack(hash, loc);
        let mut slot = self.home(hash);
        loop {
            match self.index[slot] {
                EMPTY => return None,
                e if e == wanted => return Some(slot),
                _ => slot = self.next(slot),
            }
        }
    }

    pub(super) fn insert_entry(&mut self, hash: u64, loc: Location) {
        let mut slot = self.home(hash);
        loop {
            match self.index[slot] {
                EMPTY => break,
                TOMBSTONE => {
                    self.index_tombstones -= 1;
                    break;
                }
                _ => slot = self.next(slot),
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

    /// Makes room in the index for one more entry: past
    /// [`FILL_BEFORE_REBUILD`] it is rebuilt without its deleted slots, at
    /// the same length while live entries would fill 45–65 % of it, else
    /// (and the ghost table with it) at the length they fill 60 % of.
    pub(super) fn reserve_index(&mut self) -> bool {
        let cap = self.index.len();
        if (self.index_len + self.index_tombstones + 1) * 100 <= cap * FILL_BEFORE_REBUILD {
            return true;
        }
        let new_cap = index_length(self.index_len + 1, cap);
        let extra = new_cap.saturating_sub(cap) * 10;
        if extra > 0 && !self.ensure_space(extra) {
            return false;
        }
        // Evictions may have freed enough that a smaller index suffices.
        let new_cap = index_length(self.index_len + 1, cap);
        let old = std::mem::replace(&mut self.index, vec![EMPTY; new_cap]);
        self.index_epoch = self.index_epoch.wrapping_add(1);
        if new_cap != cap {
            self.resize_ghost(new_cap / 2);
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

    /// A key's ghost: its fingerprint, and the slot the fingerprint picks
    /// (so a resized table can place the fingerprints it keeps).
    pub(super) fn ghost_slot(&self, hash: u64) -> (usize, u32) {
        let fp = (hash >> 32) as u32 | 1;
        (ghost_slot_of(fp, self.ghost.len()), fp)
    }

    /// A ghost table of `len` slots holding the current one's fingerprints
    /// (two that now pick the same slot keep one).
    fn resize_ghost(&mut self, len: usize) {
        let mut ghost = vec![0; len];
        for &fp in self.ghost.iter().filter(|&&fp| fp != 0) {
            ghost[ghost_slot_of(fp, len)] = fp;
        }
        self.ghost = ghost;
    }
}

fn ghost_slot_of(fp: u32, len: usize) -> usize {
    ((u64::from(fp) * len as u64) >> 32) as usize
}

/// The index length for `live` entries: `current` while they fill 45–65 %
/// of it (a rebuild then only drops deleted slots, and the ghost table
/// stays), else the length they fill [`FILL_AFTER_REBUILD`] % of, in steps
/// of [`INITIAL_INDEX`] and never below it.
fn index_length(live: usize, current: usize) -> usize {
    if (45..=65).contains(&(live * 100 / current)) {
        return current;
    }
    let wanted = live * 100 / FILL_AFTER_REBUILD;
    wanted.div_ceil(INITIAL_INDEX).max(1) * INITIAL_INDEX
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_is_resized_only_when_far_from_sixty_percent_full() {
        assert_eq!(index_length(600, 1024), 1024);
        assert_eq!(index_length(500, 1024), 1024);
        assert_eq!(index_length(700, 1024), 2048);
        assert_eq!(index_length(10, 1024), 1024, "never below the step");
        // A shard that grew to 131,072 slots and holds 34,000 items under
        // churn shrinks to what they need.
        assert_eq!(index_length(34_000, 131_072), 57_344);
        assert_eq!(index_length(40_000, 65_536), 65_536);
        assert_eq!(index_length(60_000, 65_536), 100_352);
    }
}
