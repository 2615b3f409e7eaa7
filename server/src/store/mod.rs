//! The storage engine: memory-bounded, evicting, TTL and CAS aware. It knows
//! nothing of sockets, zones or the wire format; the network front and the
//! cluster reach it only through the [`Storage`] trait, one method per
//! operation, in the spirit of Pelikan's storage layer.

mod clock;
mod engine;
mod item;
mod number;
mod pool;
mod shard;

pub use clock::{Clock, REALTIME_MAXDELTA};
pub use engine::{Engine, EngineConfig};
pub use shard::SEGMENT_SIZE;

/// Outcome of a storage command, in memcached's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreStatus {
    /// `STORED` / `HD`
    Stored,
    /// `NOT_STORED` / `NS`
    NotStored,
    /// `EXISTS` / `EX`: CAS mismatch.
    Exists,
    /// `NOT_FOUND` / `NF`
    NotFound,
    /// The item could not be allocated even after evicting.
    OutOfMemory,
}

/// How a store combines the new data with what is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// Store unconditionally.
    Set,
    /// Only if absent.
    Add,
    /// Only if present.
    Replace,
    /// Concatenate after the existing value.
    Append,
    /// Concatenate before the existing value.
    Prepend,
}

/// A write of one item.
#[derive(Debug, Clone)]
pub struct StoreRequest<'a> {
    /// The key.
    pub key: &'a [u8],
    /// The data block.
    pub value: &'a [u8],
    /// Client flags.
    pub flags: u32,
    /// Expiry as a client sends it (memcached's rules).
    pub exptime: i32,
    /// The combination rule.
    pub kind: StoreKind,
    /// Store only if the item's CAS equals this (text `cas`, meta `C`).
    pub compare_cas: Option<u64>,
    /// With `compare_cas`: an older CAS still stores, but marks the item stale
    /// (meta `I`).
    pub invalidate: bool,
    /// How the new item's CAS is chosen.
    pub version: Version,
    /// Append/prepend on a miss creates the item with this TTL (meta `N`).
    pub vivify: Option<i32>,
    /// The key travels base64-encoded (meta `b`); remembered for `k` replies.
    pub key_binary: bool,
}

impl<'a> StoreRequest<'a> {
    /// A plain request of `kind` with everything else at its default.
    pub fn new(kind: StoreKind, key: &'a [u8], value: &'a [u8], flags: u32, exptime: i32) -> Self {
        StoreRequest {
            key,
            value,
            flags,
            exptime,
            kind,
            compare_cas: None,
            invalidate: false,
            version: Version::Fresh,
            vivify: None,
            key_binary: false,
        }
    }
}

/// Result of a store: status and the CAS of the item now stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOutcome {
    /// What happened.
    pub status: StoreStatus,
    /// CAS of the stored item (0 when nothing was stored).
    pub cas: u64,
}

/// How a write's CAS is chosen. In a cluster the CAS is the write's
/// version, the same in every zone, and newer always wins; a node on its
/// own hands out CAS values as memcached does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Version {
    /// A fresh local CAS (a node outside a cluster).
    #[default]
    Fresh,
    /// Exactly this CAS (meta `E` on a node outside a cluster).
    Exact(u64),
    /// A cluster version decided elsewhere (a fanned-out set or delete, a
    /// copy, a hint, a read repair): the write applies only over older
    /// versions, so copies arriving in any order converge, and a delete
    /// leaves a tombstone so no older copy comes back.
    Newer(u64),
    /// A conditional write decided here (the key's arbiter): this version,
    /// or just above the one the key holds if that is newer, so the result
    /// always supersedes what it was computed from.
    Decided(u64),
}

impl Version {
    /// The CAS a write gets when the key now holds `held` (None: a fresh
    /// local one).
    pub fn cas_over(self, held: Option<u64>) -> Option<u64> {
        match self {
            Version::Fresh => None,
            Version::Exact(v) | Version::Newer(v) => Some(v),
            Version::Decided(v) => Some(held.map_or(v, |h| v.max(h + 1))),
        }
    }

    /// Whether a write of this version is superseded by `held`.
    pub fn superseded_by(self, held: Option<u64>) -> bool {
        matches!((self, held), (Version::Newer(v), Some(h)) if h >= v)
    }
}

/// Options of a read; plain `get` uses the default.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadOptions {
    /// Set a new expiry (gat, meta `T`).
    pub touch: Option<i32>,
    /// Don't bump the item (meta `u`).
    pub no_update: bool,
    /// On a miss, create an empty item with this TTL and win its token
    /// (meta `N`; `T`'s TTL when a `T` follows it, see `vivified_ttl`).
    pub vivify: Option<i32>,
    /// Win the recache token when the remaining TTL is below this (meta `R`).
    pub recache: Option<i32>,
    /// `R` compares with the TTL `touch` set (a `T` written before it),
    /// not the item's old one.
    pub recache_sees_touch: bool,
    /// The key travels base64-encoded (for vivified items).
    pub key_binary: bool,
    /// Report a tombstone as an item with `deleted` set (peers comparing
    /// versions), instead of as a miss.
    pub tombstones: bool,
    /// A meta read (`mg`): it can win the recache token of a stale item.
    /// A plain `get` of a stale item takes no token, as in memcached.
    pub win_tokens: bool,
}

/// What a read sees of an item, handed to the caller under the shard lock so
/// the value can be written straight into the reply buffer.
#[derive(Debug)]
pub struct ItemView<'a> {
    /// The stored key.
    pub key: &'a [u8],
    /// The data.
    pub value: &'a [u8],
    /// Client flags.
    pub flags: u32,
    /// CAS unique.
    pub cas: u64,
    /// Remaining TTL in seconds before a `T` touch, -1 if none.
    pub ttl_before: i64,
    /// Remaining TTL in seconds after a touch, -1 if none.
    pub ttl: i64,
    /// Seconds since the item was last accessed (before this read).
    pub last_access: u32,
    /// The item had been fetched before this read.
    pub fetched_before: bool,
    /// This read won the right to recache (`W`).
    pub won: bool,
    /// The item is stale (`X`).
    pub stale: bool,
    /// Another client already holds the win token (`Z`).
    pub token_sent: bool,
    /// The key was stored base64-encoded (`b` on `k` replies).
    pub key_binary: bool,
    /// The item was just created by vivify.
    pub vivified: bool,
    /// memcached's idea of the item's total size (for `me`).
    pub memcached_size: usize,
    /// This is a tombstone: the key was deleted at version `cas`.
    pub deleted: bool,
}

/// Arithmetic request (`incr`/`decr`/`ma`).
#[derive(Debug, Clone, Copy)]
pub struct ArithRequest<'a> {
    /// The key.
    pub key: &'a [u8],
    /// Increment (true) or decrement.
    pub incr: bool,
    /// Amount.
    pub delta: u64,
    /// Proceed only if the CAS matches (meta `C`).
    pub compare_cas: Option<u64>,
    /// How the result's CAS is chosen.
    pub version: Version,
    /// On a miss, create the item with (TTL, initial value) (meta `N`, `J`;
    /// `T`'s TTL when a `T` follows `N`).
    pub vivify: Option<(i32, u64)>,
    /// Update the TTL of an existing item (meta `T`).
    pub touch: Option<i32>,
    /// The key travels base64-encoded.
    pub key_binary: bool,
}

/// Result of arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArithOutcome {
    /// The new value, its CAS, and what its TTL was.
    Done {
        /// The value after the operation.
        value: u64,
        /// CAS of the updated item.
        cas: u64,
        /// Remaining TTL before a `T` touch (-1 for a vivified item, which
        /// memcached creates without one).
        ttl_before: i64,
        /// The item was created by vivify (`N`).
        vivified: bool,
    },
    /// No such item.
    NotFound,
    /// The value is not a decimal number.
    NonNumeric,
    /// CAS mismatch.
    Exists,
    /// No memory for the new value.
    OutOfMemory,
}

/// Options of a delete (`delete`/`md`).
#[derive(Debug, Clone, Copy, Default)]
pub struct DeleteRequest {
    /// Delete only if the CAS matches (meta `C`).
    pub compare_cas: Option<u64>,
    /// Mark stale instead of removing (meta `I`), optionally with a new TTL.
    pub invalidate: bool,
    /// New TTL when invalidating (meta `T`).
    pub ttl: Option<i32>,
    /// Keep the item but drop its value (meta `x`).
    pub remove_value: bool,
    /// The CAS of the invalidated item (meta `E`), or the cluster version
    /// of a delete that leaves a tombstone.
    pub version: Version,
}

/// Result of a delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// Removed (or invalidated).
    Deleted,
    /// No such item.
    NotFound,
    /// CAS mismatch.
    Exists,
}

/// Where a walk over every item resumes: the shard, the index epoch the
/// shard was walked at, and the slot, packed into one number so it can
/// travel in a `zc_dump` request (0 = the beginning).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanCursor(pub u64);

impl ScanCursor {
    pub(crate) fn new(shard: usize, epoch: u32, slot: usize) -> ScanCursor {
        ScanCursor((shard as u64) << 56 | u64::from(epoch & 0xff_ffff) << 32 | slot as u64)
    }
    pub(crate) fn shard(self) -> usize {
        (self.0 >> 56) as usize
    }
    pub(crate) fn epoch(self) -> u32 {
        (self.0 >> 32) as u32 & 0xff_ffff
    }
    pub(crate) fn slot(self) -> usize {
        (self.0 & 0xffff_ffff) as usize
    }
}

/// How far a call to [`Storage::scan`] got.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScanStep {
    /// Where to resume; `None` once every item has been seen.
    pub next: Option<ScanCursor>,
    /// The share of the store walked so far, 0.0–1.0.
    pub progress: f64,
}

/// Counters the engine keeps (summed over shards), named as memcached names them.
#[derive(Debug, Clone, Default)]
pub struct StoreStats {
    pub get_hits: u64,
    pub get_misses: u64,
    pub get_expired: u64,
    pub get_flushed: u64,
    pub touch_hits: u64,
    pub touch_misses: u64,
    pub delete_hits: u64,
    pub delete_misses: u64,
    pub incr_hits: u64,
    pub incr_misses: u64,
    pub decr_hits: u64,
    pub decr_misses: u64,
    pub cas_hits: u64,
    pub cas_misses: u64,
    pub cas_badval: u64,
    pub evictions: u64,
    pub evicted_unfetched: u64,
    pub expired_unfetched: u64,
    pub reclaimed: u64,
    pub total_items: u64,
    pub curr_items: u64,
    /// Bytes of key + value + item header of live items.
    pub bytes: u64,
    /// Bytes the engine holds: segments, index and ghost table.
    pub allocated: u64,
    /// Segments in the small (probation) queue.
    pub small_segments: u64,
    /// Segments in the main queue.
    pub main_segments: u64,
    /// Items promoted from the small to the main queue.
    pub promoted: u64,
    /// Items that came back while their key was in the ghost table.
    pub ghost_hits: u64,
    /// Tombstones held now (not counted in `curr_items`).
    pub tombstones: u64,
    /// Tombstones written (deletes carrying a cluster version).
    pub tombstones_written: u64,
    /// Tombstones evicted before their time ran out.
    pub tombstones_evicted: u64,
    /// Versioned writes and deletes skipped because the key held a newer
    /// version (late copies, replays, read repairs that lost).
    pub versions_superseded: u64,
}

/// The storage operations the node needs; one method per operation.
pub trait Storage: Send + Sync + 'static {
    /// Reads `key`; `f` sees the item (or `None`) under the shard lock.
    fn read(&self, key: &[u8], opts: ReadOptions, f: &mut dyn FnMut(Option<&ItemView<'_>>));
    /// Writes an item.
    fn store(&self, req: &StoreRequest<'_>) -> StoreOutcome;
    /// `incr`/`decr`/`ma`.
    fn arith(&self, req: &ArithRequest<'_>) -> ArithOutcome;
    /// Sets a new expiry; false when the key is absent.
    fn touch(&self, key: &[u8], exptime: i32) -> bool;
    /// Removes (or invalidates) an item.
    fn delete(&self, key: &[u8], req: &DeleteRequest) -> DeleteOutcome;
    /// `flush_all [delay]`.
    fn flush_all(&self, delay: i32);
    /// How many `flush_all` have run: a copy read before one must not be
    /// written after it.
    fn flushes(&self) -> u64;
    /// Reclaims expired items; called periodically by a background task.
    fn sweep(&self);
    /// Shows `f` the live items (tombstones included) from `cursor` on, a
    /// shard lock at a time, walking at most about `max_slots` index slots;
    /// `f` returns false to stop after the item it was shown.
    fn scan(
        &self,
        cursor: ScanCursor,
        max_slots: usize,
        f: &mut dyn FnMut(&ItemView<'_>) -> bool,
    ) -> ScanStep;
    /// Counters summed over the engine.
    fn stats(&self) -> StoreStats;
    /// `stats reset`: zero the counters (not the gauges).
    fn reset_stats(&self);
    /// The memory limit in bytes.
    fn limit_maxbytes(&self) -> u64;
    /// A new memory limit (`cache_memlimit`); a lower one evicts down to it
    /// before returning.
    fn set_memory_limit(&self, bytes: usize);
    /// The clock the engine judges expiry by.
    fn clock(&self) -> &Clock;
}
