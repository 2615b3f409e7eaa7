//! One shard of the engine: a log of fixed-size segments holding packed
//! items, an open-addressing index, and S3-FIFO eviction applied a segment
//! at a time.
//!
//! S3-FIFO (Yang et al., SOSP'23) keeps a small probation FIFO (~10 % of
//! memory) and a main FIFO. New items enter the small queue; when its oldest
//! segment is evicted, items that were read since they were written move to
//! the main queue and the rest leave, their keys remembered in a ghost table.
//! A key that comes back while in the ghost table enters the main queue
//! directly. Main-queue items that were read get another round with their
//! frequency decremented. One-hit wonders therefore leave quickly, while
//! popular items stay, which beats LRU on skewed workloads.
//!
//! Everything a shard holds — segment buffers, the index and the ghost table
//! — is accounted in the engine-wide [`Pool`], so memory follows demand
//! across shards and `-m` bounds the whole engine.

use std::collections::VecDeque;
use std::sync::Arc;

use super::item::{
    memcached_size, ItemMut, ItemRef, NewItem, BIT_DEAD, BIT_FETCHED, BIT_KEY_BINARY, BIT_STALE,
    BIT_TOKEN_SENT, MAX_FREQ,
};
use super::pool::Pool;
use super::{
    ArithOutcome, ArithRequest, Clock, DeleteOutcome, DeleteRequest, ItemView, ReadOptions,
    StoreKind, StoreOutcome, StoreRequest, StoreStats, StoreStatus,
};

/// Size of a regular segment. Items larger than [`DEDICATED_OVER`] get a
/// segment of their own, sized exactly.
pub const SEGMENT_SIZE: usize = 64 * 1024;
/// Items above this size are stored in a dedicated segment.
pub const DEDICATED_OVER: usize = SEGMENT_SIZE / 8;
/// Share of the budget the small (probation) queue may hold.
const SMALL_QUEUE_PERCENT: usize = 10;
/// Initial index slots per shard.
const INITIAL_INDEX: usize = 1024;
/// Empty index slot.
const EMPTY: u64 = 0;
/// Deleted index slot (probing continues past it).
const TOMBSTONE: u64 = 1;

/// Which FIFO a segment belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Queue {
    Small,
    Main,
}

/// A run of packed items.
struct Segment {
    /// The items; capacity is fixed at creation and never reallocated.
    data: Vec<u8>,
    /// Unique per segment allocation; with an offset it makes a CAS.
    generation: u64,
    /// Bytes reserved for `data` (accounted in the pool).
    capacity: usize,
    /// Bytes of items still live, to find segments worth compacting.
    live_bytes: usize,
    queue: Queue,
}

/// Where an item lives: packed into index entries as
/// `tag (16 bits) | segment (28 bits) | offset (20 bits)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Location {
    segment: u32,
    offset: u32,
}

fn tag_of(hash: u64) -> u64 {
    ((hash >> 40) & 0xffff) | 1
}

fn pack(hash: u64, loc: Location) -> u64 {
    (tag_of(hash) << 48) | (u64::from(loc.segment) << 20) | u64::from(loc.offset)
}

fn unpack(entry: u64) -> Location {
    Location {
        segment: ((entry >> 20) & 0x0fff_ffff) as u32,
        offset: (entry & 0xf_ffff) as u32,
    }
}

/// A key's index slot and its item's location.
#[derive(Debug, Clone, Copy)]
struct Found {
    slot: usize,
    loc: Location,
}

/// One shard; the engine wraps each in a mutex.
pub struct Shard {
    segments: Vec<Option<Segment>>,
    free_ids: Vec<u32>,
    small: VecDeque<u32>,
    main: VecDeque<u32>,
    small_tail: Option<u32>,
    main_tail: Option<u32>,
    /// Capacity bytes of segments in the small queue.
    small_bytes: usize,
    /// This shard's share of the pool: segment capacities + index + ghost
    /// table + `reserved`.
    allocated: usize,
    /// Bytes taken from the pool for an allocation about to happen.
    reserved: usize,
    /// The engine-wide budget.
    pool: Arc<Pool>,
    index: Vec<u64>,
    index_len: usize,
    index_tombstones: usize,
    /// Fingerprints of keys recently evicted from the small queue.
    ghost: Vec<u32>,
    next_generation: u64,
    hasher: ahash::RandomState,
    /// Sum of live item sizes.
    live_bytes: usize,
    /// Where the background sweep continues.
    sweep_cursor: usize,
    /// The clock reading for the operation in progress (set by the engine).
    now: u32,
    /// memcached's `oldest_live` from a delayed flush_all (0 = none): once
    /// the clock reaches it, items last touched at or before it are gone.
    flush_at: u32,
    pub stats: StoreStats,
}

/// Reads remaining TTL as memcached reports it (-1 for none).
fn remaining(exptime: u32, now: u32) -> i64 {
    if exptime == 0 {
        -1
    } else {
        i64::from(exptime) - i64::from(now)
    }
}

/// Expired by TTL.
fn expired(exptime: u32, now: u32) -> bool {
    exptime != 0 && exptime <= now
}

impl Shard {
    /// A shard allocating from `pool`.
    pub fn new(pool: Arc<Pool>, hasher: ahash::RandomState) -> Shard {
        let mut shard = Shard {
            segments: Vec::new(),
            free_ids: Vec::new(),
            small: VecDeque::new(),
            main: VecDeque::new(),
            small_tail: None,
            main_tail: None,
            small_bytes: 0,
            allocated: 0,
            reserved: 0,
            pool,
            index: vec![EMPTY; INITIAL_INDEX],
            index_len: 0,
            index_tombstones: 0,
            ghost: vec![0; INITIAL_INDEX / 2],
            next_generation: 1,
            hasher,
            live_bytes: 0,
            sweep_cursor: 0,
            now: 2,
            flush_at: 0,
            stats: StoreStats::default(),
        };
        shard.grow(shard.index_bytes());
        shard
    }

    /// Accounts `n` more bytes held, from the reservation first; the rest
    /// is forced (an eviction moving items before it frees their segment).
    fn grow(&mut self, n: usize) {
        let from_reserved = n.min(self.reserved);
        self.reserved -= from_reserved;
        let forced = n - from_reserved;
        if forced > 0 {
            self.pool.force(forced);
            self.allocated += forced;
        }
    }

    /// Accounts `n` bytes released.
    fn shrink(&mut self, n: usize) {
        self.allocated -= n;
        self.pool.release(n);
    }

    /// Returns a reservation that was not needed after all.
    fn release_reserved(&mut self) {
        if self.reserved > 0 {
            let n = std::mem::take(&mut self.reserved);
            self.shrink(n);
        }
    }

    fn index_bytes(&self) -> usize {
        self.index.len() * 8 + self.ghost.len() * 4
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    fn segment(&self, id: u32) -> &Segment {
        self.segments[id as usize]
            .as_ref()
            .expect("index points at a live segment")
    }

    fn segment_mut(&mut self, id: u32) -> &mut Segment {
        self.segments[id as usize]
            .as_mut()
            .expect("index points at a live segment")
    }

    fn item(&self, loc: Location) -> ItemRef<'_> {
        ItemRef::at(&self.segment(loc.segment).data, loc.offset as usize)
    }

    fn item_mut(&mut self, loc: Location) -> ItemMut<'_> {
        ItemMut::at(&mut self.segment_mut(loc.segment).data, loc.offset as usize)
    }

    fn cas_of(&self, loc: Location) -> u64 {
        let item = self.item(loc);
        item.explicit_cas()
            .unwrap_or((self.segment(loc.segment).generation << 20) | u64::from(loc.offset))
    }

    /// Expired, or invalidated by a delayed flush_all that has come due.
    fn is_dead(&self, item: &ItemRef<'_>) -> bool {
        expired(item.exptime(), self.now)
            || (self.flush_at != 0 && self.now >= self.flush_at && item.atime() <= self.flush_at)
    }

    // ----- index -----

    fn find(&self, hash: u64, key: &[u8]) -> Option<Found> {
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
    fn slot_of(&self, hash: u64, loc: Location) -> Option<usize> {
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

    fn insert_entry(&mut self, hash: u64, loc: Location) {
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

    fn remove_slot(&mut self, slot: usize) {
        self.index[slot] = TOMBSTONE;
        self.index_len -= 1;
        self.index_tombstones += 1;
    }

    /// Makes room in the index for one more entry, rebuilding or doubling it
    /// (and the ghost table with it) when it is 3/4 full.
    fn reserve_index(&mut self) -> bool {
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

    fn ghost_slot(&self, hash: u64) -> (usize, u32) {
        let slot = (hash >> 20) as usize & (self.ghost.len() - 1);
        (slot, (hash >> 32) as u32 | 1)
    }

    // ----- segments and space -----

    fn new_segment(&mut self, capacity: usize, queue: Queue) -> u32 {
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
    fn ensure_space(&mut self, extra: usize) -> bool {
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
    fn space_needed(&self, size: usize, queue: Queue) -> usize {
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
    fn append(&mut self, item: &NewItem<'_>, queue: Queue) -> Location {
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

    fn write_at(&mut self, id: u32, item: &NewItem<'_>) {
        let size = item.size();
        let segment = self.segment_mut(id);
        item.write(&mut segment.data);
        segment.live_bytes += size;
        self.live_bytes += size;
    }

    /// Marks an item dead and drops its index entry.
    fn unlink(&mut self, found: Found) {
        let size = self.item(found.loc).size();
        let bits = self.item(found.loc).bits();
        self.item_mut(found.loc).set_bits(bits | BIT_DEAD);
        self.segment_mut(found.loc.segment).live_bytes -= size;
        self.live_bytes -= size;
        self.remove_slot(found.slot);
    }

    fn free_segment(&mut self, id: u32) {
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

    /// Evicts the oldest segment of the queue S3-FIFO picks. Returns false
    /// when there is nothing left to evict.
    fn evict_one(&mut self) -> bool {
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
                let freq = if queue == Queue::Small {
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

    /// Where the live (not dead) items of segment `id` are, in write order.
    fn live_items(&self, id: u32) -> Vec<Location> {
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

    /// Drops an expired item, counting it as memcached does.
    fn reclaim(&mut self, found: Found) {
        let fetched = self.item(found.loc).bits() & BIT_FETCHED != 0;
        self.unlink(found);
        self.stats.reclaimed += 1;
        if !fetched {
            self.stats.expired_unfetched += 1;
        }
    }

    // ----- operations -----

    /// Looks a key up, dropping it when expired.
    fn lookup(&mut self, hash: u64, key: &[u8]) -> Option<Found> {
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
    fn write_item(&mut self, hash: u64, item: &NewItem<'_>, replace: bool) -> Option<Location> {
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

    /// Evicts one segment on behalf of another shard that needs memory.
    pub fn evict_for_pool(&mut self) -> bool {
        self.evict_one()
    }

    /// Sets the clock reading and flush point for the next operations.
    pub fn set_now(&mut self, now: u32, flush_at: u32) {
        self.now = now;
        self.flush_at = flush_at;
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
                if expired(self.item(f.loc).exptime(), now) {
                    self.stats.get_expired += 1;
                } else {
                    self.stats.get_flushed += 1;
                }
                self.reclaim(f);
                None
            }
            other => other,
        };
        let Some(found) = found else {
            if let Some(ttl) = opts.vivify {
                let mut bits = BIT_TOKEN_SENT;
                if opts.key_binary {
                    bits |= BIT_KEY_BINARY;
                }
                let item = NewItem {
                    key,
                    value: (b"", b""),
                    flags: 0,
                    exptime: clock.expiry(opts.touch.unwrap_or(ttl)),
                    atime: now,
                    bits,
                    freq: 0,
                    cas: None,
                };
                if let Some(loc) = self.write_item(hash, &item, false) {
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
            if !token_sent && exptime != 0 && exptime < clock.expiry(r) {
                won = true;
            }
        }
        if stale && !token_sent {
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
        };
        f(Some(&view));
    }

    pub fn store(&mut self, req: &StoreRequest<'_>, clock: &Clock) -> StoreOutcome {
        let now = self.now;
        let hash = self.hash(req.key);
        let existing = self.lookup(hash, req.key);
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
            if have != want {
                if req.invalidate
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
            cas: req.new_cas,
        };
        match self.write_item(hash, &item, existing.is_some()) {
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
            zonecache_proto::number::parse_u64(item.value())
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

    /// Drops everything (flush_all).
    pub fn clear(&mut self) {
        let ids: Vec<u32> = self.small.drain(..).chain(self.main.drain(..)).collect();
        for id in ids {
            self.free_segment(id);
        }
        let old_index = self.index_bytes();
        self.index = vec![EMPTY; INITIAL_INDEX];
        self.ghost = vec![0; INITIAL_INDEX / 2];
        self.allocated = self.allocated - old_index + self.index_bytes();
        self.index_len = 0;
        self.index_tombstones = 0;
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

    /// Adds this shard's gauges to `stats` and its counters.
    pub fn add_stats(&self, out: &mut StoreStats) {
        let s = &self.stats;
        out.get_hits += s.get_hits;
        out.get_misses += s.get_misses;
        out.get_expired += s.get_expired;
        out.get_flushed += s.get_flushed;
        out.touch_hits += s.touch_hits;
        out.touch_misses += s.touch_misses;
        out.delete_hits += s.delete_hits;
        out.delete_misses += s.delete_misses;
        out.incr_hits += s.incr_hits;
        out.incr_misses += s.incr_misses;
        out.decr_hits += s.decr_hits;
        out.decr_misses += s.decr_misses;
        out.cas_hits += s.cas_hits;
        out.cas_misses += s.cas_misses;
        out.cas_badval += s.cas_badval;
        out.evictions += s.evictions;
        out.evicted_unfetched += s.evicted_unfetched;
        out.expired_unfetched += s.expired_unfetched;
        out.reclaimed += s.reclaimed;
        out.total_items += s.total_items;
        out.promoted += s.promoted;
        out.ghost_hits += s.ghost_hits;
        out.curr_items += self.index_len as u64;
        out.bytes += self.live_bytes as u64;
        out.small_segments += self.small.len() as u64;
        out.main_segments += self.main.len() as u64;
    }
}
