//! Walking a shard's items in index order, a bounded number of slots per
//! call, for key dumps (warm-up, `lru_crawler metadump`). A walk resumes at
//! a slot; a rebuild of the index in between moves entries, so the caller
//! keeps the index epoch with the slot and starts the shard over when it
//! changed — items may then be seen twice, never skipped.

use super::index::{unpack, EMPTY, TOMBSTONE};
use super::{remaining, Shard};
use crate::store::item::{memcached_size, BIT_FETCHED, BIT_KEY_BINARY, BIT_STALE};
use crate::store::ItemView;

impl Shard {
    /// Changes whenever the index is rebuilt.
    pub fn index_epoch(&self) -> u32 {
        self.index_epoch
    }

    /// Slots in the index now.
    pub fn index_slots(&self) -> usize {
        self.index.len()
    }

    /// Shows `f` the live items (tombstones included, expired and stale
    /// items not) in slots `from..from + slots`, stopping early when `f`
    /// returns false; returns the slot to resume at.
    pub fn scan(
        &self,
        from: usize,
        slots: usize,
        f: &mut dyn FnMut(&ItemView<'_>) -> bool,
    ) -> usize {
        let end = (from + slots).min(self.index.len());
        let mut slot = from;
        while slot < end {
            let entry = self.index[slot];
            slot += 1;
            if entry == EMPTY || entry == TOMBSTONE {
                continue;
            }
            let loc = unpack(entry);
            let item = self.item(loc);
            let deleted = self.is_tombstone(loc);
            if self.is_dead(&item) || (item.bits() & BIT_STALE != 0 && !deleted) {
                continue;
            }
            let ttl = remaining(item.exptime(), self.now);
            let view = ItemView {
                key: item.key(),
                value: if deleted { b"" } else { item.value() },
                flags: if deleted { 0 } else { item.flags() },
                cas: self.cas_of(loc),
                ttl_before: ttl,
                ttl,
                last_access: self.now.saturating_sub(item.atime()),
                fetched_before: item.bits() & BIT_FETCHED != 0,
                won: false,
                stale: false,
                token_sent: false,
                key_binary: item.bits() & BIT_KEY_BINARY != 0,
                vivified: false,
                memcached_size: memcached_size(item.key_len(), item.value_len(), item.flags()),
                deleted,
            };
            if !f(&view) {
                return slot;
            }
        }
        slot
    }
}
