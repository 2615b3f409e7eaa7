//! The engine: shards chosen by key hash, each behind its own mutex, so
//! there is no global lock on the hot path.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::pool::Pool;
use super::shard::{Shard, SEGMENT_SIZE};
use super::{
    ArithOutcome, ArithRequest, Clock, DeleteOutcome, DeleteRequest, ItemView, ReadOptions,
    ScanCursor, ScanStep, Storage, StoreOutcome, StoreRequest, StoreStats, StoreStatus,
};

/// Each shard should hold at least this many regular segments, so eviction
/// a segment at a time stays fine-grained.
const MIN_SEGMENTS_PER_SHARD: usize = 32;
/// More shards than this buys nothing on the machines we target.
const MAX_SHARDS: usize = 64;
/// Segments the background sweep visits per shard per call (every 100 ms:
/// a full pass over a 64 MiB cache takes about 6 s).
const SWEEP_SEGMENTS: usize = 1;
/// Index slots a scan walks per shard lock, so a dump never holds a lock
/// long enough to show in the serving tail.
const SCAN_SLOTS_PER_LOCK: usize = 1024;
/// Rounds of evicting in other shards before a write gives up for memory.
const MAX_POOL_ROUNDS: usize = 64;

/// Engine settings.
#[derive(Debug, Clone, Copy)]
pub struct EngineConfig {
    /// Bytes for items including all per-item overhead and the index (`-m`).
    pub memory_limit: usize,
    /// Worker threads, to size the shard count.
    pub threads: usize,
    /// How long a tombstone lasts (seconds).
    pub tombstone_secs: u32,
}

/// The sharded store.
pub struct Engine {
    shards: Box<[Mutex<Shard>]>,
    /// Chooses the shard; independent of the shards' own index hashing.
    hasher: ahash::RandomState,
    clock: Clock,
    /// The memory every shard allocates from.
    pool: Arc<Pool>,
    /// memcached's `oldest_live` of a delayed `flush_all` (0 = none).
    flush_at: AtomicU32,
    /// `flush_all` calls so far.
    flushes: AtomicU64,
}

impl Engine {
    /// An engine with `config`'s memory limit, split evenly over its shards.
    pub fn new(config: EngineConfig) -> Engine {
        let wanted = (config.threads.max(1) * 8).next_power_of_two();
        let by_memory = (config.memory_limit / (MIN_SEGMENTS_PER_SHARD * SEGMENT_SIZE)).max(1);
        let count = wanted.min(MAX_SHARDS).min(prev_power_of_two(by_memory));
        let pool = Arc::new(Pool::new(config.memory_limit));
        let hasher = ahash::RandomState::new();
        let shards = (0..count)
            .map(|_| {
                let mut shard = Shard::new(pool.clone(), hasher.clone());
                shard.set_tombstone_secs(config.tombstone_secs);
                Mutex::new(shard)
            })
            .collect();
        Engine {
            shards,
            hasher: ahash::RandomState::new(),
            clock: Clock::new(),
            pool,
            flush_at: AtomicU32::new(0),
            flushes: AtomicU64::new(0),
        }
    }

    fn shard_index(&self, key: &[u8]) -> usize {
        (self.hasher.hash_one(key) as usize) & (self.shards.len() - 1)
    }

    /// Locks shard `i` and tells it the time and any pending flush point.
    fn lock(&self, i: usize) -> MutexGuard<'_, Shard> {
        let mut shard = self.shards[i].lock().unwrap_or_else(|e| e.into_inner());
        shard.set_now(self.clock.now(), self.flush_at.load(Ordering::Acquire));
        shard
    }

    fn shard_for(&self, key: &[u8]) -> MutexGuard<'_, Shard> {
        self.lock(self.shard_index(key))
    }

    /// Runs a write on `key`'s shard; when the pool is full and that shard
    /// has nothing left to evict, frees memory in the other shards (one lock
    /// at a time, never two) and retries.
    fn with_room<T>(
        &self,
        key: &[u8],
        mut op: impl FnMut(&mut Shard) -> T,
        out_of_memory: impl Fn(&T) -> bool,
    ) -> T {
        let home = self.shard_index(key);
        let mut result = op(&mut self.lock(home));
        for _ in 0..MAX_POOL_ROUNDS {
            if !out_of_memory(&result) {
                break;
            }
            let mut freed = false;
            for other in (0..self.shards.len()).filter(|&i| i != home) {
                freed |= self.lock(other).evict_for_pool();
            }
            if !freed {
                break;
            }
            result = op(&mut self.lock(home));
        }
        result
    }

    fn pool_limit(&self) -> usize {
        self.pool.limit()
    }

    /// Evicts, a segment per shard per round, until the pool is within its
    /// limit or nothing is left to evict.
    fn evict_to_limit(&self) {
        while self.pool.allocated() > self.pool.limit() {
            let mut freed = false;
            for i in 0..self.shards.len() {
                if self.pool.allocated() <= self.pool.limit() {
                    return;
                }
                freed |= self.lock(i).evict_for_pool();
            }
            if !freed {
                return;
            }
        }
    }

    /// Number of shards (for stats).
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }
}

fn prev_power_of_two(n: usize) -> usize {
    if n.is_power_of_two() {
        n
    } else {
        n.next_power_of_two() / 2
    }
}

impl Storage for Engine {
    fn read(&self, key: &[u8], opts: ReadOptions, f: &mut dyn FnMut(Option<&ItemView<'_>>)) {
        self.shard_for(key).read(key, opts, &self.clock, f)
    }

    fn store(&self, req: &StoreRequest<'_>) -> StoreOutcome {
        self.with_room(
            req.key,
            |shard| shard.store(req, &self.clock),
            |o| o.status == StoreStatus::OutOfMemory,
        )
    }

    fn arith(&self, req: &ArithRequest<'_>) -> ArithOutcome {
        self.with_room(
            req.key,
            |shard| shard.arith(req, &self.clock),
            |o| *o == ArithOutcome::OutOfMemory,
        )
    }

    fn touch(&self, key: &[u8], exptime: i32) -> bool {
        self.shard_for(key).touch(key, exptime, &self.clock)
    }

    fn delete(&self, key: &[u8], req: &DeleteRequest) -> DeleteOutcome {
        self.shard_for(key).delete(key, req, &self.clock)
    }

    fn flush_all(&self, delay: i32) {
        self.flushes.fetch_add(1, Ordering::AcqRel);
        if delay > 0 {
            // memcached: oldest_live = realtime(delay) - 1; items last touched
            // at or before it are invalid once the clock gets there.
            let at = self.clock.expiry(delay).saturating_sub(1).max(1);
            self.flush_at.store(at, Ordering::Release);
            return;
        }
        // An immediate flush replaces a pending delayed one, as a new
        // flush_all replaces memcached's oldest_live.
        self.flush_at.store(0, Ordering::Release);
        for i in 0..self.shards.len() {
            self.lock(i).clear();
        }
    }

    fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Acquire)
    }

    fn sweep(&self) {
        for i in 0..self.shards.len() {
            self.lock(i).sweep(SWEEP_SEGMENTS);
        }
    }

    fn scan(
        &self,
        cursor: ScanCursor,
        max_slots: usize,
        f: &mut dyn FnMut(&ItemView<'_>) -> bool,
    ) -> ScanStep {
        let shards = self.shards.len();
        let (mut shard, mut epoch, mut slot) = (cursor.shard(), cursor.epoch(), cursor.slot());
        let mut budget = max_slots.max(1);
        let mut fraction = 0.0;
        while shard < shards && budget > 0 {
            let locked = self.lock(shard);
            let now_epoch = locked.index_epoch() & 0xff_ffff;
            if now_epoch != epoch {
                // The index was rebuilt: slots moved, start the shard over.
                (epoch, slot) = (now_epoch, 0);
            }
            let mut stopped = false;
            let chunk = budget.min(SCAN_SLOTS_PER_LOCK);
            let next = locked.scan(slot, chunk, &mut |item| {
                stopped = !f(item);
                !stopped
            });
            budget = budget.saturating_sub(next - slot).min(budget - 1);
            slot = next;
            let slots = locked.index_slots();
            drop(locked);
            fraction = slot as f64 / slots as f64;
            if slot >= slots {
                (shard, slot, epoch, fraction) = (shard + 1, 0, u32::MAX, 0.0);
            }
            if stopped {
                break;
            }
        }
        let progress = ((shard as f64 + fraction) / shards as f64).min(1.0);
        ScanStep {
            next: (shard < shards).then(|| ScanCursor::new(shard, epoch, slot)),
            progress,
        }
    }

    fn stats(&self) -> StoreStats {
        let mut out = StoreStats::default();
        for i in 0..self.shards.len() {
            self.lock(i).add_stats(&mut out);
        }
        out.allocated = self.pool.allocated() as u64;
        out
    }

    fn reset_stats(&self) {
        for i in 0..self.shards.len() {
            self.lock(i).stats = StoreStats::default();
        }
    }

    fn limit_maxbytes(&self) -> u64 {
        self.pool_limit() as u64
    }

    fn set_memory_limit(&self, bytes: usize) {
        self.pool.set_limit(bytes);
        self.evict_to_limit();
    }

    fn clock(&self) -> &Clock {
        &self.clock
    }
}

#[cfg(test)]
mod tests {
    use super::super::StoreKind;
    use super::*;

    fn engine(mb: usize) -> Engine {
        Engine::new(EngineConfig {
            memory_limit: mb << 20,
            threads: 2,
            tombstone_secs: 60,
        })
    }

    fn get(e: &Engine, key: &[u8]) -> Option<Vec<u8>> {
        let mut out = None;
        e.read(key, ReadOptions::default(), &mut |v| {
            out = v.map(|v| v.value.to_vec())
        });
        out
    }

    fn set(e: &Engine, key: &[u8], value: &[u8]) -> StoreStatus {
        e.store(&StoreRequest::new(StoreKind::Set, key, value, 0, 0))
            .status
    }

    #[test]
    fn set_get_replace_delete() {
        let e = engine(8);
        assert_eq!(set(&e, b"a", b"1"), StoreStatus::Stored);
        assert_eq!(get(&e, b"a").as_deref(), Some(&b"1"[..]));
        assert_eq!(set(&e, b"a", b"22"), StoreStatus::Stored);
        assert_eq!(get(&e, b"a").as_deref(), Some(&b"22"[..]));
        assert_eq!(
            e.delete(b"a", &DeleteRequest::default()),
            DeleteOutcome::Deleted
        );
        assert_eq!(get(&e, b"a"), None);
        assert_eq!(e.stats().curr_items, 0);
    }

    #[test]
    fn memory_stays_within_limit_under_churn() {
        let e = engine(4);
        let value = vec![b'v'; 300];
        for i in 0..200_000u32 {
            let key = format!("key:{i}");
            assert_eq!(set(&e, key.as_bytes(), &value), StoreStatus::Stored);
        }
        let stats = e.stats();
        assert!(stats.allocated <= 4 << 20, "allocated {}", stats.allocated);
        assert!(stats.evictions > 0);
        assert!(stats.curr_items > 5_000, "holds {}", stats.curr_items);
        // every item the index claims is readable
        let mut readable = 0;
        for i in 0..200_000u32 {
            if get(&e, format!("key:{i}").as_bytes()).is_some() {
                readable += 1;
            }
        }
        assert_eq!(readable as u64, stats.curr_items);
    }

    #[test]
    fn frequently_read_keys_survive_a_scan() {
        let e = engine(4);
        let value = vec![b'v'; 200];
        for i in 0..1000u32 {
            set(&e, format!("hot:{i}").as_bytes(), &value);
        }
        // A long scan of one-hit wonders, while the hot set keeps being read.
        for round in 0..50u32 {
            for i in 0..1000u32 {
                get(&e, format!("hot:{i}").as_bytes());
            }
            for i in 0..2000u32 {
                set(&e, format!("scan:{round}:{i}").as_bytes(), &value);
            }
        }
        let hot = (0..1000u32)
            .filter(|i| get(&e, format!("hot:{i}").as_bytes()).is_some())
            .count();
        assert!(hot > 950, "only {hot} of 1000 hot keys survived");
    }

    #[test]
    fn large_values_use_dedicated_segments() {
        let e = engine(16);
        let big = vec![b'x'; 500_000];
        assert_eq!(set(&e, b"big", &big), StoreStatus::Stored);
        assert_eq!(get(&e, b"big").map(|v| v.len()), Some(500_000));
        for i in 0..100 {
            set(&e, format!("big{i}").as_bytes(), &big);
        }
        assert!(e.stats().allocated <= 16 << 20);
    }

    #[test]
    fn memory_is_shared_across_shards() {
        // Large values landing in one shard must not evict small items
        // elsewhere (or in that shard) while the engine has room.
        let e = engine(16);
        for i in 0..500u32 {
            set(&e, format!("small:{i}").as_bytes(), &[b's'; 100]);
        }
        let big = vec![b'b'; 1_000_000];
        for i in 0..8u32 {
            assert_eq!(
                set(&e, format!("big:{i}").as_bytes(), &big),
                StoreStatus::Stored
            );
        }
        assert_eq!(e.stats().evictions, 0);
        for i in 0..500u32 {
            assert!(
                get(&e, format!("small:{i}").as_bytes()).is_some(),
                "small:{i}"
            );
        }
        // and when full, a big value still finds room by evicting anywhere
        for i in 0..40u32 {
            assert_eq!(
                set(&e, format!("more:{i}").as_bytes(), &big),
                StoreStatus::Stored
            );
        }
        assert!(
            e.stats().allocated <= (16 << 20) + 2 * (SEGMENT_SIZE as u64) * e.shard_count() as u64
        );
    }

    #[test]
    fn flush_all_clears() {
        let e = engine(8);
        set(&e, b"a", b"1");
        e.flush_all(0);
        assert_eq!(get(&e, b"a"), None);
        set(&e, b"b", b"1");
        assert_eq!(get(&e, b"b").as_deref(), Some(&b"1"[..]));
    }

    #[test]
    fn cas_survives_eviction_moves() {
        let e = engine(4);
        let out = e.store(&StoreRequest::new(StoreKind::Set, b"k", b"v", 0, 0));
        let mut cas = 0;
        e.read(b"k", ReadOptions::default(), &mut |v| cas = v.unwrap().cas);
        assert_eq!(cas, out.cas);
        for i in 0..100_000u32 {
            set(&e, format!("filler:{i}").as_bytes(), &[b'f'; 100]);
            if i % 100 == 0 {
                get(&e, b"k");
            }
        }
        let mut after = 0;
        e.read(b"k", ReadOptions::default(), &mut |v| {
            after = v.unwrap().cas
        });
        assert_eq!(after, cas, "a move must not change the CAS");
    }
}
