//! A node's health as one atomic word, so the realtime and batch lanes
//! (and every task calling the node) read it without a lock: a lock held by
//! a preempted low-priority batch thread would make realtime calls wait.
//!
//! States: up; down until a moment (then due for a probe); probing (one
//! caller won the right to probe; the rest keep skipping the node).

#[cfg(loom)]
use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(loom))]
use std::sync::atomic::{AtomicU64, Ordering};

const UP: u64 = 0;
const PROBING: u64 = u64::MAX;

/// Whether requests may go to a node. Times are microseconds on the
/// caller's clock, never 0 or `u64::MAX`.
#[derive(Debug)]
pub struct Health {
    state: AtomicU64,
}

impl Default for Health {
    fn default() -> Health {
        Health {
            state: AtomicU64::new(UP),
        }
    }
}

impl Health {
    /// Whether the node is up (not marked down, not being probed).
    pub fn is_up(&self) -> bool {
        self.state.load(Ordering::Acquire) == UP
    }

    /// Marks the node down until `until` (µs).
    pub fn mark_down(&self, until: u64) {
        self.state
            .store(until.clamp(1, PROBING - 1), Ordering::Release);
    }

    /// Marks the node up (its probe answered).
    pub fn mark_up(&self) {
        self.state.store(UP, Ordering::Release);
    }

    /// For a node down until a moment before `now`: claims the one probe.
    /// Exactly one caller gets `true` per back-off.
    pub fn claim_probe(&self, now: u64) -> bool {
        let state = self.state.load(Ordering::Acquire);
        if state == UP || state == PROBING || now < state {
            return false;
        }
        self.state
            .compare_exchange(state, PROBING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn down_then_one_probe_then_up() {
        let h = Health::default();
        assert!(h.is_up());
        h.mark_down(100);
        assert!(!h.is_up());
        assert!(!h.claim_probe(99), "still backing off");
        assert!(h.claim_probe(100));
        assert!(!h.claim_probe(200), "one probe per back-off");
        assert!(!h.is_up());
        h.mark_up();
        assert!(h.is_up());
        assert!(!h.claim_probe(300), "nothing to probe when up");
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    /// Two callers find the back-off over at once: exactly one probes.
    #[test]
    fn loom_exactly_one_probe_per_backoff() {
        loom::model(|| {
            let h = Arc::new(Health::default());
            h.mark_down(10);
            let other = h.clone();
            let t = loom::thread::spawn(move || other.claim_probe(20));
            let mine = h.claim_probe(20);
            let theirs = t.join().unwrap();
            assert!(mine ^ theirs, "exactly one probe");
            assert!(!h.is_up());
        });
    }

    /// A probe that answers and a failure that marks down race: the node
    /// ends either up or down, never stuck probing.
    #[test]
    fn loom_probe_result_and_mark_down_race() {
        loom::model(|| {
            let h = Arc::new(Health::default());
            h.mark_down(10);
            assert!(h.claim_probe(20));
            let other = h.clone();
            let t = loom::thread::spawn(move || other.mark_down(50));
            h.mark_up();
            t.join().unwrap();
            let s = h.state.load(Ordering::Acquire);
            assert!(s == UP || s == 50);
        });
    }
}
