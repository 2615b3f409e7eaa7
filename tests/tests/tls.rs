//! TLS on the client and batch ports: served beside the plain ports,
//! mutual TLS, the oldest version allowed, certificates re-read on SIGHUP
//! and `refresh_certs` without dropping open connections, handshake
//! figures in `stats`, real TLS clients (rustls, `openssl s_client`)
//! getting the same replies as from stock memcached with `-Z`, and peer
//! links (and direct-mode clients) over mutual TLS with `[peer_tls]`.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use zonecache_tests::cluster::{ClusterTls, TestCluster};
use zonecache_tests::tls::{Pki, TlsConn};
use zonecache_tests::{free_port, http_get, zonecached_binary, Server};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("zc-tls-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A node with a TLS port (and `extra` arguments); returns it and the
/// TLS port's address.
fn node(pki: &Pki, name: &str, extra: &[&str]) -> (Server, std::net::SocketAddr) {
    let id = pki.issue(name);
    let port = free_port();
    let mut args: Vec<String> = vec![
        "--tls-port".into(),
        port.to_string(),
        "--tls-cert".into(),
        id.cert_file.display().to_string(),
        "--tls-key".into(),
        id.key_file.display().to_string(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::zonecached(&args);
    (server, std::net::SocketAddr::from(([127, 0, 0, 1], port)))
}

fn stat(server: &Server, name: &str) -> String {
    server
        .stats()
        .get(name)
        .cloned()
        .unwrap_or_else(|| panic!("no stat {name}"))
}

/// Whether a TLS client with `config` can open a connection and be served
/// (why not, when not).
fn serves_ok(addr: std::net::SocketAddr, config: Arc<rustls::ClientConfig>) -> bool {
    match serves(addr, config) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("not served: {e}");
            false
        }
    }
}

fn serves_err(addr: std::net::SocketAddr, config: Arc<rustls::ClientConfig>) -> bool {
    serves(addr, config).is_err()
}

fn serves(addr: std::net::SocketAddr, config: Arc<rustls::ClientConfig>) -> Result<(), String> {
    // With TLS 1.3 a refused client certificate shows on the first read.
    let reply = TlsConn::open(addr, config).and_then(|mut c| c.request(b"version\r\n", b"\r\n"))?;
    match reply.starts_with(b"VERSION ") {
        true => Ok(()),
        false => Err(format!("answered {:?}", String::from_utf8_lossy(&reply))),
    }
}

#[test]
fn tls_port_serves_beside_the_plain_one() {
    let pki = Pki::new(&scratch("serve"));
    let metrics = free_port();
    let (server, tls_addr) = node(&pki, "node", &["--metrics-port", &metrics.to_string()]);
    let mut c = TlsConn::open(tls_addr, pki.client_config(None, false)).unwrap();
    assert_eq!(
        c.request(b"set k 0 0 5\r\nhello\r\n", b"\r\n").unwrap(),
        b"STORED\r\n"
    );
    // A large reply crosses many TLS records.
    let big = vec![b'x'; 500_000];
    let mut line = format!("set big 0 0 {}\r\n", big.len()).into_bytes();
    line.extend_from_slice(&big);
    line.extend_from_slice(b"\r\n");
    assert_eq!(c.request(&line, b"\r\n").unwrap(), b"STORED\r\n");
    let reply = c.request(b"get big k\r\n", b"END\r\n").unwrap();
    let mut want = format!("VALUE big 0 {}\r\n", big.len()).into_bytes();
    want.extend_from_slice(&big);
    want.extend_from_slice(b"\r\nVALUE k 0 5\r\nhello\r\nEND\r\n");
    assert!(reply == want, "{} bytes back", reply.len());
    // The plain port sees the same store.
    assert_eq!(
        server.request(b"get k\r\n", b"END\r\n"),
        b"VALUE k 0 5\r\nhello\r\nEND\r\n"
    );
    assert_eq!(stat(&server, "tls_handshakes"), "1");
    assert_eq!(stat(&server, "ssl_handshake_errors"), "0");
    let settings = String::from_utf8(server.request(b"stats settings\r\n", b"END\r\n")).unwrap();
    for line in [
        "STAT ssl_enabled yes",
        "STAT ssl_min_version tlsv1.2",
        "STAT ssl_verify_mode 0",
    ] {
        assert!(settings.contains(line), "{line} in {settings}");
    }
    // Plain text to the TLS port is a failed handshake, counted; the
    // node goes on serving.
    let answer = zonecache_tests::request_at(tls_addr, b"version\r\n", b"\r\n");
    assert!(!answer.starts_with(b"VERSION"), "{answer:?}");
    assert_eq!(stat(&server, "ssl_handshake_errors"), "1");
    assert!(serves_ok(tls_addr, pki.client_config(None, false)));
    let (code, text) = http_get(([127, 0, 0, 1], metrics).into(), "/metrics");
    assert_eq!(code, 200);
    for line in [
        "zonecache_tls_handshakes_total 2",
        "zonecache_tls_handshake_errors_total 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in /metrics");
    }
    // A client trusting another CA refuses the node.
    let other = Pki::new(&scratch("serve-other"));
    assert!(serves_err(tls_addr, other.client_config(None, false)));
}

#[test]
fn a_client_ca_requires_client_certificates() {
    let pki = Pki::new(&scratch("mtls"));
    let ca = pki.ca_file().display().to_string();
    let (server, addr) = node(&pki, "node", &["--tls-client-ca", &ca]);
    let client = pki.issue("client");
    assert!(
        serves_err(addr, pki.client_config(None, false)),
        "no certificate"
    );
    assert!(serves_ok(addr, pki.client_config(Some(&client), false)));
    assert!(
        serves_ok(addr, pki.client_config(Some(&client), true)),
        "TLS 1.2 too"
    );
    // A certificate from another CA is refused.
    let stranger = Pki::new(&scratch("mtls-other")).issue("stranger");
    assert!(serves_err(addr, pki.client_config(Some(&stranger), false)));
    assert_eq!(stat(&server, "tls_handshakes"), "2");
    let settings = String::from_utf8(server.request(b"stats settings\r\n", b"END\r\n")).unwrap();
    assert!(settings.contains(&format!("STAT ssl_ca_cert {ca}\r\n")));
    assert!(settings.contains("STAT ssl_verify_mode 3\r\n"));
}

#[test]
fn a_minimum_version_refuses_older_clients() {
    let pki = Pki::new(&scratch("version"));
    let (server, addr) = node(&pki, "node", &["--tls-min-version", "1.3"]);
    assert!(
        serves_err(addr, pki.client_config(None, true)),
        "TLS 1.2 client"
    );
    assert!(serves_ok(addr, pki.client_config(None, false)));
    let settings = String::from_utf8(server.request(b"stats settings\r\n", b"END\r\n")).unwrap();
    assert!(settings.contains("STAT ssl_min_version tlsv1.3\r\n"));
}

#[test]
fn certificates_are_reread_without_dropping_connections() {
    let pki = Pki::new(&scratch("reload"));
    let (server, addr) = node(&pki, "node", &[]);
    let config = pki.client_config(None, false);
    let mut open = TlsConn::open(addr, config.clone()).unwrap();
    let first = open.server_cert();
    // The operator replaces the files (same paths) and sends SIGHUP.
    let renewed = pki.issue("node");
    assert_ne!(renewed.cert, first);
    server.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = TlsConn::open(addr, config.clone()).unwrap().server_cert();
        if now == renewed.cert {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not load the new certificate"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The connection opened before goes on.
    assert_eq!(
        open.request(b"set k 0 0 1\r\nx\r\n", b"\r\n").unwrap(),
        b"STORED\r\n"
    );
    // memcached's `refresh_certs` does the same, on any connection.
    let again = pki.issue("node");
    assert_eq!(
        open.request(b"refresh_certs\r\n", b"\r\n").unwrap(),
        b"OK\r\n"
    );
    assert_eq!(
        TlsConn::open(addr, config.clone()).unwrap().server_cert(),
        again.cert
    );
    // A broken file is refused; the running certificate stays.
    std::fs::write(pki.dir.join("node.pem"), "not a certificate").unwrap();
    let reply = server.request(b"refresh_certs\r\n", b"\r\n");
    assert!(
        reply.starts_with(b"SERVER_ERROR TLS certificates"),
        "{reply:?}"
    );
    assert_eq!(
        TlsConn::open(addr, config).unwrap().server_cert(),
        again.cert
    );
    assert!(
        stat(&server, "time_since_server_cert_refresh")
            .parse::<u64>()
            .unwrap()
            < 60
    );
}

#[test]
fn the_batch_port_has_a_tls_twin() {
    let pki = Pki::new(&scratch("batch"));
    let batch = free_port();
    let (server, _) = node(&pki, "node", &["--tls-batch-port", &batch.to_string()]);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], batch));
    let mut c = TlsConn::open(addr, pki.client_config(None, false)).unwrap();
    assert_eq!(
        c.request(b"set b 0 0 1\r\ny\r\n", b"\r\n").unwrap(),
        b"STORED\r\n"
    );
    assert_eq!(
        server.request(b"get b\r\n", b"END\r\n"),
        b"VALUE b 0 1\r\ny\r\nEND\r\n"
    );
    assert_eq!(stat(&server, "batch_connections"), "1");
}

#[test]
fn a_node_refuses_to_start_with_a_broken_identity() {
    let pki = Pki::new(&scratch("broken"));
    let id = pki.issue("node");
    std::fs::write(&id.key_file, "garbage").unwrap();
    let port = free_port().to_string();
    let (cert, key) = (
        id.cert_file.display().to_string(),
        id.key_file.display().to_string(),
    );
    for (args, says) in [
        (
            vec!["--tls-port", &port, "--tls-cert", &cert, "--tls-key", &key],
            "TLS key",
        ),
        (vec!["--tls-port", &port], "--tls-cert"),
        (vec!["--tls-client-ca", &cert], "--tls-port"),
    ] {
        let out = Command::new(zonecached_binary())
            .args(["-p", &free_port().to_string()])
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

/// `openssl s_client`, a TLS client that is not ours, gets the same
/// replies from zonecached's TLS port as from memcached with `-Z`.
#[test]
fn openssl_s_client_gets_memcacheds_replies() {
    let pki = Pki::new(&scratch("openssl"));
    let id = pki.issue("node");
    let memcached = Server::memcached(&[
        "-Z",
        "-o",
        &format!(
            "ssl_chain_cert={},ssl_key={}",
            id.cert_file.display(),
            id.key_file.display()
        ),
    ]);
    let (_zonecached, tls_addr) = node(&pki, "zc", &[]);
    let session = b"set a 0 0 3\r\nabc\r\nget a\r\nincr a 1\r\nmg a v\r\nbogus\r\nquit\r\n";
    let mut replies = Vec::new();
    for addr in [memcached.addr, tls_addr] {
        let mut child = Command::new("openssl")
            // -quiet also keeps reading after our input ends, until the
            // server closes (after `quit`).
            .args(["s_client", "-quiet", "-verify_return_error"])
            .args(["-CAfile", &pki.ca_file().display().to_string()])
            .args(["-connect", &addr.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl runs (Debian's openssl package)");
        child.stdin.take().unwrap().write_all(session).unwrap();
        let out = child.wait_with_output().unwrap();
        replies.push(out.stdout);
    }
    assert_eq!(
        String::from_utf8_lossy(&replies[1]),
        String::from_utf8_lossy(&replies[0])
    );
    assert_eq!(
        replies[0],
        b"STORED\r\nVALUE a 0 3\r\nabc\r\nEND\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\nVA 3\r\nabc\r\nERROR\r\n"
    );
}

/// The Rust client speaks TLS to a node's TLS port, checking its
/// certificate against the CA it was given.
#[test]
fn the_rust_client_speaks_tls() {
    use zonecache_client::{Client, StoreOptions};
    let pki = Pki::new(&scratch("client"));
    let (server, tls_addr) = node(&pki, "node", &[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = Client::builder_seeds(&[tls_addr])
            .tls(pki.client_config(None, false))
            .build()
            .unwrap();
        client
            .set("k", "over tls", StoreOptions::default())
            .await
            .unwrap();
        assert_eq!(
            client.get("k").await.unwrap().as_deref(),
            Some(&b"over tls"[..])
        );
        // A client trusting another CA does not talk to this node.
        let other = Pki::new(&scratch("client-other"));
        let stranger = Client::builder_seeds(&[tls_addr])
            .tls(other.client_config(None, false))
            .build()
            .unwrap();
        let err = stranger.get("k").await.unwrap_err();
        assert!(err.to_string().contains("TLS handshake"), "{err}");
    });
    assert_eq!(
        server.request(b"get k\r\n", b"END\r\n"),
        b"VALUE k 0 8\r\nover tls\r\nEND\r\n"
    );
}

/// A 2-zone cluster whose peer links speak TLS to nodes that require a
/// client certificate; `present`: whether the config's `[peer_tls]` gives
/// the nodes one to present.
fn mutual_tls_cluster(name: &str, present: bool) -> TestCluster {
    let pki = Pki::new(&scratch(name));
    let node = pki.issue("node");
    let peer = zonecache_client::PeerTls {
        ca: pki.ca_file(),
        cert: present.then(|| node.cert_file.clone()),
        key: present.then(|| node.key_file.clone()),
    };
    let tls = ClusterTls {
        peer,
        cert: node.cert_file.clone(),
        key: node.key_file.clone(),
        client_ca: Some(pki.ca_file()),
    };
    TestCluster::start_tls(2, 1, "all", &tls)
}

fn handshakes(cluster: &TestCluster, id: &str) -> (u64, u64) {
    let stats = cluster.node(id).server.stats();
    let count = |name: &str| stats.get(name).and_then(|v| v.parse().ok()).unwrap_or(0);
    (count("tls_handshakes"), count("ssl_handshake_errors"))
}

#[test]
fn peer_links_speak_mutual_tls_when_the_config_asks() {
    let cluster = mutual_tls_cluster("peers", true);
    let (b1_before, _) = handshakes(&cluster, "b1");
    // A write through a1's plain port reaches b1 over a TLS peer link
    // (policy `all`: both copies acknowledged before STORED).
    assert_eq!(
        cluster
            .node("a1")
            .server
            .request(b"set k 0 0 3\r\nabc\r\n", b"\r\n"),
        b"STORED\r\n"
    );
    assert_eq!(
        cluster.held("b1", "k").map(|(v, _)| v).as_deref(),
        Some("abc")
    );
    let (b1_after, b1_errors) = handshakes(&cluster, "b1");
    assert!(
        b1_after > b1_before,
        "a1's link to b1 was no TLS session: {b1_before} -> {b1_after}"
    );
    assert_eq!(b1_errors, 0);
    // A direct-mode client of the same config speaks TLS to both nodes,
    // presenting the config's certificate.
    let (a1_before, _) = handshakes(&cluster, "a1");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = zonecache_client::ClientBuilder::config_file(cluster.config_path("a1"))
            .build()
            .unwrap();
        let options = zonecache_client::StoreOptions::default();
        client.set("direct", "over tls", options).await.unwrap();
        assert_eq!(
            client.get("direct").await.unwrap().as_deref(),
            Some(&b"over tls"[..])
        );
    });
    assert!(
        handshakes(&cluster, "a1").0 > a1_before,
        "the direct-mode client spoke plain TCP"
    );
    assert_eq!(
        cluster.held("b1", "direct").map(|(v, _)| v).as_deref(),
        Some("over tls")
    );
}

#[test]
fn a_peer_without_a_client_certificate_is_refused() {
    let cluster = mutual_tls_cluster("peers-anonymous", false);
    // b1 refuses a1's link (no certificate), so policy `all` cannot be met.
    let reply = cluster
        .node("a1")
        .server
        .request(b"set k 0 0 3\r\nabc\r\n", b"\r\n");
    assert!(
        reply.starts_with(b"SERVER_ERROR"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    assert_eq!(cluster.held("b1", "k"), None);
    assert!(
        handshakes(&cluster, "b1").1 > 0,
        "b1 counted no refused handshake"
    );
}

#[test]
fn a_node_not_serving_its_configured_tls_port_refuses_to_start() {
    let pki = Pki::new(&scratch("wrong-port"));
    let node = pki.issue("node");
    let mut config = zonecache_client::ClusterConfig::local(1, 1, free_port()).unwrap();
    config.zones[0].nodes[0].tls_addr = Some(config.zones[0].nodes[0].addr.with_port(free_port()));
    config.peer_tls = Some(zonecache_client::PeerTls {
        ca: pki.ca_file(),
        cert: None,
        key: None,
    });
    let path = pki.dir.join("a1.toml");
    std::fs::write(&path, config.file_for("a1")).unwrap();
    let output = Command::new(zonecached_binary())
        .args(["-p", &free_port().to_string(), "--config"])
        .arg(&path)
        .args(["--tls-port", &free_port().to_string(), "--tls-cert"])
        .arg(&node.cert_file)
        .arg("--tls-key")
        .arg(&node.key_file)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains("tls_addr") && err.contains("--tls-port"),
        "{err}"
    );
}
