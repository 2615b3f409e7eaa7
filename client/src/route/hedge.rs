//! Hedged reads. A realtime read whose home owner has not answered within
//! a delay learned from that peer's recent answers (its p99 over the last
//! [`WINDOW`] answers, never below the configured floor) is also searched
//! for in the next zones, as `read.rs` searches them on a miss; the first
//! answer that settles a key wins. Without hedging, a hung owner costs
//! every read in flight its whole deadline until the owner is marked down.
//! Hedges spend a budget that reads to the home zone earn, so a slow
//! cluster is never sent twice its reads: at most `hedge_percent` of them,
//! plus a burst of [`BURST`] (the reads in flight when a node hangs).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use futures::future::Either;
use zonecache_proto::{Command, Response};

use super::read::{miss_reply, Boxed, MetaSearch, Search};
use super::{Kind, Router, Transport};
use crate::error::Error;
use crate::lane::Lane;
use crate::latency::BOUNDS_US;
use crate::topology::NodeConfig;

/// Answers per peer a learned delay is computed from.
pub const WINDOW: u32 = 500;

/// Hedges that may be sent at once beyond the earned share.
pub const BURST: u64 = 100;

/// Counters for `stats zones` and the client's stats.
#[derive(Debug, Default)]
pub struct HedgeStats {
    /// Hedges sent.
    pub sent: AtomicU64,
    /// Hedges whose answer settled a key before the home owner answered.
    pub won: AtomicU64,
    /// Hedges not sent because the budget was spent.
    pub denied: AtomicU64,
}

/// The learned delays and the budget of one router (kept across reloads).
#[derive(Debug)]
pub struct Hedges {
    state: Mutex<State>,
    pub stats: HedgeStats,
}

#[derive(Debug)]
struct State {
    peers: HashMap<String, Window>,
    /// Hundredths of the hedges that may be sent now.
    budget: u64,
}

/// One peer's answers since its delay was last learned.
#[derive(Debug, Default)]
struct Window {
    counts: [u32; BOUNDS_US.len() + 1],
    answers: u32,
    /// The p99 of the last full window.
    p99: Option<Duration>,
}

impl Default for Hedges {
    fn default() -> Self {
        Hedges {
            state: Mutex::new(State {
                peers: HashMap::new(),
                budget: BURST * 100,
            }),
            stats: HedgeStats::default(),
        }
    }
}

impl Hedges {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long to wait for `node` before hedging: its learned p99, or a
    /// quarter of `deadline` until it has answered a window's worth; never
    /// less than `floor`.
    pub fn delay(&self, node: &str, floor: Duration, deadline: Duration) -> Duration {
        let learned = self.state().peers.get(node).and_then(|w| w.p99);
        learned.unwrap_or(deadline / 4).max(floor)
    }

    /// `node` answered a home-zone read in `took`; the read earns
    /// `percent` % of a hedge.
    pub fn answered(&self, node: &str, took: Duration, percent: u32) {
        let mut s = self.state();
        s.budget = (s.budget + u64::from(percent)).min(BURST * 100);
        let window = match s.peers.get_mut(node) {
            Some(w) => w,
            None => s.peers.entry(node.to_string()).or_default(),
        };
        let us = took.as_micros().min(u128::from(u64::MAX)) as u64;
        window.counts[BOUNDS_US.partition_point(|&b| b < us)] += 1;
        window.answers += 1;
        if window.answers >= WINDOW {
            window.p99 = Some(p99(&window.counts, window.answers));
            window.counts = Default::default();
            window.answers = 0;
        }
    }

    /// Spends one hedge if the budget allows (counted either way).
    pub fn take(&self) -> bool {
        let granted = {
            let mut s = self.state();
            let granted = s.budget >= 100;
            if granted {
                s.budget -= 100;
            }
            granted
        };
        let counter = match granted {
            true => &self.stats.sent,
            false => &self.stats.denied,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        granted
    }
}

/// What one owner's share of a multi-key read came back with.
pub(super) struct GroupReply {
    /// The owner's answer; `None` when a hedge settled every key first (the
    /// owner's call then finishes in the background, for its health).
    pub(super) owner: Option<Result<Response, Error>>,
    /// The hedge's search of the later zones, when one was sent and waited for.
    pub(super) hedge: Option<Search>,
}

impl Router {
    /// Whether a read of zone `zi`'s `node` on `lane` is hedged: realtime
    /// reads to a home owner that is another process, hedging on.
    pub(super) fn hedges_reads_of(&self, zi: usize, node: &NodeConfig, lane: Lane) -> bool {
        zi == 0
            && lane == Lane::Realtime
            && self.topology.zones.len() > 1
            && self.topology.hedge_percent > 0
            && self.me.as_deref() != Some(node.id.as_str())
            && !self.hints.is_behind(node)
    }

    /// The call of `cmd` to the home owner `node`, owned (it may be left to
    /// finish in the background); an answer teaches the node's hedge delay
    /// and earns hedge budget.
    fn owner_call<T: Transport>(
        &self,
        t: &T,
        node: &NodeConfig,
        cmd: Command,
    ) -> Boxed<'static, Result<Response, Error>> {
        let lane = Lane::Realtime;
        let deadline = self.deadline(lane, Kind::Read);
        let (t, node, hedges) = (t.clone(), node.clone(), self.hedges.clone());
        let percent = self.topology.hedge_percent;
        Box::pin(async move {
            let started = tokio::time::Instant::now(); // paused in tests
            let reply = t.call(&node, &cmd, lane, deadline).await;
            if reply.is_ok() {
                hedges.answered(&node.id, started.elapsed(), percent);
            }
            reply
        })
    }

    /// How long a read waits for the home owner `node` before it is hedged.
    fn hedge_delay(&self, node: &NodeConfig) -> Duration {
        let deadline = self.deadline(Lane::Realtime, Kind::Read);
        let floor = self.topology.hedge_min_delay;
        self.hedges.delay(&node.id, floor, deadline)
    }

    /// Reads `group` from `node`, the home owner; when it has not answered
    /// within its learned delay (and the budget allows), also searches the
    /// other zones for the group. The first answer that settles a key wins;
    /// keys the hedge did not find wait for the owner (within its deadline).
    pub(super) async fn hedged_call<T: Transport>(
        &self,
        t: &T,
        node: &NodeConfig,
        cmd: Command,
        group: &[Bytes],
        touch: Option<i32>,
    ) -> GroupReply {
        let lane = Lane::Realtime;
        let mut owner_call = self.owner_call(t, node, cmd);
        let delay = self.hedge_delay(node);
        if let Ok(reply) = tokio::time::timeout(delay, &mut owner_call).await {
            return GroupReply {
                owner: Some(reply),
                hedge: None,
            };
        }
        if !self.hedges.take() {
            return GroupReply {
                owner: Some(owner_call.await),
                hedge: None,
            };
        }
        let hedge: Boxed<'_, Search> = Box::pin(async move {
            let mut search = Search::new(group);
            self.search_from(t, 1, touch, lane, &mut search).await;
            search
        });
        match futures::future::select(owner_call, hedge).await {
            Either::Left((reply, hedge)) => {
                // The owner answered first: the hedge is dropped (its calls
                // cancelled), unless the owner failed and the hedge is the
                // fallback its keys need anyway.
                let hedge = match reply {
                    Ok(_) => None,
                    Err(_) => Some(hedge.await),
                };
                GroupReply {
                    owner: Some(reply),
                    hedge,
                }
            }
            Either::Right((hedge, owner_call)) => {
                if group.iter().any(|k| hedge.decided(k)) {
                    self.hedges.stats.won.fetch_add(1, Ordering::Relaxed);
                }
                if group.iter().all(|k| hedge.decided(k)) {
                    // Every key settled: the owner's call finishes unwatched,
                    // so a hung owner still times out and is marked down.
                    tokio::spawn(owner_call);
                    return GroupReply {
                        owner: None,
                        hedge: Some(hedge),
                    };
                }
                GroupReply {
                    owner: Some(owner_call.await),
                    hedge: Some(hedge),
                }
            }
        }
    }

    /// `mg` to the home owner `home`, hedged: `Ok` with the read's answer
    /// when a hedge took part, `Err` with the owner's own answer (the read
    /// goes on as unhedged) when it answered within its delay, or the
    /// budget was spent, or it missed before the hedge found anything.
    pub(super) async fn hedged_meta_read<T: Transport>(
        &self,
        t: &T,
        home: &NodeConfig,
        key: &Bytes,
        cmd: &Command,
    ) -> Result<Result<Response, Error>, Result<Response, Error>> {
        let lane = Lane::Realtime;
        let mut owner_call = self.owner_call(t, home, cmd.clone());
        let delay = self.hedge_delay(home);
        if let Ok(reply) = tokio::time::timeout(delay, &mut owner_call).await {
            return Err(reply);
        }
        if !self.hedges.take() {
            return Err(owner_call.await);
        }
        let hedge = Box::pin(self.meta_search(t, key, cmd, lane, 1));
        let settled = |search: MetaSearch, owner: Option<Result<Response, Error>>| match (
            search.hit, owner,
        ) {
            (Some(hit), _) => hit,
            (None, _) if search.deleted => Ok(miss_reply(cmd)),
            (None, Some(Ok(reply))) => Ok(reply),
            (None, _) if search.answered => Ok(miss_reply(cmd)),
            (None, Some(Err(e))) => Err(search.error.unwrap_or(e)),
            (None, None) => Err(search.error.unwrap_or(Error::Timeout)),
        };
        match futures::future::select(owner_call, hedge).await {
            Either::Left((Ok(reply), _)) => Err(Ok(reply)),
            Either::Left((Err(e), hedge)) => Ok(settled(hedge.await, Some(Err(e)))),
            Either::Right((search, owner_call)) => {
                if search.hit.is_some() || search.deleted {
                    self.hedges.stats.won.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(owner_call);
                    return Ok(settled(search, None));
                }
                Ok(settled(search, Some(owner_call.await)))
            }
        }
    }
}

/// The upper bound of the bucket holding the 99th percentile of `answers`
/// (the last bucket, beyond every bound, reads as the largest bound).
fn p99(counts: &[u32], answers: u32) -> Duration {
    let rank = (u64::from(answers) * 99).div_ceil(100);
    let mut seen = 0;
    for (i, n) in counts.iter().enumerate() {
        seen += u64::from(*n);
        if seen >= rank {
            let us = BOUNDS_US.get(i).or(BOUNDS_US.last()).copied();
            return Duration::from_micros(us.unwrap_or(0));
        }
    }
    Duration::from_micros(BOUNDS_US[BOUNDS_US.len() - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_delay_is_learned_per_peer_from_a_full_window() {
        let h = Hedges::default();
        let deadline = 20 * MS;
        assert_eq!(h.delay("a1", MS, deadline), 5 * MS, "a quarter at first");
        for i in 0..WINDOW {
            // 1 % of the answers are slow: the p99 is the fast ones' bucket.
            let took = if i % 100 == 0 { 8 * MS } else { 3 * MS };
            h.answered("a1", took, 5);
        }
        assert_eq!(h.delay("a1", MS, deadline), 3 * MS);
        assert_eq!(h.delay("a2", MS, deadline), 5 * MS, "another peer");
        for _ in 0..WINDOW {
            h.answered("a1", Duration::from_micros(90), 5);
        }
        assert_eq!(h.delay("a1", MS, deadline), MS, "never below the floor");
        assert_eq!(
            h.delay("a1", Duration::from_micros(50), deadline),
            Duration::from_micros(100)
        );
    }

    #[test]
    fn hedges_are_a_share_of_the_reads_after_the_burst() {
        let h = Hedges::default();
        let mut sent = 0;
        for _ in 0..10_000 {
            h.answered("a1", MS, 5);
            sent += u64::from(h.take());
        }
        // The burst, then one in twenty.
        assert!((595..=601).contains(&sent), "{sent}");
        assert_eq!(h.stats.sent.load(Ordering::Relaxed), sent);
        assert_eq!(h.stats.denied.load(Ordering::Relaxed), 10_000 - sent);
    }
}
