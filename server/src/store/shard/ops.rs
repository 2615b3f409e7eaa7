//! memcached's reads and stores on one shard: lookups that drop expired
//! items, `get`/`gat`/`mg` with their touch, recache and vivify rules, and
//! the store modes with CAS, append/prepend and invalidation.

use super::index::{Found, Location};
use super::segments::Queue;
use super::{expired, remaining, Shard};
use crate::store::item::{
    memcached_size, NewItem, BIT_FETCHED, BIT_KEY_BINARY, BIT_STALE, BIT_TOKEN_SENT, MAX_FREQ,
};
use crate::store::{
    Clock, ItemView, ReadOptions, StoreKind, StoreOutcome, StoreRequest, StoreStatus,
};

impl Shard {
    /// Looks a key up, dropping it when expired.
    pub(super) fn lookup(&mut self, hash: u64, key: &[u8]) -> Option<Found> {
        let found = self.find(hash, key)?;
        if self.is_dead(&self.item(found.loc)) {
            self.reclaim(found);
            return None;
        }
        Some(found)
    }

    /// Writes a new item for `item.key`, replacing the current one when
    /// `replace` is set. Room is made first, so on failure (None) the old
    /// item is untouched and the engine may free memory elsewhere and retry.
    pub(super) fn write_item(
        &mut self,
        hash: u64,
        item: &NewItem<'_>,
        replace: bool,
    ) -> Option<Location> {
        if !self.reserve_index() {
            return None;
        }
        let (slot, fp) = self.ghost_slot(hash);
        let returning = self.ghost[slot] == fp;
        let queue = if returning { Queue::Main } else { Queue::Small };
        let needed = self.space_needed(item.size(), queue);
        if needed > 0 && !self.ensure_space(needed) {
            self.release_reserved();
            return None;
        }
        if returning {
            self.ghost[slot] = 0;
            self.stats.ghost_hits += 1;
        }
        // Making room may have moved or evicted the old item: look it up anew.
        if replace {
            if let Some(old) = self.find(hash, item.key) {
                self.unlink(old);
            }
        }
        let loc = self.append(item, queue);
        self.release_reserved();
        self.insert_entry(hash, loc);
        self.stats.total_items += 1;
        Some(loc)
    }

    pub fn read(
        &mut self,
        key: &[u8],
        opts: ReadOptions,
        clock: &Clock,
        f: &mut dyn FnMut(Option<&ItemView<'_>>),
    ) {
        let now = self.now;
        let hash = self.hash(key);
        let touching = opts.touch.is_some();
        let found = match self.find(hash, key) {
            Some(f) if self.is_dead(&self.item(f.loc)) => {
                if !self.is_tombstone(f.loc) {
                    if expired(self.item(f.loc).exptime(), now) {
                        self.stats.get_expired += 1;
                    } else {
                        self.stats.get_flushed += 1;
                    }
                }
                self.reclaim(f);
                None
            }
            other => other,
        };
        // A tombstone reads as a miss, unless the reader compares versions.
        let tombstone = found.filter(|f| self.is_tombstone(f.loc));
        if let (Some(t), true) = (tombstone, opts.tombstones) {
            let item = self.item(t.loc);
            let ttl = remaining(item.exptime(), now);
            let view = ItemView {
                key: item.key(),
                value: b"",
                flags: 0,
                cas: self.cas_of(t.loc),
                ttl_before: ttl,
                ttl,
                last_access: 0,
                fetched_before: false,
                won: false,
                stale: false,
                token_sent: false,
                key_binary: item.bits() & BIT_KEY_BINARY != 0,
                vivified: false,
                memcached_size: 0,
                deleted: true,
            };
            f(Some(&view));
            return;
        }
        let found = found.filter(|_| tombstone.is_none());
        let Some(found) = found else {
            if let Some(ttl) = opts.vivify {
                let mut bits = BIT_TOKEN_SENT;
                if opts.key_binary {
                    bits |= BIT_KEY_BINARY;
                }
                // memcached bumps the item it just created, as any read.
                if !opts.no_update {
                    bits |= BIT_FETCHED;
                }
                let item = NewItem {
                    key,
                    value: (b"", b""),
                    flags: 0,
                    exptime: clock.expiry(ttl),
                    atime: now,
                    bits,
                    freq: 0,
                    cas: None,
                };
                if let Some(loc) = self.write_item(hash, &item, tombstone.is_some()) {
                    let cas = self.cas_of(loc);
                    let ttl = remaining(item.exptime, now);
                    let view = ItemView {
                        key,
                        value: b"",
                        flags: 0,
                        cas,
                        // memcached creates it without a TTL, then applies N/T.
                        ttl_before: -1,
                        ttl,
                        last_access: 0,
                        fetched_before: false,
                        won: true,
                        stale: false,
                        token_sent: false,
                        key_binary: opts.key_binary,
                        vivified: true,
                        memcached_size: memcached_size(key.len(), 0, 0),
                        deleted: false,
                    };
                    f(Some(&view));
                    return;
                }
            }
            if touching {
                self.stats.touch_misses += 1;
            } else {
                self.stats.get_misses += 1;
            }
            f(None);
            return;
        };
        let loc = found.loc;
        let cas = self.cas_of(loc);
        let item = self.item(loc);
        let (mut bits, freq, atime) = (item.bits(), item.freq(), item.atime());
        let ttl_before = remaining(item.exptime(), now);
        let mut exptime = item.exptime();
        if let Some(t) = opts.touch {
            exptime = clock.expiry(t);
        }
        let token_sent = bits & BIT_TOKEN_SENT != 0;
        let stale = bits & BIT_STALE != 0;
        let mut won = false;
        if let Some(r) = opts.recache {
            let at_r = if opts.recache_sees_touch {
                exptime
            } else {
                item.exptime()
            };
            if !token_sent && at_r != 0 && at_r < clock.expiry(r) {
                won = true;
            }
        }
        if stale && !token_sent && opts.win_tokens {
            won = true;
        }
        if won {
            bits |= BIT_TOKEN_SENT;
        }
        let fetched_before = bits & BIT_FETCHED != 0;
        let mut new_atime = atime;
        let mut new_freq = freq;
        if !opts.no_update {
            bits |= BIT_FETCHED;
            new_atime = now;
            new_freq = (freq + 1).min(MAX_FREQ);
        }
        {
            let mut m = self.item_mut(loc);
            m.set_bits(bits);
            m.set_freq(new_freq);
            m.set_atime(new_atime);
            m.set_exptime(exptime);
        }
        if touching {
            self.stats.touch_hits += 1;
        } else {
            self.stats.get_hits += 1;
        }
        let item = self.item(loc);
        let view = ItemView {
            key: item.key(),
            value: item.value(),
            flags: item.flags(),
            cas,
            ttl_before,
            ttl: remaining(exptime, now),
            last_access: now.saturating_sub(atime),
            fetched_before,
            won,
            stale,
            token_sent,
            key_binary: bits & BIT_KEY_BINARY != 0,
            vivified: false,
            memcached_size: memcached_size(item.key_len(), item.value_len(), item.flags()),
            deleted: false,
        };
        f(Some(&view));
    }

    pub fn store(&mut self, req: &StoreRequest<'_>, clock: &Clock) -> StoreOutcome {
        let now = self.now;
        let hash = self.hash(req.key);
        let held = self.lookup(hash, req.key);
        let held_cas = held.map(|f| self.cas_of(f.loc));
        if req.version.superseded_by(held_cas) {
            // Ordered before what the key holds: a set happened and was
            // overwritten; a conditional store did not happen.
            self.stats.versions_superseded += 1;
            let plain_set = kind_is_plain_set(req);
            return StoreOutcome {
                status: if plain_set {
                    StoreStatus::Stored
                } else {
                    StoreStatus::NotStored
                },
                cas: held_cas.unwrap_or(0),
            };
        }
        // A tombstone is no item to the modes; the new item replaces it.
        let existing = held.filter(|f| !self.is_tombstone(f.loc));
        let miss = StoreOutcome {
            status: StoreStatus::NotStored,
            cas: 0,
        };
        let mut exptime = clock.expiry(req.exptime);
        let mut stale = false;
        let mut kind = req.kind;
        match (kind, existing) {
            (StoreKind::Add, Some(_)) => return miss,
            (StoreKind::Append | StoreKind::Prepend, None) => match req.vivify {
                Some(ttl) => {
                    kind = StoreKind::Set;
                    exptime = clock.expiry(ttl);
                }
                None => return miss,
            },
            (StoreKind::Replace, None) if req.compare_cas.is_none() => return miss,
            _ => {}
        }
        // A CAS turns set/replace into memcached's CAS mode; append and
        // prepend check it too. add ignores it, as memcached's does.
        if let (Some(want), false) = (req.compare_cas, kind == StoreKind::Add) {
            let Some(found) = existing else {
                self.stats.cas_misses += 1;
                return StoreOutcome {
                    status: StoreStatus::NotFound,
                    cas: 0,
                };
            };
            let have = self.cas_of(found.loc);
            // To append and prepend CAS 0 is no CAS; to memcached's CAS
            // mode (set, replace) it is a mismatch.
            let appending = matches!(kind, StoreKind::Append | StoreKind::Prepend);
            if have != want && !(appending && want == 0) {
                // memcached never takes CAS 0 as an older version.
                if req.invalidate
                    && want != 0
                    && want < have
                    && matches!(kind, StoreKind::Set | StoreKind::Replace)
                {
                    stale = true;
                    exptime = self.item(found.loc).exptime();
                } else {
                    self.stats.cas_badval += 1;
                    return StoreOutcome {
                        status: StoreStatus::Exists,
                        cas: 0,
                    };
                }
            }
            self.stats.cas_hits += 1;
        }
        let mut bits = if req.key_binary { BIT_KEY_BINARY } else { 0 };
        if stale {
            bits |= BIT_STALE;
        }
        // Append and prepend keep the old flags and TTL; the combined value is
        // copied out first because making room may move the old item.
        let combined;
        let (value, flags) = match (kind, existing) {
            (StoreKind::Append | StoreKind::Prepend, Some(found)) => {
                let old = self.item(found.loc);
                exptime = old.exptime();
                let flags = old.flags();
                combined = if kind == StoreKind::Append {
                    [old.value(), req.value].concat()
                } else {
                    [req.value, old.value()].concat()
                };
                (&combined[..], flags)
            }
            _ => (req.value, req.flags),
        };
        let item = NewItem {
            key: req.key,
            value: (value, b""),
            flags,
            exptime,
            atime: now,
            bits,
            freq: 0,
            cas: req.version.cas_over(held_cas),
        };
        match self.write_item(hash, &item, held.is_some()) {
            Some(loc) => StoreOutcome {
                status: StoreStatus::Stored,
                cas: self.cas_of(loc),
            },
            None => StoreOutcome {
                status: StoreStatus::OutOfMemory,
                cas: 0,
            },
        }
    }
}

fn kind_is_plain_set(req: &StoreRequest<'_>) -> bool {
    req.kind == StoreKind::Set && req.compare_cas.is_none()
}
