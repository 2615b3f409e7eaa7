//! `zonecache drain`/`undrain` against a real cluster: a weight moves that
//! share of a zone's reads (by key) to the other zones, the drain works
//! with the drained zone SIGSTOPped and no read fails, nodes keep the
//! weight across a restart, and undrain gives the reads back at once.

use std::time::{Duration, Instant};

use zonecache_tests::{zonecache_tool, TestCluster};

const KEYS: usize = 300;

/// Reads every key through `front`; each must be its own value.
fn read_all(cluster: &TestCluster, front: &str) {
    let mut c = cluster.node(front).server.connect();
    for i in 0..KEYS {
        c.send(format!("get k{i}\r\n").as_bytes());
        let reply = c.read_until(b"END\r\n");
        let want = format!("VALUE k{i} 0 {}\r\nv{i}\r\nEND\r\n", format!("v{i}").len());
        assert_eq!(String::from_utf8_lossy(&reply), want, "via {front}");
    }
}

/// Gets that nodes of `zone` served from their stores.
fn hits_in(cluster: &TestCluster, zone: &str) -> u64 {
    cluster
        .zone(zone)
        .iter()
        .map(|id| cluster.node(id).server.connect().stat("get_hits"))
        .sum()
}

/// A figure of `stats zones` on `node`.
fn zones_stat(cluster: &TestCluster, node: &str, name: &str) -> String {
    let mut c = cluster.node(node).server.connect();
    c.send(b"stats zones\r\n");
    let text = String::from_utf8_lossy(&c.read_until(b"END\r\n")).to_string();
    let key = format!("STAT {name} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .unwrap_or_else(|| panic!("no {key}in {text}"))
        .to_string()
}

fn drain_percent(cluster: &TestCluster, node: &str, zone: &str) -> String {
    zones_stat(cluster, node, &format!("{zone}:drain_percent"))
}

#[test]
fn a_drain_moves_reads_by_key_and_never_needs_the_drained_zone() {
    let mut cluster = TestCluster::start(3, 2, "all-minus-one", "");
    let config = cluster.config_path("a1");
    let config = config.to_str().unwrap();
    let mut a1 = cluster.node("a1").server.connect();
    for i in 0..KEYS {
        let v = format!("v{i}");
        a1.send(format!("set k{i} 0 0 {}\r\n{v}\r\n", v.len()).as_bytes());
        assert_eq!(a1.read_until(b"\r\n"), b"STORED\r\n");
    }

    // Half of zone c's reads move: c's fronts read about half the keys
    // from zone c, the rest from the other zones; every read still hits.
    let (code, out) = zonecache_tool(&[
        "drain",
        "c",
        "--to",
        "50",
        "--step",
        "25",
        "--interval-ms",
        "50",
        "--config",
        config,
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("c:  50 %"), "{out}");
    let before = hits_in(&cluster, "c");
    read_all(&cluster, "c1");
    let served_by_c = hits_in(&cluster, "c") - before;
    assert!(
        (100..=200).contains(&served_by_c),
        "zone c served {served_by_c} of {KEYS} reads at 50 %"
    );

    // Zone c hangs; the drain to 100 % goes on without it, and no read fails.
    for id in ["c1", "c2"] {
        cluster.node(id).server.signal(libc::SIGSTOP);
    }
    let (code, out) = zonecache_tool(&[
        "drain",
        "c",
        "--to",
        "100",
        "--step",
        "50",
        "--interval-ms",
        "50",
        "--config",
        config,
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("c's own nodes that did not take it"), "{out}");
    for front in ["a1", "b2"] {
        read_all(&cluster, front);
        assert_eq!(drain_percent(&cluster, front, "c"), "100");
    }

    // A node keeps the weight across a restart.
    cluster.restart("b1");
    assert_eq!(drain_percent(&cluster, "b1", "c"), "100");

    // Undrain: at once, on every node; zone c serves all its reads again.
    for id in ["c1", "c2"] {
        cluster.node(id).server.signal(libc::SIGCONT);
    }
    let (code, out) = zonecache_tool(&["undrain", "c", "--config", config]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(drain_percent(&cluster, "c1", "c"), "0");
    // Back from its stop, a node serves from its store once its peers
    // granted it read leases again (bounded wait).
    let until = Instant::now() + Duration::from_secs(10);
    while ["c1", "c2"]
        .iter()
        .any(|id| zones_stat(&cluster, id, "serving_reads") != "1")
    {
        assert!(
            Instant::now() < until,
            "zone c not serving 10 s after SIGCONT"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = hits_in(&cluster, "c");
    read_all(&cluster, "c2");
    assert_eq!(hits_in(&cluster, "c") - before, KEYS as u64);
}

#[test]
fn a_direct_mode_client_follows_a_drain_without_a_restart() {
    let cluster = TestCluster::start(3, 1, "all-minus-one", "");
    let config = cluster.config_path("a1");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = zonecache_client::Client::builder_file(&config)
            .home_zone("a")
            .build()
            .unwrap();
        for i in 0..KEYS {
            client
                .set(format!("k{i}"), format!("v{i}"), Default::default())
                .await
                .unwrap();
        }
        let read_all = || async {
            for i in 0..KEYS {
                let got = client.get(format!("k{i}")).await.unwrap();
                assert_eq!(got.as_deref(), Some(format!("v{i}").as_bytes()));
            }
        };
        let before = hits_in(&cluster, "a");
        read_all().await;
        assert_eq!(
            hits_in(&cluster, "a") - before,
            KEYS as u64,
            "home zone a serves"
        );
        let (code, out) = zonecache_tool(&[
            "drain",
            "a",
            "--to",
            "100",
            "--step",
            "100",
            "--config",
            config.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{out}");
        // The client reads the weights every second.
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let before = hits_in(&cluster, "a");
            read_all().await;
            if hits_in(&cluster, "a") == before {
                break;
            }
            assert!(Instant::now() < until, "the client still reads zone a");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

#[test]
fn a_node_that_missed_a_drain_learns_the_weight_from_its_peers_at_start() {
    let mut cluster = TestCluster::start(3, 1, "all-minus-one", "");
    let config = cluster.config_path("b1");
    let (code, out) = zonecache_tool(&[
        "drain",
        "c",
        "--to",
        "40",
        "--step",
        "40",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    // a1 comes back without the weight it kept (as if it had been down).
    let kept = format!("{}.drain", cluster.config_path("a1").display());
    std::fs::remove_file(&kept).expect("a1 kept the weight");
    cluster.restart("a1");
    let until = Instant::now() + Duration::from_secs(10);
    while drain_percent(&cluster, "a1", "c") != "40" {
        assert!(Instant::now() < until, "a1 did not learn zone c's weight");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(std::path::Path::new(&kept).exists(), "and keeps it again");
}
