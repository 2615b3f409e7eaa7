//! Per-command and per-error-path tests. Error replies are checked as the
//! exact bytes memcached 1.6.18 answers for the same input.

use bytes::{Bytes, BytesMut};
use zonecache_proto::*;

fn parser() -> RequestParser {
    RequestParser::new(ParserConfig::default())
}

/// Parses everything in `input`; returns the commands and what is left.
fn parse_all(input: &[u8]) -> (Vec<Command>, BytesMut) {
    let mut p = parser();
    let mut buf = BytesMut::from(input);
    let mut out = Vec::new();
    while let Some(c) = p.parse(&mut buf).expect("not fatal") {
        out.push(c);
    }
    (out, buf)
}

fn one(input: &[u8]) -> Command {
    let (mut cmds, rest) = parse_all(input);
    assert_eq!(cmds.len(), 1, "{cmds:?}");
    assert!(rest.is_empty(), "left over: {rest:?}");
    cmds.remove(0)
}

/// The reply bytes for an error command, or None if it is not an error.
fn error_bytes(cmd: &Command) -> Vec<u8> {
    match cmd {
        Command::Invalid(e) => {
            let mut b = BytesMut::new();
            e.encode(&mut b);
            b.to_vec()
        }
        other => panic!("not an error: {other:?}"),
    }
}

fn err(input: &[u8]) -> Vec<u8> {
    error_bytes(&one(input))
}

fn key(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

#[test]
fn get_and_gets() {
    assert_eq!(
        one(b"get a b c\r\n"),
        Command::Get {
            keys: vec![key("a"), key("b"), key("c")],
            cas: false
        }
    );
    assert_eq!(
        one(b"gets a\r\n"),
        Command::Get {
            keys: vec![key("a")],
            cas: true
        }
    );
    // bget is memcached's ancient alias.
    assert_eq!(
        one(b"bget a\n"),
        Command::Get {
            keys: vec![key("a")],
            cas: false
        }
    );
    // Many spaces collapse; bare \n ends a line.
    assert_eq!(
        one(b"get   a    b\n"),
        Command::Get {
            keys: vec![key("a"), key("b")],
            cas: false
        }
    );
}

#[test]
fn get_with_more_keys_than_one_tokenizer_pass() {
    let keys: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
    let line = format!("get {}\r\n", keys.join(" "));
    match one(line.as_bytes()) {
        Command::Get { keys: got, .. } => {
            assert_eq!(got.len(), 100);
            assert_eq!(got[99], key("k99"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn gat_and_gats() {
    assert_eq!(
        one(b"gat 100 a b\r\n"),
        Command::Gat {
            exptime: 100,
            keys: vec![key("a"), key("b")],
            cas: false
        }
    );
    assert_eq!(
        one(b"gats -1 a\r\n"),
        Command::Gat {
            exptime: -1,
            keys: vec![key("a")],
            cas: true
        }
    );
    assert_eq!(
        err(b"gat x a\r\n"),
        b"CLIENT_ERROR invalid exptime argument\r\n"
    );
}

#[test]
fn get_errors() {
    assert_eq!(err(b"get\r\n"), b"ERROR\r\n");
    let long = format!("get a {}\r\n", "k".repeat(251));
    assert_eq!(
        err(long.as_bytes()),
        b"CLIENT_ERROR bad command line format\r\n"
    );
    let ok = format!("get {}\r\n", "k".repeat(250));
    assert!(matches!(one(ok.as_bytes()), Command::Get { .. }));
}

#[test]
fn storage_commands() {
    for (name, mode) in [
        ("set", StoreMode::Set),
        ("add", StoreMode::Add),
        ("replace", StoreMode::Replace),
        ("append", StoreMode::Append),
        ("prepend", StoreMode::Prepend),
    ] {
        let input = format!("{name} k 5 100 3\r\nabc\r\n");
        assert_eq!(
            one(input.as_bytes()),
            Command::Store(Store {
                mode,
                key: key("k"),
                flags: 5,
                exptime: 100,
                data: key("abc"),
                cas_unique: 0,
                noreply: false
            })
        );
    }
    assert_eq!(
        one(b"cas k 0 0 1 77 noreply\r\nx\r\n"),
        Command::Store(Store {
            mode: StoreMode::Cas,
            key: key("k"),
            flags: 0,
            exptime: 0,
            data: key("x"),
            cas_unique: 77,
            noreply: true
        })
    );
    // Binary data with embedded \r\n is fine: the length decides.
    match one(b"set k 0 0 4\r\n\r\n\r\n\r\n") {
        Command::Store(s) => assert_eq!(&s.data[..], b"\r\n\r\n"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_data_block_is_never_read_as_a_command() {
    // Malformed lines whose data length is known: the block is swallowed,
    // whatever it holds, and the next line is the next command.
    let long_key = format!("set {} 0 0 9\r\nflush_all\r\nmn\r\n", "k".repeat(251));
    for input in [
        &b"set k x 0 9\r\nflush_all\r\nmn\r\n"[..],
        b"set k 0 99999999999999999999 9\r\nflush_all\r\nmn\r\n",
        b"cas k 0 0 9 abc\r\nflush_all\r\nmn\r\n",
        long_key.as_bytes(),
    ] {
        let (cmds, rest) = parse_all(input);
        assert_eq!(cmds.len(), 2, "{cmds:?}");
        assert_eq!(
            error_bytes(&cmds[0]),
            b"CLIENT_ERROR bad command line format\r\n"
        );
        assert_eq!(cmds[1], Command::MetaNoop);
        assert!(rest.is_empty());
    }
    // Exptimes beyond 32 bits are truncated as memcached does, not refused.
    let (cmds, _) = parse_all(b"set k 0 2147483648 9\r\nflush_all\r\n");
    assert!(
        matches!(&cmds[..], [Command::Store(s)] if s.exptime == i32::MIN && &s.data[..] == b"flush_all"),
        "{cmds:?}"
    );
}

#[test]
fn storage_errors_match_memcached() {
    assert_eq!(err(b"set k 0 0\r\n"), b"ERROR\r\n");
    assert_eq!(err(b"set k 0 0 1 noreply extra\r\n"), b"ERROR\r\n");
    assert_eq!(err(b"cas k 0 0 1\r\n"), b"ERROR\r\n");
    // Malformed numbers: the data line is then read as a command (ERROR).
    let (cmds, _) = parse_all(b"set k 0 0 abc\r\nhello\r\n");
    assert_eq!(
        error_bytes(&cmds[0]),
        b"CLIENT_ERROR bad command line format\r\n"
    );
    assert_eq!(error_bytes(&cmds[1]), b"ERROR\r\n");
    assert_eq!(
        err(b"set k x 0 1\r\n"),
        b"CLIENT_ERROR bad command line format\r\n"
    );
    assert_eq!(
        err(b"set k 0 x 1\r\n"),
        b"CLIENT_ERROR bad command line format\r\n"
    );
    assert_eq!(
        err(b"set k -1 0 1\r\n"),
        b"CLIENT_ERROR bad command line format\r\n"
    );
    assert_eq!(
        err(b"set k 0 0 -1\r\n"),
        b"CLIENT_ERROR bad command line format\r\n"
    );
    // A length beyond 32 bits is truncated as memcached's safe_strtol does
    // (here to 1,215,752,191 bytes: too large, refused once that many
    // bytes are swallowed); beyond 64 bits it is refused.
    let (cmds, rest) = parse_all(b"set k 0 0 99999999999\r\n");
    assert!(cmds.is_empty() && rest.is_empty(), "{cmds:?}");
    assert_eq!(
        err(b"set k 0 0 99999999999999999999\r\n"),
        b"CLIENT_ERROR bad command line format\r\n"
    );
    assert_eq!(
        err(b"cas k 0 0 1 -5\r\n"),
        b"CLIENT_ERROR bad command line format\r\n"
    );
    let long = format!("set {} 0 0 1\r\n", "k".repeat(251));
    assert_eq!(
        err(long.as_bytes()),
        b"CLIENT_ERROR bad command line format\r\n"
    );
    // noreply is honoured even for the error (memcached's out_string).
    match one(b"set k 0 0 abc noreply\r\n") {
        Command::Invalid(e) => assert!(e.noreply),
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_data_chunk_resyncs_like_memcached() {
    // memcached reads exactly <bytes>+2, then complains; the rest is a new line.
    let (cmds, rest) = parse_all(b"set k 0 0 3\r\nhello\r\n");
    assert_eq!(error_bytes(&cmds[0]), b"CLIENT_ERROR bad data chunk\r\n");
    assert_eq!(error_bytes(&cmds[1]), b"ERROR\r\n");
    assert!(rest.is_empty());
}

#[test]
fn too_large_value_is_swallowed() {
    let mut p = RequestParser::new(ParserConfig {
        item_size_max: 1024,
        ..ParserConfig::default()
    });
    let mut buf = BytesMut::from(&b"set big 0 0 2000\r\n"[..]);
    // The data block arrives in pieces and is discarded; the refusal comes
    // once it is all in, as memcached answers.
    assert_eq!(p.parse(&mut buf).unwrap(), None);
    buf.extend_from_slice(&[b'x'; 1500]);
    assert_eq!(p.parse(&mut buf).unwrap(), None);
    assert!(buf.is_empty());
    buf.extend_from_slice(&[b'x'; 500]);
    buf.extend_from_slice(b"\r\nget big\r\n");
    match p.parse(&mut buf).unwrap() {
        Some(Command::TooLarge {
            key: k,
            remove_existing: true,
            noreply: false,
        }) => assert_eq!(k, key("big")),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        p.parse(&mut buf).unwrap(),
        Some(Command::Get {
            keys: vec![key("big")],
            cas: false
        })
    );
}

#[test]
fn item_size_limit_counts_like_memcached() {
    let cfg = ParserConfig::default();
    // memcached -I 1m accepts 1048516 bytes under a 1-byte key with flags 0.
    assert!(cfg.item_fits(1, 0, 1_048_516));
    assert!(!cfg.item_fits(1, 0, 1_048_517));
    assert!(!cfg.item_fits(1, 1, 1_048_516));
}

#[test]
fn incomplete_input_needs_more_bytes() {
    let mut p = parser();
    let mut buf = BytesMut::from(&b"set k 0 0 5\r\nhel"[..]);
    assert_eq!(p.parse(&mut buf).unwrap(), None);
    assert_eq!(buf.len(), 16, "nothing consumed while waiting");
    buf.extend_from_slice(b"lo\r\nget k");
    assert!(matches!(
        p.parse(&mut buf).unwrap(),
        Some(Command::Store(_))
    ));
    assert_eq!(p.parse(&mut buf).unwrap(), None);
    buf.extend_from_slice(b"\r\n");
    assert!(matches!(
        p.parse(&mut buf).unwrap(),
        Some(Command::Get { .. })
    ));
}

#[test]
fn arithmetic() {
    assert_eq!(
        one(b"incr k 18446744073709551615\r\n"),
        Command::Arith {
            key: key("k"),
            delta: u64::MAX,
            incr: true,
            noreply: false
        }
    );
    assert_eq!(
        one(b"decr k 1 noreply\r\n"),
        Command::Arith {
            key: key("k"),
            delta: 1,
            incr: false,
            noreply: true
        }
    );
    assert_eq!(err(b"incr k\r\n"), b"ERROR\r\n");
    assert_eq!(
        err(b"incr k x\r\n"),
        b"CLIENT_ERROR invalid numeric delta argument\r\n"
    );
    assert_eq!(
        err(b"incr k -1\r\n"),
        b"CLIENT_ERROR invalid numeric delta argument\r\n"
    );
    assert_eq!(
        err(b"incr k 18446744073709551616\r\n"),
        b"CLIENT_ERROR invalid numeric delta argument\r\n"
    );
}

#[test]
fn touch_and_delete() {
    assert_eq!(
        one(b"touch k 10\r\n"),
        Command::Touch {
            key: key("k"),
            exptime: 10,
            noreply: false
        }
    );
    assert_eq!(
        err(b"touch k abc\r\n"),
        b"CLIENT_ERROR invalid exptime argument\r\n"
    );
    assert_eq!(err(b"touch k\r\n"), b"ERROR\r\n");
    assert_eq!(
        one(b"delete k\r\n"),
        Command::Delete {
            key: key("k"),
            noreply: false
        }
    );
    assert_eq!(
        one(b"delete k 0\r\n"),
        Command::Delete {
            key: key("k"),
            noreply: false
        }
    );
    assert_eq!(
        one(b"delete k 0 noreply\r\n"),
        Command::Delete {
            key: key("k"),
            noreply: true
        }
    );
    assert_eq!(
        err(b"delete k 5\r\n"),
        b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n"
    );
    assert_eq!(err(b"delete\r\n"), b"ERROR\r\n");
    assert_eq!(err(b"delete a b c d\r\n"), b"ERROR\r\n");
}

#[test]
fn flush_all_forms() {
    assert_eq!(
        one(b"flush_all\r\n"),
        Command::FlushAll {
            delay: 0,
            noreply: false
        }
    );
    assert_eq!(
        one(b"flush_all 10\r\n"),
        Command::FlushAll {
            delay: 10,
            noreply: false
        }
    );
    assert_eq!(
        one(b"flush_all noreply\r\n"),
        Command::FlushAll {
            delay: 0,
            noreply: true
        }
    );
    assert_eq!(
        one(b"flush_all 5 noreply\r\n"),
        Command::FlushAll {
            delay: 5,
            noreply: true
        }
    );
    assert_eq!(
        err(b"flush_all x\r\n"),
        b"CLIENT_ERROR invalid exptime argument\r\n"
    );
    assert_eq!(err(b"flush_all 1 2 3\r\n"), b"ERROR\r\n");
}

#[test]
fn misc_commands() {
    assert_eq!(one(b"version\r\n"), Command::Version);
    assert_eq!(one(b"quit\r\n"), Command::Quit);
    assert_eq!(
        one(b"verbosity 1\r\n"),
        Command::Verbosity {
            level: 1,
            noreply: false
        }
    );
    assert_eq!(err(b"verbosity\r\n"), b"ERROR\r\n");
    assert_eq!(
        one(b"stats settings\r\n"),
        Command::Stats {
            args: vec![key("settings")]
        }
    );
    assert_eq!(one(b"stats\r\n"), Command::Stats { args: vec![] });
    // Whether it is enabled is the node's setting, not the parser's.
    for (line, graceful) in [
        (&b"shutdown\r\n"[..], Some(false)),
        (b"shutdown graceful\r\n", Some(true)),
        (b"shutdown now\r\n", None),
    ] {
        assert_eq!(one(line), Command::Shutdown { graceful });
    }
    assert_eq!(
        one(b"cache_memlimit 50 noreply\r\n"),
        Command::CacheMemlimit {
            megabytes: 50,
            noreply: true
        }
    );
    assert_eq!(
        err(b"cache_memlimit 7\r\n"),
        b"MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m\r\n"
    );
    assert_eq!(err(b"cache_memlimit x\r\n"), b"ERROR\r\n");
    assert_eq!(one(b"GET / HTTP/1.1\r\n"), Command::Close);
}

#[test]
fn unknown_and_empty_lines() {
    assert_eq!(err(b"bogus\r\n"), b"ERROR\r\n");
    assert_eq!(err(b"\r\n"), b"ERROR\r\n");
    assert_eq!(err(b"x\r\n"), b"ERROR\r\n");
    assert_eq!(err(b"gxt a\r\n"), b"ERROR\r\n");
    assert_eq!(err(b"\x00\x01\x02\r\n"), b"ERROR\r\n");
    // A NUL ends the line as far as memcached is concerned.
    assert_eq!(one(b"version\x00junk\r\n"), Command::Version);
}

#[test]
fn overlong_line_without_newline_is_fatal() {
    let mut p = parser();
    let mut buf = BytesMut::from(&[b'a'; 2049][..]);
    assert_eq!(p.parse(&mut buf), Err(Fatal::LineTooLong));
    // but exactly the bound is still waiting for more
    let mut buf = BytesMut::from(&[b'a'; 2048][..]);
    assert_eq!(p.parse(&mut buf), Ok(None));
    // a long multi-get may keep growing, up to max_get_line
    let mut buf = BytesMut::from(&b"get "[..]);
    buf.extend_from_slice(&[b'k'; 10_000]);
    assert_eq!(p.parse(&mut buf), Ok(None));
    let mut small = RequestParser::new(ParserConfig {
        max_get_line: 4096,
        ..ParserConfig::default()
    });
    assert_eq!(small.parse(&mut buf), Err(Fatal::LineTooLong));
}

#[test]
fn meta_get_flags() {
    match one(b"mg foo s v t c f k O123 q\r\n") {
        Command::MetaGet(m) => {
            assert_eq!(m.key, key("foo"));
            assert!(m.flags.value && m.flags.quiet);
            assert_eq!(m.flags.opaque, Some(key("O123")));
            let order: Vec<u8> = m.flags.tokens.iter().map(|t| t.flag).collect();
            assert_eq!(order, b"svtcfkOq");
        }
        other => panic!("{other:?}"),
    }
    match one(b"mg Zm9v b N30 R10 T60\r\n") {
        Command::MetaGet(m) => {
            assert_eq!(m.key, key("foo"));
            assert!(m.flags.base64);
            assert_eq!(m.flags.vivify, Some(30));
            assert_eq!(m.flags.recache, Some(10));
            assert_eq!(m.flags.ttl, Some(60));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn meta_errors_match_memcached() {
    assert_eq!(err(b"mg\r\n"), b"ERROR\r\n");
    assert_eq!(err(b"mx foo\r\n"), b"ERROR\r\n");
    assert_eq!(err(b"mg k zz\r\n"), b"CLIENT_ERROR invalid flag\r\n");
    assert_eq!(err(b"mg k v v\r\n"), b"CLIENT_ERROR duplicate flag\r\n");
    assert_eq!(
        err(b"md k v v\r\n"),
        b"CLIENT_ERROR invalid or duplicate flag\r\n"
    );
    assert_eq!(
        err(b"ma k Dx\r\n"),
        b"CLIENT_ERROR invalid or duplicate flag\r\n"
    );
    assert_eq!(
        err(b"mg k Tx\r\n"),
        b"CLIENT_ERROR bad token in command line format\r\n"
    );
    assert_eq!(
        err(b"mg !!!! b\r\n"),
        b"CLIENT_ERROR error decoding key\r\n"
    );
    assert_eq!(
        err(b"ma k MX\r\n"),
        b"CLIENT_ERROR invalid mode for ma M token\r\n"
    );
    let long_opaque = format!("mg k O{}\r\n", "1".repeat(32));
    assert_eq!(
        err(long_opaque.as_bytes()),
        b"CLIENT_ERROR opaque token too long\r\n"
    );
    assert_eq!(
        err(b"mg k v k c f s t h l O1 q u N1 R1 T1 F1 C1 J1 D1\r\n"),
        b"CLIENT_ERROR options flags are too long\r\n"
    );
    assert_eq!(
        err(b"md k v k c f s t h l O1 q u N1 R1 T1 F1 C1 J1 D1\r\n"),
        b"CLIENT_ERROR options flags too long\r\n"
    );
    let long_key = format!("mg {} v\r\n", "k".repeat(251));
    assert_eq!(
        err(long_key.as_bytes()),
        b"CLIENT_ERROR bad command line format\r\n"
    );
    assert_eq!(one(b"mn\r\n"), Command::MetaNoop);
    assert_eq!(err(b"me\r\n"), b"CLIENT_ERROR bad command line format\r\n");
}

#[test]
fn meta_set() {
    match one(b"ms k 2 T10 F5 MA c\r\nhi\r\n") {
        Command::MetaSet { meta, data } => {
            assert_eq!(meta.key, key("k"));
            assert_eq!(data, key("hi"));
            assert_eq!(meta.flags.ttl, Some(10));
            assert_eq!(meta.flags.client_flags, Some(5));
            assert_eq!(meta.flags.mode, Some(b'A'));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        err(b"ms k\r\n"),
        b"CLIENT_ERROR bad command line format\r\n"
    );
    assert_eq!(
        err(b"ms k -1\r\n"),
        b"CLIENT_ERROR bad command line format\r\n"
    );
    // Flag errors swallow the data block, like memcached.
    let (cmds, rest) = parse_all(b"ms k 2 MX\r\nhi\r\nmn\r\n");
    assert_eq!(
        error_bytes(&cmds[0]),
        b"CLIENT_ERROR invalid mode for ms M token\r\n"
    );
    assert_eq!(cmds[1], Command::MetaNoop);
    assert!(rest.is_empty());
    let (cmds, _) = parse_all(b"ms k 2 zz\r\nhi\r\nmn\r\n");
    assert_eq!(error_bytes(&cmds[0]), b"CLIENT_ERROR invalid flag\r\n");
    assert_eq!(cmds[1], Command::MetaNoop);
    let (cmds, _) = parse_all(b"ms k 2\r\nhiX\r\n");
    assert_eq!(error_bytes(&cmds[0]), b"CLIENT_ERROR bad data chunk\r\n");
}

#[test]
fn responses_encode_exactly() {
    let cases: Vec<(Response, &[u8])> = vec![
        (Response::Stored, b"STORED\r\n"),
        (Response::NotStored, b"NOT_STORED\r\n"),
        (Response::Exists, b"EXISTS\r\n"),
        (Response::NotFound, b"NOT_FOUND\r\n"),
        (Response::Deleted, b"DELETED\r\n"),
        (Response::Touched, b"TOUCHED\r\n"),
        (Response::Ok, b"OK\r\n"),
        (Response::Number(42), b"42\r\n"),
        (Response::Version(key("1.6.18")), b"VERSION 1.6.18\r\n"),
        (Response::Error, b"ERROR\r\n"),
        (
            Response::ClientError(key("bad data chunk")),
            b"CLIENT_ERROR bad data chunk\r\n",
        ),
        (
            Response::ServerError(key("object too large for cache")),
            b"SERVER_ERROR object too large for cache\r\n",
        ),
        (Response::MetaNoop, b"MN\r\n"),
        (
            Response::Values(vec![Value {
                key: key("k"),
                flags: 3,
                data: key("abc"),
                cas: Some(9),
            }]),
            b"VALUE k 3 3 9\r\nabc\r\nEND\r\n",
        ),
        (
            Response::Stats(vec![(key("pid"), key("1"))]),
            b"STAT pid 1\r\nEND\r\n",
        ),
        (
            Response::Meta(MetaResponse {
                code: MetaCode::Value,
                flags: vec![MetaToken {
                    flag: b's',
                    arg: key("2"),
                }],
                value: Some(key("hi")),
            }),
            b"VA 2 s2\r\nhi\r\n",
        ),
        (
            Response::Meta(MetaResponse {
                code: MetaCode::Miss,
                flags: vec![],
                value: None,
            }),
            b"EN\r\n",
        ),
    ];
    for (response, bytes) in cases {
        let mut out = BytesMut::new();
        response.encode(&mut out);
        assert_eq!(&out[..], bytes, "{response:?}");
        let mut back = out.clone();
        assert_eq!(parse_response(&mut back).unwrap(), Some(response));
        assert!(back.is_empty());
    }
}

#[test]
fn response_parser_waits_for_whole_reply() {
    let full = b"VALUE a 0 3\r\nabc\r\nVALUE b 1 1\r\nx\r\nEND\r\n";
    for cut in 0..full.len() {
        let mut buf = BytesMut::from(&full[..cut]);
        assert_eq!(parse_response(&mut buf).unwrap(), None, "cut at {cut}");
        assert_eq!(buf.len(), cut);
    }
    let mut buf = BytesMut::from(&full[..]);
    match parse_response(&mut buf).unwrap() {
        Some(Response::Values(v)) => assert_eq!(v.len(), 2),
        other => panic!("{other:?}"),
    }
    let mut junk = BytesMut::from(&b"WHAT\r\n"[..]);
    assert!(parse_response(&mut junk).is_err());
}
