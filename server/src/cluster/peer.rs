//! One peer node: a lazily opened, pipelined connection marked as peer
//! traffic, and its health — consecutive failures mark it down for an
//! exponential back-off (capped), during which calls fail at once.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use zonecache_client::{Connection, Error};
use zonecache_proto::{Command, Response};

use super::topology::NodeConfig;

/// Consecutive failures that mark a peer down.
const FAILURES_TO_MARK_DOWN: u32 = 3;
/// First back-off; doubles with every mark-down in a row.
const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest back-off.
const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// Requests in flight to one peer.
const MAX_IN_FLIGHT: usize = 4096;

/// A peer and what we know of its health.
pub struct Peer {
    pub node: NodeConfig,
    conn: tokio::sync::Mutex<Option<Connection>>,
    failures: AtomicU32,
    /// Mark-downs in a row (sets the back-off).
    strikes: AtomicU32,
    down_until: Mutex<Option<Instant>>,
    /// Counters for `stats peers`.
    pub timeouts: AtomicU64,
    pub errors: AtomicU64,
    pub mark_downs: AtomicU64,
    pub calls: AtomicU64,
    /// Sum of call latencies in microseconds (for the mean in `stats peers`).
    pub latency_us: AtomicU64,
    /// Calls waiting for a reply right now.
    pub in_flight: AtomicU64,
}

impl Peer {
    /// A peer we have not talked to yet.
    pub fn new(node: NodeConfig) -> Peer {
        Peer {
            node,
            conn: tokio::sync::Mutex::new(None),
            failures: AtomicU32::new(0),
            strikes: AtomicU32::new(0),
            down_until: Mutex::new(None),
            timeouts: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            mark_downs: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            latency_us: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
        }
    }

    /// Whether the peer is marked down right now.
    pub fn is_down(&self) -> bool {
        let until = *self.down_until.lock().unwrap_or_else(|e| e.into_inner());
        until.is_some_and(|t| Instant::now() < t)
    }

    async fn connection(&self, deadline: Duration) -> Result<Connection, Error> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| c.is_open()) {
            return Ok(c.clone());
        }
        let c = Connection::connect(self.node.addr, deadline, MAX_IN_FLIGHT).await?;
        // Mark the connection as peer traffic: applied once, never routed on.
        c.call(&Command::PeerHello, deadline).await?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Sends `cmd`; a peer marked down fails at once. After its back-off a
    /// marked-down peer gets one call through, which probes it.
    pub async fn call(&self, cmd: &Command, deadline: Duration) -> Result<Response, Error> {
        if self.is_down() {
            return Err(Error::Connection(format!(
                "{} is marked down",
                self.node.id
            )));
        }
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let result = match tokio::time::timeout(deadline, self.connection(deadline)).await {
            Ok(Ok(c)) => c.call(cmd, deadline).await,
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::Timeout),
        };
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.latency_us
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        match &result {
            Ok(_) | Err(Error::Client(_)) | Err(Error::Server(_)) => {
                self.failures.store(0, Ordering::Relaxed);
                self.strikes.store(0, Ordering::Relaxed);
            }
            Err(e) => {
                if *e == Error::Timeout {
                    self.timeouts.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.errors.fetch_add(1, Ordering::Relaxed);
                }
                if self.failures.fetch_add(1, Ordering::Relaxed) + 1 >= FAILURES_TO_MARK_DOWN {
                    self.mark_down().await;
                }
            }
        }
        result
    }

    async fn mark_down(&self) {
        let strikes = self.strikes.fetch_add(1, Ordering::Relaxed).min(16);
        let backoff = BACKOFF_START.saturating_mul(1 << strikes).min(BACKOFF_CAP);
        *self.down_until.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + backoff);
        self.failures.store(0, Ordering::Relaxed);
        self.mark_downs.fetch_add(1, Ordering::Relaxed);
        // A fresh connection is made for the probe after the back-off.
        *self.conn.lock().await = None;
        tracing::warn!(peer = %self.node.id, ?backoff, "peer marked down");
    }
}
