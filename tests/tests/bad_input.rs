//! No input may crash the node, stall other connections, or grow its
//! memory without bound; data stored before the abuse must be intact after.

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use zonecache_tests::corpus::{self, Step};
use zonecache_tests::{Conn, Server};

/// Memory limit of the node under test, MiB.
const LIMIT_MB: u64 = 16;
/// Fixed overhead documented in the README: runtime, buffers, allocator slack.
const FIXED_OVERHEAD_MB: u64 = 48;

/// A tiny deterministic generator, so failures replay.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

fn sentinel_value(i: u32) -> Vec<u8> {
    format!("sentinel-value-{i}-").repeat(5).into_bytes()
}

#[test]
fn bad_input_cannot_hurt_the_node() {
    let mut server = Server::zonecached(&["-m", &LIMIT_MB.to_string(), "-t", "2"]);
    let mut admin = server.connect();
    for i in 0..500u32 {
        let v = sentinel_value(i);
        let mut cmd = format!("set sentinel:{i} {i} 0 {}\r\n", v.len()).into_bytes();
        cmd.extend_from_slice(&v);
        cmd.extend_from_slice(b"\r\n");
        assert_eq!(admin.request(&cmd), b"STORED\r\n");
    }

    // A well-behaved client keeps working throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let watcher = {
        let (stop, served, addr) = (stop.clone(), served.clone(), server.addr);
        std::thread::spawn(move || {
            let mut conn = Conn::open(addr);
            while !stop.load(Ordering::Relaxed) {
                assert_eq!(conn.request(b"set watch 0 0 2\r\nok\r\n"), b"STORED\r\n");
                assert_eq!(
                    conn.request(b"get watch\r\n"),
                    b"VALUE watch 0 2\r\nok\r\nEND\r\n"
                );
                served.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };

    // 1. Every bad-input case of the differential corpus, without flushes.
    let bad_cases = [
        "bad command lines",
        "bad data chunks",
        "binary junk and control characters",
        "250 and 251 byte keys",
        "too many tokens",
        "max-size values",
        "overlong line without newline closes",
        "http request closes",
    ];
    for case in corpus::cases()
        .iter()
        .filter(|c| bad_cases.contains(&c.name.as_str()))
    {
        let mut conn = server.connect();
        for step in &case.steps {
            match step {
                Step::Send(b) => {
                    conn.request(b);
                }
                Step::Partial(b) => conn.send(b),
                Step::ExpectClose(b) => {
                    conn.send(b);
                    conn.read_to_close();
                }
                Step::Sleep(ms) => std::thread::sleep(Duration::from_millis(*ms)),
            }
        }
    }

    // 2. Random junk, in random pieces, on many connections.
    let mut rng = Lcg(0x5eed);
    for _ in 0..200 {
        let Ok(mut s) = TcpStream::connect(server.addr) else {
            continue;
        };
        s.set_write_timeout(Some(Duration::from_secs(2))).ok();
        let len = (rng.next() % 20_000) as usize;
        let junk: Vec<u8> = (0..len)
            .map(|_| match rng.next() % 10 {
                0 => b'\n',
                1 => b' ',
                2 => b'0' + (rng.next() % 10) as u8,
                _ => rng.next() as u8,
            })
            .collect();
        for piece in junk.chunks(1 + (rng.next() % 4000) as usize) {
            if s.write_all(piece).is_err() {
                break; // the node closed the connection, as memcached would
            }
        }
    }

    // 3. A client that asks for far more than it reads.
    let big = vec![b'x'; 500_000];
    let mut cmd = format!("set big 0 0 {}\r\n", big.len()).into_bytes();
    cmd.extend_from_slice(&big);
    cmd.extend_from_slice(b"\r\n");
    assert_eq!(admin.request(&cmd), b"STORED\r\n");
    {
        let mut slow = TcpStream::connect(server.addr).expect("connect");
        slow.set_write_timeout(Some(Duration::from_secs(3))).ok();
        let gets = b"get big\r\n".repeat(1000); // asks for ~500 MB of replies
        for _ in 0..50 {
            if slow.write_all(&gets).is_err() {
                break; // the node stopped reading: back-pressure works
            }
        }
        std::thread::sleep(Duration::from_millis(500));
        let rss_mb = server.rss_kib() / 1024;
        assert!(
            rss_mb <= LIMIT_MB + FIXED_OVERHEAD_MB,
            "RSS {rss_mb} MiB with a slow reader"
        );
    }

    stop.store(true, Ordering::Relaxed);
    watcher
        .join()
        .expect("the well-behaved client was never stalled");
    assert!(served.load(Ordering::Relaxed) > 0);
    assert!(server.is_running(), "node died");

    let rss_mb = server.rss_kib() / 1024;
    assert!(
        rss_mb <= LIMIT_MB + FIXED_OVERHEAD_MB,
        "RSS {rss_mb} MiB after bad input"
    );
    for i in 0..500u32 {
        let v = sentinel_value(i);
        let mut want = format!("VALUE sentinel:{i} {i} {}\r\n", v.len()).into_bytes();
        want.extend_from_slice(&v);
        want.extend_from_slice(b"\r\nEND\r\n");
        assert_eq!(
            admin.request(format!("get sentinel:{i}\r\n").as_bytes()),
            want,
            "sentinel {i}"
        );
    }
    eprintln!("RSS after bad input: {rss_mb} MiB (limit {LIMIT_MB} MiB)");
}

/// A data block is never read as a command, whatever its command line said
/// (tests/ACCEPTED_DIFFERENCES.md, 8: memcached runs it as one here). The
/// blocks below hold `flush_all`; `keep` must survive every one of them, on
/// a single node and through a cluster front.
#[test]
fn a_data_block_is_never_run_as_a_command() {
    let long_key = "k".repeat(251);
    let malformed = [
        "set k x 0 9\r\nflush_all\r\n".to_string(),
        "set k -1 0 9\r\nflush_all\r\n".to_string(),
        "set k 0 x 9\r\nflush_all\r\n".to_string(),
        "set k 0 99999999999999999999 9\r\nflush_all\r\n".to_string(),
        "cas k 0 0 9 x\r\nflush_all\r\n".to_string(),
        format!("set {long_key} 0 0 9\r\nflush_all\r\n"),
        "set k 0 2147483648 9\r\nflush_all\r\n".to_string(),
    ];
    let single = Server::zonecached(&[]);
    let cluster = zonecache_tests::TestCluster::start(2, 1, "all", "");
    for server in [&single, &cluster.node("a1").server] {
        let mut c = server.connect();
        assert_eq!(c.request(b"set keep 0 0 4\r\nsafe\r\n"), b"STORED\r\n");
        for line in &malformed {
            let reply = c.request(line.as_bytes());
            assert!(
                reply == b"CLIENT_ERROR bad command line format\r\n" || reply == b"STORED\r\n",
                "{line:?} -> {:?}",
                String::from_utf8_lossy(&reply)
            );
            assert_eq!(
                c.request(b"get keep\r\n"),
                b"VALUE keep 0 4\r\nsafe\r\nEND\r\n",
                "after {line:?}"
            );
        }
    }
}

/// memcached answers a refused store (too large for the cache, or an `ms`
/// with a bad flag) only once it has swallowed the data block; so does
/// zonecached, so a client still sending its value never reads a reply to
/// it early. Side by side with stock memcached.
#[test]
fn a_refused_store_is_answered_after_its_data_block() {
    let memcached = Server::memcached(&[]);
    let zonecached = Server::zonecached(&[]);
    let big = 2_000_000;
    let cases: [(String, usize, &[u8]); 2] = [
        (
            format!("set k 0 0 {big}\r\n"),
            big,
            b"SERVER_ERROR object too large for cache\r\n",
        ),
        (
            "ms k 100 Z\r\n".to_string(),
            100,
            b"CLIENT_ERROR invalid flag\r\n",
        ),
    ];
    for server in [&memcached, &zonecached] {
        for (line, len, refusal) in &cases {
            let mut c = server.connect();
            c.send(line.as_bytes());
            c.send(&vec![b'x'; len / 2]);
            // Nothing yet, however long we wait: a short wait only makes
            // this pass more easily, never fail.
            c.send(b"mn\r\n");
            assert!(
                c.nothing_within(Duration::from_millis(300)),
                "{}: answered before the data block ended ({line:?})",
                server.name
            );
            // The rest of the block ("mn\r\n" above was data too).
            c.send(&vec![b'x'; len - len / 2 - 4]);
            c.send(b"\r\nmn\r\n");
            let mut want = refusal.to_vec();
            want.extend_from_slice(b"MN\r\n");
            assert_eq!(c.read_until(b"MN\r\n"), want, "{} {line:?}", server.name);
        }
    }
}

/// A `set` too large to store removes the key's old value (memcached's
/// guard against stale data), also when the client goes away before the
/// end of its data block: memcached acts on the line at once.
#[test]
fn a_too_large_set_removes_the_old_value_even_if_its_block_never_ends() {
    let memcached = Server::memcached(&[]);
    let zonecached = Server::zonecached(&[]);
    for server in [&memcached, &zonecached] {
        let mut c = server.connect();
        assert_eq!(c.request(b"set k 0 0 3\r\nold\r\n"), b"STORED\r\n");
        let mut c = server.connect();
        c.send(b"set k 0 0 2000000\r\n");
        c.send(&[b'x'; 1000]);
        // Half-closed mid-block: no reply comes, from either.
        assert_eq!(c.finish(), b"", "{}", server.name);
        let mut c = server.connect();
        assert_eq!(c.request(b"get k\r\n"), b"END\r\n", "{}", server.name);
    }
}
