//! Read leases, the reader's side: why this node may serve reads from its
//! own store and decide conditional writes. It asks every peer for a lease
//! every few milliseconds (`zc_lease`); a peer grants one only when it has
//! given this node every write it missed, and acknowledges a write this
//! node missed only after its last lease here ran out (the writer's side is
//! the client crate's `route/fence.rs`). So while every peer's lease holds,
//! this node has every acknowledged write; otherwise its reads go to other
//! zones and peers asking it hear `SERVER_ERROR`.
//!
//! A peer that falls silent (hung, or dead: its port refuses) acknowledges
//! nothing, so its lease stops being required — but only if it still held
//! when the peer fell silent: a lease that ran out first may mean the peer
//! held writes for this node. Such a peer found dead may have died with
//! them, so this node flushes itself when that peer grants again.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zonecache_client::route::LEASE;

use super::stalls::Stalls;

/// A peer that has not answered for this long, while its lease still held,
/// is no longer required: it acknowledges nothing while silent, and once it
/// runs again it knows it stalled and fences nobody until asked again.
pub const SILENT: Duration = Duration::from_millis(100);

/// How a lease request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Granted,
    /// The peer holds writes for this node not delivered yet.
    Behind,
    /// Nobody listens at the peer's port.
    Refused,
    /// No answer in time.
    Silent,
}

/// One peer's lease, as this node sees it.
#[derive(Debug, Clone, Copy)]
enum Peer {
    /// Not granted since this node started.
    New,
    /// Granted until `until`; the peer last answered at `answered`.
    Leased { until: Instant, answered: Instant },
    /// Granted before this node's last stall: it must grant again.
    Stale,
    /// Found dead while its lease held (or before it ever granted one).
    Absent,
    /// Found dead after its lease ran out: flush before trusting it again.
    Lost,
}

impl Peer {
    /// Until when this peer lets this node serve (`None`: for as long as
    /// nothing changes).
    fn lets_serve_until(self, never: Instant) -> Option<Instant> {
        match self {
            Peer::Absent => None,
            // Silent from `answered + SILENT` on, and the lease holds until
            // then: not required any more.
            Peer::Leased { until, answered } if until >= answered + SILENT => None,
            Peer::Leased { until, .. } => Some(until),
            Peer::New | Peer::Stale | Peer::Lost => Some(never),
        }
    }
}

struct State {
    peers: HashMap<String, Peer>,
    /// The peers of the current topology.
    ids: Vec<String>,
    /// Peers with a request in flight.
    asking: HashSet<String>,
    stalls_seen: u64,
}

/// This node's leases from its peers.
pub struct Leases {
    stalls: Arc<Stalls>,
    started: Instant,
    state: Mutex<State>,
    /// µs since `started` until which every required lease holds.
    serve_until_us: AtomicU64,
    /// `State::stalls_seen`, read without the lock.
    stalls_seen: AtomicU64,
    /// Times this node flushed itself because a peer may have died with
    /// writes for it.
    pub cold_flushes: AtomicU64,
}

impl Leases {
    /// Leases for a node whose stalls `stalls` counts; none held yet.
    pub fn new(stalls: Arc<Stalls>) -> Arc<Leases> {
        let stalls_seen = stalls.count();
        Arc::new(Leases {
            stalls,
            started: Instant::now(),
            state: Mutex::new(State {
                peers: HashMap::new(),
                ids: Vec::new(),
                asking: HashSet::new(),
                stalls_seen,
            }),
            serve_until_us: AtomicU64::new(0),
            stalls_seen: AtomicU64::new(stalls_seen),
            cold_flushes: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn us(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.started).as_micros() as u64
    }

    /// The stalls this node's leases count by.
    pub fn stalls(&self) -> Arc<Stalls> {
        self.stalls.clone()
    }

    /// Whether `cmd` may run on this node's store: at once for a read; a
    /// conditional write waits up to `deadline` for the leases (a node back
    /// from a stall has them again within milliseconds when nothing is
    /// missing).
    pub async fn wait_serving(&self, cmd: &zonecache_proto::Command, deadline: Duration) -> bool {
        if self.serving() {
            return true;
        }
        if !matches!(
            zonecache_client::route::plan(cmd),
            zonecache_client::route::Route::Arbitrate { .. }
        ) {
            return false;
        }
        let until = Instant::now() + deadline;
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(2)).await;
            if self.serving() {
                return true;
            }
        }
        false
    }

    /// Whether this node may serve reads from its store and decide now.
    pub fn serving(&self) -> bool {
        if self.stalls.count() != self.stalls_seen.load(Ordering::Acquire) {
            let mut state = self.lock();
            self.after_stall(&mut state);
        }
        self.us(Instant::now()) < self.serve_until_us.load(Ordering::Acquire)
    }

    /// After a stall every lease held is void: the node may have missed
    /// writes while stopped.
    fn after_stall(&self, state: &mut State) {
        let stalls = self.stalls.count();
        if stalls == state.stalls_seen {
            return;
        }
        state.stalls_seen = stalls;
        self.stalls_seen.store(stalls, Ordering::Release);
        for p in state.peers.values_mut() {
            if let Peer::Leased { .. } = p {
                *p = Peer::Stale;
            }
        }
        self.recompute(state);
    }

    fn recompute(&self, state: &State) {
        let never = self.started;
        let until = state
            .ids
            .iter()
            .filter_map(|id| {
                state
                    .peers
                    .get(id)
                    .copied()
                    .unwrap_or(Peer::New)
                    .lets_serve_until(never)
            })
            .min();
        let us = until.map_or(u64::MAX, |u| self.us(u));
        self.serve_until_us.store(us, Ordering::Release);
    }

    /// The peers to ask now (the current topology's, minus those asked
    /// already); each must be reported back with [`Leases::answered`].
    pub fn to_ask(&self, ids: Vec<String>) -> Vec<String> {
        let mut state = self.lock();
        self.after_stall(&mut state);
        state.ids = ids;
        self.recompute(&state);
        let asking: Vec<String> = state
            .ids
            .iter()
            .filter(|id| !state.asking.contains(*id))
            .cloned()
            .collect();
        state.asking.extend(asking.iter().cloned());
        asking
    }

    /// Peer `id` answered a request sent at `sent`. `flush` empties this
    /// node's store; it runs before a peer that may have died with writes
    /// for this node is trusted again.
    pub fn answered(&self, id: &str, sent: Instant, answer: Answer, flush: impl FnOnce()) {
        let now = Instant::now();
        let mut state = self.lock();
        state.asking.remove(id);
        self.after_stall(&mut state);
        if state.stalls_seen != self.stalls.count() {
            return;
        }
        let p = *state.peers.get(id).unwrap_or(&Peer::New);
        let next = match (answer, p) {
            (Answer::Silent, p) => p,
            (Answer::Granted, Peer::Lost) => {
                flush();
                self.cold_flushes.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    peer = id,
                    "flushed: the peer may have died holding writes for this node"
                );
                Peer::Leased {
                    until: sent + LEASE,
                    answered: now,
                }
            }
            (Answer::Granted, _) => Peer::Leased {
                until: sent + LEASE,
                answered: now,
            },
            (Answer::Behind, Peer::Lost) => Peer::Lost,
            (Answer::Behind, Peer::Leased { until, .. }) => Peer::Leased {
                until,
                answered: now,
            },
            (Answer::Behind, _) => Peer::Leased {
                until: sent,
                answered: now,
            },
            (Answer::Refused, Peer::Leased { until, .. }) if until > sent => Peer::Absent,
            (Answer::Refused, Peer::New | Peer::Absent) => Peer::Absent,
            (Answer::Refused, _) => Peer::Lost,
        };
        state.peers.insert(id.to_string(), next);
        self.recompute(&state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leases() -> Arc<Leases> {
        let l = Leases::new(Stalls::start());
        assert_eq!(l.to_ask(vec!["p".into(), "q".into()]).len(), 2);
        l
    }

    #[test]
    fn serves_only_with_every_peers_lease() {
        let l = leases();
        assert!(!l.serving(), "no lease yet");
        l.answered("p", Instant::now(), Answer::Granted, || panic!("no flush"));
        assert!(!l.serving(), "q has not granted");
        l.answered("q", Instant::now(), Answer::Granted, || panic!("no flush"));
        assert!(l.serving());
        // q holds writes for this node: its lease is no longer renewed and
        // runs out (it was asked long enough ago here).
        let long_ago = Instant::now() - LEASE;
        l.answered("q", long_ago, Answer::Granted, || panic!("no flush"));
        l.answered("q", Instant::now(), Answer::Behind, || panic!("no flush"));
        assert!(!l.serving());
    }

    #[test]
    fn a_peer_found_dead_after_its_lease_ran_out_makes_the_node_flush() {
        let l = leases();
        l.answered("p", Instant::now(), Answer::Granted, || {});
        l.answered("q", Instant::now() - LEASE, Answer::Granted, || {});
        l.answered("q", Instant::now(), Answer::Behind, || {});
        l.answered("q", Instant::now(), Answer::Refused, || {});
        assert!(!l.serving(), "q may have died holding writes");
        let mut flushed = false;
        l.answered("q", Instant::now(), Answer::Granted, || flushed = true);
        assert!(flushed && l.serving());
        assert_eq!(l.cold_flushes.load(Ordering::Relaxed), 1);
        // Found dead while its lease held: nothing missing, no flush.
        l.answered("p", Instant::now(), Answer::Refused, || panic!("no flush"));
        assert!(l.serving());
    }
}
