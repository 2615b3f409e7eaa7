//! memcached's administration commands on zonecached beside a stock
//! memcached: `cache_memlimit` (and a shrink that evicts down to it),
//! `stats cachedump`, `stats detail`, `stats sizes` (memcached with
//! `-o track_sizes`) and `shutdown` (refused unless `-A`), plus what
//! pymemcache sends for them.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use zonecache_tests::{Conn, Server};

fn both(zonecached_args: &[&str], memcached_args: &[&str]) -> [Server; 2] {
    [
        Server::memcached(memcached_args),
        Server::zonecached(zonecached_args),
    ]
}

fn stat(server: &Server, name: &str) -> u64 {
    let stats = server.stats();
    stats
        .get(name)
        .unwrap_or_else(|| panic!("{}: no stat {name}", server.name))
        .parse()
        .unwrap()
}

#[test]
fn cache_memlimit_answers_as_memcached() {
    for server in both(&["-m", "64"], &["-m", "64"]) {
        let mut c = server.connect();
        for (line, reply) in [
            (&b"cache_memlimit 50\r\n"[..], &b"OK\r\n"[..]),
            (
                b"cache_memlimit 7\r\n",
                b"MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m\r\n",
            ),
            (
                b"cache_memlimit 2000000000\r\n",
                b"MEMLIMIT_ADJUST_FAILED input value is megabytes not bytes\r\n",
            ),
            (b"cache_memlimit abc\r\n", b"ERROR\r\n"),
            (b"cache_memlimit\r\n", b"ERROR\r\n"),
            (b"cache_memlimit 1 2 3\r\n", b"ERROR\r\n"),
            // noreply: nothing, then the next command's reply.
            (b"cache_memlimit 48 noreply\r\nmn\r\n", b"MN\r\n"),
        ] {
            assert_eq!(c.request(line), reply, "{} {line:?}", server.name);
        }
        assert_eq!(stat(&server, "limit_maxbytes"), 48 << 20, "{}", server.name);
        let settings = server.request(b"stats settings\r\n", b"END\r\n");
        let settings = String::from_utf8_lossy(&settings);
        assert!(
            settings.contains(&format!("STAT maxbytes {}\r\n", 48u64 << 20)),
            "{}: {settings}",
            server.name
        );
    }
}

#[test]
fn a_lower_memlimit_evicts_down_to_it() {
    let server = Server::zonecached(&["-m", "64", "-t", "2"]);
    let mut c = server.connect();
    let value = vec![b'v'; 4000];
    // About 48 MB of items.
    for i in 0..12_000 {
        let mut line = format!("set key:{i} 0 0 {}\r\n", value.len()).into_bytes();
        line.extend_from_slice(&value);
        line.extend_from_slice(b"\r\n");
        c.send(&line);
    }
    assert_eq!(
        c.request(b"mn\r\n").len(),
        12_000 * 8 + 4,
        "every set stored"
    );
    let before = stat(&server, "engine_allocated_bytes");
    assert!(before > 40 << 20, "filled: {before} bytes");
    assert_eq!(c.request(b"cache_memlimit 16\r\n"), b"OK\r\n");
    // The reply comes once the engine is within the new limit.
    let after = stat(&server, "engine_allocated_bytes");
    assert!(after <= 16 << 20, "{after} bytes after shrinking to 16 MiB");
    assert!(stat(&server, "evictions") > 0);
    assert!(stat(&server, "curr_items") < 12_000 / 2);
    // And it stays there under new writes.
    for i in 0..6_000 {
        let mut line = format!("set more:{i} 0 0 {}\r\n", value.len()).into_bytes();
        line.extend_from_slice(&value);
        line.extend_from_slice(b"\r\n");
        c.send(&line);
    }
    assert_eq!(c.request(b"mn\r\n").len(), 6_000 * 8 + 4);
    let later = stat(&server, "engine_allocated_bytes");
    assert!(later <= 16 << 20, "{later} bytes after more writes");
    // Growing again takes effect too.
    assert_eq!(c.request(b"cache_memlimit 64\r\n"), b"OK\r\n");
    assert_eq!(stat(&server, "limit_maxbytes"), 64 << 20);
}

/// `stats cachedump`'s lines, sorted.
fn cachedump(c: &mut Conn, args: &str) -> BTreeSet<String> {
    c.send(format!("stats cachedump {args}\r\n").as_bytes());
    let reply = c.read_until(b"END\r\n");
    String::from_utf8_lossy(&reply)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn stats_cachedump_lists_items_as_memcached() {
    // memcached dumps its COLD LRU only; without its LRU maintainer every
    // item is there at once (with it, new items reach it minutes later).
    for server in both(&[], &["-o", "no_lru_maintainer"]) {
        let mut c = server.connect();
        // Small items without a TTL: memcached's class 1, and the same line
        // on both (a TTL shows as an absolute time, each server's own).
        for line in [
            &b"set a 0 0 3\r\nxyz\r\n"[..],
            b"set b 5 0 1\r\nx\r\n",
            b"set c 0 0 10\r\n0123456789\r\n",
        ] {
            assert_eq!(c.request(line), b"STORED\r\n");
        }
        assert_eq!(c.request(b"ms dGVzdA== 1 b\r\ny\r\n"), b"HD\r\n");
        let all = cachedump(&mut c, "1 0");
        let want: BTreeSet<String> = [
            "ITEM a [3 b; 0 s]",
            "ITEM b [1 b; 0 s]",
            "ITEM c [10 b; 0 s]",
            "END",
        ]
        .into_iter()
        .map(str::to_string)
        .collect();
        assert_eq!(all, want, "{} (binary keys are left out)", server.name);
        assert_eq!(
            cachedump(&mut c, "1 2").len(),
            3,
            "{}: limit 2",
            server.name
        );
        assert_eq!(
            cachedump(&mut c, "2 0"),
            BTreeSet::from(["END".to_string()]),
            "{}",
            server.name
        );
        for (line, reply) in [
            (
                &b"stats cachedump 64 0\r\n"[..],
                &b"CLIENT_ERROR Illegal slab id\r\n"[..],
            ),
            (
                b"stats cachedump 1\r\n",
                b"CLIENT_ERROR bad command line\r\n",
            ),
            (
                b"stats cachedump x 1\r\n",
                b"CLIENT_ERROR bad command line format\r\n",
            ),
        ] {
            assert_eq!(c.request(line), reply, "{} {line:?}", server.name);
        }
    }
}

#[test]
fn stats_detail_counts_prefixes_as_memcached() {
    for server in both(&[], &[]) {
        let mut c = server.connect();
        assert_eq!(c.request(b"stats detail on\r\n"), b"OK\r\n");
        let settings = server.request(b"stats settings\r\n", b"END\r\n");
        assert!(
            String::from_utf8_lossy(&settings).contains("STAT detail_enabled yes\r\n"),
            "{}",
            server.name
        );
        for line in [
            &b"set user:1 0 0 1\r\nx\r\n"[..],
            b"get user:1 user:2\r\n",
            b"gets user:1\r\n",
            b"delete user:1\r\n",
            b"set nodelimiter 0 0 1\r\nx\r\n",
            b"set post:9 0 0 1\r\nx\r\n",
        ] {
            c.request(line);
        }
        let dump = server.request(b"stats detail dump\r\n", b"END\r\n");
        let lines: BTreeSet<String> = String::from_utf8_lossy(&dump)
            .lines()
            .map(str::to_string)
            .collect();
        let want: BTreeSet<String> = [
            "PREFIX user get 3 hit 2 set 1 del 1",
            "PREFIX post get 0 hit 0 set 1 del 0",
            "END",
        ]
        .into_iter()
        .map(str::to_string)
        .collect();
        assert_eq!(lines, want, "{}", server.name);
        assert_eq!(c.request(b"stats detail off\r\n"), b"OK\r\n");
        c.request(b"set user:2 0 0 1\r\nx\r\n");
        assert_eq!(
            server.request(b"stats detail dump\r\n", b"END\r\n"),
            dump,
            "{}: off counts nothing",
            server.name
        );
        for line in [&b"stats detail\r\n"[..], b"stats detail maybe\r\n"] {
            assert_eq!(
                c.request(line),
                b"CLIENT_ERROR usage: stats detail on|off|dump\r\n",
                "{}",
                server.name
            );
        }
        assert_eq!(c.request(b"stats reset\r\n"), b"RESET\r\n");
        assert_eq!(
            server.request(b"stats detail dump\r\n", b"END\r\n"),
            b"END\r\n",
            "{}: reset forgets prefixes",
            server.name
        );
    }
}

#[test]
fn stats_sizes_matches_memcached_tracking_sizes() {
    for server in both(&[], &["-o", "track_sizes"]) {
        let mut c = server.connect();
        for (key, len) in [("a", 1), ("bb", 10), ("ccc", 100), ("dddd", 1000), ("e", 1)] {
            let mut line = format!("set {key} 0 0 {len}\r\n").into_bytes();
            line.extend(std::iter::repeat_n(b'x', len));
            line.extend_from_slice(b"\r\n");
            assert_eq!(c.request(&line), b"STORED\r\n");
        }
        assert_eq!(c.request(b"set f 7 0 2\r\nxy\r\n"), b"STORED\r\n");
        let sizes = server.request(b"stats sizes\r\n", b"END\r\n");
        let sizes = String::from_utf8_lossy(&sizes).to_string();
        let buckets: Vec<&str> = sizes.lines().collect();
        assert_eq!(
            buckets,
            ["STAT 64 2", "STAT 96 2", "STAT 192 1", "STAT 1088 1", "END"],
            "{}",
            server.name
        );
    }
}

#[test]
fn shutdown_is_refused_unless_enabled() {
    for server in both(&[], &[]) {
        for line in [
            &b"shutdown\r\n"[..],
            b"shutdown graceful\r\n",
            b"shutdown x\r\n",
        ] {
            assert_eq!(
                server.connect().request(line),
                b"ERROR: shutdown not enabled\r\n",
                "{}",
                server.name
            );
        }
    }
    for mut server in both(&["-A"], &["-A"]) {
        assert_eq!(
            server.connect().request(b"shutdown now\r\n"),
            b"CLIENT_ERROR invalid shutdown mode\r\n",
            "{}",
            server.name
        );
        let mut c = server.connect();
        c.send(b"shutdown\r\n");
        assert_eq!(c.finish(), b"", "{}: closes without a word", server.name);
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.is_running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!server.is_running(), "{} still running", server.name);
    }
}

/// pymemcache (from the venv `scripts/test` makes), as a Python user
/// would call these commands.
#[test]
fn pymemcache_calls_them() {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/py-clients/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/test (it makes a venv with pymemcache)",
        python.display()
    );
    let server = Server::zonecached(&[]);
    let script = format!(
        r#"
from pymemcache.client.base import Client
c = Client(("127.0.0.1", {port}))
c.set("k1", "v1")
c.set("k2", "value2")
dump = c.stats("cachedump", "1", "1")
assert len(dump) == 1 and list(dump)[0] in (b"k1", b"k2"), dump
full = c.stats("cachedump", "1", "0")
assert full[b"k2"] == b"[6 b; 0 s]", full
assert c.cache_memlimit(50) is True
assert c.stats()[b"limit_maxbytes"] == 50 << 20
print("ok")
"#,
        port = server.addr.port()
    );
    let out = Command::new(&python)
        .args(["-c", &script])
        .output()
        .expect("python runs");
    assert!(
        out.status.success() && out.stdout == b"ok\n",
        "pymemcache: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
