//! The client against real processes: direct routing with zone fallback
//! (SIGSTOP, SIGKILL), write policies, conditional writes, front mode,
//! lanes (budgets, batch port, no read repair on batch), coalescing proven
//! by the nodes' request counters, and stock memcached as a one-zone cluster.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::join_all;
use zonecache_client::{Client, Error, Lane, Mode, StoreOptions, WritePolicy};
use zonecache_tests::{Server, TestCluster};

/// `read_requests` summed over the nodes.
fn read_requests(cluster: &TestCluster) -> u64 {
    cluster
        .nodes
        .iter()
        .map(|n| n.server.connect().stat("read_requests"))
        .sum()
}

/// A direct client in `zone`. Deadlines are loose (1 s) for tests that are
/// not about deadlines, so a busy test machine cannot turn a slow reply into
/// a fallback that changes what they count.
fn client(cluster: &TestCluster, zone: &str) -> Client {
    Client::builder_file(cluster.config_path(&cluster.zone(zone)[0]))
        .home_zone(zone)
        .realtime_deadlines(Duration::from_secs(1), Duration::from_secs(1))
        .build()
        .expect("client")
}

/// The owner of `key` in the client's home zone.
fn home_owner(client: &Client, key: &str) -> String {
    client.topology().zones[0].owner(key.as_bytes()).id.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_reads_fall_back_when_the_home_owner_hangs_or_dies() {
    let mut cluster = TestCluster::start(3, 1, "all", "");
    // The config's deadlines (20 ms reads): a hung owner must cost little.
    let client = Client::builder_file(cluster.config_path("a1"))
        .build()
        .unwrap();
    for i in 0..20 {
        client
            .set(format!("k{i}"), format!("v{i}"), StoreOptions::ttl(300))
            .await
            .unwrap();
    }
    // Hung home owner: the first reads cost one deadline, then it is marked
    // down and reads go straight to zone b.
    cluster.node("a1").server.signal(libc::SIGSTOP);
    for i in 0..20 {
        let started = Instant::now();
        let v = client.get(format!("k{i}")).await.unwrap();
        assert_eq!(v, Some(Bytes::from(format!("v{i}"))));
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "read {i} took {:?}",
            started.elapsed()
        );
    }
    let stats = client.stats();
    assert_eq!(stats.fallbacks, 20);
    assert!(stats.hits >= 20);
    cluster.node("a1").server.signal(libc::SIGCONT);
    // Dead home owner: reads still hit, and many keys at once go to zone b
    // as one request.
    cluster.node_mut("a1").server.signal(libc::SIGKILL);
    let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
    let found = client.get_many(&keys).await.unwrap();
    assert_eq!(found.len(), 20);
    let hit = found[&Bytes::from("k3")].clone().unwrap().unwrap();
    assert_eq!(hit.value, Bytes::from("v3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_reads_to_a_hung_home_owner_are_hedged_to_the_next_zone() {
    // A long read deadline (2 s): a read well within it was hedged.
    let cluster = TestCluster::start(2, 1, "all", "read_deadline_ms = 2000");
    let client = Client::builder_file(cluster.config_path("a1"))
        .build()
        .unwrap();
    client.set("k", "v", StoreOptions::ttl(300)).await.unwrap();
    // The owner's answers teach the delay a read waits before it is hedged.
    for _ in 0..zonecache_client::route::HEDGE_WINDOW {
        client.get("k").await.unwrap();
    }
    assert_eq!((client.stats().hedged, client.stats().hedge_wins), (0, 0));
    cluster.node("a1").server.signal(libc::SIGSTOP);
    for i in 0..5 {
        let started = Instant::now();
        assert_eq!(client.get("k").await.unwrap(), Some(Bytes::from("v")));
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "read {i} took {:?}: not hedged",
            started.elapsed()
        );
    }
    let stats = client.stats();
    assert_eq!((stats.hedged, stats.hedge_wins), (5, 5));
    assert_eq!(stats.fallbacks, 5);
    cluster.node("a1").server.signal(libc::SIGCONT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_many_answers_per_key_when_some_keys_have_no_zone_left() {
    let mut cluster = TestCluster::start(2, 2, "one", "");
    let client = client(&cluster, "a");
    let keys: Vec<String> = (0..24).map(|i| format!("k{i}")).collect();
    // Every fourth key is never stored.
    let stored = |k: &str| k[1..].parse::<u32>().unwrap() % 4 != 0;
    for k in keys.iter().filter(|k| stored(k)) {
        client
            .set(k, k.clone(), StoreOptions::default())
            .await
            .unwrap();
    }
    // a1 and b1 die: a key owned by both has no zone left to answer for it.
    for id in ["a1", "b1"] {
        cluster.node_mut(id).server.signal(libc::SIGKILL);
    }
    let owner_in_b = |k: &str| client.topology().zones[1].owner(k.as_bytes()).id.clone();
    let found = client.get_many(&keys).await.unwrap();
    assert_eq!(found.len(), keys.len(), "every key has an answer");
    let (mut errors, mut hits, mut misses) = (0, 0, 0);
    for k in &keys {
        let lookup = &found[&Bytes::from(k.clone())];
        let lost = home_owner(&client, k) == "a1" && owner_in_b(k) == "b1";
        match lookup {
            Err(e) => {
                assert!(lost, "{k}: {e}");
                errors += 1;
            }
            Ok(Some(item)) => {
                assert!(!lost && stored(k), "{k}");
                assert_eq!(item.value, Bytes::from(k.clone()));
                hits += 1;
            }
            Ok(None) => {
                assert!(!lost && !stored(k), "{k}: a miss of a stored key");
                misses += 1;
            }
        }
    }
    assert!(
        errors > 0 && hits > 0 && misses > 0,
        "{errors} {hits} {misses}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_policies_with_a_zone_down() {
    let mut cluster = TestCluster::start(3, 1, "all", "write_deadline_ms = 200");
    cluster.node_mut("c1").server.signal(libc::SIGKILL);
    let all = client(&cluster, "a");
    match all.set("w", "x", StoreOptions::default()).await {
        Err(Error::WritePolicy {
            policy,
            acked,
            unknown,
            zones,
        }) => {
            // It gives up as soon as the policy cannot be met; a dead node
            // refused the connection, so nothing is unknown.
            assert_eq!((policy, zones, unknown), ("all", 3, 0));
            assert!(acked < 3);
        }
        other => panic!("expected the policy to fail, got {other:?}"),
    }
    let lenient = Client::builder_file(cluster.config_path("a1"))
        .write_policy(WritePolicy::AllMinusOne)
        .build()
        .unwrap();
    lenient
        .set("w", "y", StoreOptions::default())
        .await
        .unwrap();
    assert_eq!(lenient.get("w").await.unwrap(), Some(Bytes::from("y")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_in_direct_mode_keeps_the_zones_equal() {
    let cluster = TestCluster::start(2, 2, "all", "");
    let client = client(&cluster, "a");
    let opts = StoreOptions { ttl: 0, flags: 42 };
    client.set("s", "1", opts).await.unwrap();
    assert_eq!(client.add("s", "2", opts).await, Err(Error::NotStored));
    client.add("fresh", "a", opts).await.unwrap();
    assert_eq!(
        client.replace("nope", "x", opts).await,
        Err(Error::NotStored)
    );
    client.replace("fresh", "b", opts).await.unwrap();
    client.append("fresh", "c").await.unwrap();
    client.prepend("fresh", "_").await.unwrap();
    assert_eq!(client.get("fresh").await.unwrap(), Some(Bytes::from("_bc")));
    assert_eq!(client.incr("s", 41).await.unwrap(), 42);
    assert_eq!(client.decr("s", 2).await.unwrap(), 40);
    assert_eq!(client.incr("missing", 1).await, Err(Error::NotFound));
    let item = client.gets("s").await.unwrap().expect("present");
    assert_eq!((item.value.as_ref(), item.flags), (&b"40"[..], 42));
    client.cas("s", "cas'd", opts, item.cas).await.unwrap();
    assert_eq!(
        client.cas("s", "again", opts, item.cas).await,
        Err(Error::Exists)
    );
    client.touch("s", 100).await.unwrap();
    assert_eq!(
        client.gat("s", 200).await.unwrap(),
        Some(Bytes::from("cas'd"))
    );
    assert_eq!(client.touch("missing", 1).await, Err(Error::NotFound));
    // Both zones hold the same value, flags and CAS token.
    let mut seen = Vec::new();
    for zone in ["a", "b"] {
        let owner = cluster
            .zone(zone)
            .into_iter()
            .find(|id| cluster.holders("s").contains(id))
            .expect("a holder per zone");
        seen.push(cluster.local(&owner).request(b"mg s v f c\r\n"));
    }
    assert_eq!(seen[0], seen[1]);
    assert!(String::from_utf8_lossy(&seen[0]).starts_with("VA 5 f42 c"));
    client.delete("s").await.unwrap();
    assert_eq!(client.delete("s").await, Err(Error::NotFound));
    assert!(cluster.holders("s").is_empty());
    // Keys are checked before anything is sent.
    assert!(matches!(
        client.get("has space").await,
        Err(Error::InvalidKey(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn front_mode_lets_a_home_node_route_and_survives_its_death() {
    let mut cluster = TestCluster::start(2, 2, "all-minus-one", "");
    let front = Client::builder_file(cluster.config_path("a1"))
        .mode(Mode::Front)
        .build()
        .unwrap();
    front.set("f", "v", StoreOptions::default()).await.unwrap();
    // The front replicated it: one copy per zone.
    assert_eq!(cluster.holders("f").len(), 2);
    assert_eq!(front.get("f").await.unwrap(), Some(Bytes::from("v")));
    assert_eq!(front.incr("n", 1).await, Err(Error::NotFound));
    // Kill the key's home owner: the client uses the other home node as
    // the front, which falls back to zone b.
    let owner = home_owner(&front, "f");
    cluster.node_mut(&owner).server.signal(libc::SIGKILL);
    assert_eq!(front.get("f").await.unwrap(), Some(Bytes::from("v")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_fetch_each_key_once_and_one_request_per_owner() {
    let cluster = TestCluster::start(1, 3, "all", "");
    let client = client(&cluster, "a");
    let distinct: Vec<String> = (0..20).map(|i| format!("item:{i}")).collect();
    for k in &distinct[..15] {
        client.set(k, "x", StoreOptions::default()).await.unwrap();
    }
    let owners: std::collections::HashSet<String> =
        distinct.iter().map(|k| home_owner(&client, k)).collect();
    // 60 lookups of 20 keys (each asked three times), started together.
    let lookups: Vec<&String> = distinct.iter().cycle().take(60).collect();
    let before = read_requests(&cluster);
    let scope = client.scope();
    let answers = join_all(lookups.iter().map(|k| scope.get(k))).await;
    let sent = read_requests(&cluster) - before;
    assert!(
        sent <= owners.len() as u64,
        "{sent} requests for {} owners",
        owners.len()
    );
    assert_eq!(scope.lookups(), 60);
    assert_eq!(scope.loads(), 1);
    let hits = answers.iter().filter(|a| matches!(a, Ok(Some(_)))).count();
    assert_eq!(hits, 45, "15 present keys × 3 asks");
    assert_eq!(client.stats().coalesced, 40);
    // Asked again later in the scope: answered from its memo, no request.
    let before = read_requests(&cluster);
    assert_eq!(scope.get("item:1").await.unwrap(), Some(Bytes::from("x")));
    assert_eq!(scope.get("item:19").await.unwrap(), None);
    assert_eq!(read_requests(&cluster), before);
    // want + load: explicit batching.
    let scope = client.scope();
    for k in &distinct {
        scope.want(k).unwrap();
    }
    scope.load().await.unwrap();
    assert_eq!(scope.loads(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reads_of_a_key_across_scopes_share_one_request() {
    let cluster = TestCluster::start(1, 1, "all", "");
    let client = Client::builder_file(cluster.config_path("a1"))
        .realtime_deadlines(Duration::from_secs(5), Duration::from_secs(5))
        .build()
        .unwrap();
    client
        .set("hot", "v", StoreOptions::default())
        .await
        .unwrap();
    let node = &cluster.node("a1").server;
    let before = node.connect().stat("read_requests");
    // Hold the node still so both reads are in flight at once.
    node.signal(libc::SIGSTOP);
    let (a, b) = (client.scope(), client.scope());
    let first = tokio::spawn(async move { a.get("hot").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = tokio::spawn(async move { b.get("hot").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    node.signal(libc::SIGCONT);
    assert_eq!(first.await.unwrap().unwrap(), Some(Bytes::from("v")));
    assert_eq!(second.await.unwrap().unwrap(), Some(Bytes::from("v")));
    assert_eq!(
        node.connect().stat("read_requests") - before,
        1,
        "{:?}",
        client.stats()
    );
    assert_eq!(client.stats().coalesced, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_lane_has_its_own_budget_port_and_no_read_repair() {
    let cluster = TestCluster::start(2, 1, "all", "");
    let client = Client::builder_file(cluster.config_path("a1"))
        .in_flight(64, 2)
        .batch_deadline(Duration::from_secs(5))
        .build()
        .unwrap();
    client.set("k", "v", StoreOptions::default()).await.unwrap();
    // A batch flood beyond its budget of 2 is shed at once; realtime calls
    // made meanwhile, one after another, are never refused or late.
    let batch = client.batch();
    assert_eq!(batch.lane(), Lane::Batch);
    let flood = tokio::spawn({
        let batch = batch.clone();
        async move {
            let mut results = Vec::new();
            for round in 0..10 {
                let keys: Vec<String> = (0..50).map(|i| format!("flood{round}-{i}")).collect();
                results.extend(join_all(keys.iter().map(|k| batch.get(k))).await);
            }
            results
        }
    });
    let mut realtime = Vec::new();
    while !flood.is_finished() || realtime.len() < 50 {
        realtime.push(client.get("k").await);
    }
    let flood = flood.await.unwrap();
    let shed = flood
        .iter()
        .filter(|r| matches!(r, Err(Error::Busy)))
        .count();
    let served = flood.iter().filter(|r| r.is_ok()).count();
    assert!(shed > 0 && served > 0, "shed {shed}, served {served}");
    assert_eq!(shed + served, 500);
    assert!(
        realtime.iter().all(|r| matches!(r, Ok(Some(_)))),
        "{:?}",
        client.stats()
    );
    assert_eq!(client.stats().timeouts, 0);
    // Batch traffic arrived on the node's batch port.
    let a1 = &cluster.node("a1").server;
    assert!(a1.connect().stat("batch_connections") >= 1);
    // A key only zone b has: a batch read finds it without copying it home,
    // a realtime read copies it home (read repair).
    let b1 = cluster.local("b1").request(b"set only-b 0 0 1\r\nz\r\n");
    assert_eq!(b1, b"STORED\r\n");
    assert_eq!(batch.get("only-b").await.unwrap(), Some(Bytes::from("z")));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(cluster.holders("only-b"), ["b1"]);
    assert_eq!(client.get("only-b").await.unwrap(), Some(Bytes::from("z")));
    let deadline = Instant::now() + Duration::from_secs(5);
    while cluster.holders("only-b").len() < 2 {
        assert!(
            Instant::now() < deadline,
            "realtime read never repaired home"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_memcached_is_a_one_zone_cluster() {
    let servers = [Server::memcached(&[]), Server::memcached(&[])];
    let addrs: Vec<_> = servers.iter().map(|s| s.addr).collect();
    let client = Client::builder_seeds(&addrs).build().unwrap();
    let opts = StoreOptions { ttl: 60, flags: 7 };
    for i in 0..50 {
        client
            .set(format!("m{i}"), format!("{i}"), opts)
            .await
            .unwrap();
    }
    let keys: Vec<String> = (0..60).map(|i| format!("m{i}")).collect();
    let found = client.get_many(&keys).await.unwrap();
    assert_eq!(found.len(), 60, "every key asked for has an answer");
    let hits = found.values().filter(|l| matches!(l, Ok(Some(_)))).count();
    assert_eq!(hits, 50);
    assert_eq!(found[&Bytes::from("m55")], Ok(None));
    assert_eq!(found[&Bytes::from("m9")].clone().unwrap().unwrap().flags, 7);
    // Both servers got a share of the keys.
    for s in &servers {
        assert!(s.connect().stat("curr_items") > 5);
    }
    assert_eq!(client.add("m1", "x", opts).await, Err(Error::NotStored));
    client.append("m1", "a").await.unwrap();
    client.prepend("m1", "p").await.unwrap();
    assert_eq!(client.get("m1").await.unwrap(), Some(Bytes::from("p1a")));
    assert_eq!(client.incr("m2", 5).await.unwrap(), 7);
    assert_eq!(client.decr("m2", 10).await.unwrap(), 0);
    let item = client.gets("m3").await.unwrap().unwrap();
    client.cas("m3", "new", opts, item.cas).await.unwrap();
    assert_eq!(
        client.cas("m3", "old", opts, item.cas).await,
        Err(Error::Exists)
    );
    client.touch("m3", 10).await.unwrap();
    assert_eq!(
        client.gat("m3", 20).await.unwrap(),
        Some(Bytes::from("new"))
    );
    client.delete("m3").await.unwrap();
    assert_eq!(client.get("m3").await.unwrap(), None);
    assert_eq!(client.delete("m3").await, Err(Error::NotFound));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_shedding_its_batch_lane_is_reported_as_shed() {
    let batch_port = zonecache_tests::free_port();
    let server = Server::zonecached(&[
        "--batch-port",
        &batch_port.to_string(),
        "--batch-shed-after-ms",
        "0",
    ]);
    let mut config = zonecache_client::ClusterConfig::single_zone(&[server.addr]);
    config.zones[0].nodes[0].batch_addr =
        Some(std::net::SocketAddr::from(([127, 0, 0, 1], batch_port)).into());
    let client = zonecache_client::ClientBuilder::config(config)
        .build()
        .unwrap();
    client.set("k", "v", StoreOptions::default()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    match client.batch().get("k").await {
        Err(e) => assert!(e.is_shed(), "{e}"),
        Ok(v) => panic!("expected the batch read to be shed, got {v:?}"),
    }
    assert_eq!(client.stats().shed, 1);
    assert_eq!(client.get("k").await.unwrap(), Some(Bytes::from("v")));
}
