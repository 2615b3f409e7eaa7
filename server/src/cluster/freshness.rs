//! Whether this node may have missed writes. A node that was stopped
//! (SIGSTOP, a VM pause, a long GC-like stall) for longer than a write's
//! deadline may have missed writes its peers gave up on; they keep them as
//! hints. Until it has asked every reachable peer for them (`zc_sync`), it
//! serves no reads from its own store — its own clients' reads go to other
//! zones, and peers asking it get an error and fall back — and decides no
//! conditional writes. A stall is seen from a ticking thread's gaps: the
//! monotonic clock keeps running while the process is stopped.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the ticker runs.
const TICK: Duration = Duration::from_millis(10);
/// A gap longer than this is a stall: shorter than the realtime write
/// deadline (50 ms by default), so a write that timed out on this node was
/// sent during a gap this long or longer.
pub const STALL: Duration = Duration::from_millis(40);

/// This node's freshness.
pub struct Freshness {
    started: Instant,
    last_tick_us: AtomicU64,
    catching_up: AtomicBool,
    /// Counts stalls, so a catch-up that began before a new stall does not
    /// end it.
    stalls: AtomicU64,
    /// Off in a one-zone cluster: no other copy can be newer, and nobody
    /// keeps hints for this node (a failed write there just fails).
    watched: bool,
}

impl Freshness {
    fn new(watched: bool) -> Arc<Freshness> {
        Arc::new(Freshness {
            started: Instant::now(),
            last_tick_us: AtomicU64::new(0),
            catching_up: AtomicBool::new(false),
            stalls: AtomicU64::new(0),
            watched,
        })
    }

    /// A node that is always fresh (a one-zone cluster).
    pub fn unwatched() -> Arc<Freshness> {
        Freshness::new(false)
    }

    /// Starts the ticker thread.
    pub fn start() -> Arc<Freshness> {
        let f = Freshness::new(true);
        let ticker = Arc::downgrade(&f);
        let spawned = std::thread::Builder::new()
            .name("zc-freshness".into())
            .spawn(move || {
                while let Some(f) = ticker.upgrade() {
                    f.is_catching_up();
                    f.last_tick_us.store(f.now_us(), Ordering::Release);
                    drop(f);
                    std::thread::sleep(TICK);
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "no freshness ticker: stalls of this node go unnoticed");
        }
        f
    }

    fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    /// Whether the node may have missed writes and not caught up yet.
    /// Checks the ticker's gap itself, so a request served in the first
    /// instant after a stall already sees it.
    pub fn is_catching_up(&self) -> bool {
        if !self.watched {
            return false;
        }
        let gap = self
            .now_us()
            .saturating_sub(self.last_tick_us.load(Ordering::Acquire));
        if gap > STALL.as_micros() as u64 && !self.catching_up.load(Ordering::Acquire) {
            self.stalls.fetch_add(1, Ordering::AcqRel);
            self.catching_up.store(true, Ordering::Release);
            tracing::warn!(
                gap_ms = gap / 1000,
                "this node stalled: catching up before it serves reads"
            );
        }
        self.catching_up.load(Ordering::Acquire)
    }

    /// For `cmd` on this node: true at once when caught up; a conditional
    /// write waits up to `deadline` for the catch-up to end (it is quick
    /// when peers hold nothing for this node), a read does not wait.
    pub async fn wait_caught_up(&self, cmd: &zonecache_proto::Command, deadline: Duration) -> bool {
        if !self.is_catching_up() {
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
            if !self.is_catching_up() {
                return true;
            }
        }
        false
    }

    /// Stalls so far (a catch-up names the one it began after).
    pub fn stalls(&self) -> u64 {
        self.stalls.load(Ordering::Acquire)
    }

    /// Every reachable peer has given this node its hints since stall
    /// number `stalls`; ends the catch-up unless the node stalled again.
    pub fn caught_up(&self, stalls: u64) {
        if self.stalls() == stalls {
            self.catching_up.store(false, Ordering::Release);
            tracing::info!("caught up: serving reads again");
        }
    }
}
