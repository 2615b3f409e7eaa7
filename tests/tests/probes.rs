//! `zonecache ready` and `zonecache leave` on real processes: the probe
//! fails while a node warms and after it is told it is leaving; a leaving
//! node's reads go to other zones at once, and writes go on.

use std::time::{Duration, Instant};

use zonecache_tests::{zonecache_tool, TestCluster};

fn addr(cluster: &TestCluster, id: &str) -> String {
    cluster.node(id).server.addr.to_string()
}

#[test]
fn ready_fails_while_warming_and_passes_once_warm() {
    let mut cluster = TestCluster::start(2, 1, "all-minus-one", "");
    let mut c = cluster.node("b1").server.connect();
    for i in 0..600 {
        let line = format!("set k{i} 0 0 1\r\nx\r\n");
        assert_eq!(c.request(line.as_bytes()), b"STORED\r\n");
    }
    // 600 keys at 100 a second: warming for about six seconds.
    cluster.restart_with("a1", &["--warm-rate", "100"]);
    let (code, text) = zonecache_tool(&["ready", &addr(&cluster, "a1")]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("is warming"), "{text}");
    let start = Instant::now();
    loop {
        let (code, text) = zonecache_tool(&["ready", &addr(&cluster, "a1")]);
        if code == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "never ready: {text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let copied: u64 = cluster.node("a1").server.stats()["warm_keys"]
        .parse()
        .unwrap();
    assert!(copied >= 570, "ready at 95 %: {copied} of 600 copied");
    let (code, text) = zonecache_tool(&["ready", "127.0.0.1:1"]);
    assert_eq!(code, 1, "{text}");
}

#[test]
fn a_leaving_node_serves_no_reads_but_takes_writes() {
    let cluster = TestCluster::start(2, 2, "all-minus-one", "");
    let keys: Vec<String> = (0..40)
        .map(|i| format!("k{i}"))
        .filter(|k| cluster.owner("a", k) == "a1")
        .collect();
    assert!(!keys.is_empty());
    let mut front = cluster.node("a2").server.connect();
    for k in &keys {
        let line = format!("set {k} 0 0 2\r\nv1\r\n");
        assert_eq!(front.request(line.as_bytes()), b"STORED\r\n");
    }
    // Only a holder of the cluster secret may tell a node it leaves.
    let (code, text) = zonecache_tool(&["leave", &addr(&cluster, "a1"), "--grace-ms", "0"]);
    assert_eq!(code, 3, "{text}");
    assert!(text.contains("cluster secret"), "{text}");
    let other = cluster.config_path("a1").with_file_name("other-secret");
    std::fs::write(&other, "not the cluster's secret at all").unwrap();
    let (code, text) = zonecache_tool(&[
        "leave",
        &addr(&cluster, "a1"),
        "--grace-ms",
        "0",
        "--secret-file",
        other.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("did not prove the cluster secret"), "{text}");
    let (code, text) = zonecache_tool(&["ready", &addr(&cluster, "a1")]);
    assert_eq!(code, 0, "a refused leave changed nothing: {text}");
    let config = cluster.config_path("a1");
    let (code, text) = zonecache_tool(&[
        "leave",
        &addr(&cluster, "a1"),
        "--grace-ms",
        "0",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{text}");
    let (code, text) = zonecache_tool(&["ready", &addr(&cluster, "a1")]);
    assert_eq!((code, text.contains("is leaving")), (1, true), "{text}");
    let hits_before = cluster.node("a1").server.connect().stat("get_hits");
    for k in &keys {
        let reply = front.request(format!("get {k}\r\n").as_bytes());
        assert_eq!(reply, format!("VALUE {k} 0 2\r\nv1\r\nEND\r\n").as_bytes());
        let line = format!("set {k} 0 0 2\r\nv2\r\n");
        assert_eq!(front.request(line.as_bytes()), b"STORED\r\n");
    }
    let hits_after = cluster.node("a1").server.connect().stat("get_hits");
    assert_eq!(hits_after, hits_before, "a1 served no reads");
    // Its store still took the writes: it holds each key at the version
    // zone b holds (its reads are refused, so ask its key dump).
    let mut a1 = cluster.node("a1").server.connect();
    a1.send(b"lru_crawler metadump all\r\n");
    let dump = String::from_utf8_lossy(&a1.read_until(b"END\r\n")).to_string();
    for k in &keys {
        let (_, cas) = cluster
            .held(&cluster.owner("b", k), k)
            .expect("zone b has it");
        let line = format!("key={k} ");
        let held = dump
            .lines()
            .find(|l| l.starts_with(&line))
            .expect("a1 holds it");
        assert!(
            held.contains(&format!(" cas={cas} ")),
            "{held} vs cas {cas}"
        );
    }
}
