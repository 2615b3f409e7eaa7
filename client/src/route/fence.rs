//! Read leases, the writer's side. A node serves reads from its own store
//! only while every peer has granted it a lease (`zc_lease`, renewed every
//! few milliseconds; the node's side is `server/src/cluster/lease.rs`). A
//! router grants a node a lease only when it holds no hints for it. So when
//! a copy to a node fails, the router stops granting that node and waits
//! until the last lease it granted has run out — the node then serves no
//! reads until it has been given the write — before it acknowledges the
//! write: a node that was merely slow cannot serve the older value after
//! the acknowledgement.
//!
//! A node whose peer stops answering altogether (hung, dead) may stop
//! requiring that peer's lease, if it still held it when the peer went
//! silent: a silent peer acknowledges nothing. The peer, once it runs again,
//! may have been dropped this way, so after its own stall (the `stalls`
//! count grows) it fences no node until that node has asked it for a lease
//! again ([`Grants::fence`] answers false meanwhile).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a granted lease lasts, counted by the node from before it asked.
pub const LEASE: Duration = Duration::from_millis(150);

/// The count of this process's stalls (a router that cannot stall, such
/// as the client's in direct mode, which no node asks for leases, counts 0).
pub type StallCount = Box<dyn Fn() -> u64 + Send + Sync>;

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
    /// The stall count when the node last asked, and how many times it
    /// asked since.
    asked_at_stall: Option<(u64, u32)>,
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

    /// `node` asked for a lease; granted when it is `caught_up`.
    pub fn asked(&self, node: &str, caught_up: bool) {
        let stalls = (self.stalls)();
        let mut nodes = self.lock();
        let g = nodes.entry(node.to_string()).or_default();
        g.asked_at_stall = match g.asked_at_stall {
            Some((s, n)) if s == stalls => Some((s, n.saturating_add(1))),
            _ => Some((stalls, 1)),
        };
        if caught_up {
            g.last = Some(Instant::now());
        }
    }

    /// When the last lease granted to `node` runs out (counted from this
    /// router's start when it granted none: an earlier process with the
    /// same name may have).
    pub fn runs_out(&self, node: &str) -> Instant {
        let last = self.lock().get(node).and_then(|g| g.last);
        last.unwrap_or(self.started) + LEASE
    }

    /// Whether `node` surely requires this router's lease now, so that a
    /// lease run out means it serves no reads: it asked twice since this
    /// router last stalled. A node asks again only once answered, so the
    /// second request shows it heard an answer given after the stall, and
    /// it requires the lease again from hearing any answer.
    pub fn requires_lease(&self, node: &str) -> bool {
        let stalls = (self.stalls)();
        self.lock()
            .get(node)
            .and_then(|g| g.asked_at_stall)
            .is_some_and(|(s, n)| s == stalls && n >= 2)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use super::*;

    #[test]
    fn a_node_requires_the_lease_once_it_asked_twice_since_the_last_stall() {
        let stalls = Arc::new(AtomicU64::new(0));
        let count = stalls.clone();
        let g = Grants::new(Box::new(move || count.load(Ordering::Relaxed)));
        assert!(!g.requires_lease("x"), "never asked");
        g.asked("x", true);
        assert!(!g.requires_lease("x"), "may not have heard the answer yet");
        g.asked("x", false);
        assert!(g.requires_lease("x"));
        // After a stall of this router, x may have stopped requiring it.
        stalls.store(1, Ordering::Relaxed);
        assert!(!g.requires_lease("x"));
        g.asked("x", true);
        g.asked("x", true);
        assert!(g.requires_lease("x"));
    }

    #[test]
    fn a_lease_runs_out_a_lease_length_after_the_last_grant() {
        let g = Grants::new(Box::new(|| 0));
        let before = Instant::now();
        assert!(g.runs_out("x") <= before + LEASE, "counted from the start");
        g.asked("x", true);
        let granted = g.runs_out("x");
        assert!(granted >= before + LEASE);
        // Refused ("behind") asks do not extend it.
        std::thread::sleep(Duration::from_millis(5));
        g.asked("x", false);
        assert_eq!(g.runs_out("x"), granted);
    }
}
