//! The cluster a node routes by right now, replaced whole when SIGHUP
//! reloads the config, so a request sees one consistent topology.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use zonecache_client::error::CONNECTION_CLOSED;
use zonecache_client::route::{CasClock, Transport};
use zonecache_client::{Error, Lane, NodeConfig};
use zonecache_proto::Command;

use super::topology::{NodeTopology, Overrides};
use super::{ClusterView, Freshness};
use crate::exec::{Executor, Reply};

/// This node's cluster: the current [`ClusterView`], and where to reload it from.
pub struct Cluster {
    current: RwLock<Arc<ClusterView>>,
    /// The config file, read again on SIGHUP.
    path: PathBuf,
    /// Command-line settings applied over every load.
    overrides: Overrides,
    /// Every view's freshness (one for the node's life), at hand without
    /// taking the view lock on each peer request.
    freshness: Arc<Freshness>,
}

impl Cluster {
    /// Loads the config at `path`.
    pub fn load(path: &Path, overrides: Overrides) -> Result<Cluster, String> {
        let mut topology = NodeTopology::load(path)?;
        overrides.apply(&mut topology);
        let view = ClusterView::new(topology, None);
        Ok(Cluster {
            freshness: view.freshness.clone(),
            current: RwLock::new(Arc::new(view)),
            path: path.to_path_buf(),
            overrides,
        })
    }

    /// The cluster as of now.
    pub fn current(&self) -> Arc<ClusterView> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The clock the node's executor versions writes by, when the cluster
    /// has more than one zone (copies to compare); `None` otherwise.
    pub fn versions(&self) -> Option<Arc<CasClock>> {
        let view = self.current();
        (view.router.topology.zones.len() > 1).then(|| view.router.clock())
    }

    /// Whether a peer's `cmd` must be refused now: this node may have
    /// missed writes and `cmd` reads its store or asks it to decide.
    pub fn refuses_for_peer(&self, cmd: &Command) -> bool {
        super::needs_fresh(cmd) && self.freshness.is_catching_up()
    }

    /// Runs for the node's life: after each stall, asks every peer for the
    /// writes this node missed (`zc_sync`), and ends the catch-up once every
    /// reachable peer has given them. A peer that cannot be reached (dead,
    /// or marked down) is not waited for: what it held for this node died
    /// with it or waits until it can deliver (see the README's failure
    /// model).
    pub async fn keep_caught_up(self: Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_millis(5)).await;
            if !self.freshness.is_catching_up() {
                continue;
            }
            let view = self.current();
            let stalls = self.freshness.stalls();
            let sync = Command::PeerSync {
                node: Bytes::from(view.me.id.clone()),
            };
            let deadline = view
                .router
                .topology
                .write_deadline
                .max(Duration::from_millis(200));
            let mut pending: Vec<NodeConfig> = view
                .router
                .topology
                .nodes()
                .filter(|n| n.id != view.me.id)
                .cloned()
                .collect();
            while !pending.is_empty() {
                let replies = join_all(
                    pending
                        .iter()
                        .map(|n| view.peers.call(n, &sync, Lane::Realtime, deadline)),
                )
                .await;
                let mut still = Vec::new();
                for (node, reply) in pending.into_iter().zip(replies) {
                    match reply {
                        // Stock memcached or an older node holds no hints.
                        Ok(_) | Err(Error::UnknownCommand) => {}
                        // Dead or marked down: not waited for.
                        Err(Error::Connection(why)) if !why.starts_with(CONNECTION_CLOSED) => {
                            tracing::warn!(peer = %node.id, %why, "not synced with an unreachable peer");
                        }
                        Err(_) => still.push(node),
                    }
                }
                pending = still;
                if !pending.is_empty() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            self.freshness.caught_up(stalls);
        }
    }

    /// Routes a client's command with the cluster as of now.
    pub async fn serve(&self, exec: &Arc<Executor>, cmd: Command, lane: Lane) -> Reply {
        self.current().serve(exec, cmd, lane).await
    }

    /// Reads the config again and switches to it: new nodes are used at
    /// once, connections to unchanged nodes are kept, and removed nodes'
    /// connections close when their last in-flight request is done. A bad
    /// file leaves the running topology in place.
    pub fn reload(&self) -> Result<(), String> {
        let mut topology = NodeTopology::load(&self.path)?;
        self.overrides.apply(&mut topology);
        let previous = self.current();
        if topology.me.id != previous.me.id {
            return Err("the config names another node; restart to change identity".into());
        }
        let next = Arc::new(ClusterView::new(topology, Some(&previous)));
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = next;
        Ok(())
    }
}
