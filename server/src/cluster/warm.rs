//! Warm-up: a node that starts empty in a multi-zone cluster (new,
//! replaced, restarted) copies the keys it owns from another zone instead
//! of waiting for reads to refill it, as EVCache's cache warmer does.
//!
//! The keys a node owns are a *range*: the keys its zone's ring gives it.
//! Each node of a source zone holds the part of the range that it owns in
//! its own ring, so the range is copied from every node of one source zone
//! at once, each a stream of `zc_dump` pages on the batch lane resuming at
//! the last page's cursor. A source that stays unreachable or refuses for
//! [`GIVE_UP`] has its part copied from yet another zone (the same filter
//! plus "owned by that source in its zone"); a part no zone is left for is
//! *exhausted*. Copies are versioned writes, so a newer write that arrived
//! meanwhile is never overwritten. The node is *ready* once 95 % of its
//! range is copied or exhausted; it keeps copying the rest.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::task::JoinSet;
use zonecache_client::route::Transport;
use zonecache_client::{Error, Lane};
use zonecache_proto::{Command, DumpItem, Response};

use super::topology::NodeConfig;
use super::Cluster;
use crate::exec::Executor;
use crate::store::{DeleteRequest, StoreKind, StoreRequest, Version, REALTIME_MAXDELTA};

/// Items asked for per page, at most; a slow pace asks for fewer, so pages
/// still come about ten times a second.
const PAGE: u32 = 512;
/// How long one page may take.
const PAGE_DEADLINE: Duration = Duration::from_secs(2);
/// A source failing (unreachable, refusing, catching up) this long is
/// given up on and its part copied from another zone.
pub const GIVE_UP: Duration = Duration::from_secs(5);
/// Pause after a failed page, doubling up to [`MAX_BACKOFF`].
const BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_millis(800);
/// The share of the range copied at which the node says it is ready.
pub const READY_PPM: u64 = 950_000;

/// Where a node's warm-up is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum WarmState {
    /// Not warming: a single-zone cluster, or warm-up turned off.
    Off = 0,
    /// Copying; not ready yet.
    Warming = 1,
    /// ≥ 95 % copied (or exhausted); still copying the rest.
    Ready = 2,
    /// Every part copied or exhausted.
    Done = 3,
}

impl WarmState {
    /// The word `stats` and `zonecache status` show.
    pub fn name(self) -> &'static str {
        match self {
            WarmState::Off => "off",
            WarmState::Warming => "warming",
            WarmState::Ready => "ready",
            WarmState::Done => "done",
        }
    }
}

/// A warm-up's progress and figures, read by `stats` while it runs.
pub struct Warm {
    state: AtomicU8,
    /// Millionths of the range copied or exhausted.
    done_ppm: AtomicU64,
    keys: AtomicU64,
    tombstones: AtomicU64,
    bytes: AtomicU64,
    /// Copies that found a newer write already there (kept it).
    superseded: AtomicU64,
    /// Sources given up on (their part went to another zone).
    sources_failed: AtomicU64,
    /// Millionths of the range no reachable zone could give.
    exhausted_ppm: AtomicU64,
    started: Instant,
    /// Milliseconds from start to ready, and to done (0 = not yet).
    ready_ms: AtomicU64,
    done_ms: AtomicU64,
    /// Keys per second (0 = unlimited).
    rate: AtomicU32,
}

impl Warm {
    /// A warm-up that is `warming` from now (not ready until it has
    /// copied enough), or `off`.
    pub fn new(warming: bool, rate: u32) -> Arc<Warm> {
        let state = if warming {
            WarmState::Warming
        } else {
            WarmState::Off
        };
        Arc::new(Warm {
            state: AtomicU8::new(state as u8),
            done_ppm: AtomicU64::new(0),
            keys: AtomicU64::new(0),
            tombstones: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            superseded: AtomicU64::new(0),
            sources_failed: AtomicU64::new(0),
            exhausted_ppm: AtomicU64::new(0),
            started: Instant::now(),
            ready_ms: AtomicU64::new(0),
            done_ms: AtomicU64::new(0),
            rate: AtomicU32::new(rate),
        })
    }

    /// The state now.
    pub fn state(&self) -> WarmState {
        match self.state.load(Ordering::Acquire) {
            1 => WarmState::Warming,
            2 => WarmState::Ready,
            3 => WarmState::Done,
            _ => WarmState::Off,
        }
    }

    /// Whether the node may report itself ready (not warming).
    pub fn ready(&self) -> bool {
        self.state() != WarmState::Warming
    }

    fn set_state(&self, state: WarmState) {
        self.state.store(state as u8, Ordering::Release);
    }

    fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis().max(1) as u64
    }

    /// Accounts `ppm` more of the range as copied (or exhausted) and
    /// becomes ready at [`READY_PPM`].
    fn advance(&self, ppm: i64) {
        let now = if ppm >= 0 {
            self.done_ppm.fetch_add(ppm as u64, Ordering::AcqRel) + ppm as u64
        } else {
            self.done_ppm
                .fetch_sub(ppm.unsigned_abs(), Ordering::AcqRel)
                - ppm.unsigned_abs()
        };
        if now >= READY_PPM && self.state() == WarmState::Warming {
            self.ready_ms.store(self.elapsed_ms(), Ordering::Relaxed);
            self.set_state(WarmState::Ready);
            tracing::info!(
                keys = self.keys.load(Ordering::Relaxed),
                ms = self.ready_ms.load(Ordering::Relaxed),
                "warm-up: ready (95 % of this node's keys copied)"
            );
        }
    }

    /// The `stats` lines.
    pub fn stats(&self) -> Vec<(String, String)> {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed).to_string();
        let ppm = self.done_ppm.load(Ordering::Relaxed).min(1_000_000);
        let seconds = |ms: u64| format!("{:.3}", ms as f64 / 1000.0);
        vec![
            ("warm_state".into(), self.state().name().into()),
            ("warm_progress".into(), format!("{:.1}", ppm as f64 / 1e4)),
            ("warm_keys".into(), load(&self.keys)),
            ("warm_tombstones".into(), load(&self.tombstones)),
            ("warm_bytes".into(), load(&self.bytes)),
            ("warm_superseded".into(), load(&self.superseded)),
            ("warm_sources_failed".into(), load(&self.sources_failed)),
            (
                "warm_exhausted".into(),
                format!(
                    "{:.1}",
                    self.exhausted_ppm.load(Ordering::Relaxed) as f64 / 1e4
                ),
            ),
            (
                "warm_rate".into(),
                self.rate.load(Ordering::Relaxed).to_string(),
            ),
            (
                "warm_ready_seconds".into(),
                seconds(self.ready_ms.load(Ordering::Relaxed)),
            ),
            (
                "warm_done_seconds".into(),
                seconds(self.done_ms.load(Ordering::Relaxed)),
            ),
        ]
    }
}

/// One part of the node's range and where it is being copied from:
/// the keys every `(zone, node)` of `owners` owns in that zone's ring.
#[derive(Debug, Clone)]
struct Part {
    owners: Vec<(String, String)>,
    /// The share of the whole range, in millionths.
    weight: f64,
}

/// Spaces pages so the copy takes at most `rate` keys per second.
struct Pace {
    rate: u32,
    next: Mutex<Instant>,
}

impl Pace {
    async fn take(&self, keys: u32) {
        if self.rate == 0 {
            return;
        }
        let due = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let due = (*next).max(now);
            *next = due + Duration::from_secs_f64(f64::from(keys) / f64::from(self.rate));
            due
        };
        tokio::time::sleep_until(due.into()).await;
    }
}

/// A running warm-up: the cluster to reach sources through, the store to
/// copy into, and the pace shared by every source's stream.
struct Warmer {
    cluster: Arc<Cluster>,
    exec: Arc<Executor>,
    warm: Arc<Warm>,
    pace: Pace,
}

/// Copies in flight: each ends with its part, its source and how it ended.
type Copies = JoinSet<(Part, NodeConfig, Copied)>;

/// Rounds of copying again the parts a flush wiped before giving up.
const MAX_ROUNDS: usize = 3;

/// How copying one part from one source ended.
enum Copied {
    /// The source's walk is complete; it started (or last restarted)
    /// when the store had seen `since` flushes.
    Whole { since: u64 },
    /// The source failed for [`GIVE_UP`]; `ppm` had been accounted.
    GaveUp { ppm: i64 },
}

impl Cluster {
    /// Warms this node into `exec`'s store (run once, at start, when the
    /// warm-up is `warming`).
    pub async fn warm_up(self: Arc<Self>, exec: Arc<Executor>) {
        let warm = self.warm.clone();
        if warm.state() != WarmState::Warming {
            return;
        }
        let view = self.current();
        tracing::info!(
            rate = warm.rate.load(Ordering::Relaxed),
            "warm-up: copying this node's keys from another zone"
        );
        let root = Part {
            owners: vec![(
                view.router.topology.zones[0].name.clone(),
                view.me.id.clone(),
            )],
            weight: 1e6,
        };
        let warmer = Arc::new(Warmer {
            pace: Pace {
                rate: warm.rate.load(Ordering::Relaxed),
                next: Mutex::new(Instant::now()),
            },
            cluster: self,
            exec,
            warm: warm.clone(),
        });
        let mut tasks = JoinSet::new();
        warmer.spread(root, &mut tasks);
        // Parts copied whole, kept until the end: a flush after one was
        // copied (a lease cold flush) wipes it, so it is copied again.
        let mut whole: Vec<(Part, NodeConfig, u64)> = Vec::new();
        for _round in 0..MAX_ROUNDS {
            while let Some(joined) = tasks.join_next().await {
                let Ok((part, source, copied)) = joined else {
                    continue;
                };
                match copied {
                    Copied::Whole { since } => whole.push((part, source, since)),
                    Copied::GaveUp { ppm } => {
                        warm.sources_failed.fetch_add(1, Ordering::Relaxed);
                        warm.advance(-ppm);
                        tracing::warn!(source = %source.id, "warm-up: source given up on; copying its part from another zone");
                        warmer.spread(part, &mut tasks);
                    }
                }
            }
            let now = warmer.exec.storage.flushes();
            let (wiped, kept): (Vec<_>, Vec<_>) =
                whole.into_iter().partition(|(_, _, since)| *since != now);
            whole = kept;
            if wiped.is_empty() {
                break;
            }
            tracing::info!(
                parts = wiped.len(),
                "warm-up: flushed meanwhile; copying those parts again"
            );
            for (part, source, _) in wiped {
                warm.advance(-(part.weight as i64));
                warmer.spawn_copy(source, part, &mut tasks);
            }
        }
        warm.done_ms.store(warm.elapsed_ms(), Ordering::Relaxed);
        // Whatever is not accounted by now was exhausted.
        let left = 1_000_000u64.saturating_sub(warm.done_ppm.load(Ordering::Acquire));
        warm.advance(left as i64);
        warm.set_state(WarmState::Done);
        tracing::info!(
            keys = warm.keys.load(Ordering::Relaxed),
            seconds = warm.done_ms.load(Ordering::Relaxed) as f64 / 1000.0,
            "warm-up: done"
        );
    }
}

impl Warmer {
    /// Starts copying `part` from every node of the first zone not yet in
    /// its owners; with no zone left, accounts it as exhausted.
    fn spread(self: &Arc<Self>, part: Part, tasks: &mut Copies) {
        let view = self.cluster.current();
        let drains = &view.router.drains;
        let mut zones: Vec<_> = view
            .router
            .topology
            .zones
            .iter()
            .filter(|z| !part.owners.iter().any(|(name, _)| *name == z.name))
            .collect();
        // Least drained first: a drained zone is one the operator is moving
        // load off.
        zones.sort_by_key(|z| drains.get(&z.name));
        let Some(zone) = zones.first() else {
            self.warm
                .exhausted_ppm
                .fetch_add(part.weight as u64, Ordering::Relaxed);
            self.warm.advance(part.weight as i64);
            tracing::warn!(owners = ?part.owners, "warm-up: no zone left to copy this part from");
            return;
        };
        let share = part.weight / zone.nodes.len() as f64;
        for node in &zone.nodes {
            let mut owners = part.owners.clone();
            owners.push((zone.name.clone(), node.id.clone()));
            let sub = Part {
                owners,
                weight: share,
            };
            self.spawn_copy(node.clone(), sub, tasks);
        }
    }

    /// Copies `part` from `source` on a task of its own.
    fn spawn_copy(self: &Arc<Self>, source: NodeConfig, part: Part, tasks: &mut Copies) {
        let warmer = self.clone();
        tasks.spawn(async move {
            let copied = warmer.copy_from(&source, &part).await;
            // When given up on, `part` goes on to the next zone.
            (part, source, copied)
        });
    }

    /// Copies `part` from `source`, page by page, until its walk is done
    /// or it has failed for [`GIVE_UP`].
    async fn copy_from(&self, source: &NodeConfig, part: &Part) -> Copied {
        let owners: Vec<(Bytes, Bytes)> = part
            .owners
            .iter()
            .map(|(z, n)| (Bytes::from(z.clone()), Bytes::from(n.clone())))
            .collect();
        let mut cursor = 0;
        let mut accounted = 0i64;
        let mut since = self.exec.storage.flushes();
        let mut failing_since: Option<Instant> = None;
        let mut backoff = BACKOFF;
        let count = match self.pace.rate {
            0 => PAGE,
            rate => (rate / 10).clamp(16, PAGE),
        };
        loop {
            self.pace.take(count).await;
            let flushes = self.exec.storage.flushes();
            let cmd = Command::PeerDump {
                cursor,
                count,
                owners: owners.clone(),
            };
            let view = self.cluster.current();
            let reply = view
                .peers
                .call(source, &cmd, Lane::Batch, PAGE_DEADLINE)
                .await;
            let page = match reply {
                Ok(Response::Dump(page)) => page,
                Err(e) if e.is_shed() => {
                    // Busy, not failing: come back later.
                    tokio::time::sleep(backoff).await;
                    continue;
                }
                other => {
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= GIVE_UP {
                        return Copied::GaveUp { ppm: accounted };
                    }
                    if let Err(Error::UnknownCommand) = other {
                        // A node that cannot dump (stock memcached).
                        return Copied::GaveUp { ppm: accounted };
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            (failing_since, backoff) = (None, BACKOFF);
            if self.exec.storage.flushes() != flushes {
                // This node was flushed (flush_all, or a cold flush after
                // it missed writes) while the page travelled: what it
                // copied so far is gone, and the page may predate the flush.
                tracing::info!(source = %source.id, "warm-up: flushed meanwhile; copying this part again");
                self.warm.advance(-accounted);
                (cursor, accounted) = (0, 0);
                since = self.exec.storage.flushes();
                continue;
            }
            self.apply(&page.items);
            let reached = (part.weight * f64::from(page.progress_ppm) / 1e6) as i64;
            let target = match page.next {
                Some(_) => reached.min(part.weight as i64),
                None => part.weight as i64,
            };
            self.warm.advance(target - accounted);
            accounted = target;
            match page.next {
                Some(next) => cursor = next,
                None => return Copied::Whole { since },
            }
        }
    }

    /// Writes a page's items into this node's store, each at its version,
    /// so a newer write already here stays.
    fn apply(&self, items: &[DumpItem]) {
        let storage = &self.exec.storage;
        let warm = &self.warm;
        for item in items {
            if item.deleted {
                let req = DeleteRequest {
                    version: Version::Newer(item.version),
                    ..DeleteRequest::default()
                };
                storage.delete(&item.key, &req);
                warm.tombstones.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let exptime = match item.ttl {
                t if t < 0 => 0,
                t if t <= REALTIME_MAXDELTA => t as i32,
                t => (storage.clock().unix_now() + t).min(i64::from(i32::MAX)) as i32,
            };
            let mut req =
                StoreRequest::new(StoreKind::Set, &item.key, &item.data, item.flags, exptime);
            req.version = Version::Newer(item.version);
            req.key_binary = item.key_binary;
            let outcome = storage.store(&req);
            if outcome.cas != item.version {
                warm.superseded.fetch_add(1, Ordering::Relaxed);
            } else {
                warm.keys.fetch_add(1, Ordering::Relaxed);
                warm.bytes
                    .fetch_add((item.key.len() + item.data.len()) as u64, Ordering::Relaxed);
            }
        }
    }
}
