//! The cluster with real processes on loopback: one copy per zone, no
//! replication loops, zone fallback when the home owner dies or hangs,
//! write policies, and conditional writes that converge.

use std::time::{Duration, Instant};

use zonecache_tests::{Conn, TestCluster};

/// A node of `zone` that does not own `key` there (the "front").
fn non_owner(cluster: &TestCluster, zone: &str, key: &str) -> String {
    let own = cluster.owner(zone, key);
    cluster
        .zone(zone)
        .into_iter()
        .find(|id| *id != own)
        .expect("two nodes per zone")
}

#[test]
fn one_copy_per_zone_and_no_replication_loops() {
    let cluster = TestCluster::start(3, 2, "all", "");
    let front = non_owner(&cluster, "a", "user:1");
    let mut c = cluster.node(&front).server.connect();
    assert_eq!(c.request(b"set user:1 7 0 5\r\nalice\r\n"), b"STORED\r\n");
    // Stored at the owner in every zone, and nowhere else.
    let mut holders = cluster.holders("user:1");
    holders.sort();
    let mut owners: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|z| cluster.owner(z, "user:1"))
        .collect();
    owners.sort();
    assert_eq!(holders, owners);
    // Each owner stored it exactly once: three stores for one client set.
    let sets: u64 = cluster
        .nodes
        .iter()
        .map(|n| n.server.connect().stat("cmd_set"))
        .sum();
    assert_eq!(sets, 3, "one store per zone");
    // Readable through any node, with its flags.
    for n in &cluster.nodes {
        assert_eq!(
            n.server.connect().request(b"get user:1\r\n"),
            b"VALUE user:1 7 5\r\nalice\r\nEND\r\n",
            "through {}",
            n.id
        );
    }
    // Every zone's copy has the same CAS, so a gets token works anywhere.
    let tokens: Vec<Vec<u8>> = cluster
        .nodes
        .iter()
        .map(|n| cluster.local(&n.id).request(b"mg user:1 c\r\n"))
        .filter(|r| r.starts_with(b"HD c"))
        .collect();
    assert_eq!(tokens.len(), 3);
    assert!(tokens.windows(2).all(|w| w[0] == w[1]), "{tokens:?}");
}

#[test]
fn multi_get_and_delete_across_owners() {
    let cluster = TestCluster::start(2, 2, "all", "");
    let mut c = cluster.node("a1").server.connect();
    let mut expected = Vec::new();
    for i in 0..20 {
        assert_eq!(
            c.request(format!("set k{i} 0 0 2\r\nv{}\r\n", i % 10).as_bytes()),
            b"STORED\r\n"
        );
        expected.extend_from_slice(format!("VALUE k{i} 0 2\r\nv{}\r\n", i % 10).as_bytes());
    }
    expected.extend_from_slice(b"END\r\n");
    let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
    let line = format!("get {}\r\n", keys.join(" "));
    assert_eq!(
        cluster.node("b2").server.connect().request(line.as_bytes()),
        expected
    );
    assert_eq!(c.request(b"delete k3\r\n"), b"DELETED\r\n");
    assert!(cluster.holders("k3").is_empty());
    assert_eq!(c.request(b"delete k3\r\n"), b"NOT_FOUND\r\n");
}

#[test]
fn reads_fall_back_when_the_home_owner_is_killed() {
    let mut cluster = TestCluster::start(3, 2, "all-minus-one", "");
    let key = "session:42";
    let home_owner = cluster.owner("a", key);
    let front = non_owner(&cluster, "a", key);
    let mut c = cluster.node(&front).server.connect();
    assert_eq!(
        c.request(format!("set {key} 0 0 3\r\nabc\r\n").as_bytes()),
        b"STORED\r\n"
    );
    cluster.node_mut(&home_owner).server.signal(libc::SIGKILL);
    std::thread::sleep(Duration::from_millis(100));
    for _ in 0..5 {
        assert_eq!(
            c.request(format!("get {key}\r\n").as_bytes()),
            format!("VALUE {key} 0 3\r\nabc\r\nEND\r\n").into_bytes()
        );
        assert_eq!(
            c.request(format!("mg {key} v\r\n").as_bytes()),
            b"VA 3\r\nabc\r\n"
        );
    }
}

/// `key` set to `x` through a front (a node of zone a that does not own
/// it): the key's home owner, a connection to the front, and the `get`
/// reply that finds the value.
fn stored_through_a_front(cluster: &TestCluster, key: &str) -> (String, Conn, Vec<u8>) {
    let home_owner = cluster.owner("a", key);
    let front = non_owner(cluster, "a", key);
    let mut c = cluster.node(&front).server.connect();
    assert_eq!(
        c.request(format!("set {key} 0 0 1\r\nx\r\n").as_bytes()),
        b"STORED\r\n"
    );
    let want = format!("VALUE {key} 0 1\r\nx\r\nEND\r\n").into_bytes();
    (home_owner, c, want)
}

#[test]
fn a_hung_home_owner_costs_one_deadline_then_is_skipped() {
    // Unhedged: the next test is about hedged reads.
    let cluster = TestCluster::start(
        2,
        2,
        "one",
        "read_deadline_ms = 50\nwrite_deadline_ms = 100\nhedge_percent = 0",
    );
    let key = "profile:7";
    let (home_owner, mut c, want) = stored_through_a_front(&cluster, key);
    cluster.node(&home_owner).server.signal(libc::SIGSTOP);
    let mut slowest_after_markdown = Duration::ZERO;
    for i in 0..10 {
        let started = Instant::now();
        assert_eq!(
            c.request(format!("get {key}\r\n").as_bytes()),
            want,
            "read {i}"
        );
        let took = started.elapsed();
        // Every read succeeds within the deadline plus a margin.
        assert!(
            took < Duration::from_millis(50 + 1000),
            "read {i} took {took:?}"
        );
        if i >= 5 {
            slowest_after_markdown = slowest_after_markdown.max(took);
        }
    }
    // After three timeouts the peer is marked down: reads skip it at once.
    assert!(
        slowest_after_markdown < Duration::from_millis(50),
        "{slowest_after_markdown:?}"
    );
    cluster.node(&home_owner).server.signal(libc::SIGCONT);
    // After the back-off it is probed and used again: a write reaches it.
    std::thread::sleep(Duration::from_millis(400));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        c.request(format!("set {key} 0 0 1\r\ny\r\n").as_bytes());
        if cluster
            .local(&home_owner)
            .request(format!("mg {key} v\r\n").as_bytes())
            == b"VA 1\r\ny\r\n"
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the continued node was never used again"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn reads_through_a_front_are_hedged_when_the_home_owner_hangs() {
    // A long read deadline (2 s): a read well within it was hedged.
    let cluster = TestCluster::start(3, 2, "all-minus-one", "read_deadline_ms = 2000");
    let key = "profile:8";
    let (home_owner, mut c, want) = stored_through_a_front(&cluster, key);
    // The owner's answers teach the front the delay before a hedge.
    for _ in 0..zonecache_client::route::HEDGE_WINDOW {
        assert_eq!(c.request(format!("get {key}\r\n").as_bytes()), want);
    }
    assert_eq!(c.group_stat("zones", "hedged_reads"), 0);
    cluster.node(&home_owner).server.signal(libc::SIGSTOP);
    for (i, read) in [format!("get {key}\r\n"), format!("mg {key} v\r\n")]
        .iter()
        .enumerate()
    {
        let started = Instant::now();
        let reply = c.request(read.as_bytes());
        assert!(reply == want || reply == b"VA 1\r\nx\r\n", "{reply:?}");
        let took = started.elapsed();
        assert!(took < Duration::from_secs(1), "read {i} took {took:?}");
    }
    assert_eq!(c.group_stat("zones", "hedged_reads"), 2);
    assert_eq!(c.group_stat("zones", "hedge_wins"), 2);
    assert_eq!(c.group_stat("zones", "hedges_denied"), 0);
    cluster.node(&home_owner).server.signal(libc::SIGCONT);
}

#[test]
fn write_policies_with_a_zone_down() {
    for (policy, expect_ok) in [("all", false), ("all-minus-one", true)] {
        let mut cluster = TestCluster::start(3, 1, policy, "write_deadline_ms = 200");
        cluster.node_mut("c1").server.signal(libc::SIGKILL);
        let mut c = cluster.node("a1").server.connect();
        let reply = c.request(b"set w 0 0 1\r\nx\r\n");
        if expect_ok {
            assert_eq!(reply, b"STORED\r\n", "{policy}");
            // The copy to the dead zone is counted as failed.
            let zones = String::from_utf8_lossy(&c.request(b"stats zones\r\n")).to_string();
            assert!(
                zones.contains("STAT c:replication_failures 1\r\n"),
                "{zones}"
            );
        } else {
            // It fails naming the policy and counting the zones that did
            // acknowledge (a and b, which keep the value).
            let text = String::from_utf8_lossy(&reply);
            assert_eq!(
                text,
                "SERVER_ERROR write policy all not met: 2 of 3 zones acknowledged\r\n"
            );
        }
    }
}

/// memcached drops the old value of a store it rejects as too large; the
/// cluster drops it in every zone, so no front serves (or repairs) it.
#[test]
fn a_store_rejected_as_too_large_leaves_no_old_value_anywhere() {
    let cluster = TestCluster::start(3, 1, "all", "");
    let mut c = cluster.node("a1").server.connect();
    assert_eq!(c.request(b"set k 0 0 3\r\nold\r\n"), b"STORED\r\n");
    assert_eq!(cluster.holders("k").len(), 3);
    let big = vec![b'x'; 2 << 20];
    let mut request = format!("set k 0 0 {}\r\n", big.len()).into_bytes();
    request.extend_from_slice(&big);
    request.extend_from_slice(b"\r\n");
    assert_eq!(
        c.request(&request),
        b"SERVER_ERROR object too large for cache\r\n"
    );
    assert!(
        cluster.holders("k").is_empty(),
        "{:?}",
        cluster.holders("k")
    );
    for front in ["a1", "b1", "c1"] {
        let mut f = cluster.node(front).server.connect();
        assert_eq!(f.request(b"get k\r\n"), b"END\r\n", "through {front}");
    }
    assert_eq!(c.stat("store_too_large"), 1);
}

#[test]
fn concurrent_add_and_incr_through_different_zones_converge() {
    let cluster = TestCluster::start(3, 2, "all", "");
    let fronts: Vec<String> = cluster.nodes.iter().map(|n| n.id.clone()).collect();
    // add: exactly one front wins, every zone ends with the winner's value.
    let handles: Vec<_> = fronts
        .iter()
        .map(|id| {
            let addr = cluster.node(id).server.addr;
            let id = id.clone();
            std::thread::spawn(move || {
                let mut c = Conn::open(addr);
                let value = format!("{id:>2}");
                c.request(format!("add lock 0 0 2\r\n{value}\r\n").as_bytes())
            })
        })
        .collect();
    let replies: Vec<Vec<u8>> = handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect();
    assert_eq!(
        replies
            .iter()
            .filter(|r| r.as_slice() == b"STORED\r\n")
            .count(),
        1,
        "{replies:?}"
    );
    let values: Vec<Vec<u8>> = ["a", "b", "c"]
        .iter()
        .map(|z| {
            cluster
                .local(&cluster.owner(z, "lock"))
                .request(b"mg lock v\r\n")
        })
        .collect();
    assert!(values.windows(2).all(|w| w[0] == w[1]), "{values:?}");

    // incr: 6 fronts × 20 increments = 120 in every zone.
    cluster
        .node("a1")
        .server
        .connect()
        .request(b"set counter 0 0 1\r\n0\r\n");
    let handles: Vec<_> = fronts
        .iter()
        .map(|id| {
            let addr = cluster.node(id).server.addr;
            std::thread::spawn(move || {
                let mut c = Conn::open(addr);
                for _ in 0..20 {
                    let r = c.request(b"incr counter 1\r\n");
                    assert!(r.ends_with(b"\r\n") && r[0].is_ascii_digit(), "{r:?}");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("thread");
    }
    for z in ["a", "b", "c"] {
        let got = cluster
            .local(&cluster.owner(z, "counter"))
            .request(b"mg counter v\r\n");
        assert_eq!(got, b"VA 3\r\n120\r\n", "zone {z}");
    }
}

#[test]
fn flush_all_reaches_every_node() {
    let cluster = TestCluster::start(2, 2, "all", "");
    let mut c = cluster.node("b1").server.connect();
    for i in 0..10 {
        c.request(format!("set f{i} 0 0 1\r\nx\r\n").as_bytes());
    }
    assert_eq!(c.request(b"flush_all\r\n"), b"OK\r\n");
    for n in &cluster.nodes {
        assert_eq!(cluster.local(&n.id).stat("curr_items"), 0, "{}", n.id);
    }
}

#[test]
fn noreply_and_quiet_mode_through_a_front() {
    let cluster = TestCluster::start(2, 2, "all", "");
    let mut c = cluster.node("a2").server.connect();
    // Nothing comes back for noreply / quiet nominal replies; errors and hits do.
    assert_eq!(c.request(b"set q 0 0 1 noreply\r\n1\r\n"), b"");
    assert_eq!(c.request(b"incr q 5 noreply\r\n"), b"");
    assert_eq!(c.request(b"mg q v q\r\n"), b"VA 1\r\n6\r\n");
    assert_eq!(c.request(b"mg nothing v q\r\n"), b"");
    assert_eq!(c.request(b"ms q 1 q\r\n7\r\n"), b"");
    assert_eq!(c.request(b"ms q 1 ME q\r\n8\r\n"), b"NS\r\n");
    assert_eq!(c.request(b"md q q\r\n"), b"");
    assert_eq!(c.request(b"mg q v\r\n"), b"EN\r\n");
    assert!(cluster.holders("q").is_empty());
}

#[test]
fn partial_fallback_asks_only_for_the_missing_keys_and_repairs_home() {
    let cluster = TestCluster::start(2, 2, "all", "");
    let mut c = cluster.node("a1").server.connect();
    let keys: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    // Three keys are missing in the home zone (as if evicted there): they
    // were written to zone b only. (A delete would leave a tombstone, and a
    // key deleted at home is rightly not looked for elsewhere.)
    let lost = ["m1", "m4", "m7"];
    for k in &keys {
        if lost.contains(&k.as_str()) {
            let holder = cluster.owner("b", k);
            assert_eq!(
                cluster
                    .local(&holder)
                    .request(format!("ms {k} 2 F3 T300\r\nok\r\n").as_bytes()),
                b"HD\r\n"
            );
            continue;
        }
        assert_eq!(
            c.request(format!("set {k} 3 300 2\r\nok\r\n").as_bytes()),
            b"STORED\r\n"
        );
    }
    let gets_in_b = |cluster: &TestCluster| -> u64 {
        cluster
            .zone("b")
            .iter()
            .map(|id| cluster.local(id).stat("cmd_get"))
            .sum()
    };
    let before = gets_in_b(&cluster);
    let reply = c.request(format!("get {}\r\n", keys.join(" ")).as_bytes());
    let mut want = Vec::new();
    for k in &keys {
        want.extend_from_slice(format!("VALUE {k} 3 2\r\nok\r\n").as_bytes());
    }
    want.extend_from_slice(b"END\r\n");
    assert_eq!(reply, want);
    // Zone b was asked for exactly the three missing keys, plus the
    // harness's sync marker (an `mg` miss, which looks for a newer copy or
    // a tombstone in every zone); the stats connections' own reads are not
    // key reads.
    assert_eq!(gets_in_b(&cluster) - before, 3 + 1);
    // Read repair put them back at home, with their flags and remaining TTL.
    let deadline = Instant::now() + Duration::from_secs(5);
    for k in lost {
        let home = cluster.owner("a", k);
        loop {
            let got = String::from_utf8_lossy(
                &cluster
                    .local(&home)
                    .request(format!("mg {k} f t v\r\n").as_bytes()),
            )
            .to_string();
            if got.starts_with("VA 2 f3 t") {
                let line = got.lines().next().unwrap_or_default();
                let ttl: i64 = line.split(' ').nth(3).unwrap()[1..].parse().unwrap();
                assert!((290..=300).contains(&ttl), "{got:?}");
                break;
            }
            assert!(Instant::now() < deadline, "{k} not repaired: {got:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let zones = String::from_utf8_lossy(&c.request(b"stats zones\r\n")).to_string();
    assert!(zones.contains("STAT b:fallback_hits 3\r\n"), "{zones}");
    assert!(zones.contains("STAT b:read_repairs 3\r\n"), "{zones}");
    let peers = String::from_utf8_lossy(&c.request(b"stats peers\r\n")).to_string();
    assert!(
        peers.contains("STAT b1:state up\r\n") && peers.contains("STAT b2:state up\r\n"),
        "{peers}"
    );
}

#[test]
fn config_reload_adds_a_node_and_moves_about_one_in_n_plus_one_keys() {
    let mut cluster = TestCluster::start(2, 2, "all", "");
    let keys: Vec<String> = (0..600).map(|i| format!("r{i}")).collect();
    let mut c = cluster.node("b1").server.connect();
    let mut batch = Vec::new();
    for k in &keys {
        batch.extend_from_slice(format!("set {k} 0 0 1\r\nx\r\n").as_bytes());
    }
    c.request(&batch);
    let before: Vec<String> = keys.iter().map(|k| cluster.owner("a", k)).collect();
    let added = cluster.add_node("a");
    let after: Vec<String> = keys.iter().map(|k| cluster.owner("a", k)).collect();
    let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
    let share = moved as f64 / keys.len() as f64;
    assert!(
        (0.2..0.47).contains(&share),
        "moved {share}, expected about 1/3"
    );
    assert!(
        after
            .iter()
            .zip(&before)
            .all(|(a, b)| a == b || *a == added),
        "keys only move to the new node"
    );
    // Every key is still readable through a node of the zone that grew (moved
    // keys come from zone b until read repair fills the new node).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut front = cluster.node("a1").server.connect();
    loop {
        let misses = keys
            .iter()
            .filter(|k| front.request(format!("get {k}\r\n").as_bytes()) == b"END\r\n")
            .count();
        if misses == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{misses} keys unreadable after the reload"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The new node now holds the keys it owns (repaired from zone b).
    let mut local = cluster.local(&added);
    let owned: Vec<&String> = keys
        .iter()
        .zip(&after)
        .filter(|(_, a)| **a == added)
        .map(|(k, _)| k)
        .collect();
    let held = owned
        .iter()
        .filter(|k| local.request(format!("mg {k}\r\n").as_bytes()) == b"HD\r\n")
        .count();
    assert_eq!(held, owned.len());
}

#[test]
fn a_direct_mode_client_follows_a_node_added_to_the_cluster() {
    let mut cluster = TestCluster::start(3, 1, "all-minus-one", "");
    let config = cluster.config_path("a1");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt.block_on(async {
        zonecache_client::Client::builder_file(&config)
            .home_zone("a")
            .build()
            .unwrap()
    });
    let added = cluster.add_node("a");
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.topology().zones[0].nodes.len() != 2 {
        assert!(
            Instant::now() < deadline,
            "the client did not learn {added} within 10 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The new node gets its share of the keys from this client's writes.
    let keys: Vec<String> = (0..200).map(|i| format!("grown{i}")).collect();
    rt.block_on(async {
        for k in &keys {
            client.set(k, "v", Default::default()).await.unwrap();
        }
    });
    let owned: Vec<&String> = keys
        .iter()
        .filter(|k| cluster.owner("a", k) == added)
        .collect();
    assert!(owned.len() > 40, "{} of 200 keys moved", owned.len());
    for k in owned {
        assert_eq!(
            cluster.held(&added, k).map(|(v, _)| v).as_deref(),
            Some("v"),
            "{k} written by the client to {added}"
        );
    }
    assert_eq!(client.stats().errors, 0);
}
