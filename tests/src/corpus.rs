//! The differential corpus: command sequences sent to stock memcached and to
//! zonecached, whose replies must be byte-identical after normalising what
//! legitimately differs (CAS values, version, stats contents, positive TTLs).
//! Differences we accept are listed with reasons in `tests/ACCEPTED_DIFFERENCES.md`.

/// One step of a case.
#[derive(Debug, Clone)]
pub enum Step {
    /// Send bytes, then sync with `mn` and collect the replies.
    Send(Vec<u8>),
    /// Send bytes that leave a command incomplete; replies are collected
    /// with the next step.
    Partial(Vec<u8>),
    /// Send bytes after which the server closes; read until it does.
    ExpectClose(Vec<u8>),
    /// Wait (for expiry tests).
    Sleep(u64),
}

/// A named sequence, run on a fresh connection after `flush_all`.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub steps: Vec<Step>,
}

fn send(s: &str) -> Step {
    Step::Send(s.as_bytes().to_vec())
}

fn case(name: &str, steps: Vec<Step>) -> Case {
    Case {
        name: name.to_string(),
        steps,
    }
}

/// One case per line of text commands (each line its own step).
fn lines(name: &str, text: &[&str]) -> Case {
    case(name, text.iter().map(|l| send(l)).collect())
}

/// Every case of the corpus.
pub fn cases() -> Vec<Case> {
    let mut c = vec![
        // ---- storage commands ----
        lines(
            "set get",
            &[
                "set a 0 0 1\r\n1\r\n",
                "get a\r\n",
                "get a b a\r\n",
                "gets a\r\n",
                "get nothere\r\n",
            ],
        ),
        lines(
            "flags and binary data",
            &[
                "set a 4294967295 0 4\r\n\r\n\r\n\r\n",
                "get a\r\n",
                "set b 4294967296 0 1\r\nx\r\n",
                "get b\r\n",
                "set c +7 0 1\r\nx\r\n",
                "get c\r\n",
                "set d -0 0 1\r\nx\r\n",
                "get d\r\n",
            ],
        ),
        lines(
            "add replace",
            &[
                "add a 0 0 1\r\n1\r\n",
                "add a 0 0 1\r\n2\r\n",
                "get a\r\n",
                "replace a 5 0 1\r\n3\r\n",
                "replace zz 0 0 1\r\n3\r\n",
                "get a zz\r\n",
            ],
        ),
        lines(
            "append prepend keep flags and ttl",
            &[
                "set a 9 0 2\r\nbc\r\n",
                "append a 0 0 1\r\nd\r\n",
                "prepend a 0 0 1\r\na\r\n",
                "get a\r\n",
                "append nope 0 0 1\r\nx\r\n",
                "prepend nope 0 0 1\r\nx\r\n",
                "mg a f t v\r\n",
            ],
        ),
        lines(
            "cas",
            &[
                "cas a 0 0 1 1\r\nx\r\n",
                "set a 0 0 1\r\n1\r\n",
                "cas a 0 0 1 999999999\r\nx\r\n",
                "get a\r\n",
            ],
        ),
        lines(
            "noreply everywhere",
            &[
                "set a 0 0 1 noreply\r\n1\r\n",
                "add a 0 0 1 noreply\r\n2\r\n",
                "add b 0 0 1 noreply\r\n2\r\n",
                "replace a 0 0 1 noreply\r\n3\r\n",
                "append a 0 0 1 noreply\r\n4\r\n",
                "prepend a 0 0 1 noreply\r\n5\r\n",
                "cas a 0 0 1 1 noreply\r\n6\r\n",
                "get a b\r\n",
                "set n 0 0 1 noreply\r\n5\r\n",
                "incr n 3 noreply\r\n",
                "decr n 1 noreply\r\n",
                "touch n 100 noreply\r\n",
                "delete b noreply\r\n",
                "delete b 0 noreply\r\n",
                "get n b\r\n",
                "flush_all noreply\r\n",
                "flush_all 0 noreply\r\n",
                "verbosity 1 noreply\r\n",
                "get n\r\n",
            ],
        ),
        lines(
            "incr decr",
            &[
                "incr x 1\r\n",
                "set n 0 0 2\r\n10\r\n",
                "incr n 5\r\n",
                "decr n 100\r\n",
                "get n\r\n",
                "incr n 18446744073709551615\r\n",
                "incr n 2\r\n",
                "set n 0 0 3\r\n100\r\n",
                "decr n 95\r\n",
                "get n\r\n",
                "set s 0 0 3\r\nabc\r\n",
                "incr s 1\r\n",
                "set e 0 0 0\r\n\r\n",
                "incr e 1\r\n",
                "set sp 0 0 3\r\n 12\r\n",
                "incr sp 1\r\n",
                "set t 0 0 3\r\n12 \r\n",
                "incr t 1\r\n",
                "set big 0 0 20\r\n18446744073709551615\r\n",
                "incr big 1\r\n",
                "set over 0 0 20\r\n99999999999999999999\r\n",
                "incr over 1\r\n",
                "incr n abc\r\n",
                "incr n -1\r\n",
                "incr n\r\n",
            ],
        ),
        lines(
            "touch gat gats",
            &[
                "set a 3 0 1\r\n1\r\n",
                "touch a 100\r\n",
                "touch nope 100\r\n",
                "gat 100 a nope\r\n",
                "gats 0 a\r\n",
                "gat abc a\r\n",
                "touch a abc\r\n",
                "touch a\r\n",
                "gat\r\n",
                "gat 10\r\n",
            ],
        ),
        lines(
            "delete forms",
            &[
                "set a 0 0 1\r\n1\r\n",
                "delete a\r\n",
                "delete a\r\n",
                "set a 0 0 1\r\n1\r\n",
                "delete a 0\r\n",
                "delete a 5\r\n",
                "delete a 0 noreply extra\r\n",
                "delete\r\n",
            ],
        ),
        lines(
            "misc commands",
            &[
                "version\r\n",
                "verbosity 1\r\n",
                "verbosity\r\n",
                "verbosity x\r\n",
                "stats\r\n",
                "stats settings\r\n",
                "stats nosuchgroup\r\n",
                "stats detail\r\n",
                "shutdown\r\n",
            ],
        ),
        // ---- numbers beyond 32 bits: memcached truncates them ----
        lines(
            "exptime, length and meta TTLs beyond 32 bits",
            &[
                "set keep 0 0 1\r\nx\r\n",
                "set k 0 2147483648 9\r\nflush_all\r\n",
                "get keep k\r\n",
                "set far 0 -2147483649 2\r\nab\r\n",
                "get far\r\n",
                "set wrap 0 0 4294967298\r\nab\r\n",
                "get wrap\r\n",
                "touch keep 4294967396\r\n",
                "mg keep t v\r\n",
                "ms meta 2 T4294967396\r\nab\r\n",
                "mg meta t v\r\n",
            ],
        ),
        // ---- expiry ----
        case(
            "expiry boundaries",
            vec![
                send("set neg 0 -1 1\r\nx\r\n"),
                send("get neg\r\n"),
                send("set past 0 2592001 1\r\nx\r\n"),
                send("get past\r\n"),
                send("set never 0 0 1\r\nx\r\n"),
                send("set short 0 1 1\r\nx\r\n"),
                send("set long 0 2592000 1\r\nx\r\n"),
                send("mg never t v\r\n"),
                Step::Sleep(2100),
                send("get short never long\r\n"),
                send("touch short 10\r\n"),
            ],
        ),
        case(
            "flush_all with delay",
            vec![
                send("set a 0 0 1\r\n1\r\n"),
                send("flush_all 3\r\n"),
                send("get a\r\n"),
                Step::Sleep(3200),
                send("get a\r\n"),
                send("set b 0 0 1\r\n1\r\n"),
                Step::Sleep(1100),
                send("get b\r\n"),
                send("flush_all -1\r\n"),
                send("get b\r\n"),
                send("flush_all x\r\n"),
                send("flush_all 1 2 3\r\n"),
            ],
        ),
        // ---- meta ----
        lines(
            "meta get flags",
            &[
                "ms a 2 F7 T0\r\nhi\r\n",
                "mg a\r\n",
                "mg a v\r\n",
                "mg a s v f t k O123 q\r\n",
                "mg a c\r\n",
                "mg a h l\r\n",
                "mg a h\r\n",
                "mg nope v\r\n",
                "mg nope v q\r\n",
                "mg nope v k O9\r\n",
                "mg a u v\r\n",
                "mg a T100 t\r\n",
                "mg a t T50\r\n",
            ],
        ),
        lines(
            "meta vivify and recache",
            &[
                "mg v N30 s t v\r\n",
                "mg v N30 s v\r\n",
                "ms r 1 T100\r\nx\r\n",
                "mg r R200 v\r\n",
                "mg r R200 v\r\n",
                "mg r R10 v\r\n",
            ],
        ),
        lines(
            "meta set modes",
            &[
                "ms a 1\r\n1\r\n",
                "ms a 1 ME\r\n2\r\n",
                "ms b 1 ME\r\n2\r\n",
                "ms a 1 MA\r\n3\r\n",
                "ms a 1 MP\r\n0\r\n",
                "ms zz 1 MR\r\n0\r\n",
                "ms zz 1 MA\r\n0\r\n",
                "ms a 1 MS k O5 q\r\n9\r\n",
                "ms a 1 k O5\r\n9\r\n",
                "mg a v\r\n",
                "ms a 1 C1\r\nx\r\n",
                "ms nope 1 C1\r\nx\r\n",
                "ms a 2 MX\r\nhi\r\n",
                "ms a 2 zz\r\nhi\r\n",
                "ms a 2 v v\r\nhi\r\n",
                "ms a\r\n",
                "ms a -1\r\n",
                "ms a x\r\n",
                "ms a 2\r\nhiX\r\n",
                "ms\r\n",
            ],
        ),
        lines(
            "meta delete",
            &[
                "ms a 1\r\n1\r\n",
                "md a q\r\n",
                "md a q\r\n",
                "md a k O1\r\n",
                "ms a 1\r\n1\r\n",
                "md a C1\r\n",
                "md a I T30\r\n",
                "mg a v c\r\n",
                "mg a v\r\n",
                "md a zz\r\n",
                "md\r\n",
            ],
        ),
        lines(
            "meta arithmetic",
            &[
                "ma n\r\n",
                "ma n q\r\n",
                "ma n N0 J13 v\r\n",
                "ma n v\r\n",
                "ma n MD D100 v\r\n",
                "ma n M+ D5 v t k O1\r\n",
                "ma n M- v\r\n",
                "ma n MI D1 q\r\n",
                "mg n v\r\n",
                "ma n C1\r\n",
                "ms s 1\r\nx\r\n",
                "ma s\r\n",
                "ma n MX\r\n",
                "ma n Dx\r\n",
                "ma\r\n",
            ],
        ),
        lines(
            "meta base64 keys",
            &[
                "ms Zm9v 2 b\r\nhi\r\n",
                "mg Zm9v b k v\r\n",
                "mg foo v\r\n",
                "me Zm9v b\r\n",
                "mg !!!! b v\r\n",
                "md Zm9v b q\r\n",
                "mg foo v\r\n",
            ],
        ),
        lines(
            "meta misc",
            &[
                "mn\r\n",
                "me nope\r\n",
                "set m 0 0 1\r\n1\r\n",
                "me m\r\n",
                "me\r\n",
                "mx a\r\n",
                "mg\r\n",
                "mg a zz\r\n",
                "mg a v v\r\n",
                // `x` belongs to md only (issue 14's fuzzing differences).
                "mg a x1\r\n",
                "mg a x\r\n",
                "ms a 2 x\r\nab\r\n",
                "ms a 2 T1 T2\r\nab\r\n",
                "ms a 2 Z\r\nab\r\n",
                "ma a x\r\n",
            ],
        ),
        lines(
            "meta set invalidate with compare CAS 0",
            &[
                "set e 0 0 1\r\nx\r\n",
                "ms e 2 I C0\r\nab\r\n",
                "ms e 2 C0\r\nab\r\n",
                "mg e v\r\n",
                "ms e 2 I C1\r\nab\r\n",
                "mg e v\r\n",
            ],
        ),
        lines(
            "meta flags applied in the order written (fuzzer findings)",
            &[
                // N after T wins: an expired vivified item, gone for incr.
                "mg v1 T1000 N-1 t\r\n",
                "incr v1 1\r\n",
                "mg v2 N-1 T1000\r\n",
                "mg v2 t v\r\n",
                // R judged on the TTL before a later T.
                "set r 0 1000 1\r\nx\r\n",
                "mg r R2000 T-1 c\r\n",
                "mg r R2000 c\r\n",
                "ma n1 N0 T1000\r\n",
                "mg n1 v\r\n",
                // a vivified item and a touched one count as fetched.
                "mg h1 N0\r\n",
                "mg h1 h\r\n",
                "set h2 0 0 1\r\nx\r\n",
                "touch h2 0\r\n",
                "mg h2 h\r\n",
                // a plain get takes no recache token from a stale item.
                "set s 0 0 1\r\nx\r\n",
                "md s I\r\n",
                "get s\r\n",
                "mg s\r\n",
                // non-numeric before the CAS; quiet ma answered when it creates.
                "set e2 0 0 1\r\nx\r\n",
                "ma e2 C1\r\n",
                "ma q1 q N0\r\n",
                "ma q1 q\r\n",
                "mn\r\n",
                // append takes C0 as no CAS.
                "ms e2 1 MA C0\r\ny\r\n",
                // base64 keys decoded as memcached decodes them.
                "mg a2V5- b k\r\n",
                "me a2V5- b\r\n",
            ],
        ),
        // ---- bad input ----
        lines(
            "bad command lines",
            &[
                "bogus\r\n",
                "\r\n",
                "x\r\n",
                "gxx a\r\n",
                "set\r\n",
                "set a 0 0\r\n",
                "set a 0 0 1 2 3\r\n",
                "cas a 0 0 1\r\n",
                "get\r\n",
                "incr a\r\n",
                "SET a 0 0 1\r\n",
                "set a 0 0 abc\r\nhello\r\n",
                "set a 0 0 -1\r\nx\r\n",
                "set a 0 0 99999999999999999999\r\nx\r\n",
                "set a 0 0 2147483647\r\n",
                "set a 0 0 abc noreply\r\nhello\r\n",
            ],
        ),
        lines(
            "bad data chunks",
            &[
                "set a 0 0 3\r\nhello\r\n",
                "set a 0 0 5\r\nhello\r\n",
                "set a 0 0 5\r\nhelloXY",
                "get a\r\n",
                "set a 0 0 1 noreply\r\nxyz\r\n",
            ],
        ),
        lines(
            "binary junk and control characters",
            &[
                "\x00\x01\x02\x03\r\n",
                "\x7f\x7f\r\n",
                "get \x01\x02\r\n",
                "set k\tx 0 0 1\r\n1\r\n",
                "get k\tx\r\n",
                "set \x01ctl 0 0 1\r\n1\r\n",
                "get \x01ctl\r\n",
                "version\x00trailing junk\r\n",
                "\n",
                "get a\n",
            ],
        ),
    ];
    c.push(key_length_case());
    c.push(many_keys_case());
    c.push(max_size_case());
    c.push(case(
        "pipelined commands in one write",
        vec![send(
            "set a 0 0 1\r\n1\r\nset b 0 0 1\r\n2\r\nget a b\r\nincr a 1\r\ndelete b\r\nget a b\r\nmg a v\r\nmn\r\n",
        )],
    ));
    c.push(case(
        "data block split across writes",
        vec![
            Step::Partial(b"set a 0 0 10\r\n01234".to_vec()),
            send("56789\r\nget a\r\n"),
        ],
    ));
    c.push(case(
        "quit closes",
        vec![Step::ExpectClose(b"quit\r\n".to_vec())],
    ));
    c.push(case(
        "http request closes",
        vec![Step::ExpectClose(b"GET / HTTP/1.1\r\n".to_vec())],
    ));
    c.push(case(
        "overlong line without newline closes",
        vec![Step::ExpectClose(vec![b'z'; 20_000])],
    ));
    c.push(case(
        "too many tokens",
        vec![
            send("set a b c d e f g h i j k l m n o p q r s t u v w x y z\r\n"),
            send("mg a v k c f s t h l O1 u N1 R1 T1 F1 C1 J1\r\n"),
            send("mg a v k c f s t h l O1 q u N1 R1 T1 F1 C1 J1 D1\r\n"),
        ],
    ));
    c
}

fn key_length_case() -> Case {
    let k250 = "k".repeat(250);
    let k251 = "k".repeat(251);
    lines(
        "250 and 251 byte keys",
        &[
            &format!("set {k250} 0 0 1\r\n1\r\n"),
            &format!("get {k250}\r\n"),
            &format!("get {k251}\r\n"),
            &format!("get a {k251}\r\n"),
            &format!("touch {k251} 1\r\n"),
            &format!("incr {k251} 1\r\n"),
            &format!("delete {k251}\r\n"),
            &format!("mg {k251} v\r\n"),
            &format!("ms {k251} 1\r\n1\r\n"),
            &format!("md {k251}\r\n"),
            &format!("ma {k251}\r\n"),
            &format!("mg {k250} v\r\n"),
        ],
    )
}

fn many_keys_case() -> Case {
    let mut set = String::new();
    for i in (0..10_000).step_by(3) {
        set.push_str(&format!(
            "set key:{i:05} {i} 0 {}\r\nv{i}\r\n",
            format!("v{i}").len()
        ));
    }
    let keys: Vec<String> = (0..10_000).map(|i| format!("key:{i:05}")).collect();
    case(
        "10000-key multi-get",
        vec![
            Step::Send(set.into_bytes()),
            send(&format!("get {}\r\n", keys.join(" "))),
            send(&format!("gets {}\r\n", keys[..500].join(" "))),
        ],
    )
}

fn max_size_case() -> Case {
    // memcached -I 1m fits 1048516 value bytes under a 1-byte key, flags 0.
    let fits = 1_048_516;
    let mut exact = format!("set k 0 0 {fits}\r\n").into_bytes();
    exact.extend(std::iter::repeat_n(b'a', fits));
    exact.extend_from_slice(b"\r\n");
    let mut over = format!("set k 0 0 {}\r\n", fits + 1).into_bytes();
    over.extend(std::iter::repeat_n(b'b', fits + 1));
    over.extend_from_slice(b"\r\n");
    let mut flagged = format!("set k 1 0 {fits}\r\n").into_bytes();
    flagged.extend(std::iter::repeat_n(b'c', fits));
    flagged.extend_from_slice(b"\r\n");
    let mut meta_over = format!("ms k {}\r\n", fits + 1).into_bytes();
    meta_over.extend(std::iter::repeat_n(b'd', fits + 1));
    meta_over.extend_from_slice(b"\r\n");
    let mut huge = b"set h 0 0 5000000\r\n".to_vec();
    huge.extend(std::iter::repeat_n(b'e', 5_000_000));
    huge.extend_from_slice(b"\r\n");
    case(
        "max-size values",
        vec![
            Step::Send(exact),
            send("mg k s\r\n"),
            Step::Send(over),
            send("mg k s\r\n"),
            Step::Send(exact_again()),
            Step::Send(flagged),
            send("mg k s\r\n"),
            Step::Send(meta_over),
            send("mg k s\r\n"),
            Step::Send(huge),
            send("get h\r\n"),
        ],
    )
}

fn exact_again() -> Vec<u8> {
    let fits = 1_048_516;
    let mut exact = format!("set k 0 0 {fits}\r\n").into_bytes();
    exact.extend(std::iter::repeat_n(b'a', fits));
    exact.extend_from_slice(b"\r\n");
    exact
}

/// Replaces what legitimately differs between two servers' replies.
pub fn normalize(reply: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(reply.len());
    let mut at = 0;
    while at < reply.len() {
        let end = match reply[at..].iter().position(|&b| b == b'\n') {
            Some(i) => at + i + 1,
            None => reply.len(),
        };
        let line = &reply[at..end];
        at = end;
        let text = String::from_utf8_lossy(line);
        let words: Vec<&str> = text.trim_end_matches(['\r', '\n']).split(' ').collect();
        match words[0] {
            "STAT" => continue, // contents differ by design; END is kept
            "VERSION" => out.extend_from_slice(b"VERSION <version>\r\n"),
            "VALUE" if words.len() >= 4 => {
                let len: usize = words[3].parse().unwrap_or(0);
                let mut w: Vec<String> = words.iter().map(|s| s.to_string()).collect();
                if w.len() >= 5 {
                    w[4] = "<cas>".into();
                }
                out.extend_from_slice(w.join(" ").as_bytes());
                out.extend_from_slice(b"\r\n");
                let data_end = (at + len + 2).min(reply.len());
                out.extend_from_slice(&reply[at..data_end]);
                at = data_end;
            }
            "VA" | "HD" | "EN" | "NS" | "EX" | "NF" => {
                let mut w: Vec<String> = words.iter().map(|s| s.to_string()).collect();
                for t in w.iter_mut().skip(1) {
                    if t.starts_with('c')
                        && t.len() > 1
                        && t[1..].chars().all(|c| c.is_ascii_digit())
                    {
                        *t = "c<cas>".into();
                    }
                    if t.starts_with('t')
                        && t.len() > 1
                        && t[1..].chars().all(|c| c.is_ascii_digit())
                    {
                        *t = "t<ttl>".into();
                    }
                }
                out.extend_from_slice(w.join(" ").as_bytes());
                out.extend_from_slice(b"\r\n");
                if words[0] == "VA" {
                    let len: usize = words.get(1).and_then(|l| l.parse().ok()).unwrap_or(0);
                    let data_end = (at + len + 2).min(reply.len());
                    out.extend_from_slice(&reply[at..data_end]);
                    at = data_end;
                }
            }
            "ME" => {
                let w: Vec<String> = words
                    .iter()
                    .map(|t| {
                        if t.starts_with("cas=") {
                            "cas=<cas>".to_string()
                        } else {
                            t.to_string()
                        }
                    })
                    .collect();
                out.extend_from_slice(w.join(" ").as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            _ => out.extend_from_slice(line),
        }
    }
    out
}

/// A reply (or command) for a failure message: line ends shown, long ones
/// cut at `limit` characters.
pub fn show(bytes: &[u8], limit: usize) -> String {
    let text = String::from_utf8_lossy(bytes)
        .replace('\r', "\\r")
        .replace('\n', "\\n");
    match text.char_indices().nth(limit) {
        Some((cut, _)) => format!("{}… ({} bytes)", &text[..cut], bytes.len()),
        None => text,
    }
}
