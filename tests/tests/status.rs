//! `zonecache status` against a real cluster: every node listed with its
//! zone, the exit code healthy/down, discovery from one seed, and JSON
//! for machines.

use std::process::Command;
use std::time::{Duration, Instant};

use zonecache_tests::{server_binary, TestCluster};

/// Runs `zonecache status` until it reports healthy (exit 0), for up to
/// 10 s: a fresh cluster is healthy once every node holds its peers' read
/// leases and no copy is still waiting as a hint, which a busy machine can
/// delay. Returns the healthy report.
fn status_healthy(args: &[&str]) -> String {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, text) = status(args);
        if code == 0 {
            return text;
        }
        assert!(Instant::now() < until, "not healthy within 10 s:\n{text}");
    }
}

/// Runs `zonecache status` with `args`: (exit code, stdout).
fn status(args: &[&str]) -> (i32, String) {
    let binary = server_binary("zonecache").unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(binary)
        .arg("status")
        .args(["--sample-ms", "300"])
        .args(args)
        .output()
        .expect("zonecache runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    (out.status.code().expect("exited"), text)
}

#[test]
fn status_lists_every_node_and_exits_non_zero_when_one_is_down() {
    let mut cluster = TestCluster::start(3, 2, "all-minus-one", "");
    let mut a1 = cluster.node("a1").server.connect();
    for i in 0..50 {
        a1.send(format!("set k{i} 0 0 1\r\nx\r\n").as_bytes());
        assert_eq!(a1.read_until(b"\r\n"), b"STORED\r\n");
    }
    let config = cluster.config_path("a1");
    let text = status_healthy(&["--config", config.to_str().unwrap()]);
    assert!(text.ends_with("healthy\n"), "{text}");
    for node in ["a1", "a2", "b1", "b2", "c1", "c2"] {
        let row = text
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(node))
            .unwrap_or_else(|| panic!("no row for {node}: {text}"));
        assert_eq!(row.split_whitespace().next(), Some(&node[..1]), "{row}");
        assert!(row.contains(" up "), "{row}");
    }

    // From one seed, as JSON: the same six nodes, each zone's items add up
    // to the 50 keys (one copy per zone).
    let seed = cluster.node("b2").server.addr.to_string();
    let text = status_healthy(&["--seeds", &seed, "--json"]);
    let report: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let nodes = report["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 6);
    for zone in ["a", "b", "c"] {
        let items: u64 = nodes
            .iter()
            .filter(|n| n["zone"] == zone)
            .map(|n| n["items"].as_u64().unwrap())
            .sum();
        assert_eq!(items, 50, "zone {zone}: {text}");
    }

    cluster.node_mut("c1").server.signal(libc::SIGKILL);
    let (code, text) = status(&["--config", config.to_str().unwrap()]);
    assert_eq!(code, 1, "{text}");
    let row = text
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("c1"))
        .expect("c1's row");
    assert!(row.contains(" down "), "{row}");
    assert!(text.contains("problem: c1"), "{text}");
}
