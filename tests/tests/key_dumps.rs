//! memcached's crawler key dumps, `lru_crawler metadump` and `mgdump`, on
//! zonecached beside a stock memcached: the same lines for the same items
//! (times and CAS values are each server's own), memcached's errors for bad
//! class lists, and a dump larger than the connection's buffers streams.

use std::collections::BTreeSet;

use zonecache_tests::{Conn, Server};

/// The items both servers get: plain, with a TTL, with flags, with bytes
/// that need escaping, and one with a binary (base64) key.
fn fill(c: &mut Conn) {
    for (line, reply) in [
        (&b"set plain 0 0 3\r\nabc\r\n"[..], &b"STORED\r\n"[..]),
        (b"set ttl 5 1000 1\r\nx\r\n", b"STORED\r\n"),
        (b"set a%b/c~d.e_f-g:h 0 0 1\r\nx\r\n", b"STORED\r\n"),
        (b"ms dGVzdA== 1 b\r\ny\r\n", b"HD\r\n"),
    ] {
        assert_eq!(c.request(line), reply);
    }
    assert_eq!(
        c.request(b"get plain\r\n"),
        b"VALUE plain 0 3\r\nabc\r\nEND\r\n"
    );
}

/// The dump's lines, sorted, with `la=` and `cas=` masked and `exp=`
/// reduced to "none" or "set".
fn metadump(c: &mut Conn, arg: &str) -> BTreeSet<String> {
    c.send(format!("lru_crawler metadump {arg}\r\n").as_bytes());
    let text = String::from_utf8_lossy(&c.read_until(b"END\r\n")).to_string();
    text.lines()
        .filter(|l| *l != "END")
        .map(|line| {
            line.split(' ')
                .map(|w| match w.split_once('=') {
                    Some(("la" | "cas", _)) => format!("{}=X", &w[..w.find('=').unwrap()]),
                    Some(("exp", "-1")) => "exp=none".to_string(),
                    Some(("exp", _)) => "exp=set".to_string(),
                    _ => w.to_string(),
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

#[test]
fn metadump_lists_the_same_items_as_memcached() {
    let memcached = Server::memcached(&["-m", "64"]);
    let zonecached = Server::zonecached(&["-m", "64"]);
    let (mut a, mut b) = (memcached.connect(), zonecached.connect());
    fill(&mut a);
    fill(&mut b);
    for arg in ["all", "hash", "1", "1,2"] {
        let (ma, mb) = (metadump(&mut a, arg), metadump(&mut b, arg));
        assert_eq!(ma.len(), 4, "{ma:?}");
        assert_eq!(ma, mb, "metadump {arg}");
    }
    // Another class holds nothing; bad class lists are refused alike. Not
    // pipelined: memcached hands the connection to its crawler thread.
    let one_line = |c: &mut Conn, line: &str| {
        c.send(line.as_bytes());
        c.read_until(b"\r\n")
    };
    for line in [
        "lru_crawler metadump 2\r\n",
        "lru_crawler metadump 63\r\n",
        "lru_crawler metadump 0\r\n",
        "lru_crawler metadump 64\r\n",
        "lru_crawler metadump 1,abc\r\n",
        "lru_crawler metadump ALL\r\n",
    ] {
        assert_eq!(one_line(&mut a, line), one_line(&mut b, line), "{line:?}");
    }
}

#[test]
fn mgdump_lists_every_key_as_an_mg_line() {
    let zonecached = Server::zonecached(&["-m", "64"]);
    let mut c = zonecached.connect();
    fill(&mut c);
    assert_eq!(c.request(b"delete ttl\r\n"), b"DELETED\r\n");
    c.send(b"lru_crawler mgdump all\r\n");
    let text = String::from_utf8_lossy(&c.read_until(b"EN\r\n")).to_string();
    let lines: BTreeSet<&str> = text.lines().collect();
    let want: BTreeSet<&str> = ["mg plain", "mg a%b/c~d.e_f-g:h", "mg dGVzdA== b", "EN"]
        .into_iter()
        .collect();
    assert_eq!(lines, want);
    assert_eq!(c.request(b"lru_crawler mgdump 2\r\n"), b"EN\r\n");
}

#[test]
fn a_large_dump_streams_and_the_connection_goes_on() {
    let zonecached = Server::zonecached(&["-m", "64"]);
    let mut c = zonecached.connect();
    let mut batch = Vec::new();
    let keys = 50_000;
    for i in 0..keys {
        batch.extend_from_slice(format!("set key-{i:06} 0 0 1 noreply\r\nx\r\n").as_bytes());
    }
    c.send(&batch);
    assert_eq!(c.request(b"mn\r\n"), b"MN\r\n");
    c.send(b"lru_crawler metadump all\r\n");
    let dump = c.read_until(b"END\r\n");
    let text = String::from_utf8_lossy(&dump);
    assert_eq!(
        text.lines().filter(|l| l.starts_with("key=key-")).count(),
        keys
    );
    assert_eq!(
        c.request(b"get key-000007\r\n"),
        b"VALUE key-000007 0 1\r\nx\r\nEND\r\n"
    );
}
