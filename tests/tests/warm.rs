//! Warm-up of empty nodes on real processes: a node restarted empty copies
//! exactly the keys it owns from another zone (values, flags, TTLs,
//! versions, deletes), writes made meanwhile win over the copies, it is
//! reported warming (not ready) until it has copied enough, and a source
//! that does not answer has its part copied from a third zone.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use zonecache_tests::{zonecache_tool, Conn, TestCluster};

const KEYS: usize = 2000;
const DELETED: usize = 100;

/// Writes `KEYS` keys through `front` (odd ones with a TTL of 3000 s and
/// flags `i % 7`), then deletes the first `DELETED`.
fn fill(cluster: &TestCluster, front: &str, prefix: &str) {
    let mut c = cluster.node(front).server.connect();
    for i in 0..KEYS {
        let value = format!("{prefix}{i}");
        let ttl = if i % 2 == 1 { 3000 } else { 0 };
        let line = format!("set k{i} {} {ttl} {}\r\n{value}\r\n", i % 7, value.len());
        assert_eq!(c.request(line.as_bytes()), b"STORED\r\n", "k{i}");
    }
    for i in 0..DELETED {
        assert_eq!(
            c.request(format!("delete k{i}\r\n").as_bytes()),
            b"DELETED\r\n"
        );
    }
}

/// A node's `stats` figure.
fn stat(cluster: &TestCluster, id: &str, name: &str) -> String {
    cluster
        .node(id)
        .server
        .stats()
        .get(name)
        .cloned()
        .unwrap_or_else(|| panic!("{id} has no stat {name}"))
}

/// What node `id`'s own store holds for `key`: (value, flags, ttl, cas),
/// asked with `mg` on a peer connection once the node serves reads.
fn held(conn: &mut Conn, key: &str) -> Option<(String, u32, i64, u64)> {
    conn.send(format!("mg {key} v f t c\r\nmn\r\n").as_bytes());
    let text = String::from_utf8_lossy(&conn.read_until(b"MN\r\n")).to_string();
    let mut lines = text.lines();
    let head = lines.next()?;
    if !head.starts_with("VA ") {
        assert!(head == "EN" || head == "MN", "unexpected reply {text:?}");
        return None;
    }
    let flag = |f: char| -> String {
        head.split(' ')
            .find_map(|t| t.strip_prefix(f))
            .unwrap_or_else(|| panic!("no {f} in {head}"))
            .to_string()
    };
    Some((
        lines.next()?.to_string(),
        flag('f').parse().unwrap(),
        flag('t').parse().unwrap(),
        flag('c').parse().unwrap(),
    ))
}

/// Waits (bounded) until node `id` serves reads from its store.
fn serving(cluster: &TestCluster, id: &str) -> Conn {
    let start = Instant::now();
    loop {
        let mut c = cluster.node(id).server.connect();
        c.send(b"stats zones\r\n");
        let text = String::from_utf8_lossy(&c.read_until(b"END\r\n")).to_string();
        if text.contains("STAT serving_reads 1") {
            return cluster.local(id);
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{id} never serves reads"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The keys `id` owns in `zone`, by index.
fn owned(cluster: &TestCluster, zone: &str, id: &str) -> Vec<usize> {
    (0..KEYS)
        .filter(|i| cluster.owner(zone, &format!("k{i}")) == id)
        .collect()
}

/// Every key a1 owns is on a1 as on its owner in zone b (value, flags,
/// version, TTL within a few seconds); deleted keys are not; nothing else is.
fn assert_same_as_zone_b(cluster: &TestCluster, prefix: &str) {
    let mut a1 = serving(cluster, "a1");
    let mut b: BTreeMap<String, Conn> = cluster
        .zone("b")
        .into_iter()
        // A node just back from a stop serves once its leases are back.
        .map(|id| (id.clone(), serving(cluster, &id)))
        .collect();
    let mine = owned(cluster, "a", "a1");
    assert!(mine.len() > KEYS / 4, "a1 owns {} keys", mine.len());
    for i in mine {
        let key = format!("k{i}");
        let here = held(&mut a1, &key);
        let source = cluster.owner("b", &key);
        let there = held(b.get_mut(&source).expect("b node"), &key);
        if i < DELETED {
            assert_eq!(here, None, "{key} was deleted");
            continue;
        }
        let (value, flags, ttl, cas) = here.unwrap_or_else(|| panic!("a1 lacks {key}"));
        let (b_value, b_flags, b_ttl, b_cas) = there.expect("zone b has it");
        assert_eq!(value, format!("{prefix}{i}"), "{key}");
        assert_eq!((value, flags, cas), (b_value, b_flags, b_cas), "{key}");
        match i % 2 {
            1 => assert!(
                (ttl - b_ttl).abs() <= 3 && ttl > 2900,
                "{key}: ttl {ttl} vs {b_ttl}"
            ),
            _ => assert_eq!(ttl, -1, "{key}"),
        }
    }
    // Exactly its own keys: none owned by a2 came along.
    for i in owned(cluster, "a", "a2")
        .into_iter()
        .filter(|i| *i >= DELETED)
    {
        assert_eq!(held(&mut a1, &format!("k{i}")), None, "k{i} is a2's");
    }
}

#[test]
fn a_restarted_node_copies_exactly_its_keys_from_another_zone() {
    let mut cluster = TestCluster::start(3, 2, "all-minus-one", "");
    fill(&cluster, "b1", "v");
    cluster.restart("a1");
    cluster.wait_warm("a1", Duration::from_secs(30));
    assert_same_as_zone_b(&cluster, "v");
    let live = owned(&cluster, "a", "a1")
        .into_iter()
        .filter(|i| *i >= DELETED)
        .count();
    let copied: usize = stat(&cluster, "a1", "warm_keys").parse().unwrap();
    assert!(copied >= live, "copied {copied} of {live}");
    assert_eq!(stat(&cluster, "a1", "warm_progress"), "100.0");
    assert_eq!(stat(&cluster, "a1", "warm_sources_failed"), "0");
    assert!(
        stat(&cluster, "a1", "warm_tombstones")
            .parse::<u64>()
            .unwrap()
            > 0
    );
}

/// Runs `zonecache status` on a config: (exit code, output).
fn status(cluster: &TestCluster) -> (i32, String) {
    let config = cluster.config_path("a1");
    zonecache_tool(&[
        "status",
        "--sample-ms",
        "50",
        "--config",
        config.to_str().unwrap(),
    ])
}

#[test]
fn writes_during_warm_up_win_and_the_node_is_not_ready_until_warm() {
    let mut cluster = TestCluster::start(3, 2, "all-minus-one", "");
    fill(&cluster, "b1", "v");
    // About 1000 keys at 150 a second: warming for about six seconds,
    // time enough for `zonecache status` even on a loaded machine.
    cluster.restart_with("a1", &["--warm-rate", "150"]);
    let (code, text) = status(&cluster);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("a1 is warming"), "{text}");
    // Overwrite everything while a1 copies.
    let mut c = cluster.node("c1").server.connect();
    for i in DELETED..KEYS {
        let value = format!("w{i}");
        let ttl = if i % 2 == 1 { 3000 } else { 0 };
        let line = format!("set k{i} {} {ttl} {}\r\n{value}\r\n", i % 7, value.len());
        assert_eq!(c.request(line.as_bytes()), b"STORED\r\n", "k{i}");
    }
    cluster.wait_warm("a1", Duration::from_secs(30));
    assert_same_as_zone_b(&cluster, "w");
    let start = Instant::now();
    loop {
        let (code, text) = status(&cluster);
        if code == 0 {
            assert!(text.contains(" done"), "{text}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_source_that_does_not_answer_is_replaced_by_a_third_zone() {
    let mut cluster = TestCluster::start(3, 2, "all-minus-one", "");
    fill(&cluster, "c1", "v");
    cluster.node("b1").server.signal(libc::SIGSTOP);
    cluster.restart("a1");
    cluster.wait_warm("a1", Duration::from_secs(40));
    assert_eq!(stat(&cluster, "a1", "warm_sources_failed"), "1");
    assert_eq!(stat(&cluster, "a1", "warm_exhausted"), "0.0");
    cluster.node("b1").server.signal(libc::SIGCONT);
    assert_same_as_zone_b(&cluster, "v");
}
