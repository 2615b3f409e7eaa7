//! Unit tests of one shard's parts: the index, segments, S3-FIFO eviction
//! and the memcached semantics on top, each on a shard of its own.

use std::sync::Arc;

use super::index::{pack, unpack, Location, EMPTY};
use super::{Shard, SEGMENT_SIZE};
use crate::store::pool::Pool;
use crate::store::{
    ArithOutcome, ArithRequest, Clock, DeleteOutcome, DeleteRequest, ReadOptions, StoreKind,
    StoreRequest, StoreStatus, Version,
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
    // An evicted key whose ghost no later eviction overwrote (two keys'
    // fingerprints may pick one slot).
    let back = (0..i)
        .map(|i| format!("key:{i}"))
        .find(|k| {
            let (slot, fp) = s.ghost_slot(s.hash(k.as_bytes()));
            s.ghost[slot] == fp
        })
        .expect("the evicted segment's keys have ghosts");
    assert!(get(&mut s, &clock, &back).is_none(), "evicted");
    let main_before = s.main.len();
    set(&mut s, &clock, &back, b"again");
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
        version: Version::Fresh,
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

/// A set carrying cluster version `v`.
fn set_v(shard: &mut Shard, clock: &Clock, key: &str, value: &[u8], v: u64) -> StoreStatus {
    let mut req = StoreRequest::new(StoreKind::Set, key.as_bytes(), value, 0, 0);
    req.version = Version::Newer(v);
    shard.store(&req, clock).status
}

fn delete_v(shard: &mut Shard, clock: &Clock, key: &str, v: u64) -> DeleteOutcome {
    let req = DeleteRequest {
        version: Version::Newer(v),
        ..DeleteRequest::default()
    };
    shard.delete(key.as_bytes(), &req, clock)
}

/// What a peer comparing versions sees: (deleted, version, value).
fn versioned(shard: &mut Shard, clock: &Clock, key: &str) -> Option<(bool, u64, Vec<u8>)> {
    let opts = ReadOptions {
        tombstones: true,
        ..ReadOptions::default()
    };
    let mut found = None;
    shard.read(key.as_bytes(), opts, clock, &mut |item| {
        found = item.map(|i| (i.deleted, i.cas, i.value.to_vec()));
    });
    found
}

#[test]
fn versioned_copies_converge_whatever_order_they_arrive_in() {
    let (mut s, clock) = shard(64 << 20);
    assert_eq!(set_v(&mut s, &clock, "k", b"new", 200), StoreStatus::Stored);
    // A late copy of an older write is acknowledged (it was overwritten)
    // but changes nothing.
    assert_eq!(set_v(&mut s, &clock, "k", b"old", 100), StoreStatus::Stored);
    assert_eq!(get(&mut s, &clock, "k"), Some(b"new".to_vec()));
    assert_eq!(s.stats.versions_superseded, 1);
    assert_eq!(
        versioned(&mut s, &clock, "k"),
        Some((false, 200, b"new".to_vec()))
    );
}

#[test]
fn a_versioned_delete_leaves_a_tombstone_no_older_copy_passes() {
    let (mut s, clock) = shard(64 << 20);
    set_v(&mut s, &clock, "k", b"old", 100);
    assert_eq!(delete_v(&mut s, &clock, "k", 150), DeleteOutcome::Deleted);
    assert_eq!(
        get(&mut s, &clock, "k"),
        None,
        "a tombstone reads as a miss"
    );
    assert_eq!(
        versioned(&mut s, &clock, "k"),
        Some((true, 150, Vec::new()))
    );
    // The old value arriving late (a hint, a copy, a read repair) stays out.
    assert_eq!(set_v(&mut s, &clock, "k", b"old", 100), StoreStatus::Stored);
    let mut repair = StoreRequest::new(StoreKind::Add, b"k", b"old", 0, 0);
    repair.version = Version::Newer(100);
    assert_eq!(s.store(&repair, &clock).status, StoreStatus::NotStored);
    assert_eq!(get(&mut s, &clock, "k"), None);
    // A newer write replaces the tombstone.
    assert_eq!(set_v(&mut s, &clock, "k", b"new", 300), StoreStatus::Stored);
    assert_eq!(get(&mut s, &clock, "k"), Some(b"new".to_vec()));
    let mut stats = Default::default();
    s.add_stats(&mut stats);
    assert_eq!((stats.curr_items, stats.tombstones), (1, 0));
}

#[test]
fn a_delete_of_an_absent_key_still_remembers_its_version() {
    let (mut s, clock) = shard(64 << 20);
    assert_eq!(
        delete_v(&mut s, &clock, "gone", 150),
        DeleteOutcome::NotFound
    );
    let mut stats = Default::default();
    s.add_stats(&mut stats);
    assert_eq!(
        (stats.curr_items, stats.tombstones),
        (0, 1),
        "a tombstone is no item"
    );
    assert_eq!(
        set_v(&mut s, &clock, "gone", b"late", 120),
        StoreStatus::Stored
    );
    assert_eq!(get(&mut s, &clock, "gone"), None);
    // A delete older than the value held does not remove it.
    set_v(&mut s, &clock, "kept", b"v", 500);
    assert_eq!(
        delete_v(&mut s, &clock, "kept", 400),
        DeleteOutcome::Deleted
    );
    assert_eq!(get(&mut s, &clock, "kept"), Some(b"v".to_vec()));
}

#[test]
fn a_decision_supersedes_what_it_was_computed_from() {
    let (mut s, clock) = shard(64 << 20);
    set_v(&mut s, &clock, "n", b"5", 1_000);
    // The arbiter's own clock is behind the version the key holds.
    let incr = ArithRequest {
        key: b"n",
        incr: true,
        delta: 1,
        compare_cas: None,
        version: Version::Decided(900),
        vivify: None,
        touch: None,
        key_binary: false,
    };
    let ArithOutcome::Done { value, cas, .. } = s.arith(&incr, &clock) else {
        panic!("incr of a number");
    };
    assert_eq!((value, cas), (6, 1_001));
    // On a tombstone an incr misses, as on an absent key.
    delete_v(&mut s, &clock, "n", 2_000);
    assert_eq!(s.arith(&incr, &clock), ArithOutcome::NotFound);
    let mut add = StoreRequest::new(StoreKind::Add, b"n", b"0", 0, 0);
    add.version = Version::Decided(1_500);
    let outcome = s.store(&add, &clock);
    assert_eq!((outcome.status, outcome.cas), (StoreStatus::Stored, 2_001));
}

#[test]
fn tombstones_expire_and_are_not_counted_as_reclaimed_items() {
    let (mut s, clock) = shard(64 << 20);
    s.set_tombstone_secs(1);
    delete_v(&mut s, &clock, "k", 10);
    s.set_now(clock.now() + 5, 0);
    assert_eq!(versioned(&mut s, &clock, "k"), None);
    let mut stats = Default::default();
    s.add_stats(&mut stats);
    assert_eq!(
        (stats.tombstones, stats.reclaimed, stats.get_expired),
        (0, 0, 0)
    );
}

#[test]
fn items_are_evicted_before_tombstones() {
    let (mut s, clock) = shard(4 * SEGMENT_SIZE);
    for i in 0..50 {
        delete_v(&mut s, &clock, &format!("deleted:{i}"), 10);
    }
    let value = vec![b'v'; 1000];
    for i in 0..20_000 {
        set(&mut s, &clock, &format!("item:{i}"), &value);
    }
    assert!(s.stats.evictions > 0, "the shard had to evict");
    let kept = (0..50)
        .filter(|i| versioned(&mut s, &clock, &format!("deleted:{i}")).is_some())
        .count();
    assert_eq!(kept, 50, "tombstones outlive the items written after them");
}
