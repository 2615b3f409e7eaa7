//! The cluster: one copy of the data per zone. A read goes to the key's
//! owner in the home zone and falls back to the other zones on miss, error
//! or deadline; a write goes to the owner in every zone and is acknowledged
//! per the write policy, the other copies finishing in the background.
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

pub mod peer;
pub mod topology;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::RwLock;

use bytes::{Bytes, BytesMut};
use futures::future::join_all;
use tokio::sync::{mpsc, Semaphore};
use zonecache_client::Error;
use zonecache_proto::{
    parse_response, Command, Meta, MetaCode, MetaFlags, MetaToken, Response, Store, StoreMode,
    Value,
};

use crate::net::{execute_local, Shared};
use crate::stats::ConnCounters;
use peer::Peer;
use topology::{NodeConfig, Overrides, Topology};

/// Background copies in flight at once; beyond it copies are dropped and counted.
const MAX_BACKGROUND: usize = 10_000;

/// Per-zone counters for `stats zones`.
#[derive(Debug, Default)]
pub struct ZoneStats {
    /// Reads answered from this zone after the home zone missed.
    pub fallback_hits: AtomicU64,
    /// Copies to this zone that failed or were dropped.
    pub replication_failures: AtomicU64,
    /// Items found in this zone and written back to the home zone.
    pub read_repairs: AtomicU64,
}

/// The routing state shared by every connection of a node.
pub struct Cluster {
    pub topology: Topology,
    peers: HashMap<String, Arc<Peer>>,
    background: Arc<Semaphore>,
    /// Shared with background copies, which count their own failures.
    zone_stats: Arc<Vec<ZoneStats>>,
    cas_clock: AtomicU64,
    node_tag: u64,
}

/// Where a command runs.
#[derive(Clone, Copy)]
enum Deadline {
    Read,
    Write,
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
        let mut topology = Topology::load(path)?;
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
        let mut topology = Topology::load(&self.path)?;
        self.overrides.apply(&mut topology);
        if topology.me.id != self.get().topology.me.id {
            return Err("the config names another node; restart to change identity".into());
        }
        let next = Arc::new(Cluster::new(topology, Some(&self.get())));
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = next;
        Ok(())
    }
}

impl Cluster {
    /// Routing state for `topology`, keeping `previous`'s connections to
    /// nodes that are still there at the same address.
    pub fn new(topology: Topology, previous: Option<&Cluster>) -> Cluster {
        let peers = topology
            .zones
            .iter()
            .flat_map(|z| z.nodes.iter())
            .filter(|n| n.id != topology.me.id)
            .map(|n| {
                let kept = previous
                    .and_then(|p| p.peers.get(&n.id))
                    .filter(|p| p.node.addr == n.addr)
                    .cloned();
                (
                    n.id.clone(),
                    kept.unwrap_or_else(|| Arc::new(Peer::new(n.clone()))),
                )
            })
            .collect();
        let node_tag = topology
            .me
            .id
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
            & 0xff;
        let zone_stats = Arc::new(
            topology
                .zones
                .iter()
                .map(|_| ZoneStats::default())
                .collect(),
        );
        Cluster {
            topology,
            peers,
            background: previous.map_or_else(
                || Arc::new(Semaphore::new(MAX_BACKGROUND)),
                |p| p.background.clone(),
            ),
            zone_stats,
            cas_clock: AtomicU64::new(previous.map_or(0, |p| p.cas_clock.load(Ordering::Relaxed))),
            node_tag,
        }
    }

    /// `stats peers`: per peer state, calls, mean latency, in flight,
    /// timeouts, errors and mark-downs.
    pub fn peer_stats(&self) -> Vec<(String, String)> {
        let mut peers: Vec<&Arc<Peer>> = self.peers.values().collect();
        peers.sort_by(|a, b| a.node.id.cmp(&b.node.id));
        let mut out = Vec::new();
        for p in peers {
            let id = &p.node.id;
            let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
            let calls = load(&p.calls);
            out.push((format!("{id}:addr"), p.node.addr.to_string()));
            out.push((
                format!("{id}:state"),
                if p.is_down() { "down" } else { "up" }.into(),
            ));
            out.push((format!("{id}:calls"), calls.to_string()));
            out.push((
                format!("{id}:mean_latency_us"),
                (load(&p.latency_us) / calls.max(1)).to_string(),
            ));
            out.push((format!("{id}:in_flight"), load(&p.in_flight).to_string()));
            out.push((format!("{id}:timeouts"), load(&p.timeouts).to_string()));
            out.push((format!("{id}:errors"), load(&p.errors).to_string()));
            out.push((format!("{id}:mark_downs"), load(&p.mark_downs).to_string()));
        }
        out
    }

    /// `stats zones`: per zone fallbacks, read repairs and replication
    /// failures, and the background queue.
    pub fn zone_stats(&self) -> Vec<(String, String)> {
        let mut out = vec![
            ("home_zone".to_string(), self.topology.zones[0].name.clone()),
            (
                "write_policy".to_string(),
                self.topology.write_policy.name().to_string(),
            ),
            (
                "replication_queue".to_string(),
                (MAX_BACKGROUND - self.background.available_permits()).to_string(),
            ),
        ];
        for (z, s) in self.topology.zones.iter().zip(self.zone_stats.iter()) {
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

    /// A CAS unique across the cluster: time-based, tagged with this node,
    /// strictly increasing here.
    fn next_cas(&self) -> u64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let candidate = (now << 8) | self.node_tag;
        let mut prev = self.cas_clock.load(Ordering::Relaxed);
        loop {
            let next = candidate.max(prev + 256);
            match self.cas_clock.compare_exchange_weak(
                prev,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return next,
                Err(p) => prev = p,
            }
        }
    }

    /// Runs `cmd` on `node` (locally when it is this node) and returns its reply.
    async fn at(
        &self,
        shared: &Arc<Shared>,
        node: &NodeConfig,
        cmd: &Command,
        deadline: Deadline,
    ) -> Result<Response, Error> {
        if node.id == self.topology.me.id {
            let mut buf = BytesMut::new();
            let mut counters = ConnCounters::default();
            execute_local(shared, cmd.clone(), &mut buf, &mut counters);
            shared.stats.absorb(&mut counters);
            return match parse_response(&mut buf) {
                Ok(Some(r)) => Error::from_reply(r),
                Ok(None) => Err(Error::Protocol("no local reply".into())),
                Err(e) => Err(Error::Protocol(e.to_string())),
            };
        }
        let d = match deadline {
            Deadline::Read => self.topology.read_deadline,
            Deadline::Write => self.topology.write_deadline,
        };
        match self.peers.get(&node.id) {
            Some(p) => p.call(cmd, d).await,
            None => Err(Error::Connection(format!("unknown node {}", node.id))),
        }
    }

    /// Handles a client command routed through this node; the reply goes to `out`.
    pub async fn handle(self: &Arc<Self>, shared: &Arc<Shared>, cmd: Command, out: &mut BytesMut) {
        // The nodes that run a forwarded command always answer; the client's
        // noreply/quiet is applied here, to the reply it would have had.
        let (silence, cmd) = answerable(cmd);
        let reply = match cmd {
            Command::Get { keys, cas } => {
                return self.multi_get(shared, keys, None, cas, out).await
            }
            Command::Gat { exptime, keys, cas } => {
                return self.multi_get(shared, keys, Some(exptime), cas, out).await
            }
            Command::MetaGet(meta) => self.meta_read(shared, meta).await,
            Command::Store(s) if s.mode == StoreMode::Set => {
                let ms = set_as_meta(&s.key, s.data.clone(), s.flags, s.exptime, self.next_cas());
                self.fan_out(shared, &s.key, ms)
                    .await
                    .map(|_| Response::Stored)
            }
            Command::MetaSet { mut meta, data } if is_plain_set(&meta.flags) => {
                set_flag(&mut meta.flags, b'E', self.next_cas().to_string());
                let key = meta.key.clone();
                self.fan_out(shared, &key, Command::MetaSet { meta, data })
                    .await
            }
            cmd @ (Command::Delete { .. } | Command::Touch { .. }) => {
                let key = key_of(&cmd);
                self.fan_out(shared, &key, cmd).await
            }
            Command::MetaDelete(meta) if is_plain_delete(&meta.flags) => {
                let key = meta.key.clone();
                self.fan_out(shared, &key, Command::MetaDelete(meta)).await
            }
            Command::MetaDelete(meta) => {
                let (key, deletes) = (
                    meta.key.clone(),
                    !meta.flags.invalidate && !meta.flags.remove_value,
                );
                self.arbitrate(shared, &key, Command::MetaDelete(meta), deletes)
                    .await
            }
            cmd @ (Command::Store(_)
            | Command::Arith { .. }
            | Command::MetaSet { .. }
            | Command::MetaArith(_)) => {
                let key = key_of(&cmd);
                self.arbitrate(shared, &key, cmd, false).await
            }
            Command::FlushAll { delay, .. } => self.flush_everywhere(shared, delay).await,
            other => {
                let mut counters = ConnCounters::default();
                execute_local(shared, other, out, &mut counters);
                shared.stats.absorb(&mut counters);
                return;
            }
        };
        write_reply(out, silence, reply);
    }

    /// Multi-get: keys grouped by owner, one request per owner; only the keys
    /// still missing go to the next zone, again grouped.
    async fn multi_get(
        &self,
        shared: &Arc<Shared>,
        keys: Vec<Bytes>,
        touch: Option<i32>,
        cas: bool,
        out: &mut BytesMut,
    ) {
        let mut found: HashMap<Bytes, Value> = HashMap::new();
        let mut missing: Vec<Bytes> = keys.clone();
        missing.sort();
        missing.dedup();
        for (zi, zone) in self.topology.zones.iter().enumerate() {
            if missing.is_empty() {
                break;
            }
            let mut groups: HashMap<String, (NodeConfig, Vec<Bytes>)> = HashMap::new();
            for k in &missing {
                let owner = zone.owner(k);
                groups
                    .entry(owner.id.clone())
                    .or_insert_with(|| (owner.clone(), Vec::new()))
                    .1
                    .push(k.clone());
            }
            let calls = groups.into_values().map(|(node, group)| {
                let cmd = match touch {
                    Some(exptime) => Command::Gat {
                        exptime,
                        keys: group,
                        cas: true,
                    },
                    None => Command::Get {
                        keys: group,
                        cas: true,
                    },
                };
                async move { self.at(shared, &node, &cmd, Deadline::Read).await }
            });
            for reply in join_all(calls).await {
                if let Ok(Response::Values(values)) = reply {
                    for v in values {
                        if zi > 0 {
                            self.fallback_hit(shared, zi, &v.key);
                        }
                        found.insert(v.key.clone(), v);
                    }
                }
            }
            missing.retain(|k| !found.contains_key(k));
        }
        for k in &keys {
            if let Some(v) = found.get(k) {
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

    /// `mg`: the home owner first, then the other zones while it misses.
    async fn meta_read(&self, shared: &Arc<Shared>, meta: Meta) -> Result<Response, Error> {
        let key = meta.key.clone();
        let cmd = Command::MetaGet(meta);
        let mut last = Err(Error::Timeout);
        for (zi, zone) in self.topology.zones.iter().enumerate() {
            let reply = self
                .at(shared, zone.owner(&key), &cmd, Deadline::Read)
                .await;
            let hit = matches!(&reply, Ok(Response::Meta(m)) if m.code != MetaCode::Miss);
            if hit {
                if zi > 0 {
                    self.fallback_hit(shared, zi, &key);
                }
                last = reply;
                break;
            }
            if reply.is_ok() || last.is_err() {
                last = reply;
            }
        }
        last
    }

    /// A read missed at home and hit in zone `zone`: count it, and (read
    /// repair) copy the item back to its home owner in the background, with
    /// flags, remaining TTL and CAS. The copy uses `add` semantics, so it
    /// never overwrites a newer home copy; when the background queue is full
    /// it is dropped and counted.
    fn fallback_hit(&self, shared: &Arc<Shared>, zone: usize, key: &Bytes) {
        self.zone_stats[zone]
            .fallback_hits
            .fetch_add(1, Ordering::Relaxed);
        if !self.topology.read_repair {
            return;
        }
        let Some(cluster) = shared.cluster.as_ref().map(ClusterHandle::get) else {
            return;
        };
        let Ok(permit) = self.background.clone().try_acquire_owned() else {
            self.zone_stats[0]
                .replication_failures
                .fetch_add(1, Ordering::Relaxed);
            return;
        };
        let (shared, key) = (shared.clone(), key.clone());
        tokio::spawn(async move {
            let source = cluster.topology.zones[zone].owner(&key).clone();
            let home = cluster.topology.zones[0].owner(&key).clone();
            if let Some(Command::MetaSet { mut meta, data }) =
                cluster.read_item(&shared, &source, &key).await
            {
                set_flag(&mut meta.flags, b'M', "E".into());
                meta.flags.mode = Some(b'E');
                let copy = Command::MetaSet { meta, data };
                if let Ok(Response::Meta(m)) =
                    cluster.at(&shared, &home, &copy, Deadline::Write).await
                {
                    if m.code == MetaCode::Header {
                        cluster.zone_stats[zone]
                            .read_repairs
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            drop(permit);
        });
    }

    /// Sends `cmd` to the key's owner in every zone; answers once the write
    /// policy is met, the rest finishing in the background.
    async fn fan_out(
        &self,
        shared: &Arc<Shared>,
        key: &[u8],
        cmd: Command,
    ) -> Result<Response, Error> {
        let zones = self.topology.zones.len();
        let needed = self.topology.write_policy.needed(zones);
        let (tx, mut rx) = mpsc::channel(zones);
        for (zi, zone) in self.topology.zones.iter().enumerate() {
            let node = zone.owner(key).clone();
            if node.id == self.topology.me.id {
                let reply = self.at(shared, &node, &cmd, Deadline::Write).await;
                if reply.is_err() {
                    self.zone_stats[zi]
                        .replication_failures
                        .fetch_add(1, Ordering::Relaxed);
                }
                let _ = tx.send((zi, reply)).await;
                continue;
            }
            let Ok(permit) = self.background.clone().try_acquire_owned() else {
                self.zone_stats[zi]
                    .replication_failures
                    .fetch_add(1, Ordering::Relaxed);
                let _ = tx.send((zi, Err(Error::Busy))).await;
                continue;
            };
            let peer = self.peers.get(&node.id).cloned();
            let (cmd, tx, deadline) = (cmd.clone(), tx.clone(), self.topology.write_deadline);
            let zone_stats = self.zone_stats.clone();
            tokio::spawn(async move {
                let reply = match peer {
                    Some(p) => p.call(&cmd, deadline).await,
                    None => Err(Error::Connection("unknown node".into())),
                };
                // Counted here: the caller may have had its answer already.
                if reply.is_err() {
                    zone_stats[zi]
                        .replication_failures
                        .fetch_add(1, Ordering::Relaxed);
                }
                let _ = tx.send((zi, reply)).await;
                drop(permit);
            });
        }
        drop(tx);
        let (mut acks, mut failures, mut first_ack) = (0, 0, None);
        while let Some((zi, reply)) = rx.recv().await {
            match reply {
                Ok(r) => {
                    acks += 1;
                    if first_ack.is_none() || zi == 0 {
                        first_ack = Some(r);
                    }
                }
                Err(e) => {
                    failures += 1;
                    tracing::debug!(zone = %self.topology.zones[zi].name, error = %e, "copy failed");
                }
            }
            if acks >= needed {
                break;
            }
            if zones - failures < needed {
                break;
            }
        }
        match first_ack {
            Some(r) if acks >= needed => Ok(r),
            _ => Err(Error::Server(format!(
                "write policy {} not met: {acks} of {zones} zones acknowledged",
                self.topology.write_policy.name()
            ))),
        }
    }

    /// A conditional write: decided by the arbiter, then copied to the other zones.
    async fn arbitrate(
        &self,
        shared: &Arc<Shared>,
        key: &Bytes,
        cmd: Command,
        is_delete: bool,
    ) -> Result<Response, Error> {
        let mut last = Err(Error::Connection("no zone reachable".into()));
        for &zi in &self.topology.arbiter_order {
            let arbiter = self.topology.zones[zi].owner(key).clone();
            let reply = self.at(shared, &arbiter, &cmd, Deadline::Write).await;
            match reply {
                Err(Error::Timeout) | Err(Error::Connection(_)) | Err(Error::Busy) => {
                    last = reply;
                    continue;
                }
                Ok(ref r) if changed(r) => {
                    let copy = if is_delete {
                        Some(Command::Delete {
                            key: key.clone(),
                            noreply: false,
                        })
                    } else {
                        self.read_item(shared, &arbiter, key).await
                    };
                    if let Some(copy) = copy {
                        let _ = self.copy_to_others(shared, key, zi, copy).await;
                    }
                    return reply;
                }
                other => return other,
            }
        }
        last
    }

    /// The arbiter's item as an `ms` that recreates it elsewhere (same CAS).
    async fn read_item(
        &self,
        shared: &Arc<Shared>,
        node: &NodeConfig,
        key: &Bytes,
    ) -> Option<Command> {
        let mut flags = MetaFlags::default();
        for f in [b'v', b'f', b't', b'c'] {
            set_flag(&mut flags, f, String::new());
        }
        flags.value = true;
        let reply = self
            .at(
                shared,
                node,
                &Command::MetaGet(Meta {
                    key: key.clone(),
                    flags,
                }),
                Deadline::Write,
            )
            .await;
        let Ok(Response::Meta(m)) = reply else {
            return None;
        };
        let value = m.value.clone()?;
        let num = |f: u8| {
            m.flag(f)
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.parse::<i64>().ok())
        };
        let ttl = num(b't').filter(|t| *t > 0).unwrap_or(0) as i32;
        Some(set_as_meta(
            key,
            value,
            num(b'f').unwrap_or(0) as u32,
            ttl,
            num(b'c').unwrap_or(0) as u64,
        ))
    }

    async fn copy_to_others(
        &self,
        shared: &Arc<Shared>,
        key: &[u8],
        done_zone: usize,
        copy: Command,
    ) -> usize {
        let calls = self
            .topology
            .zones
            .iter()
            .enumerate()
            .filter(|(zi, _)| *zi != done_zone)
            .map(|(zi, zone)| {
                let node = zone.owner(key).clone();
                let copy = copy.clone();
                async move {
                    let ok = self.at(shared, &node, &copy, Deadline::Write).await.is_ok();
                    if !ok {
                        self.zone_stats[zi]
                            .replication_failures
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    ok
                }
            });
        join_all(calls).await.into_iter().filter(|ok| *ok).count()
    }

    async fn flush_everywhere(&self, shared: &Arc<Shared>, delay: i32) -> Result<Response, Error> {
        let nodes: Vec<NodeConfig> = self
            .topology
            .zones
            .iter()
            .flat_map(|z| z.nodes.clone())
            .collect();
        let cmd = Command::FlushAll {
            delay,
            noreply: false,
        };
        let calls = nodes
            .iter()
            .map(|n| self.at(shared, n, &cmd, Deadline::Write));
        let replies = join_all(calls).await;
        let failed = replies.iter().filter(|r| r.is_err()).count();
        if failed == 0 {
            Ok(Response::Ok)
        } else {
            Err(Error::Server(format!(
                "flush_all reached {} of {} nodes",
                nodes.len() - failed,
                nodes.len()
            )))
        }
    }
}

/// Whether a reply means the item changed (so other zones need the result).
fn changed(r: &Response) -> bool {
    match r {
        Response::Stored | Response::Deleted | Response::Touched | Response::Number(_) => true,
        Response::Meta(m) => matches!(m.code, MetaCode::Header | MetaCode::Value),
        _ => false,
    }
}

fn is_plain_set(f: &MetaFlags) -> bool {
    matches!(f.mode, None | Some(b'S')) && f.compare_cas.is_none() && !f.invalidate
}

fn is_plain_delete(f: &MetaFlags) -> bool {
    f.compare_cas.is_none() && !f.invalidate && !f.remove_value
}

fn set_flag(f: &mut MetaFlags, flag: u8, arg: String) {
    f.tokens.retain(|t| t.flag != flag);
    if flag == b'E' {
        f.new_cas = arg.parse().ok();
    }
    f.tokens.push(MetaToken {
        flag,
        arg: Bytes::from(arg),
    });
}

/// An `ms` that stores `value` with these flags, TTL and CAS.
fn set_as_meta(key: &[u8], value: Bytes, flags: u32, exptime: i32, cas: u64) -> Command {
    let mut f = MetaFlags::default();
    set_flag(&mut f, b'F', flags.to_string());
    f.client_flags = Some(flags);
    set_flag(&mut f, b'T', exptime.to_string());
    f.ttl = Some(exptime);
    set_flag(&mut f, b'E', cas.to_string());
    Command::MetaSet {
        meta: Meta {
            key: Bytes::copy_from_slice(key),
            flags: f,
        },
        data: value,
    }
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
        other => Response::ServerError(Bytes::from(format!("cluster: {other}"))).encode(out),
    }
}
