//! The cluster: one copy of the data per zone. This layer takes a client's
//! command, strips what the client asked to be spared (`noreply`, meta `q`),
//! and hands it to the client crate's [`Router`] — the same routing code
//! the Rust client runs in direct mode, on the route the shared plan gives
//! it. The router reaches this node's own store through the executor
//! without a hop ([`LocalHop`]) and peers through the client crate's
//! pools, marked as peer traffic so they apply it and never route it again.
//!
//! It also keeps the topology current (SIGHUP reload, `reload.rs`) and
//! serves `stats zones` and `stats peers` (`stats.rs`).

mod dump;
mod lease;
mod reload;
mod silence;
mod stalls;
mod stats;
pub mod topology;
mod tried;
mod warm;

use std::sync::Arc;
use std::time::Duration;

use zonecache_client::route::{plan, Route, Router, Transport};
use zonecache_client::{ClusterSecret, Error, Lane, NodeOptions, RemoteNodes};
use zonecache_proto::{Command, Response};

use crate::exec::{Executor, Reply};
use crate::stats::ConnCounters;
use silence::Silence;
use topology::{NodeConfig, NodeTopology};

pub use lease::Leases;
pub use reload::{Cluster, ClusterOptions};
pub use stalls::Stalls;
pub use tried::{fell_back, is_read, Tried, ZoneIndex};
pub use warm::{Warm, WarmState};

/// Pipelined connections per peer and lane.
const CONNECTIONS_PER_PEER: usize = 2;
/// Requests in flight to one peer: realtime, batch.
const PEER_IN_FLIGHT: [usize; 2] = [4096, 512];

/// One topology's routing state: what a request routes by from start to
/// end, even when a reload replaces it meanwhile.
pub struct ClusterView {
    /// This node.
    pub me: NodeConfig,
    router: Router,
    peers: RemoteNodes,
    /// One quiet connection per peer for lease requests, so they never
    /// wait behind copies.
    lease_peers: RemoteNodes,
    /// Whether this node may serve reads; kept across reloads.
    pub leases: Arc<Leases>,
    /// Each node's zone, to say which zones a request called.
    pub zones: Arc<ZoneIndex>,
    /// What a peer link proves (the config's, re-read on reload).
    pub secret: ClusterSecret,
    /// The config's `[peer_tls]` this view's peer links speak.
    peer_tls: Option<topology::PeerTlsLoaded>,
}

impl ClusterView {
    /// Routing state for `topology`, keeping `previous`'s connections to
    /// nodes that are still there at the same addresses.
    fn new(topology: NodeTopology, previous: Option<&ClusterView>) -> ClusterView {
        // Connections made under other TLS settings (or files) are not kept.
        let kept = previous.filter(|p| p.peer_tls == topology.peer_tls);
        let tls = topology.peer_tls.as_ref().map(|t| t.config.clone());
        let pool = |options: NodeOptions, previous: Option<&RemoteNodes>| {
            let peers = topology.nodes().filter(|n| n.id != topology.me.id);
            RemoteNodes::new(peers, &options, previous)
        };
        let peers = pool(
            NodeOptions {
                connections: CONNECTIONS_PER_PEER,
                max_in_flight: PEER_IN_FLIGHT,
                secret: Some(topology.secret.clone()),
                // Over TLS to the peers' TLS ports when the config has
                // [peer_tls]; the cluster secret is proved either way.
                tls: tls.clone(),
                separate_lanes: true,
                mark_down: true,
            },
            kept.map(|p| &p.peers),
        );
        let lease_peers = pool(
            NodeOptions {
                connections: 1,
                max_in_flight: [8, 1],
                secret: Some(topology.secret.clone()),
                tls: tls.clone(),
                separate_lanes: false,
                mark_down: false,
            },
            kept.map(|p| &p.lease_peers),
        );
        let leases = match previous {
            Some(p) => p.leases.clone(),
            None => Leases::new(Stalls::start()),
        };
        let router = match previous {
            Some(p) => Router::reloaded(topology.cluster, &p.router),
            None => {
                let stalls = leases.stalls();
                // CAS values are tagged by writer, so two nodes never stamp the same.
                let tag = topology
                    .me
                    .id
                    .bytes()
                    .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
                let mut router =
                    Router::new(topology.cluster, tag, Box::new(move || stalls.count()));
                router.me = Some(topology.me.id.clone());
                router
            }
        };
        ClusterView {
            me: topology.me,
            secret: topology.secret,
            peer_tls: topology.peer_tls,
            zones: ZoneIndex::of(&router.topology),
            router,
            peers,
            lease_peers,
            leases,
        }
    }

    /// Whether peer links speak TLS (the config has `[peer_tls]`).
    pub fn speaks_peer_tls(&self) -> bool {
        self.peer_tls.is_some()
    }

    /// Routes a client's command (one the plan does not keep local),
    /// marking in `tried` the zones it calls.
    pub async fn serve(
        &self,
        exec: &Arc<Executor>,
        cmd: Command,
        lane: Lane,
        tried: &Arc<Tried>,
    ) -> Reply {
        if let Command::TooLarge { .. } = cmd {
            // Counted where it was refused, as on a single node.
            let mut counters = ConnCounters {
                store_too_large: 1,
                ..ConnCounters::default()
            };
            exec.stats.absorb(&mut counters);
        }
        let (silence, cmd) = Silence::take(cmd);
        let hop = LocalHop {
            me: self.me.id.as_str().into(),
            peers: self.peers.clone(),
            exec: exec.clone(),
            leases: self.leases.clone(),
            zones: self.zones.clone(),
            tried: tried.clone(),
        };
        silence.apply(self.router.run(&hop, cmd, lane).await)
    }
}

/// How this node reaches a node: itself through the executor, without a
/// hop and without wire bytes; peers through their pools.
#[derive(Clone)]
struct LocalHop {
    me: Arc<str>,
    peers: RemoteNodes,
    exec: Arc<Executor>,
    leases: Arc<Leases>,
    zones: Arc<ZoneIndex>,
    tried: Arc<Tried>,
}

impl Transport for LocalHop {
    async fn refuses(&self, node: &NodeConfig) -> bool {
        *node.id != *self.me && self.peers.refuses(node).await
    }

    async fn revive(&self, node: &NodeConfig, deadline: Duration) {
        if *node.id != *self.me {
            self.peers.revive(node, deadline).await;
        }
    }

    async fn call(
        &self,
        node: &NodeConfig,
        cmd: &Command,
        lane: Lane,
        deadline: Duration,
    ) -> Result<Response, Error> {
        if let Some(zone) = self.zones.zone(&node.id) {
            self.tried.mark(zone);
        }
        if *node.id != *self.me {
            return self.peers.call(node, cmd, lane, deadline).await;
        }
        if self.leases.leaving() && reads_store(cmd) {
            return Err(Error::Connection(format!("{} is leaving", self.me)));
        }
        if needs_fresh(cmd) && !self.leases.wait_serving(cmd, deadline).await {
            // As a node that did not answer: reads go on to other zones,
            // conditional writes fail saying nothing was applied.
            return Err(Error::Connection(format!(
                "{} may have missed writes (it lacks a peer's read lease)",
                self.me
            )));
        }
        let mut counters = ConnCounters::default();
        let reply = self.exec.execute(cmd.clone(), &mut counters);
        self.exec.stats.absorb(&mut counters);
        match reply {
            Reply::Send(response) => Error::from_reply(response),
            // The router sends only commands that want a reply.
            other => Err(Error::Protocol(format!("no local reply: {other:?}"))),
        }
    }
}

/// Whether `cmd` must not run on a node that may have missed writes:
/// reads of its store, and conditional writes it would decide.
pub fn needs_fresh(cmd: &Command) -> bool {
    matches!(cmd, Command::VersionedGet { .. } | Command::PeerDump { .. })
        || matches!(
            plan(cmd),
            Route::MultiRead | Route::MetaRead | Route::Arbitrate { .. }
        )
}

/// Whether `cmd` reads this node's store (as opposed to asking it to
/// decide a conditional write).
pub fn reads_store(cmd: &Command) -> bool {
    matches!(cmd, Command::VersionedGet { .. } | Command::PeerDump { .. })
        || matches!(plan(cmd), Route::MultiRead | Route::MetaRead)
}

/// Whether `cmd` is answered by this node alone, never routed.
pub fn is_local(cmd: &Command) -> bool {
    plan(cmd).is_local()
}
