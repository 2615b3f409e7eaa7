//! S3-FIFO eviction, a segment at a time (Yang et al., SOSP'23): the small
//! (probation) queue's oldest segment is evicted while it holds more than
//! its share; its items that were read move to the main queue, the rest
//! leave with their keys remembered in the ghost table. Main-queue items
//! that were read get another round. Also the expiry sweep and flush.

use super::index::{pack, Found, Location, EMPTY, INITIAL_INDEX};
use super::segments::{Queue, SEGMENT_SIZE, SMALL_QUEUE_PERCENT};
use super::{ItemRef, Shard};
use crate::store::item::{NewItem, BIT_FETCHED, BIT_TOMBSTONE};

impl Shard {
    /// Evicts the oldest segment of the queue S3-FIFO picks. Returns false
    /// when there is nothing left to evict.
    pub(super) fn evict_one(&mut self) -> bool {
        let small_over = self.small_bytes * 100 > self.allocated * SMALL_QUEUE_PERCENT;
        let from_small = !self.small.is_empty() && (small_over || self.main.is_empty());
        let id = if from_small {
            self.small.pop_front()
        } else {
            self.main.pop_front().or_else(|| self.small.pop_front())
        };
        let Some(id) = id else {
            return false;
        };
        let queue = self.segment(id).queue;
        if self.small_tail == Some(id) {
            self.small_tail = None;
        }
        if self.main_tail == Some(id) {
            self.main_tail = None;
        }
        // A dedicated segment holds one item: keep a popular one by moving
        // the whole segment to the back of the main queue.
        if self.segment(id).capacity != SEGMENT_SIZE && self.segment(id).live_bytes > 0 {
            let item = ItemRef::at(&self.segment(id).data, 0);
            let freq = item.freq();
            if freq > 0 && !self.is_dead(&item) {
                let loc = Location {
                    segment: id,
                    offset: 0,
                };
                self.item_mut(loc).set_freq(freq - 1);
                if queue == Queue::Small {
                    self.small_bytes -= self.segment(id).capacity;
                    self.segment_mut(id).queue = Queue::Main;
                    self.stats.promoted += 1;
                }
                self.main.push_back(id);
                return true;
            }
        }
        let mut scratch = Vec::new();
        for loc in self.live_items(id) {
            let item = self.item(loc);
            let hash = self.hash(item.key());
            let slot = self.slot_of(hash, loc).expect("live item is indexed");
            let found = Found { slot, loc };
            if self.is_dead(&item) {
                self.reclaim(found);
            } else if item.freq() > 0 {
                let cas = self.cas_of(loc);
                let item = self.item(loc);
                // A tombstone keeps its rounds: items leave before it does.
                let freq = if queue == Queue::Small && item.bits() & BIT_TOMBSTONE == 0 {
                    0
                } else {
                    item.freq() - 1
                };
                scratch.clear();
                NewItem {
                    key: item.key(),
                    value: (item.value(), b""),
                    flags: item.flags(),
                    exptime: item.exptime(),
                    atime: item.atime(),
                    bits: item.bits(),
                    freq,
                    cas: Some(cas),
                }
                .write(&mut scratch);
                self.unlink(found);
                self.index_tombstones -= 1; // the slot is reused right away
                self.index_len += 1;
                let moved = ItemRef::at(&scratch, 0);
                let new_item = NewItem {
                    key: moved.key(),
                    value: (moved.value(), b""),
                    flags: moved.flags(),
                    exptime: moved.exptime(),
                    atime: moved.atime(),
                    bits: moved.bits(),
                    freq: moved.freq(),
                    cas: moved.explicit_cas(),
                };
                let new_loc = self.append(&new_item, Queue::Main);
                self.index[slot] = pack(hash, new_loc);
                if queue == Queue::Small {
                    self.stats.promoted += 1;
                }
            } else if item.bits() & BIT_TOMBSTONE != 0 {
                self.unlink(found);
                self.stats.tombstones_evicted += 1;
            } else {
                let fetched = item.bits() & BIT_FETCHED != 0;
                self.unlink(found);
                self.stats.evictions += 1;
                if !fetched {
                    self.stats.evicted_unfetched += 1;
                }
                if queue == Queue::Small {
                    let (slot, fp) = self.ghost_slot(hash);
                    self.ghost[slot] = fp;
                }
            }
        }
        self.free_segment(id);
        true
    }

    /// Drops an expired item, counting it as memcached does.
    pub(super) fn reclaim(&mut self, found: Found) {
        let bits = self.item(found.loc).bits();
        self.unlink(found);
        if bits & BIT_TOMBSTONE != 0 {
            return; // its time ran out: nothing memcached would count
        }
        let fetched = bits & BIT_FETCHED != 0;
        self.stats.reclaimed += 1;
        if !fetched {
            self.stats.expired_unfetched += 1;
        }
    }

    /// Drops everything (flush_all).
    pub fn clear(&mut self) {
        let ids: Vec<u32> = self.small.drain(..).chain(self.main.drain(..)).collect();
        for id in ids {
            self.free_segment(id);
        }
        let old_index = self.index_bytes();
        self.index = vec![EMPTY; INITIAL_INDEX];
        self.index_epoch = self.index_epoch.wrapping_add(1);
        self.ghost = vec![0; INITIAL_INDEX / 2];
        self.allocated = self.allocated - old_index + self.index_bytes();
        self.index_len = 0;
        self.index_tombstones = 0;
        self.tombstones = 0;
        self.live_bytes = 0;
    }

    /// Reclaims expired items in up to `max_segments` segments, and compacts
    /// segments that are mostly garbage so dead bytes don't push out live ones.
    pub fn sweep(&mut self, max_segments: usize) {
        let total = self.segments.len();
        if total == 0 {
            return;
        }
        for _ in 0..max_segments.min(total) {
            self.sweep_cursor = (self.sweep_cursor + 1) % total;
            let id = self.sweep_cursor as u32;
            if self.segments[id as usize].is_none() {
                continue;
            }
            for loc in self.live_items(id) {
                let item = self.item(loc);
                if self.is_dead(&item) {
                    let hash = self.hash(item.key());
                    if let Some(slot) = self.slot_of(hash, loc) {
                        self.reclaim(Found { slot, loc });
                    }
                }
            }
            let segment = self.segment(id);
            let is_tail = self.small_tail == Some(id) || self.main_tail == Some(id);
            if !is_tail && segment.live_bytes == 0 {
                self.small.retain(|&s| s != id);
                self.main.retain(|&s| s != id);
                self.free_segment(id);
            }
        }
    }
}
