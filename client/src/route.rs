//! Routing across zones, one implementation for the client's direct mode
//! and for a node routing what its clients send it:
//! - reads go to the key's owner in the home zone, then to the other zones
//!   in fallback order on miss, error or deadline; multi-key reads send one
//!   request per owner and only the keys still missing to the next zone;
//!   a hit found in another zone is copied home (read repair, realtime only);
//! - plain writes fan out to the owner in every zone and are acknowledged per
//!   the write policy, the other copies finishing in the background;
//! - conditional writes are decided by one arbiter (the owner in the first
//!   config zone that answers) and the result is copied to the other zones.
//!
//! How a call reaches a node is the [`Transport`]'s business: the client
//! uses its pools, a node also runs commands for itself without a hop.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, Semaphore};
use zonecache_proto::{Command, Meta, MetaCode, MetaFlags, MetaToken, Response, Value};

use crate::error::Error;
use crate::node::Lane;
use crate::topology::{NodeConfig, Topology};

/// Writes and read repairs whose copies may be in flight at once; beyond it
/// a write fails (its copies dropped and counted) and a repair is skipped.
pub const MAX_BACKGROUND: usize = 10_000;

/// How a routed call reaches a node.
pub trait Transport: Clone + Send + Sync + 'static {
    /// Sends `cmd` to `node` on `lane` and waits up to `deadline`.
    fn call(
        &self,
        node: &NodeConfig,
        cmd: &Command,
        lane: Lane,
        deadline: Duration,
    ) -> impl Future<Output = Result<Response, Error>> + Send;
}

/// Per-zone counters (`stats zones`, the client's stats).
#[derive(Debug, Default)]
pub struct ZoneStats {
    /// Reads answered from this zone after the home zone missed.
    pub fallback_hits: AtomicU64,
    /// Copies to this zone that failed or were dropped.
    pub replication_failures: AtomicU64,
    /// Items found in this zone and written back to the home zone.
    pub read_repairs: AtomicU64,
}

/// What a call is, for its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Read,
    Write,
}

/// The result of a multi-key read.
#[derive(Debug, Default)]
pub struct Found {
    /// Hits, by key.
    pub values: HashMap<Bytes, Value>,
    /// Set when some key got no answer from any zone (every zone tried
    /// failed): its miss is not a real miss.
    pub unanswered: Option<Error>,
    /// Zones asked, in order (for spans).
    pub zones_tried: usize,
}

/// Routing state for one topology.
pub struct Router {
    pub topology: Topology,
    /// Shared with background copies, which count their own failures.
    pub zone_stats: Arc<Vec<ZoneStats>>,
    background: Arc<Semaphore>,
}

impl Router {
    /// A router for `topology`; `background` bounds background copies
    /// (pass the previous router's to keep the bound across reloads).
    pub fn new(topology: Topology, background: Option<Arc<Semaphore>>) -> Router {
        let zone_stats = Arc::new(
            topology
                .zones
                .iter()
                .map(|_| ZoneStats::default())
                .collect(),
        );
        Router {
            topology,
            zone_stats,
            background: background.unwrap_or_else(|| Arc::new(Semaphore::new(MAX_BACKGROUND))),
        }
    }

    /// The background bound, to hand to the next router.
    pub fn background(&self) -> Arc<Semaphore> {
        self.background.clone()
    }

    /// Background copies in flight now.
    pub fn background_in_flight(&self) -> usize {
        MAX_BACKGROUND - self.background.available_permits()
    }

    /// The deadline of a call of `kind` on `lane`.
    pub fn deadline(&self, lane: Lane, kind: Kind) -> Duration {
        match (lane, kind) {
            (Lane::Batch, _) => self.topology.batch_deadline,
            (Lane::Realtime, Kind::Read) => self.topology.read_deadline,
            (Lane::Realtime, Kind::Write) => self.topology.write_deadline,
        }
    }

    /// Multi-key read: keys grouped by owner, one request per owner; only
    /// the keys still missing go to the next zone, again grouped.
    pub async fn multi_get<T: Transport>(
        &self,
        t: &T,
        keys: &[Bytes],
        touch: Option<i32>,
        lane: Lane,
    ) -> Found {
        let mut found = Found::default();
        let mut missing: Vec<Bytes> = keys.to_vec();
        missing.sort();
        missing.dedup();
        // Keys that some zone answered for (a miss there is a real miss).
        let mut answered: std::collections::HashSet<Bytes> = Default::default();
        let deadline = self.deadline(lane, Kind::Read);
        for (zi, zone) in self.topology.zones.iter().enumerate() {
            if missing.is_empty() {
                break;
            }
            found.zones_tried += 1;
            let mut groups: HashMap<&str, (&NodeConfig, Vec<Bytes>)> = HashMap::new();
            for k in &missing {
                let owner = zone.owner(k);
                groups
                    .entry(owner.id.as_str())
                    .or_insert_with(|| (owner, Vec::new()))
                    .1
                    .push(k.clone());
            }
            let calls = groups.into_values().map(|(node, group)| {
                let cmd = read_command(group.clone(), touch);
                async move { (group, t.call(node, &cmd, lane, deadline).await) }
            });
            for (group, reply) in join_all(calls).await {
                match reply {
                    Ok(Response::Values(values)) => {
                        answered.extend(group);
                        for v in values {
                            if zi > 0 {
                                self.fallback_hit(t, zi, &v.key, lane);
                            }
                            found.values.insert(v.key.clone(), v);
                        }
                    }
                    Ok(_) => {
                        answered.extend(group);
                    }
                    Err(e) => found.unanswered = Some(e),
                }
            }
            missing.retain(|k| !found.values.contains_key(k));
        }
        if missing.iter().all(|k| answered.contains(k)) {
            found.unanswered = None;
        }
        found
    }

    /// A single-key meta read (`mg`): the home owner first, then the other
    /// zones while it misses.
    pub async fn meta_read<T: Transport>(
        &self,
        t: &T,
        key: &Bytes,
        cmd: &Command,
        lane: Lane,
    ) -> Result<Response, Error> {
        let mut last = Err(Error::Timeout);
        let deadline = self.deadline(lane, Kind::Read);
        for (zi, zone) in self.topology.zones.iter().enumerate() {
            let reply = t.call(zone.owner(key), cmd, lane, deadline).await;
            let hit = matches!(&reply, Ok(Response::Meta(m)) if m.code != MetaCode::Miss);
            if hit {
                if zi > 0 {
                    self.fallback_hit(t, zi, key, lane);
                }
                return reply;
            }
            if reply.is_ok() || last.is_err() {
                last = reply;
            }
        }
        last
    }

    /// A read missed at home and hit in zone `zone`: count it, and (read
    /// repair, realtime lane only) copy the item back to its home owner in
    /// the background, with flags, remaining TTL and CAS. The copy uses `add`
    /// semantics, so it never overwrites a newer home copy; when the
    /// background queue is full it is dropped and counted.
    fn fallback_hit<T: Transport>(&self, t: &T, zone: usize, key: &Bytes, lane: Lane) {
        self.zone_stats[zone]
            .fallback_hits
            .fetch_add(1, Ordering::Relaxed);
        if !self.topology.read_repair || lane == Lane::Batch {
            return;
        }
        let Ok(permit) = self.background.clone().try_acquire_owned() else {
            self.zone_stats[0]
                .replication_failures
                .fetch_add(1, Ordering::Relaxed);
            return;
        };
        let source = self.topology.zones[zone].owner(key).clone();
        let home = self.topology.zones[0].owner(key).clone();
        let deadline = self.deadline(lane, Kind::Write);
        let (t, key, stats) = (t.clone(), key.clone(), self.zone_stats.clone());
        tokio::spawn(async move {
            if let Some(Command::MetaSet { mut meta, data }) =
                read_item(&t, &source, &key, deadline).await
            {
                set_flag(&mut meta.flags, b'M', "E".into());
                meta.flags.mode = Some(b'E');
                let copy = Command::MetaSet { meta, data };
                if let Ok(Response::Meta(m)) = t.call(&home, &copy, Lane::Realtime, deadline).await
                {
                    if m.code == MetaCode::Header {
                        stats[zone].read_repairs.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            drop(permit);
        });
    }

    /// Sends `cmd` to the key's owner in every zone; answers once the write
    /// policy is met (with the home zone's reply when it has one), the rest
    /// finishing in the background.
    pub async fn fan_out<T: Transport>(
        &self,
        t: &T,
        key: &[u8],
        cmd: Command,
        lane: Lane,
    ) -> Result<Response, Error> {
        let zones = self.topology.zones.len();
        let needed = self.topology.write_policy.needed(zones);
        let deadline = self.deadline(lane, Kind::Write);
        let (tx, mut rx) = mpsc::channel(zones);
        match self.background.clone().try_acquire_owned() {
            // One task sends every copy and reports each reply, so the copies
            // the caller does not wait for still finish if it goes away.
            Ok(permit) => {
                let mut copies: FuturesUnordered<_> = self
                    .topology
                    .zones
                    .iter()
                    .enumerate()
                    .map(|(zi, zone)| {
                        let (t, node, cmd) = (t.clone(), zone.owner(key).clone(), cmd.clone());
                        async move { (zi, t.call(&node, &cmd, lane, deadline).await) }
                    })
                    .collect();
                let stats = self.zone_stats.clone();
                tokio::spawn(async move {
                    while let Some((zi, reply)) = copies.next().await {
                        // Counted here: the caller may have had its answer already.
                        if matches!(&reply, Err(e) if e.is_unanswered() || matches!(e, Error::Server(_)))
                        {
                            stats[zi]
                                .replication_failures
                                .fetch_add(1, Ordering::Relaxed);
                        }
                        let _ = tx.try_send((zi, reply));
                    }
                    drop(permit);
                });
            }
            Err(_) => {
                for (zi, stats) in self.zone_stats.iter().enumerate() {
                    stats.replication_failures.fetch_add(1, Ordering::Relaxed);
                    let _ = tx.try_send((zi, Err(Error::Busy)));
                }
                drop(tx);
            }
        }
        let (mut acks, mut failures, mut first_ack) = (0, 0, None);
        while let Some((zi, reply)) = rx.recv().await {
            match reply {
                // A node that answered (even NOT_FOUND, or a client error)
                // acknowledged; only silence and server errors do not.
                Ok(_) | Err(Error::Client(_)) => {
                    acks += 1;
                    if first_ack.is_none() || zi == 0 {
                        first_ack = Some(reply);
                    }
                }
                Err(e) => {
                    failures += 1;
                    tracing::debug!(zone = %self.topology.zones[zi].name, error = %e, "copy failed");
                }
            }
            if acks >= needed || zones - failures < needed {
                break;
            }
        }
        match first_ack {
            Some(r) if acks >= needed => r,
            _ => Err(Error::WritePolicy {
                policy: self.topology.write_policy.name(),
                acked: acks,
                zones,
            }),
        }
    }

    /// A conditional write: decided by the arbiter, then copied to the other zones.
    pub async fn arbitrate<T: Transport>(
        &self,
        t: &T,
        key: &Bytes,
        cmd: Command,
        is_delete: bool,
        lane: Lane,
    ) -> Result<Response, Error> {
        let deadline = self.deadline(lane, Kind::Write);
        let mut last = Err(Error::Connection("no zone reachable".into()));
        for &zi in &self.topology.arbiter_order {
            let arbiter = self.topology.zones[zi].owner(key).clone();
            let reply = t.call(&arbiter, &cmd, lane, deadline).await;
            match reply {
                Err(ref e) if e.is_unanswered() => {
                    last = reply;
                    continue;
                }
                Ok(ref r) if changed(r) && self.topology.zones.len() > 1 => {
                    let copy = if is_delete {
                        Some(Command::Delete {
                            key: key.clone(),
                            noreply: false,
                        })
                    } else {
                        read_item(t, &arbiter, key, deadline).await
                    };
                    if let Some(copy) = copy {
                        self.copy_to_others(t, key, zi, copy, lane).await;
                    }
                    return reply;
                }
                other => return other,
            }
        }
        last
    }

    async fn copy_to_others<T: Transport>(
        &self,
        t: &T,
        key: &[u8],
        done_zone: usize,
        copy: Command,
        lane: Lane,
    ) {
        let deadline = self.deadline(lane, Kind::Write);
        let calls = self
            .topology
            .zones
            .iter()
            .enumerate()
            .filter(|(zi, _)| *zi != done_zone)
            .map(|(zi, zone)| {
                let node = zone.owner(key);
                let copy = &copy;
                async move {
                    if t.call(node, copy, lane, deadline).await.is_err() {
                        self.zone_stats[zi]
                            .replication_failures
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        join_all(calls).await;
    }

    /// `flush_all` on every node of every zone.
    pub async fn flush_everywhere<T: Transport>(&self, t: &T, delay: i32) -> Result<(), Error> {
        let cmd = Command::FlushAll {
            delay,
            noreply: false,
        };
        let deadline = self.deadline(Lane::Realtime, Kind::Write);
        let nodes: Vec<&NodeConfig> = self.topology.nodes().collect();
        let replies = join_all(
            nodes
                .iter()
                .map(|n| t.call(n, &cmd, Lane::Realtime, deadline)),
        )
        .await;
        let failed = replies.iter().filter(|r| r.is_err()).count();
        if failed == 0 {
            Ok(())
        } else {
            Err(Error::Server(format!(
                "flush_all reached {} of {} nodes",
                nodes.len() - failed,
                nodes.len()
            )))
        }
    }
}

/// The item on `node` as an `ms` that recreates it elsewhere (same flags,
/// remaining TTL and CAS).
async fn read_item<T: Transport>(
    t: &T,
    node: &NodeConfig,
    key: &Bytes,
    deadline: Duration,
) -> Option<Command> {
    let mut flags = MetaFlags::default();
    for f in [b'v', b'f', b't', b'c'] {
        set_flag(&mut flags, f, String::new());
    }
    flags.value = true;
    let cmd = Command::MetaGet(Meta {
        key: key.clone(),
        flags,
    });
    let Ok(Response::Meta(m)) = t.call(node, &cmd, Lane::Realtime, deadline).await else {
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

/// The read of `keys` (with flags and CAS): `gets`, or `gats` when it
/// also sets a new expiry.
pub fn read_command(keys: Vec<Bytes>, touch: Option<i32>) -> Command {
    match touch {
        Some(exptime) => Command::Gat {
            exptime,
            keys,
            cas: true,
        },
        None => Command::Get { keys, cas: true },
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

/// Sets meta flag `flag` to `arg`, replacing any earlier one.
pub fn set_flag(f: &mut MetaFlags, flag: u8, arg: String) {
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
pub fn set_as_meta(key: &[u8], value: Bytes, flags: u32, exptime: i32, cas: u64) -> Command {
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

/// CAS values unique across the cluster, so that one write carries the same
/// CAS into every zone: microseconds since the epoch, tagged with the
/// writer's 8-bit tag, strictly increasing per writer.
#[derive(Debug)]
pub struct CasClock {
    last: AtomicU64,
    tag: u64,
}

impl CasClock {
    /// A clock for a writer tagged `tag` (its low 8 bits are used).
    pub fn new(tag: u64) -> CasClock {
        CasClock {
            last: AtomicU64::new(0),
            tag: tag & 0xff,
        }
    }

    /// The next CAS.
    pub fn next(&self) -> u64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let candidate = (now << 8) | self.tag;
        let mut prev = self.last.load(Ordering::Relaxed);
        loop {
            let next = candidate.max(prev + 256);
            match self
                .last
                .compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(p) => prev = p,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_clock_is_strictly_increasing_and_tagged() {
        let clock = CasClock::new(0x1ab);
        let mut prev = 0;
        for _ in 0..10_000 {
            let c = clock.next();
            assert!(c > prev);
            assert_eq!(c & 0xff, 0xab);
            prev = c;
        }
    }
}
