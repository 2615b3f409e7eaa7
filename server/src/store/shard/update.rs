//! memcached's in-place updates on one shard: `incr`/`decr`/`ma` (with
//! memcached's space padding when a number shrinks), `touch`, and
//! `delete`/`md` with CAS, invalidation and value removal.

use super::index::Found;
use super::{remaining, Shard};
use crate::store::item::{
    NewItem, BIT_FETCHED, BIT_KEY_BINARY, BIT_STALE, BIT_TOKEN_SENT, BIT_TOMBSTONE, MAX_FREQ,
};
use crate::store::number::parse_counter;
use crate::store::{
    ArithOutcome, ArithRequest, Clock, DeleteOutcome, DeleteRequest, StoreStats, Version,
};

impl Shard {
    pub fn arith(&mut self, req: &ArithRequest<'_>, clock: &Clock) -> ArithOutcome {
        let now = self.now;
        let hash = self.hash(req.key);
        let count_miss = |stats: &mut StoreStats| {
            if req.incr {
                stats.incr_misses += 1;
            } else {
                stats.decr_misses += 1;
            }
        };
        let held = self.lookup(hash, req.key);
        let held_cas = held.map(|f| self.cas_of(f.loc));
        // A tombstone counts as absent (vivify replaces it).
        let Some(found) = held.filter(|f| !self.is_tombstone(f.loc)) else {
            let Some((ttl, initial)) = req.vivify else {
                count_miss(&mut self.stats);
                return ArithOutcome::NotFound;
            };
            let digits = initial.to_string();
            let item = NewItem {
                key: req.key,
                value: (digits.as_bytes(), b""),
                flags: 0,
                exptime: clock.expiry(ttl),
                atime: now,
                bits: if req.key_binary { BIT_KEY_BINARY } else { 0 },
                freq: 0,
                cas: req.version.cas_over(held_cas),
            };
            return match self.write_item(hash, &item, held.is_some()) {
                Some(loc) => ArithOutcome::Done {
                    value: initial,
                    cas: self.cas_of(loc),
                    ttl_before: -1,
                    vivified: true,
                },
                None => ArithOutcome::OutOfMemory,
            };
        };
        // memcached's order: an empty value, then the CAS, then the digits.
        let old_len = self.item(found.loc).value_len();
        if old_len == 0 {
            return ArithOutcome::NonNumeric;
        }
        let have = self.cas_of(found.loc);
        if let Some(want) = req.compare_cas {
            if want != 0 && want != have {
                return ArithOutcome::Exists;
            }
        }
        let item = self.item(found.loc);
        let Some(old) = parse_counter(item.value()) else {
            return ArithOutcome::NonNumeric;
        };
        let value = if req.incr {
            old.wrapping_add(req.delta)
        } else {
            old.saturating_sub(req.delta)
        };
        let mut digits = value.to_string().into_bytes();
        // memcached rewrites in place when the number got no longer, padding
        // with spaces; `get` then shows those spaces, so we do the same.
        // In place the item keeps its marks (stale, token sent, fetched); a
        // longer number is a new item, marked afresh.
        let in_place = digits.len() <= old_len;
        let kept = if in_place {
            item.bits()
        } else {
            item.bits() & BIT_KEY_BINARY
        };
        if in_place {
            digits.resize(old_len, b' ');
        }
        let ttl_before = remaining(item.exptime(), now);
        let exptime = match req.touch {
            Some(t) => clock.expiry(t),
            None => item.exptime(),
        };
        let new_item = NewItem {
            key: req.key,
            value: (&digits, b""),
            flags: item.flags(),
            exptime,
            atime: now,
            bits: kept,
            freq: item.freq(),
            cas: req.version.cas_over(held_cas),
        };
        if req.incr {
            self.stats.incr_hits += 1;
        } else {
            self.stats.decr_hits += 1;
        }
        match self.write_item(hash, &new_item, true) {
            Some(loc) => ArithOutcome::Done {
                value,
                cas: self.cas_of(loc),
                ttl_before,
                vivified: false,
            },
            None => ArithOutcome::OutOfMemory,
        }
    }

    pub fn touch(&mut self, key: &[u8], exptime: i32, clock: &Clock) -> bool {
        let hash = self.hash(key);
        match self.lookup(hash, key).filter(|f| !self.is_tombstone(f.loc)) {
            Some(found) => {
                // A touch is an access, as in memcached: fetched, bumped.
                let item = self.item(found.loc);
                let bits = item.bits() | BIT_FETCHED;
                let freq = (item.freq() + 1).min(MAX_FREQ);
                let now = self.now;
                let mut m = self.item_mut(found.loc);
                m.set_exptime(clock.expiry(exptime));
                m.set_bits(bits);
                m.set_freq(freq);
                m.set_atime(now);
                self.stats.touch_hits += 1;
                true
            }
            None => {
                self.stats.touch_misses += 1;
                false
            }
        }
    }

    pub fn delete(&mut self, key: &[u8], req: &DeleteRequest, clock: &Clock) -> DeleteOutcome {
        let hash = self.hash(key);
        let held = self.lookup(hash, key);
        let plain = req.compare_cas.is_none() && !req.invalidate && !req.remove_value;
        if let (Version::Newer(version) | Version::Decided(version), true) = (req.version, plain) {
            return self.delete_versioned(hash, key, held, version, clock);
        }
        let Some(found) = held.filter(|f| !self.is_tombstone(f.loc)) else {
            self.stats.delete_misses += 1;
            return DeleteOutcome::NotFound;
        };
        if let Some(want) = req.compare_cas {
            if want != self.cas_of(found.loc) {
                self.stats.delete_misses += 1;
                return DeleteOutcome::Exists;
            }
        }
        if req.invalidate || req.remove_value {
            let item = self.item(found.loc);
            let mut bits = item.bits();
            let mut exptime = item.exptime();
            if req.invalidate {
                bits = (bits | BIT_STALE) & !BIT_TOKEN_SENT;
                if let Some(t) = req.ttl {
                    exptime = clock.expiry(t);
                }
            }
            let value = if req.remove_value {
                Vec::new()
            } else {
                item.value().to_vec()
            };
            let key = item.key().to_vec();
            let new_item = NewItem {
                key: &key,
                value: (&value, b""),
                flags: item.flags(),
                exptime,
                atime: item.atime(),
                bits,
                freq: item.freq(),
                cas: req.version.cas_over(None),
            };
            self.write_item(hash, &new_item, true);
            return DeleteOutcome::Deleted;
        }
        self.unlink(found);
        self.stats.delete_hits += 1;
        DeleteOutcome::Deleted
    }

    /// A delete carrying a cluster version: unless the key holds something
    /// newer, it leaves a tombstone with that version (also where the key
    /// was absent), so an older copy arriving later is refused and a reader
    /// comparing versions sees the delete.
    fn delete_versioned(
        &mut self,
        hash: u64,
        key: &[u8],
        held: Option<Found>,
        version: u64,
        clock: &Clock,
    ) -> DeleteOutcome {
        let was_live = held.is_some_and(|f| !self.is_tombstone(f.loc));
        if was_live {
            self.stats.delete_hits += 1;
        } else {
            self.stats.delete_misses += 1;
        }
        let outcome = if was_live {
            DeleteOutcome::Deleted
        } else {
            DeleteOutcome::NotFound
        };
        let held_cas = held.map(|f| self.cas_of(f.loc));
        if Version::Newer(version).superseded_by(held_cas) {
            self.stats.versions_superseded += 1;
            return outcome;
        }
        let tombstone = NewItem {
            key,
            value: (b"", b""),
            flags: 0,
            exptime: clock.expiry(self.tombstone_secs as i32),
            atime: self.now,
            bits: BIT_TOMBSTONE | BIT_FETCHED,
            // Popular to S3-FIFO: items leave before tombstones do.
            freq: MAX_FREQ,
            cas: Some(version),
        };
        self.stats.tombstones_written += 1;
        if self.write_item(hash, &tombstone, held.is_some()).is_none() {
            // No room even for a tombstone: at least the value goes.
            self.stats.tombstones_evicted += 1;
            if let Some(found) = self.find(hash, key) {
                self.unlink(found);
            }
        }
        outcome
    }
}
