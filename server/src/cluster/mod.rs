//! The cluster: one copy of the data per zone. A read goes to the key's
//! owner in the home zone and falls back to the other zones on miss, error
//! or deadline; a write goes to the owner in every zone and is acknowledged
//! per the write policy, the other copies finishing in the background.
//!
//! The routing itself is the client crate's [`Router`], shared with the
//! Rust client's direct mode; this module decides which commands take which
//! route, reaches peers through the client's [`Node`] pools (marked as peer
//! traffic) and runs commands for itself without a hop.
//!
//! Rules (see the README, "Cluster semantics"):
//! - Plain writes (`set`, `ms` in set mode, `delete`, `touch`) fan out in
//!   parallel. A set carries one cluster-wide CAS (meta `E`), so every zone's
//!   copy has the same CAS and a `gets` token works wherever it is used.
//! - Conditional writes (`add`, `replace`, `append`, `prepend`, `cas`,
//!   `incr`, `decr`, `ma`, `ms` with a mode or `C`, `md` with `C`/`I`/`x`)
//!   are decided by one arbiter — the key's owner in the first zone of the
//!   config that answers — and the result is then copied to the other zones
//!   (the item with its flags, TTL and CAS, or the delete). Writers through
//!   different zones therefore meet at the same copy and converge.
//! - `flush_all` goes to every node of every zone.
//! - Requests on the batch lane use the peers' batch lane, and their reads
//!   do not read-repair.

pub mod topology;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::RwLock;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use zonecache_client::route::{set_as_meta, set_flag, CasClock, Router, Transport};
use zonecache_client::{Error, Lane, Node, NodeOptions, Pools};
use zonecache_proto::{
    parse_response, Command, Meta, MetaCode, MetaFlags, Response, Store, StoreMode,
};

use crate::net::{execute_local, Shared};
use crate::stats::ConnCounters;
use topology::{NodeConfig, NodeTopology, Overrides};

/// Pipelined connections per peer and lane.
const CONNECTIONS_PER_PEER: usize = 2;
/// Requests in flight to one peer: realtime, batch.
const PEER_IN_FLIGHT: [usize; 2] = [4096, 512];

/// The routing state shared by every connection of a node.
pub struct Cluster {
    /// This node.
    pub me: NodeConfig,
    router: Router,
    peers: Pools,
    cas: Arc<CasClock>,
}

/// The cluster a node routes by right now; replaced whole on reload, so a
/// request sees one consistent topology from start to end.
pub struct ClusterHandle {
    current: RwLock<Arc<Cluster>>,
    /// The config file, read again on SIGHUP.
    path: PathBuf,
    /// Command-line settings applied over every load.
    overrides: Overrides,
}

impl ClusterHandle {
    /// Loads the config at `path`.
    pub fn load(path: &Path, overrides: Overrides) -> Result<ClusterHandle, String> {
        let mut topology = NodeTopology::load(path)?;
        overrides.apply(&mut topology);
        Ok(ClusterHandle {
            current: RwLock::new(Arc::new(Cluster::new(topology, None))),
            path: path.to_path_buf(),
            overrides,
        })
    }

    /// The cluster as of now.
    pub fn get(&self) -> Arc<Cluster> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads the config again and switches to it: new nodes are used at
    /// once, connections to unchanged nodes are kept, and removed nodes'
    /// connections close when their last in-flight request is done. A bad
    /// file leaves the running topology in place.
    pub fn reload(&self) -> Result<(), String> {
        let mut topology = NodeTopology::load(&self.path)?;
        self.overrides.apply(&mut topology);
        if topology.me.id != self.get().me.id {
            return Err("the config names another node; restart to change identity".into());
        }
        let next = Arc::new(Cluster::new(topology, Some(&self.get())));
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = next;
        Ok(())
    }
}

/// How this node reaches a node: itself without a hop, peers through
/// their pools.
#[derive(Clone)]
struct Hop {
    me: Arc<str>,
    peers: Pools,
    shared: Arc<Shared>,
}

impl Transport for Hop {
    async fn call(
        &self,
        node: &NodeConfig,
        cmd: &Command,
        lane: Lane,
        deadline: Duration,
    ) -> Result<Response, Error> {
        if *node.id == *self.me {
            let mut buf = BytesMut::new();
            let mut counters = ConnCounters::default();
            execute_local(&self.shared, cmd.clone(), &mut buf, &mut counters);
            self.shared.stats.absorb(&mut counters);
            return match parse_response(&mut buf) {
                Ok(Some(r)) => Error::from_reply(r),
                Ok(None) => Err(Error::Protocol("no local reply".into())),
                Err(e) => Err(Error::Protocol(e.to_string())),
            };
        }
        self.peers.call(node, cmd, lane, deadline).await
    }
}

impl Cluster {
    /// Routing state for `topology`, keeping `previous`'s connections to
    /// nodes that are still there at the same addresses.
    pub fn new(topology: NodeTopology, previous: Option<&Cluster>) -> Cluster {
        let options = NodeOptions {
            connections: CONNECTIONS_PER_PEER,
            max_in_flight: PEER_IN_FLIGHT,
            hello: Some(Command::PeerHello),
            separate_lanes: true,
        };
        let peers = topology
            .nodes()
            .filter(|n| n.id != topology.me.id)
            .map(|n| {
                let kept = previous
                    .and_then(|p| p.peers.0.get(&n.id))
                    .filter(|p| p.config == *n)
                    .cloned();
                (
                    n.id.clone(),
                    kept.unwrap_or_else(|| Arc::new(Node::new(n.clone(), &options))),
                )
            })
            .collect();
        let tag = topology
            .me
            .id
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        Cluster {
            me: topology.me,
            router: Router::new(topology.cluster, previous.map(|p| p.router.background())),
            peers: Pools(Arc::new(peers)),
            cas: previous.map_or_else(|| Arc::new(CasClock::new(tag)), |p| p.cas.clone()),
        }
    }

    fn hop(&self, shared: &Arc<Shared>) -> Hop {
        Hop {
            me: self.me.id.as_str().into(),
            peers: self.peers.clone(),
            shared: shared.clone(),
        }
    }

    /// `stats peers`: per peer state, calls, mean latency, in flight,
    /// timeouts, errors, shed calls and mark-downs.
    pub fn peer_stats(&self) -> Vec<(String, String)> {
        let mut peers: Vec<&Arc<Node>> = self.peers.0.values().collect();
        peers.sort_by(|a, b| a.config.id.cmp(&b.config.id));
        let mut out = Vec::new();
        for p in peers {
            let id = &p.config.id;
            let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
            let s = &p.stats;
            let calls = load(&s.calls);
            out.push((format!("{id}:addr"), p.config.addr.to_string()));
            out.push((
                format!("{id}:state"),
                if p.is_down() { "down" } else { "up" }.into(),
            ));
            out.push((format!("{id}:calls"), calls.to_string()));
            out.push((
                format!("{id}:mean_latency_us"),
                (load(&s.latency_us) / calls.max(1)).to_string(),
            ));
            out.push((format!("{id}:in_flight"), load(&s.in_flight).to_string()));
            out.push((format!("{id}:timeouts"), load(&s.timeouts).to_string()));
            out.push((format!("{id}:errors"), load(&s.errors).to_string()));
            out.push((format!("{id}:shed"), load(&s.shed).to_string()));
            out.push((format!("{id}:mark_downs"), load(&s.mark_downs).to_string()));
        }
        out
    }

    /// `stats zones`: per zone fallbacks, read repairs and replication
    /// failures, and the background queue.
    pub fn zone_stats(&self) -> Vec<(String, String)> {
        let t = &self.router.topology;
        let mut out = vec![
            ("home_zone".to_string(), t.zones[0].name.clone()),
            (
                "write_policy".to_string(),
                t.write_policy.name().to_string(),
            ),
            (
                "replication_queue".to_string(),
                self.router.background_in_flight().to_string(),
            ),
        ];
        for (z, s) in t.zones.iter().zip(self.router.zone_stats.iter()) {
            let load = |a: &AtomicU64| a.load(Ordering::Relaxed).to_string();
            out.push((format!("{}:nodes", z.name), z.nodes.len().to_string()));
            out.push((format!("{}:fallback_hits", z.name), load(&s.fallback_hits)));
            out.push((format!("{}:read_repairs", z.name), load(&s.read_repairs)));
            out.push((
                format!("{}:replication_failures", z.name),
                load(&s.replication_failures),
            ));
        }
        out
    }

    /// Handles a client command routed through this node on `lane`; the
    /// reply goes to `out`.
    pub async fn handle(
        self: &Arc<Self>,
        shared: &Arc<Shared>,
        cmd: Command,
        lane: Lane,
        out: &mut BytesMut,
    ) {
        // The nodes that run a forwarded command always answer; the client's
        // noreply/quiet is applied here, to the reply it would have had.
        let (silence, cmd) = answerable(cmd);
        let hop = self.hop(shared);
        let router = &self.router;
        let reply = match cmd {
            Command::Get { keys, cas } => {
                return self.multi_get(&hop, keys, None, cas, lane, out).await
            }
            Command::Gat { exptime, keys, cas } => {
                return self
                    .multi_get(&hop, keys, Some(exptime), cas, lane, out)
                    .await
            }
            Command::MetaGet(meta) => {
                let key = meta.key.clone();
                router
                    .meta_read(&hop, &key, &Command::MetaGet(meta), lane)
                    .await
            }
            Command::Store(s) if s.mode == StoreMode::Set => {
                let ms = set_as_meta(&s.key, s.data.clone(), s.flags, s.exptime, self.cas.next());
                router
                    .fan_out(&hop, &s.key, ms, lane)
                    .await
                    .map(|_| Response::Stored)
            }
            Command::MetaSet { mut meta, data } if is_plain_set(&meta.flags) => {
                set_flag(&mut meta.flags, b'E', self.cas.next().to_string());
                let key = meta.key.clone();
                router
                    .fan_out(&hop, &key, Command::MetaSet { meta, data }, lane)
                    .await
            }
            cmd @ (Command::Delete { .. } | Command::Touch { .. }) => {
                let key = key_of(&cmd);
                router.fan_out(&hop, &key, cmd, lane).await
            }
            Command::MetaDelete(meta) if is_plain_delete(&meta.flags) => {
                let key = meta.key.clone();
                router
                    .fan_out(&hop, &key, Command::MetaDelete(meta), lane)
                    .await
            }
            Command::MetaDelete(meta) => {
                let (key, deletes) = (
                    meta.key.clone(),
                    !meta.flags.invalidate && !meta.flags.remove_value,
                );
                router
                    .arbitrate(&hop, &key, Command::MetaDelete(meta), deletes, lane)
                    .await
            }
            cmd @ (Command::Store(_)
            | Command::Arith { .. }
            | Command::MetaSet { .. }
            | Command::MetaArith(_)) => {
                let key = key_of(&cmd);
                router.arbitrate(&hop, &key, cmd, false, lane).await
            }
            Command::FlushAll { delay, .. } => router
                .flush_everywhere(&hop, delay)
                .await
                .map(|()| Response::Ok),
            other => {
                let mut counters = ConnCounters::default();
                execute_local(shared, other, out, &mut counters);
                shared.stats.absorb(&mut counters);
                return;
            }
        };
        write_reply(out, silence, reply);
    }

    /// Multi-get through the router; the reply lists hits in the order asked.
    async fn multi_get(
        &self,
        hop: &Hop,
        keys: Vec<Bytes>,
        touch: Option<i32>,
        cas: bool,
        lane: Lane,
        out: &mut BytesMut,
    ) {
        let found = self.router.multi_get(hop, &keys, touch, lane).await;
        for k in &keys {
            if let Some(v) = found.values.get(k) {
                zonecache_proto::push_value(
                    out,
                    &v.key,
                    v.flags,
                    &v.data,
                    if cas { v.cas } else { None },
                );
            }
        }
        out.extend_from_slice(b"END\r\n");
    }
}

fn is_plain_set(f: &MetaFlags) -> bool {
    matches!(f.mode, None | Some(b'S')) && f.compare_cas.is_none() && !f.invalidate
}

fn is_plain_delete(f: &MetaFlags) -> bool {
    f.compare_cas.is_none() && !f.invalidate && !f.remove_value
}

/// What the client asked to be spared.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Silence {
    /// Every reply is wanted.
    None,
    /// Text `noreply`: nothing at all.
    NoReply,
    /// Meta `q`: the nominal reply (`HD`, and `EN` of `mg`) is dropped; errors show.
    Quiet,
}

/// Takes the client's noreply/quiet off a command, so the node that runs it
/// always answers; says what the client wanted spared.
fn answerable(cmd: Command) -> (Silence, Command) {
    match cmd {
        Command::Store(s) if s.noreply => (
            Silence::NoReply,
            Command::Store(Store {
                noreply: false,
                ..s
            }),
        ),
        Command::Arith {
            key,
            delta,
            incr,
            noreply: true,
        } => (
            Silence::NoReply,
            Command::Arith {
                key,
                delta,
                incr,
                noreply: false,
            },
        ),
        Command::Touch {
            key,
            exptime,
            noreply: true,
        } => (
            Silence::NoReply,
            Command::Touch {
                key,
                exptime,
                noreply: false,
            },
        ),
        Command::Delete { key, noreply: true } => (
            Silence::NoReply,
            Command::Delete {
                key,
                noreply: false,
            },
        ),
        Command::FlushAll {
            delay,
            noreply: true,
        } => (
            Silence::NoReply,
            Command::FlushAll {
                delay,
                noreply: false,
            },
        ),
        Command::MetaGet(m) if m.flags.quiet => (Silence::Quiet, Command::MetaGet(loud(m))),
        Command::MetaSet { meta, data } if meta.flags.quiet => (
            Silence::Quiet,
            Command::MetaSet {
                meta: loud(meta),
                data,
            },
        ),
        Command::MetaDelete(m) if m.flags.quiet => (Silence::Quiet, Command::MetaDelete(loud(m))),
        Command::MetaArith(m) if m.flags.quiet => (Silence::Quiet, Command::MetaArith(loud(m))),
        other => (Silence::None, other),
    }
}

fn loud(mut meta: Meta) -> Meta {
    meta.flags.quiet = false;
    meta.flags.tokens.retain(|t| t.flag != b'q');
    meta
}

/// The key of a single-key command.
fn key_of(cmd: &Command) -> Bytes {
    match cmd {
        Command::Store(s) => s.key.clone(),
        Command::Arith { key, .. } | Command::Touch { key, .. } | Command::Delete { key, .. } => {
            key.clone()
        }
        Command::MetaSet { meta, .. }
        | Command::MetaArith(meta)
        | Command::MetaDelete(meta)
        | Command::MetaGet(meta) => meta.key.clone(),
        _ => Bytes::new(),
    }
}

/// Writes the reply as the client asked for it.
fn write_reply(out: &mut BytesMut, silence: Silence, reply: Result<Response, Error>) {
    match (silence, reply) {
        (Silence::NoReply, _) => {}
        (Silence::Quiet, Ok(Response::Meta(m)))
            if matches!(m.code, MetaCode::Header | MetaCode::Miss) => {}
        (_, Ok(r)) => r.encode(out),
        (_, Err(e)) => error_line(out, &e),
    }
}

fn error_line(out: &mut BytesMut, e: &Error) {
    match e {
        Error::Client(m) if m == "ERROR" => out.extend_from_slice(b"ERROR\r\n"),
        Error::Client(m) => Response::ClientError(Bytes::from(m.clone())).encode(out),
        Error::Server(m) => Response::ServerError(Bytes::from(m.clone())).encode(out),
        policy @ Error::WritePolicy { .. } => {
            Response::ServerError(Bytes::from(policy.to_string())).encode(out)
        }
        other => Response::ServerError(Bytes::from(format!("cluster: {other}"))).encode(out),
    }
}
