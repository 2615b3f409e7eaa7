//! Behaviour pinned where zonecached knowingly differs from memcached 1.6.18
//! (see `tests/ACCEPTED_DIFFERENCES.md`): exact bytes of our replies.

use zonecache_tests::Server;

#[test]
fn explicit_cas_with_e() {
    let server = Server::zonecached(&[]);
    let mut c = server.connect();
    assert_eq!(c.request(b"ms e 1 E77 c\r\nx\r\n"), b"HD c77\r\n");
    assert_eq!(c.request(b"mg e c v\r\n"), b"VA 1 c77\r\nx\r\n");
    assert_eq!(c.request(b"ma n N0 J5 E99 c\r\n"), b"HD c99\r\n");
    assert_eq!(c.request(b"md e I E123 q\r\n"), b"");
    assert_eq!(c.request(b"mg e c\r\n"), b"HD c123 X W\r\n");
}

#[test]
fn md_x_keeps_the_item_without_its_value() {
    let server = Server::zonecached(&[]);
    let mut c = server.connect();
    assert_eq!(c.request(b"ms k 3 F5\r\nabc\r\n"), b"HD\r\n");
    assert_eq!(c.request(b"md k x\r\n"), b"HD\r\n");
    assert_eq!(c.request(b"mg k v f\r\n"), b"VA 0 f5\r\n\r\n");
}

#[test]
fn ms_append_with_n_vivifies() {
    let server = Server::zonecached(&[]);
    let mut c = server.connect();
    assert_eq!(c.request(b"ms z 1 MA\r\nq\r\n"), b"NS\r\n");
    assert_eq!(c.request(b"ms z 1 MA N0\r\nq\r\n"), b"HD\r\n");
    assert_eq!(c.request(b"ms z 1 MA N0\r\nr\r\n"), b"HD\r\n");
    assert_eq!(c.request(b"mg z v\r\n"), b"VA 2\r\nqr\r\n");
}

#[test]
fn pipelined_replies_are_never_dropped() {
    let server = Server::zonecached(&[]);
    let mut c = server.connect();
    let long_key = "k".repeat(251);
    let reply = c.request(format!("set a 0 0 1\r\n1\r\nget a {long_key}\r\nget a\r\n").as_bytes());
    assert_eq!(
        reply,
        b"STORED\r\nCLIENT_ERROR bad command line format\r\nVALUE a 0 1\r\n1\r\nEND\r\n"
    );
}
