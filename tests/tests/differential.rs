//! The differential suite: every case of the corpus goes to a stock
//! memcached and to zonecached, step by step; the replies must be identical
//! after normalisation (see `corpus::normalize`).

use std::fmt::Write as _;

use zonecache_tests::corpus::{self, Step};
use zonecache_tests::{Conn, Server};

/// Runs one step on one connection and returns the raw replies.
fn run_step(conn: &mut Conn, step: &Step, pending: &mut Vec<u8>) -> Option<Vec<u8>> {
    match step {
        Step::Send(bytes) => {
            let mut all = std::mem::take(pending);
            all.extend_from_slice(bytes);
            Some(conn.request(&all))
        }
        Step::Partial(bytes) => {
            pending.extend_from_slice(bytes);
            None
        }
        Step::ExpectClose(bytes) => {
            conn.send(bytes);
            Some(conn.read_to_close())
        }
        Step::Sleep(_) => None,
    }
}

#[test]
fn zonecached_answers_like_memcached() {
    let memcached = Server::memcached(&["-m", "64", "-t", "2"]);
    let zonecached = Server::zonecached(&["-m", "64", "-t", "2"]);
    let mut failures = String::new();
    let cases = corpus::cases();
    for case in &cases {
        let mut a = memcached.connect();
        let mut b = zonecached.connect();
        a.request(b"flush_all\r\n");
        b.request(b"flush_all\r\n");
        let (mut pa, mut pb) = (Vec::new(), Vec::new());
        for (i, step) in case.steps.iter().enumerate() {
            if let Step::Sleep(ms) = step {
                std::thread::sleep(std::time::Duration::from_millis(*ms));
                continue;
            }
            // Partial steps are sent with the next one, so pending stays in sync.
            if let Step::Partial(bytes) = step {
                a.send(bytes);
                b.send(bytes);
                continue;
            }
            let ra = run_step(&mut a, step, &mut pa).expect("reply");
            let rb = run_step(&mut b, step, &mut pb).expect("reply");
            let (na, nb) = (corpus::normalize(&ra), corpus::normalize(&rb));
            if na != nb {
                let _ = writeln!(
                    failures,
                    "--- case {:?}, step {i}\nmemcached:\n{}\nzonecached:\n{}\n",
                    case.name,
                    corpus::show(&na, 600),
                    corpus::show(&nb, 600)
                );
            }
        }
    }
    assert!(failures.is_empty(), "replies differ:\n{failures}");
    eprintln!("{} cases identical", cases.len());
}
