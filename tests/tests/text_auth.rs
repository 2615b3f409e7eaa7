//! memcached's text-protocol authentication (`-Y <file>`) on zonecached
//! beside a stock memcached: nothing served before sign-in, the sign-in
//! `set` and its errors, `auth_cmds`/`auth_errors`, the file re-read on
//! SIGHUP; and a cluster whose nodes require sign-in still replicates
//! (peer links prove the cluster secret instead).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use zonecache_tests::{zonecache_tool, Conn, Server, TestCluster};

fn auth_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("zc-auth-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("auth");
    std::fs::write(&path, text).unwrap();
    path
}

/// `set <key> 0 0 <n>` with `login` as its data: memcached's sign-in.
fn sign_in(login: &str) -> Vec<u8> {
    format!("set auth 0 0 {}\r\n{login}\r\n", login.len()).into_bytes()
}

/// Sends `bytes` and reads one reply (a line, or through `END`): before
/// sign-in `Conn::request`'s sync marker would be refused too.
fn ask(c: &mut Conn, bytes: &[u8], multi_line: bool) -> Vec<u8> {
    c.send(bytes);
    c.read_until(if multi_line { b"END\r\n" } else { b"\r\n" })
}

fn stats_of(c: &mut Conn) -> String {
    String::from_utf8(ask(c, b"stats\r\n", true)).unwrap()
}

#[test]
fn nothing_is_served_before_sign_in_as_in_memcached() {
    let path = auth_file("serve", "alice:s3cret\nbob:hunter2\n");
    let file = path.display().to_string();
    let memcached = Server::memcached(&["-Y", &file]);
    let zonecached = Server::zonecached(&["-Y", &file]);
    for server in [&memcached, &zonecached] {
        let mut c = server.connect();
        for (line, reply) in [
            (&b"get k\r\n"[..], &b"CLIENT_ERROR unauthenticated\r\n"[..]),
            (b"stats\r\n", b"CLIENT_ERROR unauthenticated\r\n"),
            (b"mg k v\r\n", b"CLIENT_ERROR unauthenticated\r\n"),
            (
                &sign_in("alice"),
                b"CLIENT_ERROR bad authentication token format\r\n",
            ),
            (
                &sign_in("alice wrong"),
                b"CLIENT_ERROR authentication failure\r\n",
            ),
            (
                &sign_in("mallory s3cret"),
                b"CLIENT_ERROR authentication failure\r\n",
            ),
            (&sign_in("alice s3cret"), b"STORED\r\n"),
            (b"set k 0 0 1\r\nx\r\n", b"STORED\r\n"),
            (b"get k\r\n", b"VALUE k 0 1\r\nx\r\nEND\r\n"),
            // The sign-in set stored nothing.
            (b"get auth\r\n", b"END\r\n"),
        ] {
            let multi_line = reply.ends_with(b"END\r\n");
            assert_eq!(
                String::from_utf8_lossy(&ask(&mut c, line, multi_line)),
                String::from_utf8_lossy(reply),
                "{} {:?}",
                server.name,
                String::from_utf8_lossy(line)
            );
        }
        let stats = stats_of(&mut c);
        assert!(
            stats.contains("STAT auth_cmds 3\r\n"),
            "{}: {stats}",
            server.name
        );
        assert!(
            stats.contains("STAT auth_errors 2\r\n"),
            "{}: {stats}",
            server.name
        );
        // Another connection starts unauthenticated; bob works too.
        let mut other = server.connect();
        assert_eq!(
            ask(&mut other, b"get k\r\n", false),
            b"CLIENT_ERROR unauthenticated\r\n"
        );
        assert_eq!(
            ask(&mut other, &sign_in("bob hunter2"), false),
            b"STORED\r\n"
        );
        assert_eq!(other.request(b"get k\r\n"), b"VALUE k 0 1\r\nx\r\nEND\r\n");
    }
    let mut c = zonecached.connect();
    ask(&mut c, &sign_in("alice s3cret"), false);
    let settings = String::from_utf8(c.request(b"stats settings\r\n")).unwrap();
    assert!(settings.contains(&format!("STAT auth_enabled_ascii {file}\r\n")));
}

#[test]
fn sighup_rereads_the_file() {
    let path = auth_file("reload", "alice:s3cret\n");
    let file = path.display().to_string();
    let memcached = Server::memcached(&["-Y", &file]);
    let zonecached = Server::zonecached(&["-Y", &file]);
    std::fs::write(&path, "carol:new\n").unwrap();
    for server in [&memcached, &zonecached] {
        server.signal(libc::SIGHUP);
        // memcached applies it on its next clock tick (a second at most).
        let deadline = Instant::now() + Duration::from_secs(5);
        while ask(&mut server.connect(), &sign_in("carol new"), false) != b"STORED\r\n" {
            assert!(Instant::now() < deadline, "{}: no reload", server.name);
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(
            ask(&mut server.connect(), &sign_in("alice s3cret"), false),
            b"CLIENT_ERROR authentication failure\r\n",
            "{}",
            server.name
        );
    }
}

#[test]
fn a_cluster_requiring_sign_in_still_replicates() {
    let path = auth_file("cluster", "app:pw\n");
    let file = path.display().to_string();
    let mut cluster = TestCluster::start(2, 1, "all", "");
    for id in ["a1", "b1"] {
        cluster.restart_with(id, &["-Y", &file]);
    }
    // Peers prove the cluster secret; a proven connection is signed in.
    for id in ["a1", "b1"] {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let stats = stats_of(&mut cluster.local(id));
            if stats.contains("STAT warm_state done") || stats.contains("STAT warm_state off") {
                break;
            }
            assert!(Instant::now() < deadline, "{id} not warm: {stats}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let mut a = cluster.node("a1").server.connect();
    assert_eq!(
        ask(&mut a, b"get k\r\n", false),
        b"CLIENT_ERROR unauthenticated\r\n"
    );
    assert_eq!(ask(&mut a, &sign_in("app pw"), false), b"STORED\r\n");
    assert_eq!(a.request(b"set k 0 0 2\r\nhi\r\n"), b"STORED\r\n");
    // Written to both zones through the peer links.
    assert_eq!(
        cluster.local("b1").request(b"get k\r\n"),
        b"VALUE k 0 2\r\nhi\r\nEND\r\n"
    );
    let mut b = cluster.node("b1").server.connect();
    assert_eq!(ask(&mut b, &sign_in("app pw"), false), b"STORED\r\n");
    assert_eq!(b.request(b"get k\r\n"), b"VALUE k 0 2\r\nhi\r\nEND\r\n");
    // The readiness tool signs in with the cluster secret; without it the
    // node tells it nothing.
    let addr = cluster.node("a1").server.addr.to_string();
    let config = cluster.config_path("a1");
    let (code, text) = zonecache_tool(&["ready", &addr, "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    let (code, text) = zonecache_tool(&["ready", &addr]);
    assert_eq!(code, 1, "{text}");
}
