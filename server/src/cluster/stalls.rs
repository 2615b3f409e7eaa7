//! Whether this process stalled. A node that was stopped (SIGSTOP, a VM
//! pause, a long GC-like stall) may have missed writes its peers gave up
//! on, and its peers may have stopped requiring its leases (`lease.rs`).
//! A stall is seen from a ticking thread's gaps: the monotonic clock keeps
//! running while the process is stopped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the ticker runs.
const TICK: Duration = Duration::from_millis(10);
/// A gap longer than this is a stall: shorter than the time a peer waits
/// before it stops requiring this node's lease (`lease::SILENT`).
pub const STALL: Duration = Duration::from_millis(40);

/// This process's stalls.
pub struct Stalls {
    started: Instant,
    last_tick_us: AtomicU64,
    count: AtomicU64,
}

impl Stalls {
    /// Starts the ticker thread.
    pub fn start() -> Arc<Stalls> {
        let s = Arc::new(Stalls {
            started: Instant::now(),
            last_tick_us: AtomicU64::new(0),
            count: AtomicU64::new(0),
        });
        let ticker = Arc::downgrade(&s);
        let spawned = std::thread::Builder::new()
            .name("zc-stalls".into())
            .spawn(move || {
                while let Some(s) = ticker.upgrade() {
                    s.count();
                    s.last_tick_us.store(s.now_us(), Ordering::Release);
                    drop(s);
                    std::thread::sleep(TICK);
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "no stall ticker: stalls of this node go unnoticed");
        }
        s
    }

    fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    /// Stalls so far. Checks the ticker's gap itself, so a request served
    /// in the first instant after a stall already sees it.
    pub fn count(&self) -> u64 {
        let last = self.last_tick_us.load(Ordering::Acquire);
        let now = self.now_us();
        if now.saturating_sub(last) > STALL.as_micros() as u64 {
            // Counted before the gap closes, so no caller sees the gap
            // closed and the old count; two callers may both count it,
            // which only costs a second round of lease requests.
            let n = self.count.fetch_add(1, Ordering::AcqRel) + 1;
            self.last_tick_us.fetch_max(now, Ordering::AcqRel);
            tracing::warn!(gap_ms = (now - last) / 1000, "this node stalled");
            return n;
        }
        self.count.load(Ordering::Acquire)
    }
}
