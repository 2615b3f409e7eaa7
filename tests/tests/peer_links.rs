//! Peer links are authenticated: only a holder of the cluster secret can
//! make a connection peer traffic (applied where it lands, never routed),
//! and every `zc_` command that bypasses routing or steers a node is an
//! unknown command to anyone else — on the client port and the batch port.
//! Real processes; the proofs are the client crate's `credential.rs`.

use std::time::Duration;

use zonecache_client::{ClientBuilder, ClusterSecret, StoreOptions};
use zonecache_tests::{Conn, TestCluster};

/// What a node answers an ordinary connection for each peer-only command.
fn assert_no_peer_commands(c: &mut Conn) {
    for line in [
        "zc_peer\r\n",
        "zc_peer 00\r\n",
        "zc_lease a1\r\n",
        "zc_lease a1 fenced\r\n",
        "zc_asked a1\r\n",
        "zc_drain a 100\r\n",
        "zc_leave\r\n",
        "zc_dump 0 10 a a1\r\n",
        "zc_gets k\r\n",
        "zc_gats 0 k\r\n",
    ] {
        assert_eq!(c.request(line.as_bytes()), b"ERROR\r\n", "{line:?}");
    }
}

#[test]
fn an_ordinary_client_cannot_act_as_a_peer() {
    let cluster = TestCluster::start(2, 1, "all", "");
    let a1 = cluster.node("a1");
    let batch = cluster.config().zones[0].nodes[0]
        .batch_addr
        .as_ref()
        .unwrap()
        .socket_addr()
        .unwrap();
    for mut c in [a1.server.connect(), Conn::open(batch)] {
        assert_no_peer_commands(&mut c);
        // A challenge is answered, but a proof without the secret is not
        // taken, and the connection stays an ordinary one.
        let nonce = ClusterSecret::nonce();
        let reply = c.request(format!("zc_challenge {nonce}\r\n").as_bytes());
        assert!(reply.starts_with(b"ZC_CHALLENGE "), "{reply:?}");
        let guess = format!("zc_peer {}\r\n", "ab".repeat(32));
        assert_eq!(c.request(guess.as_bytes()), b"ERROR\r\n");
        assert_no_peer_commands(&mut c);
        // Its writes are routed: both zones get them.
        assert_eq!(c.request(b"set routed 0 0 1\r\nx\r\n"), b"STORED\r\n");
    }
    assert_eq!(cluster.holders("routed"), ["a1", "b1"]);
    assert!(a1.server.connect().stat("peer_links_refused") >= 2);

    // With the secret, the same connection is a peer link: its write lands
    // in zone a only, as a peer's copy does.
    let mut peer = cluster.local("a1");
    assert_eq!(peer.request(b"set only-here 0 0 1\r\nx\r\n"), b"STORED\r\n");
    assert_eq!(cluster.holders("only-here"), ["a1"]);
    assert_eq!(peer.request(b"zc_asked b1\r\n").last(), Some(&b'\n'));
    assert_ne!(peer.request(b"zc_asked b1\r\n"), b"ERROR\r\n");
}

#[test]
fn a_node_with_another_secret_is_refused_by_its_peers() {
    let mut cluster = TestCluster::start(2, 1, "all", "");
    // b1 comes back with a secret of its own.
    let path = cluster.config_path("b1");
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text.find("secret = \"").expect("an inline secret") + "secret = \"".len();
    let end = start + text[start..].find('"').unwrap();
    let impostor = format!(
        "{}{}{}",
        &text[..start],
        ClusterSecret::generate(),
        &text[end..]
    );
    std::fs::write(&path, impostor).unwrap();
    cluster.restart("b1");

    // a1 cannot copy writes to b1 (nor b1 to a1): under `all`, a write is
    // not acknowledged, and neither stores the other's copy.
    let mut a1 = cluster.node("a1").server.connect();
    a1.send(b"set k 0 0 1\r\nx\r\n");
    let reply = a1.read_until(b"\r\n");
    assert!(reply.starts_with(b"SERVER_ERROR"), "{reply:?}");
    let mut b1 = cluster.node("b1").server.connect();
    b1.send(b"set j 0 0 1\r\ny\r\n");
    assert!(b1.read_until(b"\r\n").starts_with(b"SERVER_ERROR"));
    // Neither took the other's copy (each keeps it as a hint).
    std::thread::sleep(Duration::from_millis(500));
    for id in ["a1", "b1"] {
        let items = cluster.node(id).server.connect().stat("curr_items");
        assert_eq!(items, 1, "{id} holds its own write only");
    }
}

#[test]
fn a_direct_mode_client_proves_the_cluster_secret() {
    let cluster = TestCluster::start(2, 1, "all", "");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // The config's secret: writes go to each zone as a peer's copies.
        let client = ClientBuilder::config_file(cluster.config_path("a1"))
            .home_zone("a")
            .build()
            .unwrap();
        client
            .set("direct", "v", StoreOptions::ttl(0))
            .await
            .unwrap();
        assert_eq!(client.get("direct").await.unwrap().unwrap(), &b"v"[..]);
        // Another secret: no node takes its connections.
        let wrong = ClientBuilder::config_file(cluster.config_path("a1"))
            .home_zone("a")
            .cluster_secret(ClusterSecret::new(ClusterSecret::generate().as_bytes()).unwrap())
            .build()
            .unwrap();
        let err = wrong
            .set("nope", "v", StoreOptions::ttl(0))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("0 of 2 zones"), "{err}");
        // A multi-zone cluster's config without a secret builds no client.
        let mut open = cluster.config().clone();
        open.secret = None;
        let Err(err) = ClientBuilder::config(open).build() else {
            panic!("built a direct-mode client without the cluster secret");
        };
        assert!(err.to_string().contains("cluster secret"), "{err}");
    });
    assert_eq!(cluster.holders("direct"), ["a1", "b1"]);
    assert_eq!(cluster.holders("nope"), Vec::<String>::new());
    assert!(
        cluster
            .node("a1")
            .server
            .connect()
            .stat("peer_links_accepted")
            >= 1
    );
}
