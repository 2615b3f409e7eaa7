//! The cluster a node routes by right now, replaced whole when SIGHUP
//! reloads the config, so a request sees one consistent topology.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use zonecache_client::route::CasClock;
use zonecache_client::Lane;
use zonecache_proto::Command;

use super::topology::{NodeTopology, Overrides};
use super::ClusterView;
use crate::exec::{Executor, Reply};

/// This node's cluster: the current [`ClusterView`], and where to reload it from.
pub struct Cluster {
    current: RwLock<Arc<ClusterView>>,
    /// The config file, read again on SIGHUP.
    path: PathBuf,
    /// Command-line settings applied over every load.
    overrides: Overrides,
}

impl Cluster {
    /// Loads the config at `path`.
    pub fn load(path: &Path, overrides: Overrides) -> Result<Cluster, String> {
        let mut topology = NodeTopology::load(path)?;
        overrides.apply(&mut topology);
        Ok(Cluster {
            current: RwLock::new(Arc::new(ClusterView::new(topology, None))),
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
