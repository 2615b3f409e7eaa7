//! Execution: one command and this node's [`Storage`] in, a [`Reply`] out —
//! a [`Response`] value, never bytes, so the network front encodes it with
//! the one encoder ([`Response::encode`]) and the cluster uses it as it is.
//! Pelikan's `Execute` step is the model. Replies match memcached 1.6 byte
//! for byte once encoded (the differential suite checks it).
//!
//! Multi-key reads have a streaming form ([`Executor::push_hit`]) so the
//! front can write a large multi-get straight from the store into its
//! buffer, flushing as it goes, without building a value list first.

mod dump;
mod meta;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use zonecache_proto::{push_value, Command, Response, Store, StoreMode, Value, TOO_LARGE_MESSAGE};

use crate::record::prefixes::PrefixEvent;
use crate::stats::{self, ConnCounters, ConnRegistry, ServerStats, Settings, StatsGroups};
use crate::store::{
    ArithOutcome, ArithRequest, DeleteOutcome, DeleteRequest, ReadOptions, Storage, StoreKind,
    StoreRequest, StoreStatus, Version,
};
use zonecache_client::route::CasClock;

/// What running a command asks of the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Send this response.
    Send(Response),
    /// Send nothing: the client asked for no reply (`noreply`, or meta `q`
    /// on a nominal outcome).
    Silent,
    /// `quit`: send what is buffered, then close.
    Close,
    /// Close at once without a word (memcached's answer to HTTP).
    Drop,
}

/// Runs commands against this node's own store: what every connection and
/// the cluster's local hop share. It knows nothing of routing or sockets.
pub struct Executor {
    /// Where items live.
    pub storage: Arc<dyn Storage>,
    /// Process-wide counters.
    pub stats: ServerStats,
    /// Settings echoed by `stats settings` (and the front's limits).
    pub settings: Settings,
    /// Open connections, for `stats conns`.
    pub conns: Arc<ConnRegistry>,
    /// `stats` groups served by a layer above (the cluster's `zones` and
    /// `peers`); `None` on a single node.
    pub groups: Option<Arc<dyn StatsGroups>>,
    /// On a node of a multi-zone cluster, the clock its router stamps
    /// writes with: every write here then carries a cluster version (see
    /// [`Version`]) and deletes leave tombstones. `None` on a node of its
    /// own, which hands out CAS values as memcached does.
    pub versions: Option<Arc<CasClock>>,
}

/// A multi-key read (`get`/`gets`/`gat`/`gats`): its keys, new expiry and
/// whether CAS is shown.
pub struct MultiRead<'a> {
    pub keys: &'a [Bytes],
    pub touch: Option<i32>,
    pub cas: bool,
}

impl MultiRead<'_> {
    /// The read `cmd` is, counted as memcached counts it; `None` for any
    /// other command.
    pub fn of<'a>(cmd: &'a Command, counters: &mut ConnCounters) -> Option<MultiRead<'a>> {
        let (keys, touch, cas) = cmd.as_multi_read()?;
        match touch {
            None => counters.cmd_get += keys.len() as u64,
            Some(_) => counters.cmd_touch += keys.len() as u64,
        }
        counters.read_requests += 1;
        Some(MultiRead { keys, touch, cas })
    }
}

impl Executor {
    /// How a write carrying `explicit` (meta `E`) or none gets its CAS.
    pub fn version(&self, explicit: Option<u64>) -> Version {
        match (&self.versions, explicit) {
            (None, None) => Version::Fresh,
            (None, Some(cas)) => Version::Exact(cas),
            (Some(_), Some(cas)) => Version::Newer(cas),
            (Some(clock), None) => Version::Decided(clock.next()),
        }
    }

    /// Counts `event` for `key`'s prefix while `stats detail on` is in force.
    fn record_prefix(&self, key: &[u8], event: PrefixEvent) {
        let delimiter = self.settings.prefix_delimiter;
        self.stats.prefixes.record(key, delimiter, event);
    }

    /// Writes `VALUE …` for `key` if it is here (the streaming multi-get).
    pub fn push_hit(&self, key: &[u8], touch: Option<i32>, cas: bool, out: &mut BytesMut) -> bool {
        let opts = ReadOptions {
            touch,
            ..ReadOptions::default()
        };
        let mut hit = false;
        self.storage.read(key, opts, &mut |item| {
            if let Some(item) = item {
                hit = true;
                push_value(
                    out,
                    item.key,
                    item.flags,
                    item.value,
                    cas.then_some(item.cas),
                );
            }
        });
        self.record_prefix(key, PrefixEvent::Get { hit });
        hit
    }

    /// The hits of a multi-key read, in the order asked.
    fn read_values(&self, read: &MultiRead<'_>) -> Vec<Value> {
        let mut values = Vec::new();
        let opts = ReadOptions {
            touch: read.touch,
            ..ReadOptions::default()
        };
        for key in read.keys {
            let found = values.len();
            self.storage.read(key, opts, &mut |item| {
                if let Some(item) = item {
                    values.push(Value {
                        key: Bytes::copy_from_slice(item.key),
                        flags: item.flags,
                        data: Bytes::copy_from_slice(item.value),
                        cas: read.cas.then_some(item.cas),
                    });
                }
            });
            let hit = values.len() > found;
            self.record_prefix(key, PrefixEvent::Get { hit });
        }
        values
    }

    /// A peer's `zc_gets`: hits with their versions, and the tombstones of
    /// keys deleted at a known version.
    fn read_versions(
        &self,
        keys: &[Bytes],
        touch: Option<i32>,
        counters: &mut ConnCounters,
    ) -> Response {
        match touch {
            None => counters.cmd_get += keys.len() as u64,
            Some(_) => counters.cmd_touch += keys.len() as u64,
        }
        counters.read_requests += 1;
        let (mut values, mut deleted) = (Vec::new(), Vec::new());
        let opts = ReadOptions {
            touch,
            tombstones: true,
            ..ReadOptions::default()
        };
        for key in keys {
            self.storage.read(key, opts, &mut |item| match item {
                Some(item) if item.deleted => {
                    deleted.push((Bytes::copy_from_slice(item.key), item.cas));
                }
                Some(item) => values.push(Value {
                    key: Bytes::copy_from_slice(item.key),
                    flags: item.flags,
                    data: Bytes::copy_from_slice(item.value),
                    cas: Some(item.cas),
                }),
                None => {}
            });
        }
        Response::Versioned { values, deleted }
    }

    /// Runs `cmd`; what it changed is counted in `counters`.
    pub fn execute(&self, cmd: Command, counters: &mut ConnCounters) -> Reply {
        if let Some(read) = MultiRead::of(&cmd, counters) {
            return Reply::Send(Response::Values(self.read_values(&read)));
        }
        let (response, noreply) = match cmd {
            Command::VersionedGet { keys, touch } => {
                (self.read_versions(&keys, touch, counters), false)
            }
            Command::Store(s) => {
                let noreply = s.noreply;
                (self.store(&s, counters), noreply)
            }
            Command::Arith {
                key,
                delta,
                incr,
                noreply,
            } => (self.arith(&key, delta, incr), noreply),
            Command::Touch {
                key,
                exptime,
                noreply,
            } => {
                counters.cmd_touch += 1;
                let found = self.storage.touch(&key, exptime);
                (
                    if found {
                        Response::Touched
                    } else {
                        Response::NotFound
                    },
                    noreply,
                )
            }
            Command::Delete { key, noreply } => {
                self.record_prefix(&key, PrefixEvent::Delete);
                let req = DeleteRequest {
                    version: self.version(None),
                    ..DeleteRequest::default()
                };
                let outcome = self.storage.delete(&key, &req);
                (
                    if outcome == DeleteOutcome::Deleted {
                        Response::Deleted
                    } else {
                        Response::NotFound
                    },
                    noreply,
                )
            }
            Command::FlushAll { delay, noreply } => {
                counters.cmd_flush += 1;
                self.storage.flush_all(delay);
                (Response::Ok, noreply)
            }
            Command::Verbosity { level, noreply } => {
                self.stats.verbosity.store(level.min(2), Ordering::Relaxed);
                (Response::Ok, noreply)
            }
            Command::TooLarge {
                key,
                remove_existing,
                noreply,
            } => {
                counters.store_too_large += 1;
                self.record_prefix(&key, PrefixEvent::Set);
                // memcached drops the old value so a failed set cannot leave stale data.
                if remove_existing {
                    let req = DeleteRequest {
                        version: self.version(None),
                        ..DeleteRequest::default()
                    };
                    self.storage.delete(&key, &req);
                }
                (
                    Response::ServerError(Bytes::from_static(TOO_LARGE_MESSAGE.as_bytes())),
                    noreply,
                )
            }
            Command::Invalid(e) => (e.into(), e.noreply),
            Command::Version => (
                Response::Version(Bytes::from_static(stats::VERSION.as_bytes())),
                false,
            ),
            Command::Stats { args } => (self.stats_command(&args), false),
            Command::CacheMemlimit { megabytes, noreply } => {
                self.storage
                    .set_memory_limit((megabytes as usize).saturating_mul(1 << 20));
                (Response::Ok, noreply)
            }
            Command::Shutdown { graceful } => return self.shutdown(graceful),
            // Only a node of a cluster has peers (the connection loop
            // answers them there) and hints to give; certificates belong
            // to the connection loop's TLS ports.
            Command::RefreshCerts { .. } => (Response::Error, false),
            Command::PeerChallenge { .. }
            | Command::PeerHello { .. }
            | Command::PeerLease { .. }
            | Command::PeerAsked { .. }
            | Command::PeerDrain { .. }
            | Command::PeerDump { .. }
            | Command::Leave => (Response::Error, false),
            Command::KeyDump { mg, everything } => (
                Response::Lines(self.key_dump(mg, everything).freeze()),
                false,
            ),
            Command::MetaNoop => (Response::MetaNoop, false),
            Command::Quit => return Reply::Close,
            Command::Close => return Reply::Drop,
            Command::MetaDebug { key, .. } => (meta::debug(self, &key), false),
            Command::MetaGet(m) => {
                counters.read_requests += 1;
                counters.cmd_meta += 1;
                return meta::get(self, &m);
            }
            Command::MetaSet { meta: m, data } => {
                counters.cmd_meta += 1;
                counters.cmd_set += 1;
                return meta::set(self, &m, &data, counters);
            }
            Command::MetaDelete(m) => {
                counters.cmd_meta += 1;
                return meta::delete(self, &m);
            }
            Command::MetaArith(m) => {
                counters.cmd_meta += 1;
                return meta::arith(self, &m);
            }
            Command::Get { .. } | Command::Gat { .. } => unreachable!("multi-key reads run above"),
        };
        if noreply {
            Reply::Silent
        } else {
            Reply::Send(response)
        }
    }

    fn store(&self, s: &Store, counters: &mut ConnCounters) -> Response {
        counters.cmd_set += 1;
        self.record_prefix(&s.key, PrefixEvent::Set);
        let kind = match s.mode {
            StoreMode::Set | StoreMode::Cas => StoreKind::Set,
            StoreMode::Add => StoreKind::Add,
            StoreMode::Replace => StoreKind::Replace,
            StoreMode::Append => StoreKind::Append,
            StoreMode::Prepend => StoreKind::Prepend,
        };
        let mut req = StoreRequest::new(kind, &s.key, &s.data, s.flags, s.exptime);
        if s.mode == StoreMode::Cas {
            req.compare_cas = Some(s.cas_unique);
        }
        req.version = self.version(None);
        match self.storage.store(&req).status {
            StoreStatus::Stored => Response::Stored,
            StoreStatus::NotStored => Response::NotStored,
            StoreStatus::Exists => Response::Exists,
            StoreStatus::NotFound => Response::NotFound,
            StoreStatus::OutOfMemory => {
                counters.store_no_memory += 1;
                out_of_memory_storing()
            }
        }
    }

    fn arith(&self, key: &[u8], delta: u64, incr: bool) -> Response {
        let req = ArithRequest {
            key,
            incr,
            delta,
            compare_cas: None,
            version: self.version(None),
            vivify: None,
            touch: None,
            key_binary: false,
        };
        match self.storage.arith(&req) {
            ArithOutcome::Done { value, .. } => Response::Number(value),
            ArithOutcome::NotFound | ArithOutcome::Exists => Response::NotFound,
            ArithOutcome::NonNumeric => non_numeric(),
            ArithOutcome::OutOfMemory => out_of_memory(),
        }
    }

    fn stats_command(&self, args: &[Bytes]) -> Response {
        match args.first().map(|a| &a[..]) {
            Some(b"reset") => {
                self.stats.reset();
                self.storage.reset_stats();
                return Response::Reset;
            }
            Some(b"detail") => return self.stats_detail(args.get(1).map(|a| &a[..])),
            Some(b"cachedump") => return self.cachedump(&args[1..]),
            Some(b"sizes") => return self.size_histogram(),
            _ => {}
        }
        match self.stats_lines(args) {
            Some(lines) => Response::Stats(
                lines
                    .into_iter()
                    .map(|(k, v)| (Bytes::from(k), Bytes::from(v)))
                    .collect(),
            ),
            None => Response::Error,
        }
    }
}

impl Executor {
    /// `stats detail on|off|dump`: memcached's prefix statistics.
    fn stats_detail(&self, what: Option<&[u8]>) -> Response {
        match what {
            Some(b"on") => self.stats.prefixes.enable(true),
            Some(b"off") => self.stats.prefixes.enable(false),
            Some(b"dump") => return Response::Lines(Bytes::from(self.stats.prefixes.dump())),
            _ => {
                return Response::ClientError(Bytes::from_static(
                    b"usage: stats detail on|off|dump",
                ))
            }
        }
        Response::Ok
    }

    /// `shutdown [graceful]`: stops the node as SIGINT does (both modes: a
    /// node's stop is always graceful), closing this connection without a
    /// word as memcached does; refused unless the operator enabled it.
    fn shutdown(&self, graceful: Option<bool>) -> Reply {
        if !self.settings.shutdown_command {
            return Reply::Send(Response::Raw(Bytes::from_static(
                b"ERROR: shutdown not enabled",
            )));
        }
        if graceful.is_none() {
            return Reply::Send(Response::ClientError(Bytes::from_static(
                b"invalid shutdown mode",
            )));
        }
        tracing::warn!("shutdown command received: stopping");
        // SAFETY: kill(2) on our own pid with a signal our handler takes.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGINT);
        }
        Reply::Drop
    }

    /// The lines of `stats <args>`, or `None` for an unknown group: what
    /// the `stats` command answers and `/metrics` is made from.
    pub fn stats_lines(&self, args: &[Bytes]) -> Option<Vec<(String, String)>> {
        let ctx = stats::StatsContext {
            server: &self.stats,
            storage: self.storage.as_ref(),
            settings: &self.settings,
            conns: &self.conns,
            groups: self.groups.as_deref(),
        };
        stats::group(&ctx, args)
    }
}

fn out_of_memory_storing() -> Response {
    Response::ServerError(Bytes::from_static(b"out of memory storing object"))
}

fn out_of_memory() -> Response {
    Response::ServerError(Bytes::from_static(b"out of memory"))
}

fn non_numeric() -> Response {
    Response::ClientError(Bytes::from_static(
        b"cannot increment or decrement non-numeric value",
    ))
}
