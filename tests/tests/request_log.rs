//! The request log on real nodes: JSON lines on stderr with the fields an
//! on-call engineer greps, sampled (`--log-sample`), and always for errors
//! and slow requests; on a cluster node, the zones a read tried and
//! whether it fell back.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use zonecache_tests::{Server, TestCluster};

/// The request lines in `log` (waits, bounded, until `want` of them are
/// there: a line is written after its reply is sent).
fn request_lines(log: &Path, want: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .filter(|l| l.contains("zonecache::request"))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        if lines.len() >= want || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn find<'a>(lines: &'a [Value], command: &str, outcome: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["command"] == command && l["outcome"] == outcome)
        .unwrap_or_else(|| panic!("no {command} {outcome} in {lines:#?}"))
}

fn log_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("zc-reqlog-{}-{name}.log", std::process::id()))
}

#[test]
fn every_sampled_request_gets_a_json_line_with_its_fields() {
    let log = log_path("all");
    let c = Server::zonecached_logging(&["--log-format", "json", "--log-sample", "1"], &log);
    let mut conn = c.connect();
    conn.send(b"set k 0 0 1\r\nx\r\nget k nope\r\nget nope\r\nbogus\r\n");
    conn.read_until(b"ERROR\r\n");
    let lines = request_lines(&log, 4);
    let set = find(&lines, "set", "stored");
    assert_eq!(set["keys"], 1);
    assert_eq!(set["lane"], "realtime");
    assert_eq!(set["fallback"], false);
    assert_eq!(set["from_peer"], false);
    assert!(set["duration_us"].as_u64().is_some());
    assert!(set["id"].as_str().unwrap().contains('-'));
    assert_eq!(find(&lines, "get", "partial")["keys"], 2);
    find(&lines, "get", "miss");
    find(&lines, "invalid", "error");
    let ids: std::collections::BTreeSet<_> = lines.iter().map(|l| l["id"].to_string()).collect();
    assert_eq!(ids.len(), lines.len(), "request ids are unique");
}

#[test]
fn unsampled_requests_are_quiet_but_errors_and_slow_ones_are_logged() {
    let log = log_path("errors");
    // Nothing is slow enough here to count as slow.
    let c =
        Server::zonecached_logging(&["--log-format", "json", "--log-slow-us", "10000000"], &log);
    let mut conn = c.connect();
    for i in 0..50 {
        conn.request(format!("set k{i} 0 0 1\r\nx\r\n").as_bytes());
    }
    conn.send(b"incr k1 1\r\n");
    conn.read_until(b"\r\n");
    let lines = request_lines(&log, 1);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(lines[0]["command"], "incr");
    assert_eq!(lines[0]["outcome"], "client_error");
    drop((conn, c));

    // A slow threshold of 0: every request is slow.
    let log = log_path("slow");
    let c = Server::zonecached_logging(&["--log-format", "json", "--log-slow-us", "0"], &log);
    c.request(b"get a\r\n", b"END\r\n");
    find(&request_lines(&log, 1), "get", "miss");
}

#[test]
fn a_read_that_falls_back_says_which_zones_it_tried() {
    let mut cluster = TestCluster::start(2, 1, "all", "");
    let log = log_path("fallback");
    cluster.restart_logging(
        "a1",
        &["--log-format", "json", "--log-sample", "1"],
        Some(&log),
    );
    cluster.wait_warm("a1", Duration::from_secs(20));
    // Only zone b holds the key: written on a peer connection, applied
    // there and not routed.
    let mut b1 = cluster.local("b1");
    assert_eq!(b1.request(b"set only-in-b 0 0 1\r\nx\r\n"), b"STORED\r\n");
    let mut a1 = cluster.node("a1").server.connect();
    assert!(a1.request(b"get only-in-b\r\n").starts_with(b"VALUE"));
    assert_eq!(a1.request(b"set both 0 0 1\r\ny\r\n"), b"STORED\r\n");
    let lines = request_lines(&log, 3);
    let get = lines
        .iter()
        .find(|l| l["command"] == "get" && l["keys"] == 1 && l["outcome"] == "hit")
        .unwrap_or_else(|| panic!("{lines:#?}"));
    assert_eq!(get["zones"], "a,b");
    assert_eq!(get["fallback"], true);
    let set = find(&lines, "set", "stored");
    assert_eq!(set["zones"], "a,b");
    assert_eq!(set["fallback"], false);
    assert!(set["id"].as_str().unwrap().starts_with("a1-"));
}
