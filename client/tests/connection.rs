//! The pipelined connection against a real zonecached: many calls in
//! flight are answered in order, errors are typed, a hung node times out.

use std::time::Duration;

use bytes::Bytes;
use zonecache_client::{Connection, Error};
use zonecache_proto::{Command, Response, Store, StoreMode};
use zonecache_tests::Server;

fn set(key: &str, value: &str) -> Command {
    Command::Store(Store {
        mode: StoreMode::Set,
        key: Bytes::from(key.to_string()),
        flags: 0,
        exptime: 0,
        data: Bytes::from(value.to_string()),
        cas_unique: 0,
        noreply: false,
    })
}

fn get(key: &str) -> Command {
    Command::Get {
        keys: vec![Bytes::from(key.to_string())],
        cas: false,
    }
}

const DEADLINE: Duration = Duration::from_secs(5);

#[tokio::test]
async fn pipelined_calls_are_answered_in_order() {
    let server = Server::zonecached(&[]);
    let conn = Connection::connect(server.addr, DEADLINE, 1024)
        .await
        .expect("connect");
    let mut calls = Vec::new();
    for i in 0..500 {
        let c = conn.clone();
        calls.push(tokio::spawn(async move {
            let key = format!("k{i}");
            let value = format!("v{i}");
            assert_eq!(
                c.call(&set(&key, &value), DEADLINE).await,
                Ok(Response::Stored)
            );
            match c.call(&get(&key), DEADLINE).await {
                Ok(Response::Values(v)) => assert_eq!(v[0].data, Bytes::from(value)),
                other => panic!("{other:?}"),
            }
        }));
    }
    for c in calls {
        c.await.expect("call task");
    }
}

#[tokio::test]
async fn error_replies_are_typed() {
    let server = Server::zonecached(&[]);
    let conn = Connection::connect(server.addr, DEADLINE, 16)
        .await
        .expect("connect");
    let bad = Command::Arith {
        key: Bytes::from("k"),
        delta: 1,
        incr: true,
        noreply: false,
    };
    assert_eq!(
        conn.call(&set("k", "abc"), DEADLINE).await,
        Ok(Response::Stored)
    );
    assert_eq!(
        conn.call(&bad, DEADLINE).await,
        Err(Error::Client(
            "cannot increment or decrement non-numeric value".into()
        ))
    );
    // the connection is still usable
    assert_eq!(
        conn.call(&Command::MetaNoop, DEADLINE).await,
        Ok(Response::MetaNoop)
    );
}

#[tokio::test]
async fn a_hung_node_times_out_and_a_dead_one_fails_fast() {
    let mut server = Server::zonecached(&[]);
    let conn = Connection::connect(server.addr, DEADLINE, 16)
        .await
        .expect("connect");
    // SIGSTOP: the node accepts bytes but never answers.
    server.signal(libc::SIGSTOP);
    let started = std::time::Instant::now();
    assert_eq!(
        conn.call(&get("k"), Duration::from_millis(100)).await,
        Err(Error::Timeout)
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the deadline bounds the wait"
    );
    server.signal(libc::SIGCONT);
    // Killed: calls fail with a connection error instead of hanging.
    server.signal(libc::SIGKILL);
    let outcome = conn.call(&get("k"), DEADLINE).await;
    assert!(matches!(outcome, Err(Error::Connection(_))), "{outcome:?}");
    assert!(!server.is_running());
}

#[tokio::test]
async fn in_flight_is_bounded() {
    let server = Server::zonecached(&[]);
    let conn = Connection::connect(server.addr, DEADLINE, 1)
        .await
        .expect("connect");
    server.signal(libc::SIGSTOP);
    let first = {
        let c = conn.clone();
        tokio::spawn(async move { c.call(&get("a"), Duration::from_millis(500)).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(conn.call(&get("b"), DEADLINE).await, Err(Error::Busy));
    assert_eq!(first.await.expect("task"), Err(Error::Timeout));
    server.signal(libc::SIGCONT);
}
