//! memcached's binary protocol on zonecached beside a stock memcached
//! 1.6.18: every opcode and its quiet form, malformed headers (wrong magic,
//! bad lengths, oversized bodies), compared packet for packet after the
//! suite's normalising (`zonecache_tests::binary::normalize`);
//! libmemcached's `memccapable` on a node and through a cluster; SASL PLAIN
//! (`-S`) against memcached's with real SASL clients; and binary requests
//! routed across zones like text ones.

use std::path::PathBuf;
use std::process::Command;

use zonecache_tests::binary::{arith, keyed, normalize, packets, store, touch, Packet, Request};
use zonecache_tests::{Server, TestCluster};

const GET: u8 = 0x00;
const SET: u8 = 0x01;
const ADD: u8 = 0x02;
const REPLACE: u8 = 0x03;
const DELETE: u8 = 0x04;
const INCR: u8 = 0x05;
const DECR: u8 = 0x06;
const QUIT: u8 = 0x07;
const FLUSH: u8 = 0x08;
const GETQ: u8 = 0x09;
const NOOP: u8 = 0x0a;
const VERSION: u8 = 0x0b;
const GETK: u8 = 0x0c;
const GETKQ: u8 = 0x0d;
const APPEND: u8 = 0x0e;
const PREPEND: u8 = 0x0f;
const STAT: u8 = 0x10;
const SETQ: u8 = 0x11;
const ADDQ: u8 = 0x12;
const REPLACEQ: u8 = 0x13;
const DELETEQ: u8 = 0x14;
const INCRQ: u8 = 0x15;
const DECRQ: u8 = 0x16;
const QUITQ: u8 = 0x17;
const FLUSHQ: u8 = 0x18;
const APPENDQ: u8 = 0x19;
const PREPENDQ: u8 = 0x1a;
const TOUCH: u8 = 0x1c;
const GAT: u8 = 0x1d;
const GATQ: u8 = 0x1e;
const SASL_LIST: u8 = 0x20;
const SASL_AUTH: u8 = 0x21;
const SASL_STEP: u8 = 0x22;
const GATK: u8 = 0x23;
const GATKQ: u8 = 0x24;
/// incr/decr expiry meaning "do not create".
const NO_CREATE: u32 = u32::MAX;

fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

fn bare(opcode: u8) -> Vec<u8> {
    keyed(opcode, b"")
}

/// Requests answered and the connection kept: (name, bytes).
fn open_cases() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "get family",
            cat(&[
                store(SET, b"k", b"hello", 5, 0, 0),
                keyed(GET, b"k"),
                keyed(GETK, b"k"),
                keyed(GETQ, b"k"),
                keyed(GETKQ, b"k"),
                keyed(GET, b"nope"),
                keyed(GETK, b"nope"),
                keyed(GETQ, b"nope"),
                keyed(GETKQ, b"nope"),
            ]),
        ),
        (
            "add replace",
            cat(&[
                store(ADD, b"a", b"1", 0, 0, 0),
                store(ADD, b"a", b"2", 0, 0, 0),
                store(ADDQ, b"a", b"2", 0, 0, 0),
                store(REPLACE, b"b", b"x", 0, 0, 0),
                store(REPLACEQ, b"b", b"x", 0, 0, 0),
                store(REPLACE, b"a", b"3", 1, 0, 0),
                store(ADDQ, b"fresh", b"f", 0, 0, 0),
                store(REPLACEQ, b"fresh", b"g", 0, 0, 0),
                keyed(GET, b"a"),
                keyed(GET, b"fresh"),
            ]),
        ),
        (
            "quiet stores and deletes",
            cat(&[
                store(SETQ, b"q", b"v", 0, 0, 0),
                keyed(DELETEQ, b"zz"),
                keyed(DELETEQ, b"q"),
                keyed(GET, b"q"),
            ]),
        ),
        (
            "cas",
            cat(&[
                store(SET, b"c", b"1", 0, 0, 0),
                store(SET, b"c", b"2", 0, 0, 999_999),
                store(SET, b"cx", b"2", 0, 0, 5),
                store(ADD, b"c", b"3", 0, 0, 999_999),
                store(REPLACE, b"cx", b"3", 0, 0, 5),
                Request {
                    opcode: DELETE,
                    key: b"c",
                    cas: 12345,
                    ..Request::default()
                }
                .bytes(),
                keyed(DELETE, b"c"),
                keyed(DELETE, b"c"),
            ]),
        ),
        (
            "incr decr",
            cat(&[
                arith(INCR, b"n", 1, 10, 0),
                arith(INCR, b"n", 5, 10, 0),
                arith(DECR, b"n", 100, 0, 0),
                arith(INCR, b"m", 1, 0, NO_CREATE),
                arith(DECR, b"m", 1, 0, NO_CREATE),
                arith(INCRQ, b"n", 1, 0, 0),
                arith(DECRQ, b"n", 1, 0, 0),
                arith(INCRQ, b"absent", 1, 0, NO_CREATE),
                arith(INCR, b"n", u64::MAX, 0, 0),
                store(SET, b"s", b"abc", 0, 0, 0),
                arith(INCR, b"s", 1, 0, 0),
                store(SET, b"big", b"18446744073709551615", 0, 0, 0),
                arith(INCR, b"big", 2, 0, 0),
                keyed(GET, b"n"),
                keyed(GET, b"big"),
            ]),
        ),
        (
            "append prepend",
            cat(&[
                store(SET, b"p", b"mid", 3, 0, 0),
                Request {
                    opcode: APPEND,
                    key: b"p",
                    value: b"_end",
                    ..Request::default()
                }
                .bytes(),
                Request {
                    opcode: PREPEND,
                    key: b"p",
                    value: b"start_",
                    ..Request::default()
                }
                .bytes(),
                Request {
                    opcode: APPENDQ,
                    key: b"p",
                    value: b"!",
                    ..Request::default()
                }
                .bytes(),
                Request {
                    opcode: PREPENDQ,
                    key: b"p",
                    value: b"^",
                    ..Request::default()
                }
                .bytes(),
                Request {
                    opcode: APPEND,
                    key: b"none",
                    value: b"x",
                    ..Request::default()
                }
                .bytes(),
                Request {
                    opcode: APPENDQ,
                    key: b"none",
                    value: b"x",
                    ..Request::default()
                }
                .bytes(),
                Request {
                    opcode: APPEND,
                    key: b"p",
                    value: b"x",
                    cas: 77,
                    ..Request::default()
                }
                .bytes(),
                keyed(GET, b"p"),
            ]),
        ),
        (
            "touch and gat",
            cat(&[
                store(SET, b"t", b"val", 7, 0, 0),
                touch(TOUCH, b"t", 100),
                touch(GAT, b"t", 100),
                touch(GATQ, b"t", 100),
                touch(GATK, b"t", 100),
                touch(GATKQ, b"t", 100),
                touch(TOUCH, b"nx", 1),
                touch(GAT, b"nx", 1),
                touch(GATQ, b"nx", 1),
                touch(GATK, b"nx", 1),
                touch(GATKQ, b"nx", 1),
                // A past absolute time expires it.
                touch(TOUCH, b"t", 1_000_000_000),
                keyed(GET, b"t"),
            ]),
        ),
        (
            "flush noop version",
            cat(&[
                store(SET, b"f", b"1", 0, 0, 0),
                bare(FLUSH),
                keyed(GET, b"f"),
                Request {
                    opcode: FLUSHQ,
                    extras: &0u32.to_be_bytes(),
                    ..Request::default()
                }
                .bytes(),
                bare(NOOP),
                bare(VERSION),
            ]),
        ),
        (
            "stats",
            cat(&[
                keyed(STAT, b"reset"),
                keyed(STAT, b"bogus"),
                keyed(STAT, b"detail on"),
                keyed(STAT, b"detail off"),
                keyed(STAT, b"detail x"),
                keyed(STAT, b"conns"),
            ]),
        ),
        (
            "keys a text line cannot carry",
            cat(&[
                store(SET, b"a b\x00\n\xff", b"v", 0, 0, 0),
                keyed(GETK, b"a b\x00\n\xff"),
                keyed(DELETE, b"a b\x00\n\xff"),
                keyed(GET, b"a b\x00\n\xff"),
            ]),
        ),
        (
            "unknown opcodes swallow their body",
            cat(&[
                Request {
                    opcode: 0x1b,
                    value: b"abcd",
                    ..Request::default()
                }
                .bytes(),
                Request {
                    opcode: 0x50,
                    key: b"kk",
                    value: b"vvvv",
                    ..Request::default()
                }
                .bytes(),
                // memcached swallows the whole body length after the key
                // it has read: two bytes of what follows, here padding.
                vec![0; 2],
                bare(NOOP),
            ]),
        ),
        (
            "sasl without -S is unknown",
            cat(&[
                bare(SASL_LIST),
                Request {
                    opcode: SASL_AUTH,
                    key: b"PLAIN",
                    value: b"\0u\0p",
                    ..Request::default()
                }
                .bytes(),
                Request {
                    opcode: SASL_STEP,
                    key: b"PLAIN",
                    value: b"xy",
                    ..Request::default()
                }
                .bytes(),
            ]),
        ),
        (
            "too large",
            cat(&[
                store(SET, b"big", b"x", 0, 0, 0),
                store(SET, b"big", &vec![b'y'; 1024 * 1024], 0, 0, 0),
                keyed(GET, b"big"),
                store(ADD, b"big2", b"x", 0, 0, 0),
                store(REPLACE, b"big2", &vec![b'y'; 1024 * 1024], 0, 0, 0),
                keyed(GET, b"big2"),
                Request {
                    opcode: APPEND,
                    key: b"big2",
                    value: &vec![b'y'; 1024 * 1024],
                    ..Request::default()
                }
                .bytes(),
                keyed(GET, b"big2"),
            ]),
        ),
        (
            "trailing body bytes of a stat are read as the next request",
            cat(&[
                Request {
                    opcode: STAT,
                    key: b"reset",
                    body_len: Some(5 + 24),
                    ..Request::default()
                }
                .bytes(),
                bare(NOOP),
            ]),
        ),
    ]
}

/// Requests after which the server closes: (name, bytes).
fn closing_cases() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("quit", cat(&[bare(NOOP), bare(QUIT), bare(NOOP)])),
        ("quietly", cat(&[bare(NOOP), bare(QUITQ), bare(NOOP)])),
        (
            "wrong magic",
            cat(&[
                bare(NOOP),
                Request {
                    magic: Some(0x81),
                    opcode: NOOP,
                    ..Request::default()
                }
                .bytes(),
                bare(NOOP),
            ]),
        ),
        (
            "key longer than the body",
            Request {
                opcode: GET,
                key: b"key",
                body_len: Some(1),
                ..Request::default()
            }
            .bytes(),
        ),
        (
            "extras and key longer than the body",
            Request {
                opcode: SET,
                key: b"key",
                extras: &[0; 8],
                body_len: Some(9),
                ..Request::default()
            }
            .bytes(),
        ),
        (
            "get with extras",
            cat(&[
                Request {
                    opcode: GET,
                    key: b"key",
                    extras: b"abcd",
                    ..Request::default()
                }
                .bytes(),
                bare(NOOP),
            ]),
        ),
        ("get without a key", cat(&[bare(GET), bare(NOOP)])),
        (
            "key over 250 bytes",
            cat(&[keyed(GET, &[b'k'; 251]), bare(NOOP)]),
        ),
        (
            "set without extras",
            cat(&[
                Request {
                    opcode: SET,
                    key: b"k",
                    value: b"v",
                    ..Request::default()
                }
                .bytes(),
                bare(NOOP),
            ]),
        ),
        (
            "incr with short extras",
            cat(&[
                Request {
                    opcode: INCR,
                    key: b"k",
                    extras: &[0; 8],
                    ..Request::default()
                }
                .bytes(),
                bare(NOOP),
            ]),
        ),
        (
            "noop with a body",
            cat(&[
                Request {
                    opcode: NOOP,
                    value: b"x",
                    ..Request::default()
                }
                .bytes(),
                bare(NOOP),
            ]),
        ),
        (
            "version with a key",
            cat(&[keyed(VERSION, b"k"), bare(NOOP)]),
        ),
        (
            "flush with odd extras",
            cat(&[
                Request {
                    opcode: FLUSH,
                    extras: &[0; 3],
                    ..Request::default()
                }
                .bytes(),
                bare(NOOP),
            ]),
        ),
        (
            "delete with a value",
            cat(&[
                Request {
                    opcode: DELETE,
                    key: b"k",
                    value: b"v",
                    ..Request::default()
                }
                .bytes(),
                bare(NOOP),
            ]),
        ),
        (
            "touch without extras",
            cat(&[keyed(TOUCH, b"k"), bare(NOOP)]),
        ),
        (
            "stat with extras",
            cat(&[
                Request {
                    opcode: STAT,
                    extras: &[0; 4],
                    ..Request::default()
                }
                .bytes(),
                bare(NOOP),
            ]),
        ),
    ]
}

fn replies(server: &Server, bytes: &[u8], closes: bool) -> Vec<Packet> {
    let mut c = server.connect();
    let mut got = if closes {
        c.send(bytes);
        let mut p = packets(&c.read_to_close());
        p.push(Packet::Partial(b"<closed>".to_vec()));
        p
    } else {
        c.binary_request(bytes)
    };
    normalize(&mut got);
    got
}

#[test]
fn replies_match_memcached_packet_for_packet() {
    let memcached = Server::memcached(&[]);
    let zonecached = Server::zonecached(&[]);
    let cases = open_cases().into_iter().map(|(n, b)| (n, b, false));
    let closing = closing_cases().into_iter().map(|(n, b)| (n, b, true));
    for (name, bytes, closes) in cases.chain(closing) {
        let flush = bare(FLUSH);
        for server in [&memcached, &zonecached] {
            assert_eq!(server.connect().binary_request(&flush).len(), 1);
        }
        let want = replies(&memcached, &bytes, closes);
        let got = replies(&zonecached, &bytes, closes);
        assert!(
            want.len() > usize::from(closes),
            "{name}: memcached said nothing"
        );
        assert_eq!(got, want, "{name}: zonecached (left) vs memcached (right)");
    }
}

#[test]
fn memccapable_passes_on_a_node() {
    let zonecached = Server::zonecached(&[]);
    assert_memccapable_passes(&zonecached.addr.port().to_string());
}

#[test]
fn memccapable_passes_through_a_cluster_node() {
    let cluster = TestCluster::start(2, 1, "all", "");
    let a1 = cluster.node("a1").server.addr;
    assert_memccapable_passes(&a1.port().to_string());
}

/// libmemcached's `memccapable`, text and binary tests alike (no `-a`).
fn assert_memccapable_passes(port: &str) {
    let out = Command::new("timeout")
        .args([
            "120",
            "memccapable",
            "-h",
            "127.0.0.1",
            "-p",
            port,
            "-t",
            "10",
        ])
        .output()
        .expect("memccapable (Debian's libmemcached-tools)");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "memccapable failed:\n{text}");
    assert!(text.contains("All tests passed"), "{text}");
    let binary_passes = text
        .lines()
        .filter(|l| l.starts_with("binary") && l.contains("[pass]"))
        .count();
    assert!(
        binary_passes >= 25,
        "binary tests passed: {binary_passes}\n{text}"
    );
}

/// A Cyrus SASL configuration for memcached `-S` (PLAIN against a sasldb
/// made with `saslpasswd2`), and the same users as a password file for
/// zonecached: (SASL_CONF_PATH dir, password file).
fn sasl_users(name: &str, users: &[(&str, &str)]) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("zc-sasl-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("sasldb2");
    std::fs::write(
        dir.join("memcached.conf"),
        format!("mech_list: plain\nsasldb_path: {}\n", db.display()),
    )
    .unwrap();
    let mut lines = String::new();
    for (user, password) in users {
        let mut child = Command::new("saslpasswd2")
            .args(["-a", "memcached", "-c", "-p", "-f"])
            .arg(&db)
            .arg(user)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("saslpasswd2 (Debian's sasl2-bin)");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(password.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success());
        lines += &format!("{user}:{password}\n");
    }
    let pwdb = dir.join("pwdb");
    std::fs::write(&pwdb, lines).unwrap();
    (dir, pwdb)
}

fn plain(user: &str, password: &str) -> Vec<u8> {
    let data = format!("\0{user}\0{password}");
    Request {
        opcode: SASL_AUTH,
        key: b"PLAIN",
        value: data.as_bytes(),
        ..Request::default()
    }
    .bytes()
}

#[test]
fn sasl_plain_signs_in_as_in_memcached() {
    let (conf, pwdb) = sasl_users("plain", &[("alice", "s3cret"), ("bob", "hunter2")]);
    let memcached =
        Server::try_memcached_with_env(&["-S"], &[("SASL_CONF_PATH", conf.as_os_str())])
            .expect("memcached -S");
    let zonecached = Server::zonecached(&["-S", "--sasl-pwdb", pwdb.to_str().unwrap()]);
    let mut opened = vec![
        (
            "before sign-in only version and sasl",
            cat(&[bare(VERSION), bare(SASL_LIST)]),
        ),
        (
            "sign-in",
            cat(&[
                plain("alice", "s3cret"),
                store(SET, b"k", b"v", 0, 0, 0),
                keyed(GET, b"k"),
            ]),
        ),
        ("wrong password", plain("alice", "nope")),
        ("unknown user", plain("mallory", "s3cret")),
        (
            "another mechanism",
            Request {
                opcode: SASL_AUTH,
                key: b"CRAM-MD5",
                value: b"x",
                ..Request::default()
            }
            .bytes(),
        ),
        (
            "a step with nothing started",
            Request {
                opcode: SASL_STEP,
                key: b"PLAIN",
                value: b"x",
                ..Request::default()
            }
            .bytes(),
        ),
        (
            "authorization as oneself",
            Request {
                opcode: SASL_AUTH,
                key: b"PLAIN",
                value: b"bob\0bob\0hunter2",
                ..Request::default()
            }
            .bytes(),
        ),
        (
            "a mechanism name over 32 bytes",
            Request {
                opcode: SASL_AUTH,
                key: &[b'P'; 40],
                value: b"xx",
                ..Request::default()
            }
            .bytes(),
        ),
    ];
    let closing = vec![
        ("a get before sign-in", cat(&[keyed(GET, b"k"), bare(NOOP)])),
        (
            "a failed sign-in signs nobody in",
            cat(&[plain("alice", "nope"), keyed(GET, b"k")]),
        ),
        (
            "listing mechanisms signs out",
            cat(&[plain("alice", "s3cret"), bare(SASL_LIST), keyed(GET, b"k")]),
        ),
        (
            "authorization as another",
            cat(&[
                Request {
                    opcode: SASL_AUTH,
                    key: b"PLAIN",
                    value: b"bob\0alice\0s3cret",
                    ..Request::default()
                }
                .bytes(),
                bare(NOOP),
            ]),
        ),
        (
            "the text protocol",
            b"version\r\nversion\r\nversion\r\nversion\r\n".to_vec(),
        ),
    ];
    let mut all: Vec<_> = opened.drain(..).map(|(n, b)| (n, b, false)).collect();
    all.extend(closing.into_iter().map(|(n, b)| (n, b, true)));
    for (name, bytes, closes) in all {
        let want = replies(&memcached, &bytes, closes);
        let got = replies(&zonecached, &bytes, closes);
        assert_eq!(got, want, "{name}: zonecached (left) vs memcached (right)");
    }
    // Real SASL clients: libmemcached's memcstat, and python-binary-memcached.
    for (password, ok) in [("s3cret", true), ("wrong", false)] {
        let out = Command::new("timeout")
            .args(["20", "memcstat", "--binary", "--username=alice"])
            .arg(format!("--password={password}"))
            .arg(format!("--servers={}", zonecached.addr))
            .output()
            .expect("memcstat");
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            text.contains("auth_enabled_sasl: yes") || text.contains("pid:"),
            ok,
            "{text}"
        );
    }
    let script = r#"
import sys, bmemcached
good = bmemcached.Client([sys.argv[1]], 'bob', 'hunter2')
assert good.set('py', 'from python'), 'set'
assert good.get('py') == 'from python', good.get('py')
bad = bmemcached.Client([sys.argv[1]], 'bob', 'wrong')
try:
    bad.get('py')
    print('wrong password served')
    sys.exit(1)
except Exception as e:
    print('refused:', e)
"#;
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/py-clients/bin/python");
    let out = Command::new("timeout")
        .arg("30")
        .arg(&python)
        .args(["-c", script, &zonecached.addr.to_string()])
        .output()
        .expect("the python venv scripts/test makes");
    assert!(
        out.status.success(),
        "python-binary-memcached: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The counts and settings, over binary (text is refused under -S).
    let mut c = zonecached.connect();
    let got = c.binary_request(&cat(&[
        plain("bob", "hunter2"),
        keyed(STAT, b"settings"),
        keyed(STAT, b""),
    ]));
    let stat = |name: &str| {
        got.iter().find_map(|p| match p {
            Packet::Response {
                opcode: STAT,
                key,
                value,
                ..
            } if key == name.as_bytes() => Some(String::from_utf8_lossy(value).to_string()),
            _ => None,
        })
    };
    assert_eq!(stat("auth_enabled_sasl").as_deref(), Some("yes"));
    let cmds: u64 = stat("auth_cmds").unwrap().parse().unwrap();
    let errors: u64 = stat("auth_errors").unwrap().parse().unwrap();
    assert!(
        cmds > errors && errors >= 5,
        "auth_cmds {cmds}, auth_errors {errors}"
    );
}

#[test]
fn binary_requests_are_routed_across_zones() {
    let cluster = TestCluster::start(3, 1, "all", "");
    let mut a = cluster.node("a1").server.connect();
    let got = a.binary_request(&cat(&[
        store(SET, b"bk", b"binary", 9, 0, 0),
        arith(INCR, b"counter", 1, 40, 0),
        arith(INCR, b"counter", 2, 0, 0),
    ]));
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(
        got.iter()
            .all(|p| matches!(p, Packet::Response { status: 0, .. })),
        "{got:?}"
    );
    // Every zone holds the copies (text reads straight from each store).
    for id in ["a1", "b1", "c1"] {
        assert_eq!(
            cluster.local(id).request(b"get bk counter\r\n"),
            b"VALUE bk 9 6\r\nbinary\r\nVALUE counter 0 2\r\n42\r\nEND\r\n",
            "{id}"
        );
    }
    // A binary read through another zone's node, and a delete from there.
    let mut c = cluster.node("c1").server.connect();
    let got = c.binary_request(&cat(&[
        keyed(GETK, b"bk"),
        keyed(DELETE, b"bk"),
        keyed(GET, b"bk"),
    ]));
    let Packet::Response {
        status,
        key,
        value,
        extras,
        ..
    } = &got[0]
    else {
        panic!("{got:?}")
    };
    assert_eq!(
        (*status, &key[..], &value[..], &extras[..]),
        (0, &b"bk"[..], &b"binary"[..], &9u32.to_be_bytes()[..])
    );
    assert!(
        matches!(got[1], Packet::Response { status: 0, .. }),
        "{got:?}"
    );
    assert!(
        matches!(got[2], Packet::Response { status: 1, .. }),
        "{got:?}"
    );
    for id in ["a1", "b1", "c1"] {
        assert_eq!(cluster.local(id).request(b"get bk\r\n"), b"END\r\n", "{id}");
    }
}
