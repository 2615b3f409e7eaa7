//! Routing across zones, one implementation for the client's direct mode
//! and for a node routing what its clients send it. [`plan`] says which
//! route a command takes; [`Router::run`] takes it:
//! - reads (`read.rs`) go to the key's owner in the home zone, then to the
//!   other zones in fallback order on miss, error or deadline; multi-key
//!   reads send one request per owner and only the keys still missing to
//!   the next zone; a hit found in another zone is copied home (read
//!   repair, realtime only);
//! - plain writes (`write.rs`) fan out to the owner in every zone and are
//!   acknowledged per the write policy, the other copies finishing in the
//!   background; conditional writes are decided by one arbiter (the owner
//!   in the first config zone that answers) and the result is copied.
//!
//! How a call reaches a node is the [`Transport`]'s business: the client
//! uses its pools, a node also runs commands for itself without a hop, and
//! the tests use an in-memory cluster (`memory.rs`).

mod drain;
mod fence;
mod hedge;
mod hints;
mod membership;
#[cfg(test)]
mod memory;
mod plan;
mod read;
#[cfg(test)]
mod tests;
mod write;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Semaphore;
use zonecache_proto::{Command, MetaFlags, Response, TOO_LARGE_MESSAGE};

use crate::error::Error;
use crate::lane::Lane;
use crate::topology::{NodeConfig, Topology};

pub use drain::{read_weights, Drains};
pub use fence::{Fence, Grants, StallCount, ASK_EVERY, FENCE_WAIT, LEASE, SILENT, STOPPED};
pub use hedge::{HedgeStats, Hedges, BURST as HEDGE_BURST, WINDOW as HEDGE_WINDOW};
pub use hints::{HintStats, Hints};
pub use membership::{
    membership_lines, parse_membership, read_membership, same_zones, GROUP as MEMBERSHIP_GROUP,
};
pub use plan::{plan, Route};
pub use read::{read_command, Found};
pub use write::set_as_meta;

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

    /// Whether `node`'s port refuses connections right now: no process
    /// serves there, so a copy it missed cannot be read from it (a node
    /// marked down is not called, so its failed copy says nothing of that).
    fn refuses(&self, node: &NodeConfig) -> impl Future<Output = bool> + Send {
        let _ = node;
        std::future::ready(false)
    }

    /// If `node` is marked down, probes it now (within `deadline`) and
    /// puts it back in use when it answers: a caller that must reach it
    /// soon (to give it a write it missed) does not wait out the back-off.
    fn revive(&self, node: &NodeConfig, deadline: Duration) -> impl Future<Output = ()> + Send {
        let _ = (node, deadline);
        std::future::ready(())
    }
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
    /// Read repairs from this zone not made: the home node was down or
    /// catching up, the copy failed, or too many copies were in flight.
    pub read_repairs_skipped: AtomicU64,
}

/// What a call is, for its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Read,
    Write,
}

/// Routing state for one topology.
pub struct Router {
    pub topology: Topology,
    /// Shared with background copies, which count their own failures.
    pub zone_stats: Arc<Vec<ZoneStats>>,
    /// Bounds background copies; kept across reloads.
    background: Arc<Semaphore>,
    /// Stamps fanned-out writes; kept across reloads so CAS only grows.
    cas: Arc<CasClock>,
    /// Writes peers missed; kept across reloads.
    pub hints: Arc<Hints>,
    /// Read leases granted to nodes; kept across reloads.
    pub grants: Arc<Grants>,
    /// The node this router runs in (`None`: a client's).
    pub me: Option<String>,
    /// Zones' drain weights; kept across reloads.
    pub drains: Arc<Drains>,
    /// Hedged reads' learned delays and budget; kept across reloads.
    pub hedges: Arc<Hedges>,
}

impl Router {
    /// A router for `topology`, stamping writes with CAS values tagged `tag`.
    /// `stalls` counts the process's stalls: a node's router grants read
    /// leases (`fence.rs`); the client's in direct mode grants none and
    /// counts none (`Box::new(|| 0)`).
    pub fn new(topology: Topology, tag: u64, stalls: StallCount) -> Router {
        let hints = Arc::new(Hints::new(topology.hints_max_bytes));
        Router::with(
            topology,
            Arc::new(Semaphore::new(MAX_BACKGROUND)),
            Arc::new(CasClock::new(tag)),
            hints,
            Arc::new(Grants::new(stalls)),
        )
    }

    /// A router for a reloaded `topology` that keeps `previous`'s
    /// background bound and CAS clock.
    pub fn reloaded(topology: Topology, previous: &Router) -> Router {
        previous.hints.set_max_bytes(topology.hints_max_bytes);
        let mut router = Router::with(
            topology,
            previous.background.clone(),
            previous.cas.clone(),
            previous.hints.clone(),
            previous.grants.clone(),
        );
        router.me = previous.me.clone();
        router.drains = previous.drains.clone();
        router.hedges = previous.hedges.clone();
        // Counters only grow while the zones are the same ones.
        let zones = |r: &Router| -> Vec<String> {
            r.topology.zones.iter().map(|z| z.name.clone()).collect()
        };
        if zones(&router) == zones(previous) {
            router.zone_stats = previous.zone_stats.clone();
        }
        router
    }

    fn with(
        topology: Topology,
        background: Arc<Semaphore>,
        cas: Arc<CasClock>,
        hints: Arc<Hints>,
        grants: Arc<Grants>,
    ) -> Router {
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
            background,
            cas,
            hints,
            grants,
            me: None,
            drains: Arc::default(),
            hedges: Arc::default(),
        }
    }

    /// The clock that stamps this router's writes (a node's executor
    /// shares it, so the versions it decides are comparable).
    pub fn clock(&self) -> Arc<CasClock> {
        self.cas.clone()
    }

    /// Gives a meta command the next cluster-wide version (`E`).
    fn stamp(&self, flags: &mut MetaFlags) {
        flags
            .set(b'E', self.cas.next().to_string())
            .expect("a number is a valid E");
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

    /// Runs `cmd` on the route [`plan`] gives it. The command must want a
    /// reply (no `noreply`, no meta `q`): whoever serves the caller applies
    /// those to the reply it gets.
    pub async fn run<T: Transport>(
        &self,
        t: &T,
        cmd: Command,
        lane: Lane,
    ) -> Result<Response, Error> {
        match plan(&cmd) {
            Route::MultiRead => {
                let (keys, touch, cas) = cmd
                    .as_multi_read()
                    .expect("plan gives MultiRead to get and gat only");
                let found = self.multi_get(t, keys, touch, lane).await;
                // In the order asked, each key as often as asked.
                let values = keys
                    .iter()
                    .filter_map(|k| found.values.get(k).cloned())
                    .map(|mut v| {
                        if !cas {
                            v.cas = None;
                        }
                        v
                    })
                    .collect();
                Ok(Response::Values(values))
            }
            Route::MetaRead => self.meta_read(t, &key_of(&cmd), &cmd, lane).await,
            Route::FanOut { stamp } => {
                let key = key_of(&cmd);
                // Stock memcached (a one-zone cluster) may not know `E`; with
                // one zone there is no other copy to agree with anyway.
                let versioned = stamp && self.topology.zones.len() > 1;
                if let Command::TooLarge { .. } = cmd {
                    // Rejected: drop the old value in every zone, then say
                    // why (or that the cluster could not drop it everywhere).
                    let message = Bytes::from_static(TOO_LARGE_MESSAGE.as_bytes());
                    return self
                        .delete_everywhere(t, &key, versioned, lane)
                        .await
                        .map(|_| Response::ServerError(message));
                }
                if !versioned {
                    return self.fan_out(t, &key, cmd, lane).await;
                }
                match cmd {
                    Command::Delete { .. } => self.delete_everywhere(t, &key, true, lane).await,
                    Command::MetaDelete(mut meta) => {
                        self.stamp(&mut meta.flags);
                        self.fan_out(t, &key, Command::MetaDelete(meta), lane).await
                    }
                    Command::Store(s) => {
                        let ms = set_as_meta(&s.key, s.data, s.flags, s.exptime, self.cas.next());
                        self.fan_out(t, &key, ms, lane)
                            .await
                            .map(|_| Response::Stored)
                    }
                    Command::MetaSet { mut meta, data } => {
                        self.stamp(&mut meta.flags);
                        self.fan_out(t, &key, Command::MetaSet { meta, data }, lane)
                            .await
                    }
                    _ => unreachable!("plan stamps set, ms, delete and md only"),
                }
            }
            Route::Arbitrate { deletes } => {
                let key = key_of(&cmd);
                self.arbitrate(t, &key, cmd, deletes, lane).await
            }
            Route::Everywhere => {
                let Command::FlushAll { delay, .. } = cmd else {
                    unreachable!("plan sends flush_all everywhere only")
                };
                self.flush_everywhere(t, delay).await.map(|()| Response::Ok)
            }
            Route::Lease => {
                let Command::PeerLease { node, fenced } = cmd else {
                    unreachable!("plan gives Lease to zc_lease only")
                };
                let id = String::from_utf8_lossy(&node);
                // Answered promptly: a node that hears nothing for a while
                // stops requiring this router's lease.
                let deadline = Duration::from_millis(20);
                let caught_up = tokio::time::timeout(
                    Duration::from_millis(30),
                    self.hints.replay(t, &id, deadline),
                )
                .await
                .unwrap_or(false);
                self.grants.asked(&id, fenced, caught_up);
                if caught_up {
                    Ok(Response::Ok)
                } else {
                    Err(Error::Server(format!(
                        "no lease: writes for {id} not delivered yet; ask again"
                    )))
                }
            }
            Route::Drain => {
                let Command::PeerDrain { zone, percent } = cmd else {
                    unreachable!("plan gives Drain to zc_drain only")
                };
                let zone = String::from_utf8_lossy(&zone);
                if !self.topology.zones.iter().any(|z| z.name == zone) {
                    return Err(Error::Client(format!("no zone {zone} in this cluster")));
                }
                self.drains.set(&zone, percent);
                Ok(Response::Ok)
            }
            Route::Asked => {
                let Command::PeerAsked { node } = cmd else {
                    unreachable!("plan gives Asked to zc_asked only")
                };
                let ago = self.grants.asked_ago(&String::from_utf8_lossy(&node));
                Ok(Response::Number(ago.as_millis() as u64))
            }
            Route::Local => Err(Error::Protocol(
                "a local command has no route; the node that received it answers it".into(),
            )),
        }
    }
}

/// The key of a single-key command.
fn key_of(cmd: &Command) -> Bytes {
    match cmd {
        Command::Store(s) => s.key.clone(),
        Command::Arith { key, .. }
        | Command::Touch { key, .. }
        | Command::Delete { key, .. }
        | Command::TooLarge { key, .. } => key.clone(),
        Command::MetaSet { meta, .. }
        | Command::MetaArith(meta)
        | Command::MetaDelete(meta)
        | Command::MetaGet(meta) => meta.key.clone(),
        _ => Bytes::new(),
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
