//! Issue 11's failure cases, each as its own regression test on a local
//! 3 × 2 cluster of real processes: after `DELETED` or `STORED` no zone
//! serves the older value again, counters never go backwards, and what
//! the cluster could not do is counted. (Cases 3, 4 and 6 live in
//! `cluster.rs` and `bad_input.rs`.)

use std::time::{Duration, Instant};

use zonecache_tests::TestCluster;

const FRONTS: [&str; 6] = ["a1", "a2", "b1", "b2", "c1", "c2"];

/// Stops zone c, and sends writes through `front` until it has marked both
/// of zone c's nodes down (each write's copy there times out).
fn stop_zone_c(cluster: &TestCluster, front: &str) {
    for id in cluster.zone("c") {
        cluster.node(&id).server.signal(libc::SIGSTOP);
    }
    let mut c = cluster.node(front).server.connect();
    for i in 0..12 {
        assert_eq!(
            c.request(format!("set markdown:{i} 0 0 1\r\nx\r\n").as_bytes()),
            b"STORED\r\n"
        );
    }
    // The copies to zone c time out in the background (50 ms deadline).
    std::thread::sleep(Duration::from_millis(300));
}

fn resume_zone_c(cluster: &TestCluster) {
    for id in cluster.zone("c") {
        cluster.node(&id).server.signal(libc::SIGCONT);
    }
}

/// `get key` through `front`: the value, if any.
fn get(cluster: &TestCluster, front: &str, key: &str) -> Option<String> {
    let reply = cluster
        .node(front)
        .server
        .connect()
        .request(format!("get {key}\r\n").as_bytes());
    let text = String::from_utf8_lossy(&reply).to_string();
    let mut lines = text.lines();
    match lines.next() {
        Some(l) if l.starts_with("VALUE ") => lines.next().map(str::to_string),
        Some("END") => None,
        other => panic!("get {key} through {front}: {other:?} ({text:?})"),
    }
}

/// The value `node` itself holds for `key` (no routing).
fn held(cluster: &TestCluster, node: &str, key: &str) -> Option<String> {
    cluster.held(node, key).map(|(value, _)| value)
}

/// One figure of `stats zones` on `node`.
fn zone_stat(cluster: &TestCluster, node: &str, name: &str) -> u64 {
    // Not through `request`: its sync marker is a read, which a node
    // lacking a peer's lease refuses.
    cluster.local(node).group_stat("zones", name)
}

/// Sends `request(key)` for every key through one connection to `front`
/// and expects `reply` to each.
fn each_key(
    cluster: &TestCluster,
    front: &str,
    keys: &[String],
    request: impl Fn(&str) -> String,
    reply: &[u8],
) {
    let mut c = cluster.node(front).server.connect();
    for k in keys {
        assert_eq!(c.request(request(k).as_bytes()), reply, "{k}");
    }
}

/// Waits up to 5 s for `ok`.
fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ok() {
        assert!(Instant::now() < deadline, "not within 5 s: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn case_1_acknowledged_deletes_stay_deleted_when_a_stopped_zone_returns() {
    let cluster = TestCluster::start(3, 2, "all-minus-one", "");
    let keys: Vec<String> = (0..40).map(|i| format!("gone:{i}")).collect();
    let set_old = |k: &str| format!("set {k} 0 0 3\r\nold\r\n");
    each_key(&cluster, "a1", &keys, set_old, b"STORED\r\n");
    stop_zone_c(&cluster, "a1");
    let delete = |k: &str| format!("delete {k}\r\n");
    each_key(&cluster, "a1", &keys, delete, b"DELETED\r\n");
    resume_zone_c(&cluster);
    // From the first instant back, through every front, and again after
    // read repairs and hint replays had their time.
    for round in 0..2 {
        for front in FRONTS {
            for k in &keys {
                assert_eq!(
                    get(&cluster, front, k),
                    None,
                    "{k} via {front}, round {round}"
                );
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    for k in &keys {
        let holder = cluster.owner("c", k);
        eventually(&format!("{holder} drops {k}"), || {
            held(&cluster, &holder, k).is_none()
        });
    }
}

#[test]
fn case_2_counters_never_go_backwards_when_the_arbiter_stalls() {
    let cluster = TestCluster::start(3, 2, "all-minus-one", "");
    let mut b1 = cluster.node("b1").server.connect();
    assert_eq!(b1.request(b"set ctr 0 0 1\r\n0\r\n"), b"STORED\r\n");
    let arbiter = cluster.owner("a", "ctr");
    cluster.node(&arbiter).server.signal(libc::SIGSTOP);
    // No other zone decides in its place: each incr fails, saying whether
    // it may have been applied.
    for _ in 0..10 {
        let reply = String::from_utf8_lossy(&b1.request(b"incr ctr 1\r\n")).to_string();
        assert!(
            reply.starts_with("SERVER_ERROR outcome unknown")
                || reply.starts_with("SERVER_ERROR not applied"),
            "{reply:?}"
        );
    }
    cluster.node(&arbiter).server.signal(libc::SIGCONT);
    let mut answers = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while answers.len() < 5 {
        assert!(Instant::now() < deadline, "answers so far: {answers:?}");
        let reply = String::from_utf8_lossy(&b1.request(b"incr ctr 1\r\n")).to_string();
        match reply.trim().parse::<u64>() {
            Ok(n) => answers.push(n),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    assert!(
        answers.windows(2).all(|w| w[1] == w[0] + 1),
        "every answer one more than the last: {answers:?}"
    );
    let last = answers[answers.len() - 1].to_string();
    for zone in ["a", "b", "c"] {
        let holder = cluster.owner(zone, "ctr");
        eventually(&format!("zone {zone} holds {last}"), || {
            held(&cluster, &holder, "ctr").is_some_and(|v| v.trim() == last)
        });
    }
}

#[test]
fn case_5_a_returning_zone_does_not_serve_the_sets_it_missed() {
    let cluster = TestCluster::start(3, 2, "all-minus-one", "");
    let keys: Vec<String> = (0..20).map(|i| format!("k:{i}")).collect();
    let set_v1 = |k: &str| format!("set {k} 0 0 2\r\nv1\r\n");
    each_key(&cluster, "a1", &keys, set_v1, b"STORED\r\n");
    stop_zone_c(&cluster, "a1");
    let set_v2 = |k: &str| format!("set {k} 0 0 2\r\nv2\r\n");
    each_key(&cluster, "a1", &keys, set_v2, b"STORED\r\n");
    resume_zone_c(&cluster);
    for front in ["c1", "c2", "a2", "b1"] {
        for k in &keys {
            assert_eq!(
                get(&cluster, front, k).as_deref(),
                Some("v2"),
                "{k} via {front}"
            );
        }
    }
    // Zone c gets the sets it missed (hinted hand-off).
    for k in &keys {
        let holder = cluster.owner("c", k);
        eventually(&format!("{holder} holds v2 for {k}"), || {
            held(&cluster, &holder, k).as_deref() == Some("v2")
        });
    }
    assert!(zone_stat(&cluster, "a1", "hints_replayed") > 0);
}

#[test]
fn case_7_read_repairs_skipped_while_home_is_down_are_counted() {
    let cluster = TestCluster::start(3, 2, "all-minus-one", "");
    let key = "repair:me";
    let home = cluster.owner("a", key);
    let front = if home == "a1" { "a2" } else { "a1" };
    // Only zone b has the key (as if evicted at home and in zone c).
    let holder = cluster.owner("b", key);
    assert_eq!(
        cluster
            .local(&holder)
            .request(format!("ms {key} 1 T0\r\nx\r\n").as_bytes()),
        b"HD\r\n"
    );
    cluster.node(&home).server.signal(libc::SIGSTOP);
    for _ in 0..5 {
        assert_eq!(get(&cluster, front, key).as_deref(), Some("x"));
    }
    eventually("a skipped repair is counted", || {
        zone_stat(&cluster, front, "b:read_repairs_skipped") > 0
    });
    cluster.node(&home).server.signal(libc::SIGCONT);
}

/// Not one of the seven: two live nodes cut apart both ways while
/// both still reach the third. a1 gives up on the silent b1 (it still hears
/// c1); b1 must not take a1's silence for a stop, because c1 still hears
/// a1. So a write through b1 that a1 missed is not acknowledged — and if it
/// were, a1 would have to stop serving the older value.
#[test]
fn a_partition_between_two_live_nodes_never_undoes_an_acknowledged_write() {
    let cluster = TestCluster::start_linked(3, 1, "all-minus-one", "");
    let mut a1 = cluster.node("a1").server.connect();
    let set = |v: &str| format!("set k 0 0 {}\r\n{v}\r\n", v.len());
    eventually("k stored", || {
        a1.send(set("old").as_bytes());
        a1.read_until(b"\r\n") == b"STORED\r\n"
    });
    for (from, to) in [("a1", "b1"), ("b1", "a1")] {
        cluster
            .link(from, to)
            .set(zonecache_tests::Fault::Blackhole);
    }
    // Long enough for a1 to find b1 silent and give up on it.
    std::thread::sleep(Duration::from_millis(400));
    let mut b1 = cluster.node("b1").server.connect();
    b1.send(set("new").as_bytes());
    let reply = String::from_utf8_lossy(&b1.read_until(b"\r\n")).to_string();
    let read = get(&cluster, "a1", "k");
    assert!(
        reply != "STORED\r\n" || read.as_deref() != Some("old"),
        "b1 answered {reply:?}, then a1 served {read:?}"
    );
    assert!(
        reply.starts_with("SERVER_ERROR outcome unknown"),
        "b1 answered {reply:?}"
    );
}
