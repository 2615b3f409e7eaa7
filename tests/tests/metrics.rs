//! `/metrics`, `/healthz` and `/readyz` on real nodes, checked with the real
//! tools: `promtool` lints a live scrape and the rules, and a real
//! Prometheus scrapes a small cluster and sees traffic move a counter.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use zonecache_tests::{http_get, zonecache_tool, Server, TestCluster};

/// Samples of a scrape by name and sorted labels (`name{a="1",b="2"}`).
fn samples(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        let key = match series.split_once('{') {
            Some((name, labels)) => {
                let mut labels: Vec<&str> = labels.trim_end_matches('}').split(',').collect();
                labels.sort();
                format!("{name}{{{}}}", labels.join(","))
            }
            None => series.to_string(),
        };
        out.insert(key, value.parse().expect("a number"));
    }
    out
}

fn promtool(args: &[&str], dir: &Path, stdin: Option<&str>) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package) is installed");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus")
}

fn traffic(cluster: &TestCluster, sets: usize) {
    let mut c = cluster.node("a1").server.connect();
    for i in 0..sets {
        assert_eq!(
            c.request(format!("set m{i} 0 0 1\r\nx\r\n").as_bytes()),
            b"STORED\r\n"
        );
        assert!(c
            .request(format!("get m{i}\r\n").as_bytes())
            .starts_with(b"VALUE"));
    }
    assert_eq!(c.request(b"get nothing-here\r\n"), b"END\r\n");
}

#[test]
fn a_scrape_passes_promtool_with_memcached_exporter_names() {
    let cluster = TestCluster::start(3, 1, "all-minus-one", "");
    traffic(&cluster, 20);
    let (status, text) = http_get(cluster.node("a1").metrics, "/metrics");
    assert_eq!(status, 200, "{text}");
    let (ok, lint) = promtool(&["check", "metrics"], &deploy_dir(), Some(&text));
    assert!(ok, "promtool check metrics: {lint}");
    let s = samples(&text);
    let at = |key: &str| *s.get(key).unwrap_or_else(|| panic!("no {key} in\n{text}"));
    assert!(at(r#"memcached_commands_total{command="get",status="hit"}"#) >= 20.0);
    assert!(at(r#"memcached_commands_total{command="get",status="miss"}"#) >= 1.0);
    assert!(at(r#"memcached_commands_total{command="set",status="hit"}"#) >= 20.0);
    assert!(at("memcached_current_items") >= 20.0);
    assert_eq!(at("memcached_limit_bytes"), 16.0 * 1024.0 * 1024.0);
    assert_eq!(at("memcached_up"), 1.0);
    assert_eq!(at(r#"zonecache_node_info{node="a1",zone="a"}"#), 1.0);
    assert_eq!(at(r#"zonecache_peer_up{peer="b1",zone="b"}"#), 1.0);
    assert_eq!(at(r#"zonecache_warm_state{state="done"}"#), 1.0);
    assert_eq!(at(r#"zonecache_zone_drain_ratio{zone="c"}"#), 0.0);
    assert!(at(r#"zonecache_request_duration_seconds_count{class="set",lane="realtime"}"#) >= 20.0);
    assert!(at(r#"zonecache_request_duration_seconds_count{class="get",lane="realtime"}"#) >= 21.0);
    assert!(
        at(r#"zonecache_peer_call_duration_seconds_count{lane="realtime",peer="b1",zone="b"}"#)
            >= 20.0,
        "every set copied to b1"
    );
    // Buckets are cumulative and end at the count.
    let inf =
        at(r#"zonecache_request_duration_seconds_bucket{class="set",lane="realtime",le="+Inf"}"#);
    let ms =
        at(r#"zonecache_request_duration_seconds_bucket{class="set",lane="realtime",le="0.001"}"#);
    assert!(ms <= inf);
    assert_eq!(
        inf,
        at(r#"zonecache_request_duration_seconds_count{class="set",lane="realtime"}"#)
    );
}

#[test]
fn deploy_files_pass_promtool_and_name_only_exported_metrics() {
    let dir = deploy_dir();
    for args in [
        &["check", "rules", "alerts.yml"][..],
        &["test", "rules", "alerts.test.yml"],
        &["check", "config", "prometheus.yml"],
    ] {
        let (ok, text) = promtool(args, &dir, None);
        assert!(ok, "promtool {args:?}: {text}");
    }
    let cluster = TestCluster::start(2, 1, "all", "");
    let (_, text) = http_get(cluster.node("a1").metrics, "/metrics");
    let exported: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    for file in ["alerts.yml", "grafana-dashboard.json"] {
        let body = std::fs::read_to_string(dir.join(file)).unwrap();
        let mut named = 0;
        for word in body.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if !(word.starts_with("memcached_") || word.starts_with("zonecache_")) {
                continue;
            }
            let family = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|suffix| word.strip_suffix(suffix))
                .filter(|f| exported.contains(f))
                .unwrap_or(word);
            assert!(
                exported.contains(&family),
                "{file} names {word}, which a node does not export"
            );
            named += 1;
        }
        assert!(named > 5, "{file} names only {named} metrics");
    }
}

#[test]
fn probes_say_alive_and_ready_and_why_not() {
    let cluster = TestCluster::start(3, 1, "all-minus-one", "");
    let a1 = cluster.node("a1").metrics;
    assert_eq!(http_get(a1, "/healthz"), (200, "ok\n".into()));
    assert_eq!(http_get(a1, "/readyz"), (200, "ready\n".into()));
    assert_eq!(http_get(a1, "/nothing").0, 404);
    let config = cluster.config_path("b1");
    let config = config.to_str().unwrap();
    let drain = |args: &[&str]| {
        let (code, out) = zonecache_tool(&[args, &["--config", config]].concat());
        assert_eq!(code, 0, "{out}");
    };
    drain(&["drain", "a", "--to", "100", "--step", "100"]);
    let (status, why) = http_get(a1, "/readyz");
    assert_eq!(status, 503);
    assert!(why.contains("drained to 100 %"), "{why}");
    assert_eq!(http_get(a1, "/readyz?exclude=drain").0, 200);
    assert_eq!(http_get(cluster.node("b1").metrics, "/readyz").0, 200);
    drain(&["undrain", "a"]);
    assert_eq!(http_get(a1, "/readyz").0, 200);
    let mut c = cluster.local("a1");
    c.send(b"zc_leave\r\n");
    assert_eq!(c.read_until(b"\r\n"), b"OK\r\n");
    let (status, why) = http_get(a1, "/readyz");
    assert_eq!((status, why.as_str()), (503, "is leaving\n"));
    assert_eq!(http_get(a1, "/healthz").0, 200, "alive while leaving");
}

/// The result values of a Prometheus instant query.
fn query(prometheus: &Server, promql: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let encoded: String = promql
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let (status, body) = http_get(prometheus.addr, &format!("/api/v1/query?query={encoded}"));
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    json["data"]["result"]
        .as_array()
        .expect("a vector")
        .iter()
        .map(|r| {
            let labels = r["metric"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            let value = r["value"][1].as_str().unwrap().parse().unwrap();
            (labels, value)
        })
        .collect()
}

/// Polls `promql` (bounded) until `done` holds for its result.
fn wait_for(
    prometheus: &Server,
    promql: &str,
    within: Duration,
    done: impl Fn(&[(BTreeMap<String, String>, f64)]) -> bool,
) -> Vec<(BTreeMap<String, String>, f64)> {
    let start = Instant::now();
    loop {
        let result = query(prometheus, promql);
        if done(&result) {
            return result;
        }
        assert!(
            start.elapsed() < within,
            "{promql}: {result:?} after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn a_real_prometheus_scrapes_every_node_and_sees_a_counter_move() {
    let cluster = TestCluster::start(3, 1, "all-minus-one", "");
    let dir = std::env::temp_dir().join(format!(
        "zc-prometheus-{}-{}",
        std::process::id(),
        cluster.node("a1").metrics.port()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // The deployed rules, loaded by the real server too.
    std::fs::copy(deploy_dir().join("alerts.yml"), dir.join("alerts.yml")).unwrap();
    let targets: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| format!("'{}'", n.metrics))
        .collect();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [alerts.yml]\n\
         scrape_configs:\n  - job_name: zonecache\n    static_configs:\n      - targets: [{}]\n",
        targets.join(", ")
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let prometheus = Server::prometheus(&dir.join("prometheus.yml"), &dir.join("data"));
    let start = Instant::now();
    while http_get(prometheus.addr, "/-/ready").0 != 200 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "Prometheus not ready"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let up = wait_for(
        &prometheus,
        "up{job=\"zonecache\"}",
        Duration::from_secs(60),
        |r| r.len() == 3 && r.iter().all(|(_, v)| *v == 1.0),
    );
    assert_eq!(up.len(), 3);
    let sets = "sum(memcached_commands_total{command=\"set\",status=\"hit\",instance=\"";
    let sets = format!("{sets}{}\"}})", cluster.node("a1").metrics);
    let before = wait_for(&prometheus, &sets, Duration::from_secs(30), |r| {
        r.len() == 1
    })[0]
        .1;
    traffic(&cluster, 50);
    wait_for(&prometheus, &sets, Duration::from_secs(30), |r| {
        r.first().is_some_and(|(_, v)| *v >= before + 50.0)
    });
    // Peers seen up by each node, grouped by zone through the info metric.
    let zones = wait_for(
        &prometheus,
        "count by (zone) (zonecache_node_info)",
        Duration::from_secs(10),
        |r| r.len() == 3,
    );
    assert!(zones.iter().all(|(_, v)| *v == 1.0), "{zones:?}");
    drop(prometheus);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `stats hotkeys` lines as (key, requests), hottest first.
fn hot_keys(server: &Server) -> Vec<(String, u64)> {
    let text = String::from_utf8(server.request(b"stats hotkeys\r\n", b"END\r\n")).unwrap();
    (1..)
        .map_while(|rank| {
            let line = text
                .lines()
                .find_map(|l| l.strip_prefix(&format!("STAT hotkey:{rank} ")))?;
            let (key, n) = line.rsplit_once(' ')?;
            Some((key.to_string(), n.parse().ok()?))
        })
        .collect()
}

#[test]
fn the_hot_keys_of_a_zipf_workload_are_its_true_top_ten() {
    use rand::distributions::Distribution;
    use rand::SeedableRng;
    // Counts are never halved during the test, so the order is exact.
    let node = Server::zonecached(&["--hot-key-half-life", "3600"]);
    let zipf = rand_distr::Zipf::new(100_000, 1.1).unwrap();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(11);
    let mut exact: BTreeMap<String, u64> = BTreeMap::new();
    let mut c = node.connect();
    for _ in 0..200 {
        let mut batch = String::new();
        for _ in 0..500 {
            let key = format!("z:{}", zipf.sample(&mut rng) as u64);
            batch.push_str(&format!("get {key}\r\n"));
            *exact.entry(key).or_default() += 1;
        }
        c.request(batch.as_bytes());
    }
    let mut truth: Vec<(String, u64)> = exact.into_iter().collect();
    truth.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    assert!(truth[9].1 > truth[10].1, "no tie at rank 10: {truth:?}");
    let found = hot_keys(&node);
    let got: Vec<&str> = found[..10].iter().map(|(k, _)| k.as_str()).collect();
    let want: Vec<&str> = truth[..10].iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(got, want, "hot keys {found:?}");
    // Estimates never under-count.
    for ((_, est), (_, n)) in found.iter().zip(&truth).take(10) {
        assert!(est >= n, "{found:?} vs {truth:?}");
    }

    // With names hidden, keys show as hashes only; off counts nothing.
    let hidden = Server::zonecached(&["--hot-keys", "hashed"]);
    hidden.request(b"get secret-user-email\r\n", b"END\r\n");
    let found = hot_keys(&hidden);
    assert_eq!(found.len(), 1);
    assert!(found[0].0.starts_with('#') && !found[0].0.contains("secret"));
    let off = Server::zonecached(&["--hot-keys", "off"]);
    off.request(b"get k\r\n", b"END\r\n");
    assert!(hot_keys(&off).is_empty());
}

#[test]
fn hot_keys_show_in_a_scrape_and_in_status() {
    let cluster = TestCluster::start(2, 1, "all", "");
    let mut c = cluster.node("a1").server.connect();
    c.request("get hot:1\r\n".repeat(60).as_bytes());
    c.request("get warm:2\r\n".repeat(20).as_bytes());
    let (_, text) = http_get(cluster.node("a1").metrics, "/metrics");
    let s = samples(&text);
    let top = "zonecache_hot_key_share{key=\"hot:1\",rank=\"1\"}";
    let share = s.get(top).unwrap_or_else(|| panic!("{top} in {text}"));
    assert!(*share > 0.5 && *share < 1.0, "{share}");
    assert!(s.contains_key("zonecache_hot_key_requests{key=\"warm:2\",rank=\"2\"}"));
    assert!(s["zonecache_hot_key_window_requests"] >= 40.0);

    let config = cluster.config_path("a1");
    let (_, out) = zonecache_tool(&["status", "--config", config.to_str().unwrap(), "--hot", "3"]);
    let row = |rank: &str| {
        out.lines()
            .find(|l| l.split_whitespace().take(2).eq(["a1", rank]))
            .unwrap_or_else(|| panic!("no hot key {rank} for a1 in {out}"))
            .to_string()
    };
    assert!(row("1").contains("hot:1"), "{out}");
    assert!(row("2").contains("warm:2"), "{out}");
}

#[test]
fn the_rust_clients_figures_reach_the_apps_metrics_recorder() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use zonecache_client::{Client, StoreOptions};
    let cluster = TestCluster::start(2, 1, "all", "");
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // The app's recorder (here a local one, on the thread that runs the
    // client's tasks).
    metrics::with_local_recorder(&recorder, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let client = Client::builder_file(cluster.config_path("a1"))
                .build()
                .unwrap();
            client
                .set("m:1", "v", StoreOptions::default())
                .await
                .unwrap();
            assert!(client.get("m:1").await.unwrap().is_some());
            assert!(client.get("m:none").await.unwrap().is_none());
            assert!(client
                .add("m:1", "w", StoreOptions::default())
                .await
                .is_err());
        });
    });
    let mut seen = BTreeMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let (_, key) = key.into_parts();
        let mut labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        labels.sort();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        let value = match value {
            DebugValue::Counter(n) => n as f64,
            DebugValue::Histogram(samples) => samples.len() as f64,
            DebugValue::Gauge(g) => g.into_inner(),
        };
        seen.insert(name, value);
    }
    let get = |name: &str| {
        seen.get(name)
            .copied()
            .unwrap_or_else(|| panic!("{name} in {seen:#?}"))
    };
    assert_eq!(
        get("zonecache_client_requests_total{lane=realtime,op=set,outcome=ok}"),
        1.0
    );
    assert_eq!(
        get("zonecache_client_requests_total{lane=realtime,op=get,outcome=ok}"),
        2.0
    );
    assert_eq!(
        get("zonecache_client_requests_total{lane=realtime,op=add,outcome=not_stored}"),
        1.0
    );
    assert_eq!(
        get("zonecache_client_request_duration_seconds{lane=realtime,op=get}"),
        2.0
    );
    assert_eq!(
        get("zonecache_client_keys_total{lane=realtime,result=hit}"),
        1.0
    );
    assert_eq!(
        get("zonecache_client_keys_total{lane=realtime,result=miss}"),
        1.0
    );
    // The miss was looked for in zone b too.
    assert_eq!(get("zonecache_client_fallbacks_total{lane=realtime}"), 1.0);
}
