//! memcached's in-place updates on one shard: `incr`/`decr`/`ma` (with
//! memcached's space padding when a number shrinks), `touch`, and
//! `delete`/`md` with CAS, invalidation and value removal.

use super::{remaining, Shard};
use crate::store::item::{NewItem, BIT_FETCHED, BIT_KEY_BINARY, BIT_STALE, BIT_TOKEN_SENT};
use crate::store::number::parse_counter;
use crate::store::{ArithOutcome, ArithRequest, Clock, DeleteOutcome, DeleteRequest, StoreStats};

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
        let Some(found) = self.lookup(hash, req.key) else {
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
                cas: req.new_cas,
            };
            return match self.write_item(hash, &item, false) {
                Some(loc) => ArithOutcome::Done {
                    value: initial,
                    cas: self.cas_of(loc),
                    ttl: remaining(item.exptime, now),
                },
                None => ArithOutcome::OutOfMemory,
            };
        };
        let have = self.cas_of(found.loc);
        if let Some(want) = req.compare_cas {
            if want != 0 && want != have {
                return ArithOutcome::Exists;
            }
        }
        let item = self.item(found.loc);
        let old_len = item.value_len();
        let Some(old) = (if old_len == 0 {
            None
        } else {
            parse_counter(item.value())
        }) else {
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
        if digits.len() <= old_len {
            digits.resize(old_len, b' ');
        }
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
            bits: item.bits() & (BIT_KEY_BINARY | BIT_FETCHED),
            freq: item.freq(),
            cas: req.new_cas,
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
                ttl: remaining(exptime, now),
            },
            None => ArithOutcome::OutOfMemory,
        }
    }

    pub fn touch(&mut self, key: &[u8], exptime: i32, clock: &Clock) -> bool {
        let hash = self.hash(key);
        match self.lookup(hash, key) {
            Some(found) => {
                let exptime = clock.expiry(exptime);
                self.item_mut(found.loc).set_exptime(exptime);
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
        let Some(found) = self.lookup(hash, key) else {
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
                cas: req.new_cas,
            };
            self.write_item(hash, &new_item, true);
            return DeleteOutcome::Deleted;
        }
        self.unlink(found);
        self.stats.delete_hits += 1;
        DeleteOutcome::Deleted
    }
}
