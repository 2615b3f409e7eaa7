//! The cluster a node routes by right now, replaced whole when SIGHUP
//! reloads the config, so a request sees one consistent topology.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use std::time::{Duration, Instant};

use bytes::Bytes;
use zonecache_client::route::{CasClock, Transport, ASK_EVERY, SILENT};
use zonecache_client::{Error, Lane};
use zonecache_proto::{Command, Response};

use super::lease::{Answer, Leases};
use super::topology::{NodeTopology, Overrides};
use super::ClusterView;
use crate::exec::{Executor, Reply};
use crate::stats::ConnCounters;

/// How long an ask may take; a later answer is no answer (the peer is
/// silent, `lease.rs`).
const ASK_DEADLINE: Duration = SILENT;

/// This node's cluster: the current [`ClusterView`], and where to reload it from.
pub struct Cluster {
    current: RwLock<Arc<ClusterView>>,
    /// The config file, read again on SIGHUP.
    path: PathBuf,
    /// Command-line settings applied over every load.
    overrides: Overrides,
    /// Every view's leases (one for the node's life), at hand without
    /// taking the view lock on each peer request.
    pub leases: Arc<Leases>,
}

impl Cluster {
    /// Loads the config at `path`.
    pub fn load(path: &Path, overrides: Overrides) -> Result<Cluster, String> {
        let mut topology = NodeTopology::load(path)?;
        overrides.apply(&mut topology);
        let view = ClusterView::new(topology, None);
        let cluster = Cluster {
            leases: view.leases.clone(),
            current: RwLock::new(Arc::new(view)),
            path: path.to_path_buf(),
            overrides,
        };
        cluster.load_drains()?;
        Ok(cluster)
    }

    /// Where this node keeps the zones' drain weights: beside its config,
    /// so a restart keeps them.
    fn drains_path(&self) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(".drain");
        PathBuf::from(name)
    }

    /// Reads the drain weights kept by an earlier run (none: no file).
    fn load_drains(&self) -> Result<(), String> {
        let path = self.drains_path();
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(());
        };
        let table: toml::Table = text
            .parse()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let drains = self.current().router.drains.clone();
        for (zone, weight) in &table {
            let percent = weight
                .as_integer()
                .filter(|p| (0..=100).contains(p))
                .ok_or_else(|| format!("{}: {zone} is not 0-100", path.display()))?;
            drains.set(zone, percent as u8);
        }
        Ok(())
    }

    /// Writes the drain weights beside the config (after a `zc_drain`).
    fn save_drains(&self) {
        let drains = self.current().router.drains.all();
        let table: toml::Table = drains
            .into_iter()
            .map(|(zone, p)| (zone, toml::Value::Integer(i64::from(p))))
            .collect();
        let text = toml::to_string(&table).expect("a table of integers is TOML");
        if let Err(e) = std::fs::write(self.drains_path(), text) {
            tracing::error!(error = %e, "drain weights not kept: a restart forgets them");
        }
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

    /// Whether a peer's `cmd` must be refused now: it reads this node's
    /// store or asks it to decide, and this node lacks a peer's lease.
    pub fn refuses_for_peer(&self, cmd: &Command) -> bool {
        super::needs_fresh(cmd) && !self.leases.serving()
    }

    /// Runs for the node's life: asks every peer for a read lease every
    /// few milliseconds (`lease.rs`), each on its own connection.
    pub async fn keep_leases(self: Arc<Self>, exec: Arc<Executor>) {
        loop {
            let view = self.current();
            let ids = view
                .router
                .topology
                .nodes()
                .filter(|n| n.id != view.me.id)
                .map(|n| n.id.clone())
                .collect();
            for id in self.leases.to_ask(ids) {
                let Some(node) = view.router.topology.nodes().find(|n| n.id == id).cloned() else {
                    continue;
                };
                let (view, leases, exec) = (view.clone(), self.leases.clone(), exec.clone());
                tokio::spawn(async move {
                    let ask = Command::PeerLease {
                        node: Bytes::from(view.me.id.clone()),
                        fenced: leases.fenced_by(&node.id),
                    };
                    let sent = Instant::now();
                    let reply = view
                        .lease_peers
                        .call(&node, &ask, Lane::Realtime, ASK_DEADLINE)
                        .await;
                    let answer = match reply {
                        // Stock memcached holds no writes for anyone.
                        Ok(_) | Err(Error::UnknownCommand) => Answer::Granted,
                        Err(Error::Server(_)) => Answer::Behind,
                        Err(e) if e.is_refused() => Answer::Refused,
                        Err(Error::Timeout) => Answer::Silent,
                        Err(_) => Answer::Unreachable,
                    };
                    leases.answered(&node.id, sent, answer, || {
                        let flush = Command::FlushAll {
                            delay: 0,
                            noreply: false,
                        };
                        let mut counters = ConnCounters::default();
                        exec.execute(flush, &mut counters);
                    });
                });
            }
            self.leases.stalls().runtime_tick();
            tokio::time::sleep(ASK_EVERY).await;
        }
    }

    /// Routes a client's command with the cluster as of now.
    pub async fn serve(&self, exec: &Arc<Executor>, cmd: Command, lane: Lane) -> Reply {
        let drain = matches!(cmd, Command::PeerDrain { .. });
        let reply = self.current().serve(exec, cmd, lane).await;
        if drain && matches!(reply, Reply::Send(Response::Ok)) {
            self.save_drains();
        }
        reply
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
