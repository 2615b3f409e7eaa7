//! Read leases, the writer's side. A node serves reads from its own store
//! only while every peer has granted it a lease (`zc_lease`, renewed every
//! few milliseconds; the node's side is `server/src/cluster/lease.rs`). A
//! router grants a node a lease only when it holds no hints for it. So when
//! a copy to a node fails, the router stops granting that node and
//! acknowledges the write only once the node is *fenced* — it serves
//! nothing until it has been given the write:
//! - the node said so: an ask since this router's last grant came with
//!   `fenced` (its lease here ran out and it did not give up on this
//!   router; only a grant from this router ends that);
//! - or the node is stopped: it has asked nothing for [`STOPPED`] while
//!   this router ran without a stall (a live node asks every [`ASK_EVERY`],
//!   and its requests are never held back by a mark-down), the last lease
//!   granted has run out, and the other nodes that answer (one at least)
//!   say the node has asked them nothing for [`SILENT`] either
//!   (`zc_asked`; a node cut off from this router alone still asks the
//!   others). A stopped node sees its own
//!   stall when it runs again and holds no lease from then on.
//!
//! A node gives up on a peer only when that peer left one of its requests
//! unanswered for [`SILENT`] while the lease still held and another peer
//! answers it (a hung peer acknowledges nothing; a node that hears nobody
//! is cut off itself); a router that was itself slow or stopped cannot
//! tell whether that happened, which is why the node's own word is asked
//! for. What this cannot tell apart: a cluster split into two groups of
//! two or more nodes each, and two nodes with no third: `tests/README.md`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a granted lease lasts, counted by the node from before it asked.
pub const LEASE: Duration = Duration::from_millis(150);

/// How often a node asks each peer for a lease.
pub const ASK_EVERY: Duration = Duration::from_millis(20);

/// A peer that leaves a lease request unanswered this long, while its lease
/// still holds, is given up on by the asking node (the request's deadline).
pub const SILENT: Duration = Duration::from_millis(100);

/// A node that asked a router nothing for this long, while the router ran,
/// is stopped: a live node asks every [`ASK_EVERY`], and again at most
/// [`SILENT`] after a request that went unanswered.
pub const STOPPED: Duration = Duration::from_millis(200);

/// The longest a write waits for the nodes that missed it to be fenced
/// (a stopped node: [`STOPPED`] after its last request).
pub const FENCE_WAIT: Duration = Duration::from_millis(300);

/// The count of this process's stalls (a router that cannot stall, such
/// as the client's in direct mode, which no node asks for leases, counts 0).
pub type StallCount = Box<dyn Fn() -> u64 + Send + Sync>;

/// What a router knows of a node that missed a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fence {
    /// It may still serve what it missed.
    Unknown,
    /// It said it is fenced, since the last grant.
    Said,
    /// It asked nothing for [`STOPPED`] and its lease ran out: fenced if it
    /// is stopped, which the other nodes confirm when it asked them
    /// nothing either.
    Silent,
}

/// The leases this router granted, by node id.
pub struct Grants {
    started: Instant,
    stalls: StallCount,
    nodes: Mutex<HashMap<String, Granted>>,
}

#[derive(Default)]
struct Granted {
    /// When the last lease was granted.
    last: Option<Instant>,
    /// An ask since the last grant said the node is fenced.
    fenced: bool,
    /// When the node last asked, and this router's stall count then.
    last_ask: Option<(Instant, u64)>,
}

impl Grants {
    /// Grants counted from now, with this process's stall count.
    pub fn new(stalls: StallCount) -> Grants {
        Grants {
            started: Instant::now(),
            stalls,
            nodes: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Granted>> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `node` asked for a lease, saying whether it is `fenced`; granted
    /// when it is `caught_up`.
    pub fn asked(&self, node: &str, fenced: bool, caught_up: bool) {
        let stalls = (self.stalls)();
        let now = Instant::now();
        let mut nodes = self.lock();
        let g = nodes.entry(node.to_string()).or_default();
        g.last_ask = Some((now, stalls));
        g.fenced |= fenced;
        if caught_up {
            g.last = Some(now);
            g.fenced = false;
        }
    }

    /// When the last lease granted to `node` runs out (counted from this
    /// router's start when it granted none: an earlier process with the
    /// same name may have).
    pub fn runs_out(&self, node: &str) -> Instant {
        let last = self.lock().get(node).and_then(|g| g.last);
        last.unwrap_or(self.started) + LEASE
    }

    /// What this router knows of `node` being fenced (module docs).
    pub fn fenced(&self, node: &str) -> Fence {
        let stalls = (self.stalls)();
        let now = Instant::now();
        let nodes = self.lock();
        let Some(g) = nodes.get(node) else {
            return Fence::Unknown;
        };
        if g.fenced {
            return Fence::Said;
        }
        let ran_out = now >= g.last.unwrap_or(self.started) + LEASE;
        let silent = g
            .last_ask
            .is_some_and(|(at, s)| s == stalls && now >= at + STOPPED);
        match ran_out && silent {
            true => Fence::Silent,
            false => Fence::Unknown,
        }
    }

    /// How long ago `node` last asked for a lease (since this router
    /// started, when it never did): answers `zc_asked`.
    pub fn asked_ago(&self, node: &str) -> Duration {
        let last = self.lock().get(node).and_then(|g| g.last_ask);
        last.map_or(self.started, |(at, _)| at).elapsed()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use super::*;

    #[test]
    fn a_node_is_fenced_once_it_says_so_after_the_last_grant() {
        let g = Grants::new(Box::new(|| 0));
        assert_eq!(g.fenced("x"), Fence::Unknown, "never asked");
        g.asked("x", false, true);
        assert_eq!(g.fenced("x"), Fence::Unknown, "holds a lease");
        g.asked("x", true, false);
        assert_eq!(g.fenced("x"), Fence::Said);
        // A grant ends it: the node may serve again.
        g.asked("x", true, true);
        assert_eq!(g.fenced("x"), Fence::Unknown);
        g.asked("x", false, false);
        assert_eq!(
            g.fenced("x"),
            Fence::Unknown,
            "holds the lease, or gave up on us"
        );
    }

    #[test]
    fn a_node_that_stopped_asking_is_fenced_once_its_lease_ran_out() {
        let stalls = Arc::new(AtomicU64::new(0));
        let count = stalls.clone();
        let g = Grants::new(Box::new(move || count.load(Ordering::Relaxed)));
        g.asked("x", false, true);
        std::thread::sleep(LEASE);
        assert_eq!(g.fenced("x"), Fence::Unknown, "lease ran out, may be alive");
        std::thread::sleep(STOPPED - LEASE);
        assert_eq!(g.fenced("x"), Fence::Silent, "asked nothing for STOPPED");
        assert!(g.asked_ago("x") >= STOPPED);
        // This router stalled since: the silence may be its own.
        stalls.store(1, Ordering::Relaxed);
        assert_eq!(g.fenced("x"), Fence::Unknown);
        // It asks again: not silent any more.
        g.asked("x", false, false);
        assert_eq!(g.fenced("x"), Fence::Unknown);
        assert!(g.asked_ago("x") < SILENT);
    }

    #[test]
    fn a_lease_runs_out_a_lease_length_after_the_last_grant() {
        let g = Grants::new(Box::new(|| 0));
        let before = Instant::now();
        assert!(g.runs_out("x") <= before + LEASE, "counted from the start");
        g.asked("x", false, true);
        let granted = g.runs_out("x");
        assert!(granted >= before + LEASE);
        // Refused ("behind") asks do not extend it.
        std::thread::sleep(Duration::from_millis(5));
        g.asked("x", false, false);
        assert_eq!(g.runs_out("x"), granted);
    }
}
