//! The router's rules against an in-memory cluster: fallback order, partial
//! multi-get fallback, write-policy counting, one CAS per write, arbitration,
//! tombstones and hints.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use zonecache_proto::{Command, MetaCode, Response, Store, StoreMode};

use super::memory::MemoryCluster;
use super::{CasClock, Router};
use crate::error::Error;
use crate::lane::Lane;
use crate::topology::{ClusterConfig, NodeConfig, Topology, WritePolicy};

/// Zones a (a1, a2), b (b1, b2), c (c1); home zone a, reads fall back to
/// c before b; conditional writes are decided in config order a, b, c.
fn router(policy: WritePolicy) -> Router {
    let text = r#"
        fallback = ["c", "b"]
        [[zones]]
        name = "a"
        nodes = [{ id = "a1", addr = "127.0.0.1:1" }, { id = "a2", addr = "127.0.0.1:2" }]
        [[zones]]
        name = "b"
        nodes = [{ id = "b1", addr = "127.0.0.1:3" }, { id = "b2", addr = "127.0.0.1:4" }]
        [[zones]]
        name = "c"
        nodes = [{ id = "c1", addr = "127.0.0.1:5" }]
    "#;
    let mut config = ClusterConfig::parse(text).unwrap();
    config.write_policy = policy;
    Router::new(
        Topology::from_config(config, Some("a")).unwrap(),
        7,
        Box::new(|| 0),
    )
}

/// The owner of `key` in zone `zone` (by name).
fn owner(r: &Router, zone: &str, key: &str) -> String {
    let z = r.topology.zones.iter().find(|z| z.name == zone).unwrap();
    z.owner(key.as_bytes()).id.clone()
}

/// The node called `id`.
fn node(r: &Router, id: &str) -> NodeConfig {
    r.topology.nodes().find(|n| n.id == id).unwrap().clone()
}

fn get(keys: &[&str]) -> Command {
    Command::Get {
        keys: keys
            .iter()
            .map(|k| Bytes::copy_from_slice(k.as_bytes()))
            .collect(),
        cas: false,
    }
}

fn set(key: &str, value: &str) -> Command {
    Command::Store(Store {
        mode: StoreMode::Set,
        key: Bytes::copy_from_slice(key.as_bytes()),
        flags: 3,
        exptime: 0,
        data: Bytes::copy_from_slice(value.as_bytes()),
        cas_unique: 0,
        noreply: false,
    })
}

fn values(reply: Result<Response, Error>) -> Vec<(String, String)> {
    match reply {
        Ok(Response::Values(v)) => v
            .iter()
            .map(|v| {
                let text = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
                (text(&v.key), text(&v.data))
            })
            .collect(),
        other => panic!("not values: {other:?}"),
    }
}

#[tokio::test]
async fn a_read_falls_back_in_fallback_order() {
    let (r, m) = (router(WritePolicy::AllMinusOne), MemoryCluster::default());
    m.put(&owner(&r, "c", "k"), "k", "from c");
    m.put(&owner(&r, "b", "k"), "k", "from b");
    let found = values(r.run(&m, get(&["k"]), Lane::Batch).await);
    assert_eq!(found, [("k".to_string(), "from c".to_string())]);
    let asked: Vec<String> = m.take_calls().into_iter().map(|c| c.node).collect();
    assert_eq!(asked, [owner(&r, "a", "k"), owner(&r, "c", "k")]);
    let zone_c = r.topology.zones.iter().position(|z| z.name == "c").unwrap();
    let hits = r.zone_stats[zone_c]
        .fallback_hits
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(hits, 1);
}

#[tokio::test]
async fn a_multi_get_asks_each_owner_once_and_sends_only_missing_keys_on() {
    let (r, m) = (router(WritePolicy::AllMinusOne), MemoryCluster::default());
    let keys: Vec<String> = (0..20).map(|i| format!("key:{i}")).collect();
    for (i, k) in keys.iter().enumerate() {
        m.put(&owner(&r, "b", k), k, "b");
        if i % 2 == 0 {
            m.put(&owner(&r, "a", k), k, "a");
        }
    }
    let asked: Vec<&str> = keys.iter().map(String::as_str).collect();
    let found = values(r.run(&m, get(&asked), Lane::Batch).await);
    // Every key, in the order asked, from the first zone that has it.
    let expected: Vec<(String, String)> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k.clone(), if i % 2 == 0 { "a" } else { "b" }.to_string()))
        .collect();
    assert_eq!(found, expected);
    let calls = m.take_calls();
    let zone_of = |node: &str| node[..1].to_string();
    for zone in ["a", "c", "b"] {
        let in_zone: Vec<_> = calls.iter().filter(|c| zone_of(&c.node) == zone).collect();
        let nodes: std::collections::HashSet<&str> =
            in_zone.iter().map(|c| c.node.as_str()).collect();
        assert_eq!(
            nodes.len(),
            in_zone.len(),
            "one request per owner in zone {zone}"
        );
        let sent: usize = in_zone
            .iter()
            .map(|c| match &c.cmd {
                Command::VersionedGet { keys, .. } => keys.len(),
                other => panic!("{other:?}"),
            })
            .sum();
        // Zone a is asked for all; c and b only for the ten that a missed.
        assert_eq!(
            sent,
            if zone == "a" { 20 } else { 10 },
            "keys sent to zone {zone}"
        );
    }
}

#[tokio::test]
async fn a_drained_zone_is_skipped_and_asked_last_only_for_unanswered_keys() {
    let (r, m) = (router(WritePolicy::AllMinusOne), MemoryCluster::default());
    m.put(&owner(&r, "c", "k"), "k", "from c");
    m.put(&owner(&r, "b", "k"), "k", "from b");
    r.drains.set("c", 100);
    let found = values(r.run(&m, get(&["k"]), Lane::Batch).await);
    assert_eq!(found, [("k".to_string(), "from b".to_string())]);
    let asked: Vec<String> = m.take_calls().into_iter().map(|c| c.node).collect();
    assert_eq!(asked, [owner(&r, "a", "k"), owner(&r, "b", "k")]);
    // The home zone drained, the key only there: a miss elsewhere is a real
    // miss; with zones b and c down, home is asked as the last resort.
    r.drains.set("c", 0);
    r.drains.set("a", 100);
    m.put(&owner(&r, "a", "h"), "h", "from a");
    assert!(values(r.run(&m, get(&["h"]), Lane::Batch).await).is_empty());
    m.set_down("c1", true);
    m.set_down(&owner(&r, "b", "h"), true);
    let found = values(r.run(&m, get(&["h"]), Lane::Batch).await);
    assert_eq!(found, [("h".to_string(), "from a".to_string())]);
}

#[tokio::test]
async fn a_multi_get_reports_which_keys_went_unanswered() {
    let (r, m) = (router(WritePolicy::AllMinusOne), MemoryCluster::default());
    let keys: Vec<Bytes> = (0..20).map(|i| Bytes::from(format!("key:{i}"))).collect();
    for k in &keys {
        let k = std::str::from_utf8(k).unwrap();
        m.put(&owner(&r, "b", k), k, "b");
    }
    // Zone c (one node) and one node in each of a and b are down: a key
    // owned by both downed nodes has no answer; every other key does.
    for id in ["c1", "a1", "b1"] {
        m.set_down(id, true);
    }
    let found = r.multi_get(&m, &keys, None, Lane::Batch).await;
    let text = |k: &Bytes| std::str::from_utf8(k).unwrap().to_string();
    let unanswered: Vec<String> = keys
        .iter()
        .map(text)
        .filter(|k| owner(&r, "a", k) == "a1" && owner(&r, "b", k) == "b1")
        .collect();
    assert!(!unanswered.is_empty() && unanswered.len() < keys.len());
    let mut reported: Vec<String> = found.unanswered.keys().map(text).collect();
    reported.sort();
    let mut expected = unanswered.clone();
    expected.sort();
    assert_eq!(reported, expected);
    for k in &keys {
        let answered_by_b = owner(&r, "b", &text(k)) == "b2";
        assert_eq!(found.values.contains_key(k), answered_by_b, "{k:?}");
    }
}

#[tokio::test]
async fn the_write_policy_counts_the_zones_that_acknowledged() {
    let (r, m) = (router(WritePolicy::AllMinusOne), MemoryCluster::default());
    m.set_down("c1", true);
    assert_eq!(
        r.run(&m, set("k", "v"), Lane::Realtime).await,
        Ok(Response::Stored)
    );
    m.set_down(&owner(&r, "b", "k"), true);
    let failed = r.run(&m, set("k", "v2"), Lane::Realtime).await;
    assert_eq!(
        failed,
        Err(Error::WritePolicy {
            policy: "all-minus-one",
            acked: 1,
            unknown: 0,
            zones: 3
        })
    );
    let (all, m) = (router(WritePolicy::All), MemoryCluster::default());
    m.set_down("c1", true);
    let failed = all.run(&m, set("k", "v"), Lane::Realtime).await;
    assert!(
        matches!(
            failed,
            Err(Error::WritePolicy {
                acked: 2,
                zones: 3,
                ..
            })
        ),
        "{failed:?}"
    );
}

#[tokio::test]
async fn a_set_carries_one_cas_into_every_zone() {
    let (r, m) = (router(WritePolicy::All), MemoryCluster::default());
    assert_eq!(
        r.run(&m, set("k", "v"), Lane::Realtime).await,
        Ok(Response::Stored)
    );
    let copies: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|z| {
            m.item(&owner(&r, z, "k"), "k")
                .expect("a copy in every zone")
        })
        .collect();
    assert!(copies.iter().all(|c| c == &copies[0]), "{copies:?}");
    assert_eq!(copies[0].flags, 3);
    assert_eq!(copies[0].cas & 0xff, 7, "the router's CAS tag");
}

#[tokio::test]
async fn a_conditional_write_is_decided_by_its_arbiter_only_then_copied() {
    let (r, m) = (router(WritePolicy::AllMinusOne), MemoryCluster::default());
    for zone in ["a", "b", "c"] {
        m.put(&owner(&r, zone, "n"), "n", "5");
    }
    let incr = || Command::Arith {
        key: Bytes::from_static(b"n"),
        delta: 1,
        incr: true,
        noreply: false,
    };
    assert_eq!(
        r.run(&m, incr(), Lane::Realtime).await,
        Ok(Response::Number(6))
    );
    let arbiter = m.take_calls()[0].node.clone();
    assert_eq!(arbiter, owner(&r, "a", "n"), "config order decides");
    let b = m.item(&owner(&r, "b", "n"), "n").unwrap();
    let c = m.item(&owner(&r, "c", "n"), "n").unwrap();
    assert_eq!(b.value, "6");
    assert_eq!(b, c, "the arbiter's item (value and CAS) is copied");
    // With the arbiter down no other zone decides: it could decide from an
    // older value, and a later answer would contradict an earlier one.
    m.set_down(&arbiter, true);
    let refused = r.run(&m, incr(), Lane::Realtime).await;
    assert!(
        matches!(refused, Err(Error::Undecided { unknown: false, .. })),
        "{refused:?}"
    );
    assert_eq!(m.item(&owner(&r, "b", "n"), "n").unwrap().value, "6");
}

#[tokio::test]
async fn a_node_that_missed_writes_gets_them_before_it_serves_or_decides() {
    let (r, m) = (router(WritePolicy::AllMinusOne), MemoryCluster::default());
    let arbiter = owner(&r, "a", "n");
    m.set_down(&arbiter, true);
    assert_eq!(
        r.run(&m, set("n", "10"), Lane::Realtime).await,
        Ok(Response::Stored)
    );
    assert!(r.hints.is_behind(&node(&r, &arbiter)));
    // Back up, but not yet given the set: reads skip it.
    m.set_down(&arbiter, false);
    m.put(&arbiter, "n", "stale");
    let home_read = values(r.run(&m, get(&["n"]), Lane::Batch).await);
    assert_eq!(home_read, vec![("n".to_string(), "10".to_string())]);
    // A conditional write replays the missed set first, then decides.
    let incr = Command::Arith {
        key: Bytes::from_static(b"n"),
        delta: 1,
        incr: true,
        noreply: false,
    };
    assert_eq!(
        r.run(&m, incr, Lane::Realtime).await,
        Ok(Response::Number(11))
    );
    assert!(!r.hints.is_behind(&node(&r, &arbiter)));
    assert_eq!(r.hints.stats.replayed.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_tombstone_ends_the_search_so_an_older_copy_is_never_served() {
    let (r, m) = (router(WritePolicy::AllMinusOne), MemoryCluster::default());
    for zone in ["a", "b", "c"] {
        m.put(&owner(&r, zone, "k"), "k", "old");
    }
    let c = owner(&r, "c", "k");
    m.set_down(&c, true);
    let delete = Command::Delete {
        key: Bytes::from_static(b"k"),
        noreply: false,
    };
    assert_eq!(
        r.run(&m, delete, Lane::Realtime).await,
        Ok(Response::Deleted)
    );
    // Zone c comes back with its old copy, and this router's hint for it is
    // lost (as if another front had sent the delete).
    m.set_down(&c, false);
    let other_front = router(WritePolicy::AllMinusOne);
    assert!(values(other_front.run(&m, get(&["k"]), Lane::Realtime).await).is_empty());
    let mg = Command::MetaGet(zonecache_proto::Meta {
        key: Bytes::from_static(b"k"),
        flags: Default::default(),
    });
    let reply = other_front.run(&m, mg, Lane::Realtime).await.unwrap();
    assert!(
        matches!(&reply, Response::Meta(r) if r.code == MetaCode::Miss),
        "{reply:?}"
    );
}

#[tokio::test]
async fn a_hit_in_another_zone_is_repaired_home_without_overwriting() {
    let (r, m) = (router(WritePolicy::AllMinusOne), MemoryCluster::default());
    m.put(&owner(&r, "c", "k"), "k", "v");
    values(r.run(&m, get(&["k"]), Lane::Realtime).await);
    let home = owner(&r, "a", "k");
    let mut repaired = None;
    for _ in 0..200 {
        repaired = m.item(&home, "k");
        if repaired.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let copy = m.item(&owner(&r, "c", "k"), "k");
    assert_eq!(repaired, copy, "the copy keeps the value and CAS");
    // The repair is an add: it never overwrites a newer home copy.
    let repair = m.take_calls().into_iter().last().unwrap().cmd;
    assert!(
        matches!(&repair, Command::MetaSet { meta, .. } if meta.flags.mode == Some(b'E')),
        "{repair:?}"
    );
}

#[test]
fn cas_clock_is_strictly_increasing_and_tagged() {
    let clock = CasClock::new(0x1ab);
    let mut prev = 0;
    for _ in 0..10_000 {
        let c = clock.next();
        assert!(c > prev);
        assert_eq!(c & 0xff, 0xab);
        prev = c;
    }
}

#[tokio::test]
async fn a_store_rejected_as_too_large_drops_the_old_value_in_every_zone() {
    let (r, m) = (router(WritePolicy::AllMinusOne), MemoryCluster::default());
    for zone in ["a", "b", "c"] {
        m.put(&owner(&r, zone, "k"), "k", "old");
    }
    let rejected = Command::TooLarge {
        key: Bytes::from_static(b"k"),
        remove_existing: true,
        noreply: false,
    };
    let reply = r.run(&m, rejected, Lane::Realtime).await;
    assert_eq!(
        reply,
        Ok(Response::ServerError("object too large for cache".into()))
    );
    for zone in ["a", "b", "c"] {
        let left = m.item(&owner(&r, zone, "k"), "k");
        assert!(left.is_some_and(|i| i.deleted), "zone {zone}: a tombstone");
    }
}

/// The time a realtime `get` of `key` took, and what it found.
async fn timed_get(r: &Router, m: &MemoryCluster, key: &str) -> (Duration, Vec<(String, String)>) {
    let started = tokio::time::Instant::now();
    let found = values(r.run(m, get(&[key]), Lane::Realtime).await);
    (started.elapsed(), found)
}

fn hedge_counts(r: &Router) -> (u64, u64, u64) {
    let s = &r.hedges.stats;
    let ld = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    (ld(&s.sent), ld(&s.won), ld(&s.denied))
}

#[tokio::test(start_paused = true)]
async fn a_hung_home_owner_is_hedged_to_the_next_zone_without_waiting_its_deadline() {
    let (r, m) = (router(WritePolicy::AllMinusOne), MemoryCluster::default());
    let home = owner(&r, "a", "k");
    m.put(&home, "k", "from a");
    m.put(&owner(&r, "c", "k"), "k", "from c");
    m.set_slow(&home, Some(Duration::from_secs(10)));
    let (took, found) = timed_get(&r, &m, "k").await;
    assert_eq!(found, [("k".to_string(), "from c".to_string())]);
    // No answers learned from the owner yet: a quarter of the deadline.
    assert_eq!(took, r.topology.read_deadline / 4);
    assert_eq!(hedge_counts(&r), (1, 1, 0));
    // The owner's call still runs out its deadline (so a hung node is
    // marked down); the hedge asked zone c only, which had the key (and
    // read repair read it there again).
    tokio::time::sleep(r.topology.read_deadline).await;
    let asked: Vec<String> = m.take_calls().into_iter().map(|c| c.node).collect();
    let c = owner(&r, "c", "k");
    assert_eq!(asked, [c.clone(), c, home]);
}

#[tokio::test(start_paused = true)]
async fn a_hedge_waits_the_owners_learned_p99_and_a_miss_waits_for_the_owner() {
    let (r, m) = (router(WritePolicy::AllMinusOne), MemoryCluster::default());
    let home = owner(&r, "a", "k");
    // Another key of the same owner, found nowhere else.
    let j = (0..)
        .map(|i| format!("j{i}"))
        .find(|j| owner(&r, "a", j) == home)
        .unwrap();
    m.put(&home, "k", "from a");
    m.put(&home, &j, "from a");
    m.put(&owner(&r, "c", "k"), "k", "from c");
    // A window of answers in 3 ms: the learned delay.
    m.set_slow(&home, Some(Duration::from_millis(3)));
    for _ in 0..super::hedge::WINDOW {
        assert_eq!(timed_get(&r, &m, "k").await.0, Duration::from_millis(3));
    }
    assert_eq!(hedge_counts(&r), (0, 0, 0));
    m.set_slow(&home, Some(Duration::from_secs(10)));
    let (took, found) = timed_get(&r, &m, "k").await;
    assert_eq!(found, [("k".to_string(), "from c".to_string())]);
    assert_eq!(took, Duration::from_millis(3));
    tokio::time::sleep(Duration::from_millis(100)).await;
    m.take_calls();
    // The owner slows to 8 ms: the hedge goes out at 3 ms, finds nothing
    // in zones c and b, and the owner's answer (within its deadline) wins.
    m.set_slow(&home, Some(Duration::from_millis(8)));
    let (took, found) = timed_get(&r, &m, &j).await;
    assert_eq!(found, [(j.clone(), "from a".to_string())]);
    assert_eq!(took, Duration::from_millis(8));
    assert_eq!(hedge_counts(&r), (2, 1, 0));
    let mut asked: Vec<String> = m.take_calls().into_iter().map(|c| c.node).collect();
    asked.sort();
    let mut expected = vec![home, owner(&r, "b", &j), owner(&r, "c", &j)];
    expected.sort();
    assert_eq!(asked, expected, "each zone asked once");
}

#[tokio::test(start_paused = true)]
async fn a_tombstone_found_by_a_hedge_ends_the_read() {
    let (r, m) = (router(WritePolicy::AllMinusOne), MemoryCluster::default());
    for zone in ["a", "b", "c"] {
        m.put(&owner(&r, zone, "k"), "k", "old");
    }
    let home = owner(&r, "a", "k");
    let delete = Command::Delete {
        key: Bytes::from_static(b"k"),
        noreply: false,
    };
    m.set_down(&home, true);
    assert_eq!(
        r.run(&m, delete, Lane::Realtime).await,
        Ok(Response::Deleted)
    );
    // The home owner is back with its old copy (its hint lost, as if another
    // front had sent the delete) but hangs; the hedge finds the tombstone.
    m.set_down(&home, false);
    m.set_slow(&home, Some(Duration::from_secs(10)));
    let other_front = router(WritePolicy::AllMinusOne);
    let (took, found) = timed_get(&other_front, &m, "k").await;
    assert!(found.is_empty(), "{found:?}");
    assert!(took < other_front.topology.read_deadline);
    assert_eq!(hedge_counts(&other_front), (1, 1, 0));
}

#[tokio::test(start_paused = true)]
async fn hedging_off_spent_or_on_the_batch_lane_waits_the_deadline() {
    let text = r#"
        hedge_percent = 0
        [[zones]]
        name = "a"
        nodes = [{ id = "a1", addr = "127.0.0.1:1" }]
        [[zones]]
        name = "b"
        nodes = [{ id = "b1", addr = "127.0.0.1:3" }]
    "#;
    let config = ClusterConfig::parse(text).unwrap();
    let off = Router::new(
        Topology::from_config(config, Some("a")).unwrap(),
        7,
        Box::new(|| 0),
    );
    let m = MemoryCluster::default();
    m.put("b1", "k", "from b");
    m.set_slow("a1", Some(Duration::from_secs(10)));
    let (took, found) = timed_get(&off, &m, "k").await;
    assert_eq!(found, [("k".to_string(), "from b".to_string())]);
    assert_eq!(took, off.topology.read_deadline);
    assert_eq!(hedge_counts(&off), (0, 0, 0));

    let r = router(WritePolicy::AllMinusOne);
    let home = owner(&r, "a", "k");
    m.put(&owner(&r, "c", "k"), "k", "from c");
    m.set_slow(&home, Some(Duration::from_secs(10)));
    let started = tokio::time::Instant::now();
    values(r.run(&m, get(&["k"]), Lane::Batch).await);
    assert_eq!(started.elapsed(), r.topology.batch_deadline);
    // The budget: a burst, then nothing until reads earn more.
    for _ in 0..super::hedge::BURST {
        assert!(timed_get(&r, &m, "k").await.0 < r.topology.read_deadline);
    }
    let (took, _) = timed_get(&r, &m, "k").await;
    assert_eq!(took, r.topology.read_deadline);
    assert_eq!(
        hedge_counts(&r),
        (super::hedge::BURST, super::hedge::BURST, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn a_meta_read_is_hedged_too() {
    let (r, m) = (router(WritePolicy::AllMinusOne), MemoryCluster::default());
    let home = owner(&r, "a", "k");
    m.put(&home, "k", "from a");
    m.put(&owner(&r, "b", "k"), "k", "from b");
    m.set_slow(&home, Some(Duration::from_secs(10)));
    let mg_v = |key: &'static [u8]| {
        let mut flags = zonecache_proto::MetaFlags::default();
        flags.set(b'v', Bytes::new()).unwrap();
        Command::MetaGet(zonecache_proto::Meta {
            key: Bytes::from_static(key),
            flags,
        })
    };
    let started = tokio::time::Instant::now();
    let reply = r.run(&m, mg_v(b"k"), Lane::Realtime).await.unwrap();
    assert_eq!(started.elapsed(), r.topology.read_deadline / 4);
    assert!(
        matches!(&reply, Response::Meta(m) if m.value.as_deref() == Some(&b"from b"[..])),
        "{reply:?}"
    );
    assert_eq!(hedge_counts(&r), (1, 1, 0));
    // Slow but answering within its deadline, with the only copy: the
    // hedge finds nothing and the owner's answer is served.
    m.set_slow(&home, Some(Duration::from_millis(12)));
    assert_eq!(owner(&r, "a", "j"), home, "j has the same owner");
    m.put(&home, "j", "from a");
    let started = tokio::time::Instant::now();
    let reply = r.run(&m, mg_v(b"j"), Lane::Realtime).await.unwrap();
    assert!(
        matches!(&reply, Response::Meta(m) if m.value.as_deref() == Some(&b"from a"[..])),
        "{reply:?}"
    );
    assert_eq!(started.elapsed(), Duration::from_millis(12));
}
