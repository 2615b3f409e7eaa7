//! Whether this process stalled. A node that was stopped (SIGSTOP, a VM
//! pause, a long GC-like stall) may have missed writes its peers gave up
//! on, and its peers may have stopped requiring its leases (`lease.rs`).
//! A stall is seen from gaps in two tickers: a thread of its own (the
//! monotonic clock keeps running while the process is stopped) and the
//! node's lease loop on the async runtime (a runtime starved of CPU, or
//! blocked, answers its peers late just as a stopped process does).

#[cfg(loom)]
use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(loom))]
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the ticker runs.
const TICK: Duration = Duration::from_millis(10);
/// A gap longer than this is a stall: shorter than the time a peer waits
/// before it gives up on this node (`route::SILENT`).
pub const STALL: Duration = Duration::from_millis(40);
/// A runtime tick later than this is a stall: the lease loop ticks every
/// 20 ms, and a runtime this late may have left a peer's request
/// unanswered for `SILENT`.
pub const RUNTIME_STALL: Duration = Duration::from_millis(60);

/// One ticker: its last tick, and how late a tick may come before the gap
/// is a stall. The part of [`Stalls`] that threads race on (a loom model
/// below).
struct Ticker {
    /// µs since [`Stalls`] started; 0: not ticking yet.
    last_us: AtomicU64,
    limit_us: u64,
    name: &'static str,
}

impl Ticker {
    fn new(limit: Duration, name: &'static str) -> Ticker {
        Ticker {
            last_us: AtomicU64::new(0),
            limit_us: limit.as_micros() as u64,
            name,
        }
    }

    /// Whether `now_us` is more than the limit past the last tick; if so it
    /// is counted into `count`, and the new count returned.
    fn check(&self, now_us: u64, count: &AtomicU64) -> Option<u64> {
        let last = self.last_us.load(Ordering::Acquire);
        if last == 0 || now_us.saturating_sub(last) <= self.limit_us {
            return None;
        }
        // Counted before the gap closes, so no caller sees the gap closed
        // and the old count; two callers may both count it, which only
        // costs a second round of lease requests.
        let n = count.fetch_add(1, Ordering::AcqRel) + 1;
        self.last_us.fetch_max(now_us, Ordering::AcqRel);
        let gap_ms = (now_us - last) / 1000;
        tracing::warn!(gap_ms, ticker = self.name, "this node stalled");
        Some(n)
    }

    /// A tick at `now_us`; a gap up to it is counted first.
    fn tick(&self, now_us: u64, count: &AtomicU64) {
        self.check(now_us, count);
        self.last_us.store(now_us.max(1), Ordering::Release);
    }
}

/// This process's stalls.
pub struct Stalls {
    started: Instant,
    /// The thread of its own.
    process: Ticker,
    /// The node's lease loop.
    runtime: Ticker,
    count: AtomicU64,
}

impl Stalls {
    /// Starts the ticker thread.
    pub fn start() -> Arc<Stalls> {
        let s = Arc::new(Stalls {
            started: Instant::now(),
            process: Ticker::new(STALL, "process"),
            runtime: Ticker::new(RUNTIME_STALL, "runtime"),
            count: AtomicU64::new(0),
        });
        let ticker = Arc::downgrade(&s);
        let spawned = std::thread::Builder::new()
            .name("zc-stalls".into())
            .spawn(move || {
                while let Some(s) = ticker.upgrade() {
                    s.process.tick(s.now_us(), &s.count);
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
        self.runtime.tick(self.now_us(), &self.count);
    }

    /// Stalls so far. Checks the tickers' gaps itself, so a request served
    /// in the first instant after a stall already sees it.
    pub fn count(&self) -> u64 {
        let now = self.now_us();
        for ticker in [&self.process, &self.runtime] {
            if let Some(n) = ticker.check(now, &self.count) {
                return n;
            }
        }
        self.count.load(Ordering::Acquire)
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::{AtomicU64, Ordering, Ticker};
    use loom::sync::Arc;
    use loom::thread;
    use std::time::Duration;

    /// A caller at the end of a stall, racing the tick that closes the gap,
    /// sees the stall counted whichever it finds: the gap still open (it
    /// counts it) or closed (the tick counted it first).
    #[test]
    fn a_closed_gap_is_never_seen_with_the_old_count() {
        loom::model(|| {
            let count = Arc::new(AtomicU64::new(0));
            let ticker = Arc::new(Ticker::new(Duration::from_micros(40), "model"));
            ticker.last_us.store(10, Ordering::Relaxed);
            let (c, t) = (count.clone(), ticker.clone());
            // Both at µs 100: a gap of 90, over the limit of 40.
            let tick = thread::spawn(move || t.tick(100, &c));
            let seen = ticker
                .check(100, &count)
                .unwrap_or_else(|| count.load(Ordering::Acquire));
            tick.join().unwrap();
            assert!(seen >= 1, "a caller after the stall saw none");
        });
    }
}
