//! Whether this process stalled. A node that was stopped (SIGSTOP, a VM
//! pause, a long GC-like stall) may have missed writes its peers gave up
//! on, and its peers may have stopped requiring its leases (`lease.rs`).
//! A stall is seen from gaps in two tickers: a thread of its own (the
//! monotonic clock keeps running while the process is stopped) and the
//! node's lease loop on the async runtime (a runtime starved of CPU, or
//! blocked, answers its peers late just as a stopped process does).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the ticker runs.
const TICK: Duration = Duration::from_millis(10);
/// A gap longer than this is a stall: shorter than the time a peer waits
/// before it stops requiring this node's lease (`lease::SILENT`).
pub const STALL: Duration = Duration::from_millis(40);
/// A runtime tick later than this is a stall: the lease loop ticks every
/// 20 ms, and a runtime this late may have left a peer's request
/// unanswered for `SILENT`.
pub const RUNTIME_STALL: Duration = Duration::from_millis(60);

/// This process's stalls.
pub struct Stalls {
    started: Instant,
    last_tick_us: AtomicU64,
    /// The runtime's last tick (0: not ticking yet).
    last_runtime_tick_us: AtomicU64,
    count: AtomicU64,
}

impl Stalls {
    /// Starts the ticker thread.
    pub fn start() -> Arc<Stalls> {
        let s = Arc::new(Stalls {
            started: Instant::now(),
            last_tick_us: AtomicU64::new(0),
            last_runtime_tick_us: AtomicU64::new(0),
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

    /// The runtime's tick: called by the node's lease loop.
    pub fn runtime_tick(&self) {
        self.count();
        self.last_runtime_tick_us
            .store(self.now_us().max(1), Ordering::Release);
    }

    /// Stalls so far. Checks the tickers' gaps itself, so a request served
    /// in the first instant after a stall already sees it.
    pub fn count(&self) -> u64 {
        let now = self.now_us();
        for (last_tick, limit, what) in [
            (&self.last_tick_us, STALL, "process"),
            (&self.last_runtime_tick_us, RUNTIME_STALL, "runtime"),
        ] {
            let last = last_tick.load(Ordering::Acquire);
            if last == 0 && what == "runtime" {
                continue;
            }
            if now.saturating_sub(last) > limit.as_micros() as u64 {
                // Counted before the gap closes, so no caller sees the gap
                // closed and the old count; two callers may both count it,
                // which only costs a second round of lease requests.
                let n = self.count.fetch_add(1, Ordering::AcqRel) + 1;
                last_tick.fetch_max(now, Ordering::AcqRel);
                tracing::warn!(gap_ms = (now - last) / 1000, what, "this node stalled");
                return n;
            }
        }
        self.count.load(Ordering::Acquire)
    }
}
