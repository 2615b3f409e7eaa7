//! One peer node: a lazily opened, pipelined connection marked as peer
//! traffic, and its health — consecutive failures mark it down for an
//! exponential back-off (capped), during which calls fail at once. When the
//! back-off ends, one background probe (`mn`) decides: the peer is used again
//! only after it answers, so a hung peer never makes real requests wait.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
/// Connections kept to each peer.
const CONNECTIONS_PER_PEER: usize = 2;
/// Requests in flight on one connection to a peer.
const MAX_IN_FLIGHT: usize = 2048;
/// How long a probe waits for the peer's answer.
const PROBE_DEADLINE: Duration = Duration::from_millis(200);

/// Whether requests may go to a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    Up,
    /// Skipped until this instant, then probed.
    Down(Instant),
    /// A probe is in flight; still skipped.
    Probing,
}

/// A peer and what we know of its health.
pub struct Peer {
    pub node: NodeConfig,
    /// A few pipelined connections, used in turn, so one slow reply or
    /// large value does not hold up every request to this peer.
    conns: Vec<tokio::sync::Mutex<Option<Connection>>>,
    next_conn: AtomicU64,
    failures: AtomicU32,
    /// Mark-downs in a row (sets the back-off).
    strikes: AtomicU32,
    health: Mutex<Health>,
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
            conns: (0..CONNECTIONS_PER_PEER)
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            next_conn: AtomicU64::new(0),
            failures: AtomicU32::new(0),
            strikes: AtomicU32::new(0),
            health: Mutex::new(Health::Up),
            timeouts: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            mark_downs: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            latency_us: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
        }
    }

    /// Whether the peer is marked down (or being probed) right now.
    pub fn is_down(&self) -> bool {
        *self.health.lock().unwrap_or_else(|e| e.into_inner()) != Health::Up
    }

    /// For a marked-down peer whose back-off is over: start the one probe.
    fn probe_if_due(self: &Arc<Self>) {
        let mut health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        let Health::Down(until) = *health else { return };
        if Instant::now() < until {
            return;
        }
        *health = Health::Probing;
        drop(health);
        let peer = self.clone();
        tokio::spawn(async move {
            let ok = match peer.connection(PROBE_DEADLINE).await {
                Ok(c) => c.call(&Command::MetaNoop, PROBE_DEADLINE).await.is_ok(),
                Err(_) => false,
            };
            if ok {
                peer.failures.store(0, Ordering::Relaxed);
                peer.strikes.store(0, Ordering::Relaxed);
                *peer.health.lock().unwrap_or_else(|e| e.into_inner()) = Health::Up;
                tracing::info!(peer = %peer.node.id, "peer answered its probe: back in use");
            } else {
                peer.mark_down().await;
            }
        });
    }

    async fn connection(&self, deadline: Duration) -> Result<Connection, Error> {
        let i = self.next_conn.fetch_add(1, Ordering::Relaxed) as usize % self.conns.len();
        let mut slot = self.conns[i].lock().await;
        if let Some(c) = slot.as_ref().filter(|c| c.is_open()) {
            return Ok(c.clone());
        }
        let c = Connection::connect(self.node.addr, deadline, MAX_IN_FLIGHT).await?;
        // Mark the connection as peer traffic: applied once, never routed on.
        c.call(&Command::PeerHello, deadline).await?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Sends `cmd`; a peer marked down fails at once (and is probed in the
    /// background once its back-off is over).
    pub async fn call(
        self: &Arc<Self>,
        cmd: &Command,
        deadline: Duration,
    ) -> Result<Response, Error> {
        if self.is_down() {
            self.probe_if_due();
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
        *self.health.lock().unwrap_or_else(|e| e.into_inner()) =
            Health::Down(Instant::now() + backoff);
        self.failures.store(0, Ordering::Relaxed);
        self.mark_downs.fetch_add(1, Ordering::Relaxed);
        // A fresh connection is made for the probe after the back-off.
        for slot in &self.conns {
            *slot.lock().await = None;
        }
        tracing::warn!(peer = %self.node.id, ?backoff, "peer marked down");
    }
}
