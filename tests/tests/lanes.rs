//! The ports of a real zonecached and their limits. The batch port serves
//! batch connections (and counts them), is bounded, and sheds with a quick
//! `SERVER_ERROR busy` while the batch thread is starved — here forced with
//! `--batch-shed-after-ms 0` — while the realtime port answers as usual and
//! nothing is lost. The realtime port is bounded by `-c` with memcached's error.

use std::net::SocketAddr;

use zonecache_tests::{free_port, Conn, Server};

const SHED: &[u8] = b"SERVER_ERROR busy: batch lane shed under load, retry later\r\n";

fn batch_conn(port: u16) -> Conn {
    Conn::open(SocketAddr::from(([127, 0, 0, 1], port)))
}

#[test]
fn the_batch_port_serves_and_is_bounded() {
    let port = free_port();
    let server = Server::zonecached(&[
        "--batch-port",
        &port.to_string(),
        "--batch-connections",
        "1",
    ]);
    let mut batch = batch_conn(port);
    assert_eq!(batch.request(b"set k 0 0 1\r\nv\r\n"), b"STORED\r\n");
    assert_eq!(batch.request(b"get k\r\n"), b"VALUE k 0 1\r\nv\r\nEND\r\n");
    // Written on the batch port, readable on the realtime port.
    let mut realtime = server.connect();
    assert_eq!(
        realtime.request(b"get k\r\n"),
        b"VALUE k 0 1\r\nv\r\nEND\r\n"
    );
    assert_eq!(realtime.stat("batch_connections"), 1);
    // One batch connection at most: the next is told and closed.
    let mut second = batch_conn(port);
    assert_eq!(
        second.read_to_close(),
        b"ERROR Too many open batch connections\r\n"
    );
}

#[test]
fn a_starved_batch_lane_sheds_quickly_and_realtime_is_untouched() {
    let port = free_port();
    let server = Server::zonecached(&[
        "--batch-port",
        &port.to_string(),
        "--batch-shed-after-ms",
        "0",
    ]);
    let mut realtime = server.connect();
    assert_eq!(realtime.request(b"set k 0 0 1\r\nv\r\n"), b"STORED\r\n");
    // Let the batch thread measure itself at least once.
    std::thread::sleep(std::time::Duration::from_millis(100));
    // (The harness's sync marker is a read, so it would be shed too: these
    // exchanges read exactly one line.)
    let mut batch = batch_conn(port);
    let line = |conn: &mut Conn, bytes: &[u8]| {
        conn.send(bytes);
        conn.read_until(b"\r\n")
    };
    for _ in 0..3 {
        assert_eq!(line(&mut batch, b"get k\r\n"), SHED);
    }
    // A shed write changes nothing; a noreply one gets no reply at all.
    assert_eq!(line(&mut batch, b"set k 0 0 1\r\nX\r\n"), SHED);
    batch.send(b"set k 0 0 1 noreply\r\nY\r\n");
    // Commands that touch no data are still answered on the batch lane.
    assert!(line(&mut batch, b"version\r\n").starts_with(b"VERSION "));
    assert_eq!(
        realtime.request(b"get k\r\n"),
        b"VALUE k 0 1\r\nv\r\nEND\r\n"
    );
    assert!(realtime.stat("batch_shed") >= 5);
}

#[test]
fn the_realtime_port_is_bounded_with_memcacheds_error() {
    let server = Server::zonecached(&["-c", "2"]);
    let mut first = server.connect();
    // The harness's readiness probe counts until the node sees it closed.
    let settled = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while first.stat("curr_connections") != 1 {
        assert!(std::time::Instant::now() < settled, "probe never closed");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let mut second = server.connect();
    assert!(first.request(b"version\r\n").starts_with(b"VERSION "));
    assert!(second.request(b"version\r\n").starts_with(b"VERSION "));
    let mut third = Conn::open(server.addr);
    assert_eq!(
        third.read_to_close(),
        b"ERROR Too many open connections\r\n"
    );
    // The open ones keep working.
    assert!(first.request(b"version\r\n").starts_with(b"VERSION "));
}
