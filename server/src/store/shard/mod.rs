//! One shard of the engine: a log of fixed-size segments holding packed
//! items (`segments.rs`), an open-addressing index and the ghost table
//! (`index.rs`), S3-FIFO eviction applied a segment at a time and the
//! expiry sweep (`eviction.rs`), and memcached's semantics on top
//! (`ops.rs` for reads and stores, `update.rs` for arithmetic, touch and
//! delete). The engine wraps each shard in its own mutex.
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

mod eviction;
mod index;
mod ops;
mod scan;
mod segments;
#[cfg(test)]
mod tests;
mod update;

use std::collections::VecDeque;
use std::sync::Arc;

use super::item::{ItemMut, ItemRef, BIT_TOMBSTONE};
use super::pool::Pool;
use super::StoreStats;
use index::{Location, EMPTY, INITIAL_INDEX};
use segments::Segment;

pub use segments::SEGMENT_SIZE;

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
    /// Bumped when the index is rebuilt, so a resumed scan knows its slot
    /// no longer means the same place.
    index_epoch: u32,
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
    /// Tombstones indexed now (they are in `index_len` too).
    tombstones: usize,
    /// How long a tombstone lasts, in seconds.
    tombstone_secs: u32,
    pub stats: StoreStats,
}

/// How long a tombstone lasts unless the engine is told otherwise: long
/// enough for late copies, replays and repairs of the write it supersedes
/// to arrive, short enough that deletes cost little memory.
pub const TOMBSTONE_SECS: u32 = 60;

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
            index_epoch: 0,
            ghost: vec![0; INITIAL_INDEX / 2],
            next_generation: 1,
            hasher,
            live_bytes: 0,
            sweep_cursor: 0,
            now: 2,
            flush_at: 0,
            tombstones: 0,
            tombstone_secs: TOMBSTONE_SECS,
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

    /// How long tombstones last from now on.
    pub fn set_tombstone_secs(&mut self, secs: u32) {
        self.tombstone_secs = secs.max(1);
    }

    fn is_tombstone(&self, loc: Location) -> bool {
        self.item(loc).bits() & BIT_TOMBSTONE != 0
    }

    /// Expired, or invalidated by a delayed flush_all that has come due.
    fn is_dead(&self, item: &ItemRef<'_>) -> bool {
        expired(item.exptime(), self.now)
            || (self.flush_at != 0 && self.now >= self.flush_at && item.atime() <= self.flush_at)
    }

    /// Sets the clock reading and flush point for the next operations.
    pub fn set_now(&mut self, now: u32, flush_at: u32) {
        self.now = now;
        self.flush_at = flush_at;
    }

    /// Evicts one segment on behalf of another shard that needs memory.
    pub fn evict_for_pool(&mut self) -> bool {
        self.evict_one()
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
        out.tombstones_written += s.tombstones_written;
        out.tombstones_evicted += s.tombstones_evicted;
        out.versions_superseded += s.versions_superseded;
        out.tombstones += self.tombstones as u64;
        out.curr_items += (self.index_len - self.tombstones) as u64;
        out.bytes += self.live_bytes as u64;
        out.small_segments += self.small.len() as u64;
        out.main_segments += self.main.len() as u64;
    }
}
