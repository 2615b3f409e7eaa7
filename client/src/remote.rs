//! A remote node as seen by whoever talks to it (the client, or a peer node):
//! per lane a few pipelined connections and an in-flight budget, and the
//! node's health. Consecutive failures mark the node down for a jittered,
//! exponential back-off (capped), during which calls fail at once. When the
//! back-off ends, one background probe (`mn`) decides: the node is used again
//! only after it answers, so a hung node never makes real requests wait.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use zonecache_proto::{Command, Response};

use crate::addr::NodeAddr;
use crate::conn::Connection;
use crate::credential::ClusterSecret;
use crate::error::{Error, MARKED_DOWN};
use crate::health::Health;
use crate::lane::Lane;
use crate::latency::Histogram;
use crate::route::Transport;
use crate::topology::NodeConfig;

/// Consecutive failures that mark a node down.
const FAILURES_TO_MARK_DOWN: u32 = 3;
/// First back-off; doubles with every mark-down in a row.
const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest back-off.
const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// How long a probe waits for the node's answer.
const PROBE_DEADLINE: Duration = Duration::from_millis(200);

/// How connections to a node are made and bounded.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Pipelined connections per lane, used in turn.
    pub connections: usize,
    /// Requests in flight to the node at once, per lane (realtime, batch);
    /// beyond it calls fail at once with [`Error::Busy`].
    pub max_in_flight: [usize; 2],
    /// Proved on every new connection (`credential.rs`), making it a peer
    /// link; a server without a cluster (stock memcached) answers `ERROR`,
    /// which is accepted — it routes nothing.
    pub secret: Option<ClusterSecret>,
    /// Batch traffic on connections and a budget of its own (and the node's
    /// batch port when it has one). `false` puts both lanes on the realtime
    /// connections — only useful to measure what lanes are worth.
    pub separate_lanes: bool,
    /// Speak TLS with this configuration on every connection, to the
    /// node's `tls_addr`/`tls_batch_addr` (a node without them is reached
    /// at its addresses, which must then be TLS ports); `None`: plain TCP.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Whether failures mark the node down (calls then fail at once until a
    /// probe answers). A node's lease requests are never held back: a node
    /// that stops asking looks stopped to its peers (`route/fence.rs`).
    pub mark_down: bool,
}

impl Default for NodeOptions {
    fn default() -> NodeOptions {
        NodeOptions {
            connections: 2,
            max_in_flight: [2048, 256],
            secret: None,
            tls: None,
            separate_lanes: true,
            mark_down: true,
        }
    }
}

/// How long a check that a node's port refuses connections may take.
const REFUSAL_PROBE: Duration = Duration::from_millis(50);

/// Microseconds since this process first asked (never 0): the clock of [`Health`].
fn now_us() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_micros() as u64 + 1
}

/// One lane's connections to a node.
struct LanePool {
    addr: NodeAddr,
    /// Used in turn, so one slow reply or large value does not hold up
    /// every request of the lane.
    conns: Vec<tokio::sync::Mutex<Option<Connection>>>,
    next: AtomicU64,
    /// The lane's in-flight budget on this node.
    budget: Arc<Semaphore>,
    max_in_flight: usize,
}

impl LanePool {
    fn new(addr: NodeAddr, connections: usize, max_in_flight: usize) -> LanePool {
        LanePool {
            addr,
            conns: (0..connections.max(1))
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            next: AtomicU64::new(0),
            budget: Arc::new(Semaphore::new(max_in_flight.max(1))),
            max_in_flight: max_in_flight.max(1),
        }
    }
}

/// Counters for a node, read by `stats peers` and the client's stats.
#[derive(Debug, Default)]
pub struct NodeStats {
    pub calls: AtomicU64,
    pub timeouts: AtomicU64,
    pub errors: AtomicU64,
    pub mark_downs: AtomicU64,
    /// Calls refused at once because the lane's budget was spent, or shed
    /// by the node (`SERVER_ERROR busy…`).
    pub shed: AtomicU64,
    /// Sum of call latencies in microseconds (for the mean).
    pub latency_us: AtomicU64,
    /// Call latencies per lane (realtime, batch).
    pub latency: [Histogram; 2],
    /// Calls waiting for a reply right now.
    pub in_flight: AtomicU64,
}

/// A remote node, its connections per lane, and what we know of its health.
pub struct RemoteNode {
    pub config: NodeConfig,
    /// Realtime, batch.
    lanes: [LanePool; 2],
    secret: Option<ClusterSecret>,
    tls: Option<Arc<rustls::ClientConfig>>,
    separate_lanes: bool,
    marks_down: bool,
    failures: AtomicU32,
    /// Mark-downs in a row (sets the back-off).
    strikes: AtomicU32,
    health: Health,
    pub stats: NodeStats,
}

impl RemoteNode {
    /// A node we have not talked to yet; connections open on first use.
    pub fn new(config: NodeConfig, options: &NodeOptions) -> RemoteNode {
        // Over TLS, the node's TLS ports when the config names them (else
        // its addresses are TLS ports already: seeds given as such).
        let (addr, batch) = match (&options.tls, &config.tls_addr) {
            (Some(_), Some(tls)) => (tls, config.tls_batch_addr.as_ref()),
            _ => (&config.addr, config.batch_addr.as_ref()),
        };
        let batch_addr = batch.unwrap_or(addr).clone();
        RemoteNode {
            lanes: [
                LanePool::new(addr.clone(), options.connections, options.max_in_flight[0]),
                LanePool::new(batch_addr, options.connections, options.max_in_flight[1]),
            ],
            config,
            secret: options.secret.clone(),
            tls: options.tls.clone(),
            separate_lanes: options.separate_lanes,
            marks_down: options.mark_down,
            failures: AtomicU32::new(0),
            strikes: AtomicU32::new(0),
            health: Health::default(),
            stats: NodeStats::default(),
        }
    }

    /// Whether the node is marked down (or being probed) right now.
    pub fn is_down(&self) -> bool {
        !self.health.is_up()
    }

    fn pool(&self, lane: Lane) -> &LanePool {
        match lane {
            Lane::Batch if self.separate_lanes => &self.lanes[1],
            _ => &self.lanes[0],
        }
    }

    /// For a marked-down node whose back-off is over: start the one probe.
    fn probe_if_due(self: &Arc<Self>) {
        if !self.health.claim_probe(now_us()) {
            return;
        }
        let node = self.clone();
        tokio::spawn(async move { node.probe(PROBE_DEADLINE, true).await });
    }

    /// Asks the node for `mn`: back in use when it answers; when not, and
    /// `due` (its back-off was over), marked down again for longer. An
    /// early probe that fails changes nothing.
    async fn probe(&self, deadline: Duration, due: bool) {
        let ok = match self.connection(Lane::Realtime, deadline).await {
            Ok(c) => c.call(&Command::MetaNoop, deadline).await.is_ok(),
            Err(_) => false,
        };
        if ok {
            self.failures.store(0, Ordering::Relaxed);
            self.strikes.store(0, Ordering::Relaxed);
            self.health.mark_up();
            tracing::info!(node = %self.config.id, "node answered its probe: back in use");
        } else if due {
            self.mark_down().await;
        }
    }

    async fn connection(&self, lane: Lane, deadline: Duration) -> Result<Connection, Error> {
        let pool = self.pool(lane);
        let i = pool.next.fetch_add(1, Ordering::Relaxed) as usize % pool.conns.len();
        let mut slot = pool.conns[i].lock().await;
        if let Some(c) = slot.as_ref().filter(|c| c.is_open()) {
            return Ok(c.clone());
        }
        // Looked up on every connect: a node replaced under its name
        // (a Kubernetes pod) comes back at another IP.
        let addr = match tokio::time::timeout(deadline, pool.addr.lookup()).await {
            Ok(Ok(addr)) => addr,
            Ok(Err(e)) => return Err(Error::Connection(format!("{}: {e}", pool.addr))),
            Err(_) => return Err(Error::Timeout),
        };
        let tls = self.tls.clone().map(|config| {
            // The certificate is checked against the name the node was given
            // by (a host name, or its IP address).
            let name = rustls::pki_types::ServerName::try_from(pool.addr.host().to_string())
                .unwrap_or_else(|_| rustls::pki_types::ServerName::IpAddress(addr.ip().into()));
            (config, name)
        });
        let c = Connection::connect_tls(addr, deadline, pool.max_in_flight, tls).await?;
        if let Some(secret) = &self.secret {
            crate::credential::prove(&c, secret, deadline)
                .await
                .map_err(|e| match e {
                    Error::Connection(why) => Error::Connection(format!("{}: {why}", pool.addr)),
                    e => e,
                })?;
        }
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Sends `cmd` on `lane`; a node marked down fails at once (and is probed
    /// in the background once its back-off is over), and so does a call
    /// beyond the lane's in-flight budget.
    pub async fn call(
        self: &Arc<Self>,
        cmd: &Command,
        lane: Lane,
        deadline: Duration,
    ) -> Result<Response, Error> {
        if self.is_down() {
            self.probe_if_due();
            return Err(Error::Connection(format!(
                "{} {MARKED_DOWN}",
                self.config.id
            )));
        }
        let Ok(_permit) = self.pool(lane).budget.clone().try_acquire_owned() else {
            self.stats.shed.fetch_add(1, Ordering::Relaxed);
            return Err(Error::Busy);
        };
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        self.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let result = match tokio::time::timeout(deadline, self.connection(lane, deadline)).await {
            Ok(Ok(c)) => c.call(cmd, deadline).await,
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::Timeout),
        };
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        let took = started.elapsed();
        self.stats
            .latency_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        self.stats.latency[lane.index()].record(took);
        match &result {
            // The node answered: it is up, whatever it said.
            Ok(_)
            | Err(Error::Client(_) | Error::UnknownCommand | Error::Server(_) | Error::Shed(_)) => {
                if matches!(result, Err(Error::Shed(_))) {
                    self.stats.shed.fetch_add(1, Ordering::Relaxed);
                }
                self.failures.store(0, Ordering::Relaxed);
                self.strikes.store(0, Ordering::Relaxed);
            }
            Err(e) => {
                if *e == Error::Timeout {
                    self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                }
                // A slow batch reply is the node serving realtime first, not
                // a sign it is down.
                let counts = !(lane == Lane::Batch && *e == Error::Timeout);
                if counts
                    && self.marks_down
                    && self.failures.fetch_add(1, Ordering::Relaxed) + 1 >= FAILURES_TO_MARK_DOWN
                {
                    self.mark_down().await;
                }
            }
        }
        result
    }

    async fn mark_down(&self) {
        let strikes = self.strikes.fetch_add(1, Ordering::Relaxed).min(16);
        let backoff = jitter(BACKOFF_START.saturating_mul(1 << strikes).min(BACKOFF_CAP));
        self.health.mark_down(now_us() + backoff.as_micros() as u64);
        self.failures.store(0, Ordering::Relaxed);
        self.stats.mark_downs.fetch_add(1, Ordering::Relaxed);
        // Fresh connections are made for the probe and after it.
        for pool in &self.lanes {
            for slot in &pool.conns {
                *slot.lock().await = None;
            }
        }
        tracing::warn!(node = %self.config.id, ?backoff, "node marked down");
    }
}

/// The remote nodes of a topology by id: the router's transport, for the
/// client and for a node reaching its peers. Each call goes to its node's
/// pools.
#[derive(Clone, Default)]
pub struct RemoteNodes {
    nodes: Arc<HashMap<String, Arc<RemoteNode>>>,
}

impl RemoteNodes {
    /// Pools for `nodes`; a node still at the same address in `previous`
    /// (a reload) keeps its pools, connections and health.
    pub fn new<'a>(
        nodes: impl IntoIterator<Item = &'a NodeConfig>,
        options: &NodeOptions,
        previous: Option<&RemoteNodes>,
    ) -> RemoteNodes {
        let nodes = nodes
            .into_iter()
            .map(|n| {
                let kept = previous
                    .and_then(|p| p.get(&n.id))
                    .filter(|p| p.config == *n)
                    .cloned();
                let node = kept.unwrap_or_else(|| Arc::new(RemoteNode::new(n.clone(), options)));
                (n.id.clone(), node)
            })
            .collect();
        RemoteNodes {
            nodes: Arc::new(nodes),
        }
    }

    /// The node with this id.
    pub fn get(&self, id: &str) -> Option<&Arc<RemoteNode>> {
        self.nodes.get(id)
    }

    /// Every node, ordered by id.
    pub fn sorted(&self) -> Vec<&Arc<RemoteNode>> {
        let mut nodes: Vec<&Arc<RemoteNode>> = self.nodes.values().collect();
        nodes.sort_by(|a, b| a.config.id.cmp(&b.config.id));
        nodes
    }
}

impl Transport for RemoteNodes {
    async fn call(
        &self,
        node: &NodeConfig,
        cmd: &Command,
        lane: Lane,
        deadline: Duration,
    ) -> Result<Response, Error> {
        match self.nodes.get(&node.id) {
            Some(n) => n.call(cmd, lane, deadline).await,
            None => Err(Error::Connection(format!("unknown node {}", node.id))),
        }
    }

    async fn refuses(&self, node: &NodeConfig) -> bool {
        node.addr.refuses(REFUSAL_PROBE).await
    }

    async fn revive(&self, node: &NodeConfig, deadline: Duration) {
        if let Some(n) = self.nodes.get(&node.id).filter(|n| n.is_down()) {
            n.probe(deadline.min(PROBE_DEADLINE), false).await;
        }
    }
}

/// `d` ± 25 %, so that many clients do not all probe and reconnect at once.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.75 + rand::random::<f64>() * 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_a_quarter() {
        for _ in 0..1000 {
            let j = jitter(Duration::from_millis(400));
            assert!(j >= Duration::from_millis(300) && j <= Duration::from_millis(500));
        }
    }
}
