//! Read leases, the reader's side: why this node may serve reads from its
//! own store and decide conditional writes. It asks every peer for a lease
//! every few milliseconds (`zc_lease`); a peer grants one only when it has
//! given this node every write it missed, and acknowledges a write this
//! node missed only once this node is fenced (the writer's side is the
//! client crate's `route/fence.rs`). So while every peer's lease holds,
//! this node has every acknowledged write; otherwise its reads go to other
//! zones and peers asking it hear `SERVER_ERROR`.
//!
//! A peer that leaves a request unanswered for `SILENT` while its lease
//! still holds, while another peer answers, is given up on (a hung peer
//! acknowledges nothing; a node that hears nobody is cut off itself),
//! decided when that request times out — so a node that was itself slow
//! never gives up on a peer by its own delay. A lease that ran out first is never
//! given up on: the peer may hold writes for this node; this node then
//! tells the peer it is fenced. A peer found dead after its lease ran out
//! may have died holding such writes, so this node flushes itself when
//! that peer grants again.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zonecache_client::route::{LEASE, SILENT};

use super::stalls::Stalls;

/// How a lease request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Granted,
    /// The peer holds writes for this node not delivered yet.
    Behind,
    /// Nobody listens at the peer's port.
    Refused,
    /// No answer within `SILENT`.
    Silent,
    /// Any other failure (the peer is marked down, the connection broke):
    /// tells nothing.
    Unreachable,
}

/// One peer's lease, as this node sees it.
#[derive(Debug, Clone, Copy)]
enum Peer {
    /// Not granted since this node started.
    New,
    /// Granted until `until`.
    Leased { until: Instant },
    /// Given up on: it left a request unanswered while its lease held.
    Silent,
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
            Peer::Absent | Peer::Silent => None,
            Peer::Leased { until } => Some(until),
            Peer::New | Peer::Stale | Peer::Lost => Some(never),
        }
    }

    /// Whether this node serves nothing until the peer grants again.
    fn fenced(self, now: Instant) -> bool {
        match self {
            Peer::Leased { until } => until <= now,
            Peer::New | Peer::Stale | Peer::Lost => true,
            Peer::Silent | Peer::Absent => false,
        }
    }
}

struct State {
    peers: HashMap<String, Peer>,
    /// The peers of the current topology.
    ids: Vec<String>,
    /// Peers with a request in flight.
    asking: HashSet<String>,
    /// When each peer last answered (granted or not).
    heard: HashMap<String, Instant>,
    stalls_seen: u64,
}

impl State {
    /// Whether some peer but `silent` answered within `SILENT` (or there
    /// is no other peer to hear): this node is not cut off itself, so it
    /// may be `silent` that hangs.
    fn hears_another(&self, silent: &str, now: Instant) -> bool {
        let mut others = self.ids.iter().filter(|id| *id != silent).peekable();
        others.peek().is_none()
            || others.any(|id| {
                self.heard
                    .get(id)
                    .is_some_and(|at| now.saturating_duration_since(*at) <= SILENT)
            })
    }
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
    /// The operator said this node is leaving (`zc_leave`, a Kubernetes
    /// preStop): it serves no reads from its store, so peers and its own
    /// clients read other zones at once instead of at its death.
    leaving: AtomicBool,
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
                heard: HashMap::new(),
                stalls_seen,
            }),
            serve_until_us: AtomicU64::new(0),
            stalls_seen: AtomicU64::new(stalls_seen),
            cold_flushes: AtomicU64::new(0),
            leaving: AtomicBool::new(false),
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

    /// Marks this node as leaving (for the rest of its life).
    pub fn leave(&self) {
        self.leaving.store(true, Ordering::Release);
    }

    /// Whether this node is leaving.
    pub fn leaving(&self) -> bool {
        self.leaving.load(Ordering::Acquire)
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
            if let Peer::Leased { .. } | Peer::Silent = p {
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

    /// Whether this node serves nothing until peer `id` grants again (said
    /// in the next request to it).
    pub fn fenced_by(&self, id: &str) -> bool {
        let mut state = self.lock();
        self.after_stall(&mut state);
        let p = *state.peers.get(id).unwrap_or(&Peer::New);
        p.fenced(Instant::now())
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
        let leased = Peer::Leased {
            until: sent + LEASE,
        };
        if matches!(answer, Answer::Granted | Answer::Behind) {
            state.heard.insert(id.to_string(), now);
        }
        let next = match (answer, p) {
            // Unanswered for SILENT while its lease held, while another
            // peer answers: hung.
            (Answer::Silent, Peer::Leased { until })
                if until > now && now >= sent + SILENT && state.hears_another(id, now) =>
            {
                tracing::warn!(peer = id, "peer silent while its lease held: not required");
                Peer::Silent
            }
            (Answer::Silent | Answer::Unreachable, p) => p,
            (Answer::Granted, Peer::Lost) => {
                flush();
                self.cold_flushes.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    peer = id,
                    "flushed: the peer may have died holding writes for this node"
                );
                leased
            }
            (Answer::Granted, _) => leased,
            (Answer::Behind, Peer::Lost) => Peer::Lost,
            (Answer::Behind, Peer::Leased { until }) => Peer::Leased { until },
            (Answer::Behind, _) => Peer::Leased { until: sent },
            (Answer::Refused, Peer::Leased { until }) if until > sent => Peer::Absent,
            (Answer::Refused, Peer::New | Peer::Absent | Peer::Silent) => Peer::Absent,
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

    fn no_flush() {
        panic!("no flush")
    }

    #[test]
    fn serves_only_with_every_peers_lease() {
        let l = leases();
        assert!(!l.serving(), "no lease yet");
        assert!(l.fenced_by("p") && l.fenced_by("q"));
        l.answered("p", Instant::now(), Answer::Granted, no_flush);
        assert!(!l.serving(), "q has not granted");
        l.answered("q", Instant::now(), Answer::Granted, no_flush);
        assert!(l.serving());
        assert!(!l.fenced_by("q"));
        // q holds writes for this node: its lease is no longer renewed and
        // runs out (it was asked long enough ago here); the node then tells
        // q it is fenced.
        let long_ago = Instant::now() - LEASE;
        l.answered("q", long_ago, Answer::Granted, no_flush);
        l.answered("q", Instant::now(), Answer::Behind, no_flush);
        assert!(!l.serving());
        assert!(l.fenced_by("q"));
        // Silence after the lease ran out changes nothing.
        l.answered("q", Instant::now() - SILENT, Answer::Silent, no_flush);
        assert!(!l.serving() && l.fenced_by("q"));
    }

    #[test]
    fn a_peer_silent_while_its_lease_held_is_given_up_on() {
        let l = leases();
        let asked = Instant::now() - SILENT;
        l.answered("p", asked, Answer::Granted, no_flush);
        l.answered("q", Instant::now(), Answer::Granted, no_flush);
        // Some other failure than silence tells nothing: p's lease (asked
        // SILENT ago) still holds for a while, then runs out.
        l.answered("p", asked, Answer::Unreachable, no_flush);
        assert!(l.serving());
        // A request to p, sent SILENT ago, timed out while p's lease held.
        l.answered("p", asked, Answer::Silent, no_flush);
        assert!(!l.fenced_by("p"));
        std::thread::sleep(LEASE);
        l.answered("q", Instant::now(), Answer::Granted, no_flush);
        assert!(l.serving(), "p is not required while silent");
        // p answers again, holding writes for this node: fenced at once.
        l.answered("p", Instant::now(), Answer::Behind, no_flush);
        assert!(!l.serving() && l.fenced_by("p"));
    }

    #[test]
    fn a_node_that_hears_no_other_peer_gives_up_on_nobody() {
        let l = leases();
        let asked = Instant::now() - SILENT;
        l.answered("p", asked, Answer::Granted, no_flush);
        // q has not answered: this node may be the one cut off, so p's
        // silence is not taken for a hang.
        l.answered("p", asked, Answer::Silent, no_flush);
        std::thread::sleep(LEASE);
        assert!(
            l.fenced_by("p"),
            "p's lease ran out and p is still required"
        );
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
        l.answered("p", Instant::now(), Answer::Refused, no_flush);
        assert!(l.serving());
    }
}
