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

mod freshness;
mod reload;
mod silence;
mod stats;
pub mod topology;

use std::sync::Arc;
use std::time::Duration;

use zonecache_client::route::{plan, Route, Router, Transport};
use zonecache_client::{Error, Lane, NodeOptions, RemoteNodes};
use zonecache_proto::{Command, Response};

use crate::exec::{Executor, Reply};
use crate::stats::ConnCounters;
use silence::Silence;
use topology::{NodeConfig, NodeTopology};

pub use freshness::Freshness;
pub use reload::Cluster;

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
    /// Whether this node may have missed writes; kept across reloads.
    pub freshness: Arc<Freshness>,
}

impl ClusterView {
    /// Routing state for `topology`, keeping `previous`'s connections to
    /// nodes that are still there at the same addresses.
    fn new(topology: NodeTopology, previous: Option<&ClusterView>) -> ClusterView {
        let options = NodeOptions {
            connections: CONNECTIONS_PER_PEER,
            max_in_flight: PEER_IN_FLIGHT,
            hello: Some(Command::PeerHello),
            separate_lanes: true,
        };
        let peers = RemoteNodes::new(
            topology.nodes().filter(|n| n.id != topology.me.id),
            &options,
            previous.map(|p| &p.peers),
        );
        // Decided at start: a reload to more zones needs a restart to watch.
        let freshness = match previous {
            Some(p) => p.freshness.clone(),
            None if topology.cluster.zones.len() > 1 => Freshness::start(),
            None => Freshness::unwatched(),
        };
        let router = match previous {
            Some(p) => Router::reloaded(topology.cluster, &p.router),
            None => {
                // CAS values are tagged by writer, so two nodes never stamp the same.
                let tag = topology
                    .me
                    .id
                    .bytes()
                    .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
                Router::new(topology.cluster, tag)
            }
        };
        ClusterView {
            me: topology.me,
            router,
            peers,
            freshness,
        }
    }

    /// Routes a client's command (one the plan does not keep local).
    pub async fn serve(&self, exec: &Arc<Executor>, cmd: Command, lane: Lane) -> Reply {
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
            freshness: self.freshness.clone(),
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
    freshness: Arc<Freshness>,
}

impl Transport for LocalHop {
    async fn call(
        &self,
        node: &NodeConfig,
        cmd: &Command,
        lane: Lane,
        deadline: Duration,
    ) -> Result<Response, Error> {
        if *node.id != *self.me {
            return self.peers.call(node, cmd, lane, deadline).await;
        }
        if needs_fresh(cmd) && !self.freshness.wait_caught_up(cmd, deadline).await {
            // As a node that did not answer: reads go on to other zones,
            // conditional writes fail saying nothing was applied.
            return Err(Error::Connection(format!(
                "{} is catching up on writes it missed",
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
    matches!(cmd, Command::VersionedGet { .. })
        || matches!(
            plan(cmd),
            Route::MultiRead | Route::MetaRead | Route::Arbitrate { .. }
        )
}

/// Whether `cmd` is answered by this node alone, never routed.
pub fn is_local(cmd: &Command) -> bool {
    plan(cmd).is_local()
}
