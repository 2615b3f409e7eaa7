//! Unit tests of one shard's parts: the index, segments, S3-FIFO eviction
//! and the memcached semantics on top, each on a shard of its own.

use std::sync::Arc;

use super::index::{pack, unpack, Location, EMPTY};
use super::{Shard, SEGMENT_SIZE};
use crate::store::pool::Pool;
use crate::store::{
    ArithOutcome, ArithRequest, Clock, DeleteOutcome, DeleteRequest, ReadOptions, StoreKind,
    StoreRequest, StoreStatus,
};

/// A shard whose pool holds `limit` bytes, with the clock's time set. Its
/// hasher is seeded, so where keys land (index, ghost slots) is the same
/// in every run.
fn shard(limit: usize) -> (Shard, Clock) {
    let clock = Clock::new();
    let hasher = ahash::RandomState::with_seeds(1, 2, 3, 4);
    let mut shard = Shard::new(Arc::new(Pool::new(limit)), hasher);
    shard.set_now(clock.now(), 0);
    (shard, clock)
}

fn set(shard: &mut Shard, clock: &Clock, key: &str, value: &[u8]) -> StoreStatus {
    let req = StoreRequest::new(StoreKind::Set, key.as_bytes(), value, 0, 0);
    shard.store(&req, clock).status
}

/// The value at `key`, read as `get` would (which counts as a fetch).
fn get(shard: &mut Shard, clock: &Clock, key: &str) -> Option<Vec<u8>> {
    let mut found = None;
    shard.read(key.as_bytes(), ReadOptions::default(), clock, &mut |item| {
        found = item.map(|i| i.value.to_vec());
    });
    found
}

#[test]
fn index_entries_pack_location_and_tag_and_are_never_empty() {
    let loc = Location {
        segment: 0x0abc_def1,
        offset: 0xf_fff0,
    };
    for hash in [0u64, 1, u64::MAX, 0x1234_5678_9abc_def0] {
        let entry = pack(hash, loc);
        assert_eq!(unpack(entry), loc);
        assert!(
            entry > 1,
            "an entry must differ from EMPTY ({EMPTY}) and the tombstone"
        );
    }
}

#[test]
fn the_index_grows_and_keeps_every_key() {
    let (mut s, clock) = shard(64 << 20);
    for i in 0..5_000 {
        assert_eq!(
            set(&mut s, &clock, &format!("key:{i}"), b"v"),
            StoreStatus::Stored
        );
    }
    assert!(
        s.index.len() >= 5_000 * 4 / 3,
        "index grew to {}",
        s.index.len()
    );
    for i in 0..5_000 {
        assert_eq!(
            get(&mut s, &clock, &format!("key:{i}")),
            Some(b"v".to_vec())
        );
    }
    assert_eq!(s.index_len, 5_000);
}

#[test]
fn small_items_share_a_segment_and_large_ones_get_their_own() {
    let (mut s, clock) = shard(64 << 20);
    for i in 0..100 {
        set(&mut s, &clock, &format!("k{i}"), &[b'x'; 100]);
    }
    assert_eq!(s.small.len(), 1, "100 small items fit one segment");
    let before = s.allocated;
    set(&mut s, &clock, "big", &vec![b'y'; 20_000]);
    assert_eq!(s.small.len(), 2);
    let dedicated = s.allocated - before;
    assert!(
        (20_000..SEGMENT_SIZE).contains(&dedicated),
        "a dedicated segment is sized to its item: {dedicated} bytes"
    );
    assert_eq!(get(&mut s, &clock, "big").map(|v| v.len()), Some(20_000));
}

#[test]
fn allocation_stays_within_the_pool() {
    let limit = 8 * SEGMENT_SIZE;
    let (mut s, clock) = shard(limit);
    for i in 0..20_000 {
        let status = set(&mut s, &clock, &format!("key:{i}"), &[b'v'; 64]);
        assert_eq!(status, StoreStatus::Stored);
        assert!(s.allocated <= limit + 2 * SEGMENT_SIZE);
    }
    assert!(s.stats.evictions > 0);
}

#[test]
fn s3_fifo_keeps_items_read_and_evicts_one_hit_wonders() {
    let (mut s, clock) = shard(8 * SEGMENT_SIZE);
    // Hot keys are written and read; then a stream of keys never read
    // pushes them through the small queue.
    for i in 0..200 {
        set(&mut s, &clock, &format!("hot:{i}"), &[b'h'; 64]);
        get(&mut s, &clock, &format!("hot:{i}"));
    }
    for i in 0..20_000 {
        set(&mut s, &clock, &format!("cold:{i}"), &[b'c'; 64]);
    }
    let hot_kept = (0..200)
        .filter(|i| get(&mut s, &clock, &format!("hot:{i}")).is_some())
        .count();
    let cold_kept = (0..2_000)
        .filter(|i| get(&mut s, &clock, &format!("cold:{i}")).is_some())
        .count();
    assert!(s.stats.promoted >= 200, "read items move to main");
    assert_eq!(hot_kept, 200, "items read survive the scan");
    assert_eq!(cold_kept, 0, "the oldest unread items are gone");
}

#[test]
fn a_key_back_from_the_ghost_table_counts_a_ghost_hit() {
    let (mut s, clock) = shard(8 * SEGMENT_SIZE);
    // Just until the first segment is evicted, so its keys' ghosts are fresh.
    let mut i = 0;
    while s.stats.evictions == 0 {
        set(&mut s, &clock, &format!("key:{i}"), &[b'v'; 64]);
        i += 1;
    }
    assert!(get(&mut s, &clock, "key:0").is_none(), "evicted");
    let main_before = s.main.len();
    set(&mut s, &clock, "key:0", b"again");
    assert_eq!(s.stats.ghost_hits, 1);
    assert_eq!(s.main.len(), main_before + 1, "it went straight to main");
}

#[test]
fn the_sweep_reclaims_expired_items() {
    let (mut s, clock) = shard(64 << 20);
    let req = StoreRequest::new(StoreKind::Set, b"short", b"v", 0, 1);
    s.store(&req, &clock);
    set(&mut s, &clock, "forever", b"v");
    s.set_now(clock.now() + 5, 0);
    s.sweep(16);
    assert_eq!(s.stats.reclaimed, 1);
    assert_eq!(s.index_len, 1);
    assert_eq!(get(&mut s, &clock, "forever"), Some(b"v".to_vec()));
}

#[test]
fn stores_follow_memcached_modes() {
    let (mut s, clock) = shard(64 << 20);
    let store = |s: &mut Shard, kind, value: &[u8], cas: Option<u64>| {
        let mut req = StoreRequest::new(kind, b"k", value, 7, 0);
        req.compare_cas = cas;
        s.store(&req, &clock)
    };
    assert_eq!(
        store(&mut s, StoreKind::Replace, b"x", None).status,
        StoreStatus::NotStored
    );
    let first = store(&mut s, StoreKind::Add, b"a", None);
    assert_eq!(first.status, StoreStatus::Stored);
    assert_eq!(
        store(&mut s, StoreKind::Add, b"b", None).status,
        StoreStatus::NotStored
    );
    assert_eq!(
        store(&mut s, StoreKind::Set, b"c", Some(first.cas + 1)).status,
        StoreStatus::Exists
    );
    assert_eq!(
        store(&mut s, StoreKind::Append, b"z", None).status,
        StoreStatus::Stored
    );
    assert_eq!(
        store(&mut s, StoreKind::Prepend, b"<", None).status,
        StoreStatus::Stored
    );
    assert_eq!(get(&mut s, &clock, "k"), Some(b"<az".to_vec()));
    assert_eq!(s.stats.cas_badval, 1);
}

#[test]
fn arithmetic_pads_a_shrunken_number_like_memcached() {
    let (mut s, clock) = shard(64 << 20);
    set(&mut s, &clock, "n", b"100");
    let decr = ArithRequest {
        key: b"n",
        incr: false,
        delta: 1,
        compare_cas: None,
        new_cas: None,
        vivify: None,
        touch: None,
        key_binary: false,
    };
    assert!(matches!(
        s.arith(&decr, &clock),
        ArithOutcome::Done { value: 99, .. }
    ));
    assert_eq!(get(&mut s, &clock, "n"), Some(b"99 ".to_vec()));
    set(&mut s, &clock, "t", b"text");
    let text = ArithRequest { key: b"t", ..decr };
    assert_eq!(s.arith(&text, &clock), ArithOutcome::NonNumeric);
}

#[test]
fn delete_removes_and_invalidate_marks_stale() {
    let (mut s, clock) = shard(64 << 20);
    set(&mut s, &clock, "a", b"1");
    set(&mut s, &clock, "b", b"2");
    let plain = DeleteRequest::default();
    assert_eq!(s.delete(b"a", &plain, &clock), DeleteOutcome::Deleted);
    assert_eq!(s.delete(b"a", &plain, &clock), DeleteOutcome::NotFound);
    assert_eq!(get(&mut s, &clock, "a"), None);
    let invalidate = DeleteRequest {
        invalidate: true,
        ..DeleteRequest::default()
    };
    assert_eq!(s.delete(b"b", &invalidate, &clock), DeleteOutcome::Deleted);
    let mut stale = false;
    s.read(b"b", ReadOptions::default(), &clock, &mut |item| {
        stale = item.is_some_and(|i| i.stale);
    });
    assert!(stale, "an invalidated item stays, marked stale");
}
