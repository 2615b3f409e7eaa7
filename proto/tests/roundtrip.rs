//! Property tests: encode → parse round-trips, and a pipelined stream split
//! at arbitrary points parses to the same requests.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use zonecache_proto::*;

fn key_strategy() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(0x21u8..0x7f, 1..=KEY_MAX_LENGTH).prop_map(Bytes::from)
}

fn data_strategy() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..300).prop_map(Bytes::from)
}

/// Meta flags as wire tokens, each flag at most once.
fn meta_tokens_strategy() -> impl Strategy<Value = Vec<String>> {
    let choices: Vec<BoxedStrategy<String>> = vec![
        Just("v".to_string()).boxed(),
        Just("k".to_string()).boxed(),
        Just("c".to_string()).boxed(),
        Just("f".to_string()).boxed(),
        Just("s".to_string()).boxed(),
        Just("t".to_string()).boxed(),
        Just("q".to_string()).boxed(),
        Just("h".to_string()).boxed(),
        Just("l".to_string()).boxed(),
        Just("u".to_string()).boxed(),
        Just("I".to_string()).boxed(),
        Just("b".to_string()).boxed(),
        (-100i32..100000).prop_map(|v| format!("T{v}")).boxed(),
        (-100i32..100000).prop_map(|v| format!("N{v}")).boxed(),
        (0i32..100000).prop_map(|v| format!("R{v}")).boxed(),
        any::<u32>().prop_map(|v| format!("F{v}")).boxed(),
        any::<u64>().prop_map(|v| format!("C{v}")).boxed(),
        any::<u64>().prop_map(|v| format!("E{v}")).boxed(),
        any::<u64>().prop_map(|v| format!("D{v}")).boxed(),
        any::<u64>().prop_map(|v| format!("J{v}")).boxed(),
        "[a-zA-Z0-9]{0,31}".prop_map(|v| format!("O{v}")).boxed(),
    ];
    proptest::sample::subsequence(choices, 0..8)
        .prop_flat_map(|s| s)
        .prop_shuffle()
}

fn meta_line(cmd: &str, key: &[u8], tokens: &[String], datalen: Option<usize>) -> Vec<u8> {
    use base64::Engine;
    let mut line = format!("{cmd} ").into_bytes();
    if tokens.iter().any(|t| t == "b") {
        // The encoded key must stay within 250 bytes.
        let key = &key[..key.len().min(180)];
        line.extend_from_slice(
            base64::engine::general_purpose::STANDARD
                .encode(key)
                .as_bytes(),
        );
    } else {
        line.extend_from_slice(key);
    }
    if let Some(n) = datalen {
        line.extend_from_slice(format!(" {n}").as_bytes());
    }
    for t in tokens {
        line.push(b' ');
        line.extend_from_slice(t.as_bytes());
    }
    line.extend_from_slice(b"\r\n");
    line
}

fn parse_one(input: &[u8]) -> Command {
    let mut p = RequestParser::new(ParserConfig::default());
    let mut buf = BytesMut::from(input);
    let cmd = p.parse(&mut buf).unwrap().expect("complete");
    assert!(buf.is_empty());
    cmd
}

fn command_strategy() -> impl Strategy<Value = Command> {
    let store = (
        prop_oneof![
            Just(StoreMode::Set),
            Just(StoreMode::Add),
            Just(StoreMode::Replace),
            Just(StoreMode::Append),
            Just(StoreMode::Prepend),
            Just(StoreMode::Cas),
        ],
        key_strategy(),
        any::<u32>(),
        any::<i32>(),
        data_strategy(),
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(|(mode, key, flags, exptime, data, cas, noreply)| {
            Command::Store(Store {
                mode,
                key,
                flags,
                exptime,
                data,
                cas_unique: if mode == StoreMode::Cas { cas } else { 0 },
                noreply,
            })
        });
    let keys = proptest::collection::vec(key_strategy(), 1..40);
    prop_oneof![
        (keys, any::<bool>()).prop_map(|(keys, cas)| Command::Get { keys, cas }),
        // A gat line must fit memcached's 2048-byte bound when it arrives in pieces.
        (
            any::<i32>(),
            proptest::collection::vec(key_strategy(), 1..8),
            any::<bool>()
        )
            .prop_map(|(exptime, keys, cas)| Command::Gat { exptime, keys, cas }),
        store,
        (key_strategy(), any::<u64>(), any::<bool>(), any::<bool>()).prop_map(
            |(key, delta, incr, noreply)| Command::Arith {
                key,
                delta,
                incr,
                noreply
            }
        ),
        (key_strategy(), any::<i32>(), any::<bool>()).prop_map(|(key, exptime, noreply)| {
            Command::Touch {
                key,
                exptime,
                noreply,
            }
        }),
        (key_strategy(), any::<bool>()).prop_map(|(key, noreply)| Command::Delete { key, noreply }),
        (any::<i32>(), any::<bool>())
            .prop_map(|(delay, noreply)| Command::FlushAll { delay, noreply }),
        Just(Command::Version),
        Just(Command::Quit),
        Just(Command::MetaNoop),
        "[0-9a-f]{32}".prop_map(|nonce| Command::PeerChallenge {
            nonce: Bytes::from(nonce)
        }),
        "[0-9a-f]{64}".prop_map(|proof| Command::PeerHello {
            proof: Bytes::from(proof)
        }),
        Just(Command::Leave),
        (
            any::<u64>(),
            any::<u32>(),
            proptest::collection::vec((key_strategy(), key_strategy()), 1..4)
        )
            .prop_map(|(cursor, count, owners)| Command::PeerDump {
                cursor,
                count,
                owners
            }),
        (any::<u32>(), any::<bool>())
            .prop_map(|(level, noreply)| Command::Verbosity { level, noreply }),
        proptest::collection::vec(key_strategy(), 0..3).prop_map(|args| Command::Stats { args }),
        (
            prop_oneof![Just("mg"), Just("md"), Just("ma")],
            key_strategy(),
            meta_tokens_strategy()
        )
            .prop_map(|(cmd, key, tokens)| parse_one(&meta_line(cmd, &key, &tokens, None))),
        (key_strategy(), meta_tokens_strategy(), data_strategy()).prop_map(
            |(key, tokens, data)| {
                let mut wire = meta_line("ms", &key, &tokens, Some(data.len()));
                wire.extend_from_slice(&data);
                wire.extend_from_slice(b"\r\n");
                parse_one(&wire)
            }
        ),
    ]
}

fn response_strategy() -> impl Strategy<Value = Response> {
    let value = (
        key_strategy(),
        any::<u32>(),
        data_strategy(),
        any::<Option<u64>>(),
    )
        .prop_map(|(key, flags, data, cas)| Value {
            key,
            flags,
            data,
            cas,
        });
    let word = "[a-z_]{1,20}".prop_map(Bytes::from);
    let token = (
        prop::sample::select(b"bcfhklOqstWXZ".to_vec()),
        "[a-zA-Z0-9]{0,20}".prop_map(Bytes::from),
    )
        .prop_map(|(flag, arg)| MetaToken { flag, arg });
    let code = prop_oneof![
        Just(MetaCode::Header),
        Just(MetaCode::Miss),
        Just(MetaCode::NotStored),
        Just(MetaCode::Exists),
        Just(MetaCode::NotFound),
    ];
    let dump_item = (
        prop_oneof![
            key_strategy(),
            proptest::collection::vec(any::<u8>(), 1..40).prop_map(Bytes::from)
        ],
        any::<u32>(),
        data_strategy(),
        any::<u64>(),
        -1i64..100_000_000,
        any::<bool>(),
    )
        .prop_map(|(key, flags, data, version, ttl, deleted)| DumpItem {
            key_binary: key.iter().any(|b| *b <= b' ' || *b >= 0x7f),
            key,
            flags: if deleted { 0 } else { flags },
            data: if deleted { Bytes::new() } else { data },
            version,
            ttl,
            deleted,
        });
    let dump = (
        any::<Option<u64>>(),
        0u32..=1_000_000,
        proptest::collection::vec(dump_item, 0..5),
    )
        .prop_map(|(next, progress_ppm, items)| {
            Response::Dump(DumpPage {
                next,
                progress_ppm,
                items,
            })
        });
    prop_oneof![
        proptest::collection::vec(value, 0..5).prop_map(Response::Values),
        dump,
        Just(Response::Stored),
        Just(Response::NotStored),
        Just(Response::Exists),
        Just(Response::NotFound),
        Just(Response::Deleted),
        Just(Response::Touched),
        Just(Response::Ok),
        ("[0-9a-f]{32}", "[0-9a-f]{64}").prop_map(|(nonce, proof)| Response::Challenge {
            nonce: Bytes::from(nonce),
            proof: Bytes::from(proof)
        }),
        Just(Response::Reset),
        Just(Response::Error),
        Just(Response::MetaNoop),
        any::<u64>().prop_map(Response::Number),
        "[0-9.]{1,10}".prop_map(|v| Response::Version(Bytes::from(v))),
        proptest::collection::vec(
            (word.clone(), "[0-9a-z.:]{1,12}".prop_map(Bytes::from)),
            1..6
        )
        .prop_map(Response::Stats),
        "[a-z ]{0,30}[a-z]".prop_map(|m| Response::ClientError(Bytes::from(m))),
        "[a-z ]{0,30}[a-z]".prop_map(|m| Response::ServerError(Bytes::from(m))),
        (
            proptest::collection::vec(token.clone(), 0..5),
            data_strategy()
        )
            .prop_map(|(flags, v)| {
                Response::Meta(MetaResponse {
                    code: MetaCode::Value,
                    flags,
                    value: Some(v),
                })
            }),
        (code, proptest::collection::vec(token, 0..5)).prop_map(|(code, flags)| {
            Response::Meta(MetaResponse {
                code,
                flags,
                value: None,
            })
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn request_roundtrip(cmd in command_strategy()) {
        let mut wire = BytesMut::new();
        cmd.encode(&mut wire);
        let mut p = RequestParser::new(ParserConfig::default());
        let parsed = p.parse(&mut wire).unwrap();
        prop_assert_eq!(parsed, Some(cmd));
        prop_assert!(wire.is_empty());
    }

    #[test]
    fn response_roundtrip(resp in response_strategy()) {
        let mut wire = BytesMut::new();
        resp.encode(&mut wire);
        let parsed = parse_response(&mut wire).unwrap();
        prop_assert_eq!(parsed, Some(resp));
        prop_assert!(wire.is_empty());
    }

    #[test]
    fn split_stream_parses_the_same(
        cmds in proptest::collection::vec(command_strategy(), 1..20),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
    ) {
        let mut wire = BytesMut::new();
        for c in &cmds {
            c.encode(&mut wire);
        }
        let whole = wire.freeze();
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(whole.len() + 1)).collect();
        points.push(whole.len());
        points.sort_unstable();
        let mut p = RequestParser::new(ParserConfig::default());
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut at = 0;
        for point in points {
            buf.extend_from_slice(&whole[at..point]);
            at = point;
            while let Some(c) = p.parse(&mut buf).unwrap() {
                got.push(c);
            }
        }
        prop_assert_eq!(got, cmds);
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn arbitrary_input_never_panics(input in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let mut p = RequestParser::new(ParserConfig::default());
        let mut buf = BytesMut::from(&input[..]);
        let mut steps = 0;
        while let Ok(Some(_)) = p.parse(&mut buf) {
            steps += 1;
            prop_assert!(steps <= input.len(), "parser must consume input on every request");
        }
    }
}
