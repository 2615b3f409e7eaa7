//! The shard's segments: items are appended to the write segment of their
//! queue (a new 64 KiB segment when it is full; items over 8 KiB get a
//! segment of their own, sized exactly). Every byte a segment holds is
//! reserved in the engine-wide pool first.

use super::index::{Found, Location};
use super::{ItemRef, Shard};
use crate::store::item::{NewItem, BIT_DEAD, BIT_TOMBSTONE};

/// Size of a regular segment. Items larger than [`DEDICATED_OVER`] get a
/// segment of their own, sized exactly.
pub const SEGMENT_SIZE: usize = 64 * 1024;
/// Items above this size are stored in a dedicated segment.
pub const DEDICATED_OVER: usize = SEGMENT_SIZE / 8;
/// Share of the budget the small (probation) queue may hold.
pub(super) const SMALL_QUEUE_PERCENT: usize = 10;

/// Which FIFO a segment belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Queue {
    Small,
    Main,
}

/// A run of packed items.
pub(super) struct Segment {
    /// The items; capacity is fixed at creation and never reallocated.
    pub(super) data: Vec<u8>,
    /// Unique per segment allocation; with an offset it makes a CAS.
    pub(super) generation: u64,
    /// Bytes reserved for `data` (accounted in the pool).
    pub(super) capacity: usize,
    /// Bytes of items still live, to find segments worth compacting.
    pub(super) live_bytes: usize,
    pub(super) queue: Queue,
}

impl Shard {
    pub(super) fn new_segment(&mut self, capacity: usize, queue: Queue) -> u32 {
        let segment = Segment {
            data: Vec::with_capacity(capacity),
            generation: self.next_generation,
            capacity,
            live_bytes: 0,
            queue,
        };
        self.next_generation += 1;
        self.grow(capacity);
        let id = match self.free_ids.pop() {
            Some(id) => {
                self.segments[id as usize] = Some(segment);
                id
            }
            None => {
                self.segments.push(Some(segment));
                (self.segments.len() - 1) as u32
            }
        };
        match queue {
            Queue::Small => {
                self.small.push_back(id);
                self.small_bytes += capacity;
            }
            Queue::Main => self.main.push_back(id),
        }
        id
    }

    /// Evicts this shard's oldest segments until `extra` more bytes fit in
    /// the pool. False when this shard has nothing left to evict (the
    /// engine then frees memory in other shards).
    pub(super) fn ensure_space(&mut self, extra: usize) -> bool {
        while !self.pool.try_reserve(extra) {
            if !self.evict_one() {
                return false;
            }
        }
        self.reserved += extra;
        self.allocated += extra;
        true
    }

    /// Bytes that must fit in the pool before `size` more bytes of item can
    /// be appended to `queue`.
    pub(super) fn space_needed(&self, size: usize, queue: Queue) -> usize {
        if size > DEDICATED_OVER {
            return size;
        }
        let tail = match queue {
            Queue::Small => self.small_tail,
            Queue::Main => self.main_tail,
        };
        match tail {
            Some(id) if self.segment(id).data.len() + size <= SEGMENT_SIZE => 0,
            _ => SEGMENT_SIZE,
        }
    }

    /// Appends an item to the queue's write segment (or a dedicated one).
    /// The caller has made room (or is evicting, which frees more than it
    /// moves).
    pub(super) fn append(&mut self, item: &NewItem<'_>, queue: Queue) -> Location {
        let size = item.size();
        if size > DEDICATED_OVER {
            let id = self.new_segment(size, queue);
            self.write_at(id, item);
            return Location {
                segment: id,
                offset: 0,
            };
        }
        let tail = match queue {
            Queue::Small => self.small_tail,
            Queue::Main => self.main_tail,
        };
        let tail = match tail {
            Some(id) if self.segment(id).data.len() + size <= SEGMENT_SIZE => id,
            _ => {
                let id = self.new_segment(SEGMENT_SIZE, queue);
                match queue {
                    Queue::Small => self.small_tail = Some(id),
                    Queue::Main => self.main_tail = Some(id),
                }
                id
            }
        };
        let offset = self.segment(tail).data.len() as u32;
        self.write_at(tail, item);
        Location {
            segment: tail,
            offset,
        }
    }

    pub(super) fn write_at(&mut self, id: u32, item: &NewItem<'_>) {
        let size = item.size();
        let segment = self.segment_mut(id);
        item.write(&mut segment.data);
        segment.live_bytes += size;
        self.live_bytes += size;
        if item.bits & BIT_TOMBSTONE != 0 {
            self.tombstones += 1;
        }
    }

    /// Marks an item dead and drops its index entry.
    pub(super) fn unlink(&mut self, found: Found) {
        let size = self.item(found.loc).size();
        let bits = self.item(found.loc).bits();
        self.item_mut(found.loc).set_bits(bits | BIT_DEAD);
        if bits & BIT_TOMBSTONE != 0 {
            self.tombstones -= 1;
        }
        self.segment_mut(found.loc.segment).live_bytes -= size;
        self.live_bytes -= size;
        self.remove_slot(found.slot);
    }

    pub(super) fn free_segment(&mut self, id: u32) {
        let segment = self.segments[id as usize].take().expect("segment to free");
        self.shrink(segment.capacity);
        if segment.queue == Queue::Small {
            self.small_bytes -= segment.capacity;
        }
        if self.small_tail == Some(id) {
            self.small_tail = None;
        }
        if self.main_tail == Some(id) {
            self.main_tail = None;
        }
        self.free_ids.push(id);
    }

    /// Where the live (not dead) items of segment `id` are, in write order.
    pub(super) fn live_items(&self, id: u32) -> Vec<Location> {
        let data = &self.segment(id).data;
        let mut found = Vec::new();
        let mut offset = 0;
        while offset < data.len() {
            let item = ItemRef::at(data, offset);
            if item.bits() & BIT_DEAD == 0 {
                found.push(Location {
                    segment: id,
                    offset: offset as u32,
                });
            }
            offset += item.size();
        }
        found
    }
}
