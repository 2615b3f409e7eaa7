//! Third-party clients against zonecached: libmemcached's `memccapable`
//! (every text test) and the `memcache-async` crate.

use std::process::Command;

use memcache_async::ascii::Protocol;
use zonecache_tests::Server;

#[test]
fn memccapable_passes_every_text_test() {
    let server = Server::zonecached(&[]);
    let output = Command::new("timeout")
        .args(["120", "memccapable", "-a", "-h", "127.0.0.1", "-p"])
        .arg(server.addr.port().to_string())
        .output()
        .expect("memccapable (package libmemcached-tools) must be installed");
    let text = String::from_utf8_lossy(&output.stdout);
    eprintln!("{text}");
    assert!(output.status.success(), "memccapable failed:\n{text}");
    assert!(text.contains("All tests passed"), "{text}");
    assert!(!text.contains("[FAIL]"), "{text}");
}

#[tokio::test]
async fn memcache_async_drives_the_common_commands() {
    let server = Server::zonecached(&[]);
    let stream = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let mut cache = Protocol::new(stream);

    let version = cache.version().await.expect("version");
    assert!(version.starts_with("1.6"), "version {version:?}");

    cache.set("alpha", b"one", 0).await.expect("set");
    assert_eq!(cache.get("alpha").await.expect("get"), b"one");
    let missing = cache.get("nope").await.expect_err("miss");
    assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);

    cache.add("beta", b"two", 0).await.expect("add");
    let again = cache.add("beta", b"three", 0).await.expect_err("add twice");
    assert_eq!(again.kind(), std::io::ErrorKind::AlreadyExists);

    let many = cache
        .get_multi(&["alpha", "beta", "gamma"])
        .await
        .expect("get_multi");
    assert_eq!(many.len(), 2);
    assert_eq!(many["alpha"], b"one");
    assert_eq!(many["beta"], b"two");

    cache.set("counter", b"41", 0).await.expect("set counter");
    assert_eq!(cache.increment("counter", 1).await.expect("incr"), 42);

    let (value, cas) = cache.gets_cas("alpha").await.expect("gets");
    assert_eq!(value, b"one");
    assert!(cache.cas("alpha", b"uno", cas, 0).await.expect("cas"));
    assert!(!cache
        .cas("alpha", b"eins", cas, 0)
        .await
        .expect("stale cas"));
    assert_eq!(cache.get("alpha").await.expect("get"), b"uno");

    cache.delete("alpha").await.expect("delete");
    assert_eq!(
        cache.get("alpha").await.expect_err("deleted").kind(),
        std::io::ErrorKind::NotFound
    );
}
