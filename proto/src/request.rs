//! Requests: what a client can ask of a memcached server, and how to write it.

use bytes::{Bytes, BytesMut};

use crate::meta::MetaFlags;
use crate::number::{push_i64, push_u64};

/// Which storage command a [`Store`] came from; they differ only in the
/// condition under which the value is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoreMode {
    /// Store unconditionally.
    Set,
    /// Store only if the key is absent.
    Add,
    /// Store only if the key is present.
    Replace,
    /// Add the data after the existing value (key must be present).
    Append,
    /// Add the data before the existing value (key must be present).
    Prepend,
    /// Store only if the item's CAS unique still equals the one given.
    Cas,
}

impl StoreMode {
    /// The text-protocol command name.
    pub fn name(self) -> &'static str {
        match self {
            StoreMode::Set => "set",
            StoreMode::Add => "add",
            StoreMode::Replace => "replace",
            StoreMode::Append => "append",
            StoreMode::Prepend => "prepend",
            StoreMode::Cas => "cas",
        }
    }
}

/// A text-protocol storage command with its data block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Store {
    /// Which storage command.
    pub mode: StoreMode,
    /// The key, a slice of the read buffer.
    pub key: Bytes,
    /// Opaque client flags stored with the item.
    pub flags: u32,
    /// Expiry as the client sent it (memcached's rules apply in the store).
    pub exptime: i32,
    /// The data block without its trailing `\r\n`, a slice of the read buffer.
    pub data: Bytes,
    /// The CAS unique to compare against (only meaningful for [`StoreMode::Cas`]).
    pub cas_unique: u64,
    /// The client asked for no reply.
    pub noreply: bool,
}

/// A meta command (`mg`, `md`, `ma`) with its key and flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// The key, already base64-decoded when the `b` flag was given.
    pub key: Bytes,
    /// The flags in request order plus their parsed values.
    pub flags: MetaFlags,
}

/// Why a line could not be executed; the server answers with the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Plain `ERROR`: unknown command or wrong number of tokens.
    Error,
    /// `CLIENT_ERROR <message>`: the client sent something malformed.
    Client,
    /// `SERVER_ERROR <message>`: the server cannot do what was asked.
    Server,
    /// A complete line of its own (e.g. `ERROR: shutdown not enabled`).
    Raw,
}

/// An error reply produced while parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorReply {
    /// Which error family.
    pub kind: ErrorKind,
    /// The message after the family word (empty for plain `ERROR`).
    pub message: &'static str,
    /// memcached suppresses some parse errors when the line asked for noreply.
    pub noreply: bool,
}

impl ErrorReply {
    pub(crate) const fn error() -> Self {
        ErrorReply {
            kind: ErrorKind::Error,
            message: "",
            noreply: false,
        }
    }
    pub(crate) const fn client(message: &'static str, noreply: bool) -> Self {
        ErrorReply {
            kind: ErrorKind::Client,
            message,
            noreply,
        }
    }

    /// Writes the reply line (regardless of `noreply`; the caller decides).
    pub fn encode(&self, out: &mut BytesMut) {
        crate::Response::from(*self).encode(out);
    }
}

/// One parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `get`/`gets`/`bget`: fetch keys, with CAS uniques for `gets`.
    Get {
        /// Keys in request order (duplicates kept, as memcached answers each).
        keys: Vec<Bytes>,
        /// `gets`: include the CAS unique.
        cas: bool,
    },
    /// `gat`/`gats`: fetch keys and set their expiry.
    Gat {
        /// New expiry for every key found.
        exptime: i32,
        /// Keys in request order.
        keys: Vec<Bytes>,
        /// `gats`: include the CAS unique.
        cas: bool,
    },
    /// `zc_lease <node> [fenced]`: a node asks a peer for a read lease:
    /// the peer first gives it every write it missed (its hints for it),
    /// then answers `OK` (granted) or `SERVER_ERROR` (not caught up yet).
    /// `fenced`: the asking node serves nothing until this peer grants
    /// again (its last lease ran out and it did not give up on the peer).
    PeerLease {
        /// The asking node's id.
        node: Bytes,
        fenced: bool,
    },
    /// `zc_drain <zone> <percent>`: sets a zone's drain weight on this
    /// node (the share of that zone's reads moved to other zones).
    PeerDrain {
        zone: Bytes,
        /// 0–100.
        percent: u8,
    },
    /// `zc_asked <node>`: how long ago (ms) that node last asked this
    /// node for a lease, answered as a number: a writer asks the other
    /// nodes before it takes a node's silence for a stop.
    PeerAsked {
        /// The node asked about.
        node: Bytes,
    },
    /// `lru_crawler metadump|mgdump <all|hash|classes>`: every key this
    /// node holds, one line each, as memcached's crawler dumps them (the
    /// key dumps migration and warming tools read).
    KeyDump {
        /// `mgdump` (`mg <key>` lines, `EN`) rather than `metadump`.
        mg: bool,
        /// The classes asked for include the engine's one class (`1`).
        everything: bool,
    },
    /// `zc_leave`: the node is about to stop (a Kubernetes preStop, a
    /// rolling restart); it stops serving reads from its store so they go
    /// to other zones at once.
    Leave,
    /// `zc_dump <cursor> <count> (<zone> <node>)+`: a warming node asks a
    /// peer for one page of the items it holds that the given nodes own in
    /// the given zones' rings, starting at `cursor` (0 = the beginning).
    /// Answered with [`crate::Response::Dump`].
    PeerDump {
        /// Where the page starts (from the previous page's `next`).
        cursor: u64,
        /// At most this many items.
        count: u32,
        /// (zone, node): only keys that node owns in that zone.
        owners: Vec<(Bytes, Bytes)>,
    },
    /// `zc_gets <key>*` / `zc_gats <exptime> <key>*`: a peer's read that
    /// compares versions. Like `gets`/`gats`, but a key deleted at a known
    /// version answers with its tombstone (see [`Response::Versioned`]).
    VersionedGet {
        /// Keys in request order.
        keys: Vec<Bytes>,
        /// New expiry for every key found (`zc_gats`).
        touch: Option<i32>,
    },
    /// `set`/`add`/`replace`/`append`/`prepend`/`cas`.
    Store(Store),
    /// `incr`/`decr`.
    Arith {
        /// The key.
        key: Bytes,
        /// Amount to add or subtract.
        delta: u64,
        /// `incr` (true) or `decr` (false).
        incr: bool,
        /// The client asked for no reply.
        noreply: bool,
    },
    /// `touch <key> <exptime>`.
    Touch {
        /// The key.
        key: Bytes,
        /// New expiry.
        exptime: i32,
        /// The client asked for no reply.
        noreply: bool,
    },
    /// `delete <key>`.
    Delete {
        /// The key.
        key: Bytes,
        /// The client asked for no reply.
        noreply: bool,
    },
    /// `flush_all [delay]`.
    FlushAll {
        /// Seconds (or absolute time) after which everything older is invalid; 0 = now.
        delay: i32,
        /// The client asked for no reply.
        noreply: bool,
    },
    /// `version`.
    Version,
    /// `verbosity <level>`.
    Verbosity {
        /// The requested level.
        level: u32,
        /// The client asked for no reply.
        noreply: bool,
    },
    /// `cache_memlimit <MiB> [noreply]`: memcached's `-m`, changed at run
    /// time (a valid one: the parser answers out-of-range values itself).
    CacheMemlimit {
        /// The new limit in MiB (8 or more).
        megabytes: u32,
        /// The client asked for no reply.
        noreply: bool,
    },
    /// `shutdown [graceful]`: stop the node, when its operator enabled the
    /// command (memcached's `-A`).
    Shutdown {
        /// `shutdown graceful`; `None` for a mode memcached does not know.
        graceful: Option<bool>,
    },
    /// `refresh_certs [noreply]`: re-read the TLS certificates
    /// (memcached's command; SIGHUP does the same).
    RefreshCerts {
        /// The client asked for no reply.
        noreply: bool,
    },
    /// `stats [group …]`: the words after `stats`.
    Stats {
        /// Subcommand and its arguments (empty for plain `stats`).
        args: Vec<Bytes>,
    },
    /// `quit`: close after answering what came before.
    Quit,
    /// `zc_challenge <nonce>`: a node (or a direct-mode client) opening a
    /// peer link sends a fresh nonce (hex); a cluster node answers
    /// [`crate::Response::Challenge`]: its own nonce and its proof that it
    /// holds the cluster secret.
    PeerChallenge {
        /// The caller's nonce, as sent (hex).
        nonce: Bytes,
    },
    /// `zc_peer <proof>`: the caller's proof (hex HMAC over both nonces)
    /// that it holds the cluster secret; once accepted, the connection is
    /// zonecache peer traffic, applied locally and never routed again.
    /// Without a valid proof it is an unknown command (`ERROR`).
    PeerHello {
        /// The proof, as sent (hex).
        proof: Bytes,
    },
    /// `mn`: the meta no-op, a pipeline marker.
    MetaNoop,
    /// `me <key> [b]`: the meta debug command.
    MetaDebug {
        /// The (decoded) key.
        key: Bytes,
        /// The key was given base64-encoded.
        base64: bool,
    },
    /// `mg <key> <flags>*`.
    MetaGet(Meta),
    /// `ms <key> <datalen> <flags>*` with its data block.
    MetaSet {
        /// Key and flags.
        meta: Meta,
        /// The data block without `\r\n`.
        data: Bytes,
    },
    /// `md <key> <flags>*`.
    MetaDelete(Meta),
    /// `ma <key> <flags>*`.
    MetaArith(Meta),
    /// A value larger than the item size limit. Its data block has been (or
    /// will be) swallowed so the connection stays in sync.
    TooLarge {
        /// The key: memcached removes a `set` target so stale data cannot linger.
        key: Bytes,
        /// Whether the existing item must be removed (text `set`, and `ms`).
        remove_existing: bool,
        /// The client asked for no reply (text commands only).
        noreply: bool,
    },
    /// A line that is answered with an error and otherwise ignored.
    Invalid(ErrorReply),
    /// Input after which memcached closes the connection without a word
    /// (an HTTP request line).
    Close,
}

fn push_key_line(out: &mut BytesMut, name: &str, keys: &[Bytes]) {
    out.extend_from_slice(name.as_bytes());
    for k in keys {
        out.extend_from_slice(b" ");
        out.extend_from_slice(k);
    }
    out.extend_from_slice(b"\r\n");
}

fn push_noreply(out: &mut BytesMut, noreply: bool) {
    if noreply {
        out.extend_from_slice(b" noreply");
    }
    out.extend_from_slice(b"\r\n");
}

impl Command {
    /// Writes the request in memcached's wire format. Parsing the output
    /// yields an equal command (for every variant that a client can send).
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Command::Get { keys, cas } => {
                push_key_line(out, if *cas { "gets" } else { "get" }, keys)
            }
            Command::PeerDrain { zone, percent } => {
                out.extend_from_slice(b"zc_drain ");
                out.extend_from_slice(zone);
                out.extend_from_slice(format!(" {percent}\r\n").as_bytes());
            }
            Command::KeyDump { mg, everything } => {
                out.extend_from_slice(if *mg {
                    b"lru_crawler mgdump "
                } else {
                    b"lru_crawler metadump "
                });
                out.extend_from_slice(if *everything { b"all\r\n" } else { b"2\r\n" });
            }
            Command::PeerDump {
                cursor,
                count,
                owners,
            } => {
                let mut words = vec![
                    Bytes::from(cursor.to_string()),
                    Bytes::from(count.to_string()),
                ];
                for (zone, node) in owners {
                    words.push(zone.clone());
                    words.push(node.clone());
                }
                push_key_line(out, "zc_dump", &words)
            }
            Command::PeerAsked { node } => {
                push_key_line(out, "zc_asked", std::slice::from_ref(node))
            }
            Command::PeerLease { node, fenced } => {
                let mut words = vec![node.clone()];
                if *fenced {
                    words.push(Bytes::from_static(b"fenced"));
                }
                push_key_line(out, "zc_lease", &words)
            }
            Command::VersionedGet { keys, touch } => match touch {
                Some(exptime) => {
                    out.extend_from_slice(b"zc_gats ");
                    push_i64(out, i64::from(*exptime));
                    push_key_line(out, "", keys);
                }
                None => push_key_line(out, "zc_gets", keys),
            },
            Command::Gat { exptime, keys, cas } => {
                out.extend_from_slice(if *cas { b"gats " } else { b"gat " });
                push_i64(out, i64::from(*exptime));
                push_key_line(out, "", keys);
            }
            Command::Store(s) => {
                out.extend_from_slice(s.mode.name().as_bytes());
                out.extend_from_slice(b" ");
                out.extend_from_slice(&s.key);
                out.extend_from_slice(b" ");
                push_u64(out, u64::from(s.flags));
                out.extend_from_slice(b" ");
                push_i64(out, i64::from(s.exptime));
                out.extend_from_slice(b" ");
                push_u64(out, s.data.len() as u64);
                if s.mode == StoreMode::Cas {
                    out.extend_from_slice(b" ");
                    push_u64(out, s.cas_unique);
                }
                push_noreply(out, s.noreply);
                out.extend_from_slice(&s.data);
                out.extend_from_slice(b"\r\n");
            }
            Command::Arith {
                key,
                delta,
                incr,
                noreply,
            } => {
                out.extend_from_slice(if *incr { b"incr " } else { b"decr " });
                out.extend_from_slice(key);
                out.extend_from_slice(b" ");
                push_u64(out, *delta);
                push_noreply(out, *noreply);
            }
            Command::Touch {
                key,
                exptime,
                noreply,
            } => {
                out.extend_from_slice(b"touch ");
                out.extend_from_slice(key);
                out.extend_from_slice(b" ");
                push_i64(out, i64::from(*exptime));
                push_noreply(out, *noreply);
            }
            Command::Delete { key, noreply } => {
                out.extend_from_slice(b"delete ");
                out.extend_from_slice(key);
                push_noreply(out, *noreply);
            }
            Command::FlushAll { delay, noreply } => {
                out.extend_from_slice(b"flush_all ");
                push_i64(out, i64::from(*delay));
                push_noreply(out, *noreply);
            }
            Command::Version => out.extend_from_slice(b"version\r\n"),
            Command::Verbosity { level, noreply } => {
                out.extend_from_slice(b"verbosity ");
                push_u64(out, u64::from(*level));
                push_noreply(out, *noreply);
            }
            Command::CacheMemlimit { megabytes, noreply } => {
                out.extend_from_slice(b"cache_memlimit ");
                push_u64(out, u64::from(*megabytes));
                push_noreply(out, *noreply);
            }
            Command::Shutdown { graceful } => out.extend_from_slice(match graceful {
                Some(true) => b"shutdown graceful\r\n",
                _ => b"shutdown\r\n",
            }),
            Command::RefreshCerts { noreply } => {
                out.extend_from_slice(b"refresh_certs");
                push_noreply(out, *noreply);
            }
            Command::Stats { args } => push_key_line(out, "stats", args),
            Command::Quit => out.extend_from_slice(b"quit\r\n"),
            Command::PeerChallenge { nonce } => {
                push_key_line(out, "zc_challenge", std::slice::from_ref(nonce))
            }
            Command::PeerHello { proof } => {
                push_key_line(out, "zc_peer", std::slice::from_ref(proof))
            }
            Command::Leave => out.extend_from_slice(b"zc_leave\r\n"),
            Command::MetaNoop => out.extend_from_slice(b"mn\r\n"),
            Command::MetaDebug { key, base64 } => {
                out.extend_from_slice(b"me ");
                crate::meta::push_key(out, key, *base64);
                if *base64 {
                    out.extend_from_slice(b" b");
                }
                out.extend_from_slice(b"\r\n");
            }
            Command::MetaGet(m) => m.encode("mg", None, out),
            Command::MetaSet { meta, data } => {
                meta.encode("ms", Some(data.len()), out);
                out.extend_from_slice(data);
                out.extend_from_slice(b"\r\n");
            }
            Command::MetaDelete(m) => m.encode("md", None, out),
            Command::MetaArith(m) => m.encode("ma", None, out),
            // Server-side outcomes of parsing; a client never sends these.
            Command::TooLarge { .. } | Command::Invalid(_) | Command::Close => {}
        }
    }

    /// A multi-key read (`get`/`gets`/`gat`/`gats`) as its keys, the new
    /// expiry it sets (`gat`) and whether it shows CAS; `None` for any other
    /// command.
    pub fn as_multi_read(&self) -> Option<(&[Bytes], Option<i32>, bool)> {
        match self {
            Command::Get { keys, cas } => Some((keys, None, *cas)),
            Command::Gat { exptime, keys, cas } => Some((keys, Some(*exptime), *cas)),
            _ => None,
        }
    }

    /// The keys a command reads or writes, in request order (empty for a
    /// command without keys).
    pub fn keys(&self) -> &[Bytes] {
        match self {
            Command::Get { keys, .. }
            | Command::Gat { keys, .. }
            | Command::VersionedGet { keys, .. } => keys,
            Command::Store(s) => std::slice::from_ref(&s.key),
            Command::Arith { key, .. }
            | Command::Touch { key, .. }
            | Command::Delete { key, .. }
            | Command::MetaDebug { key, .. }
            | Command::TooLarge { key, .. } => std::slice::from_ref(key),
            Command::MetaGet(m) | Command::MetaDelete(m) | Command::MetaArith(m) => {
                std::slice::from_ref(&m.key)
            }
            Command::MetaSet { meta, .. } => std::slice::from_ref(&meta.key),
            _ => &[],
        }
    }

    /// Whether only an authenticated peer may send this command (the `zc_`
    /// commands that bypass routing or steer a node); to anyone else a
    /// cluster node answers `ERROR`, as to an unknown command.
    /// `zc_challenge` and `zc_peer` are how a peer authenticates, so they
    /// are not in this list.
    pub fn is_peer_only(&self) -> bool {
        matches!(
            self,
            Command::PeerLease { .. }
                | Command::PeerDrain { .. }
                | Command::PeerAsked { .. }
                | Command::Leave
                | Command::PeerDump { .. }
                | Command::VersionedGet { .. }
        )
    }

    /// Whether the client asked for no reply to this command.
    pub fn noreply(&self) -> bool {
        match self {
            Command::Store(s) => s.noreply,
            Command::Arith { noreply, .. }
            | Command::Touch { noreply, .. }
            | Command::Delete { noreply, .. }
            | Command::FlushAll { noreply, .. }
            | Command::Verbosity { noreply, .. }
            | Command::CacheMemlimit { noreply, .. }
            | Command::RefreshCerts { noreply }
            | Command::TooLarge { noreply, .. } => *noreply,
            Command::Invalid(e) => e.noreply,
            _ => false,
        }
    }
}

impl Meta {
    fn encode(&self, name: &str, datalen: Option<usize>, out: &mut BytesMut) {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b" ");
        crate::meta::push_key(out, &self.key, self.flags.base64);
        if let Some(len) = datalen {
            out.extend_from_slice(b" ");
            push_u64(out, len as u64);
        }
        for t in &self.flags.tokens {
            out.extend_from_slice(b" ");
            out.extend_from_slice(&[t.flag]);
            out.extend_from_slice(&t.arg);
        }
        out.extend_from_slice(b"\r\n");
    }
}
