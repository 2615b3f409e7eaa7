//! Expired items are reclaimed by the background sweep, without being read.

use std::time::Duration;

use zonecache_tests::Server;

fn stat(conn: &mut zonecache_tests::Conn, name: &str) -> u64 {
    let reply = conn.request(b"stats\r\n");
    let text = String::from_utf8_lossy(&reply).to_string();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("STAT {name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no stat {name} in {text}"))
}

#[test]
fn sweep_reclaims_expired_items_nobody_reads() {
    let server = Server::zonecached(&["-m", "16"]);
    let mut c = server.connect();
    let mut batch = Vec::new();
    for i in 0..5000 {
        batch.extend_from_slice(
            format!("set short:{i} 0 1 10 noreply\r\n0123456789\r\n").as_bytes(),
        );
    }
    for i in 0..100 {
        batch
            .extend_from_slice(format!("set long:{i} 0 0 10 noreply\r\n0123456789\r\n").as_bytes());
    }
    c.request(&batch);
    assert_eq!(stat(&mut c, "curr_items"), 5100);
    // Expiry is judged in whole seconds; give the sweep a few passes after.
    let mut items = 5100;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        items = stat(&mut c, "curr_items");
        if items == 100 {
            break;
        }
    }
    assert_eq!(items, 100, "expired items still counted");
    assert!(stat(&mut c, "reclaimed") >= 5000);
    assert_eq!(stat(&mut c, "expired_unfetched"), stat(&mut c, "reclaimed"));
    assert_eq!(
        c.request(b"get long:7\r\n"),
        b"VALUE long:7 0 10\r\n0123456789\r\nEND\r\n"
    );
}
