//! The cluster a node routes by right now, replaced whole when SIGHUP
//! reloads the config, so a request sees one consistent topology.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use std::time::{Duration, Instant};

use bytes::Bytes;
use zonecache_client::route::{read_weights, CasClock, Transport, ASK_EVERY, SILENT};
use zonecache_client::{Error, Lane};
use zonecache_proto::{Command, Response};

use super::lease::{Answer, Leases};
use super::topology::{NodeTopology, Overrides};
use super::warm::Warm;
use super::{ClusterView, Tried};
use crate::exec::{Executor, Reply};
use crate::stats::ConnCounters;

/// How long an ask may take; a later answer is no answer (the peer is
/// silent, `lease.rs`).
const ASK_DEADLINE: Duration = SILENT;
/// How long a starting node keeps asking its peers for the drain weights.
const LEARN_DRAINS_WITHIN: Duration = Duration::from_secs(10);

/// What the node's command line says about its cluster, on top of the
/// config file.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Settings applied over every load of the file.
    pub overrides: Overrides,
    /// This node's id, instead of the file's `node` (a Kubernetes pod
    /// passes its own name, so every pod can mount the same file).
    pub node: Option<String>,
    /// Keys per second copied from another zone at start (0 = unpaced);
    /// `None`: no warm-up. A single-zone cluster has nothing to warm from.
    pub warm_rate: Option<u32>,
    /// Where the node keeps what it must remember across restarts (the
    /// drain weights); `None`: beside the config file.
    pub state_dir: Option<PathBuf>,
}

/// This node's cluster: the current [`ClusterView`], and where to reload it from.
pub struct Cluster {
    current: RwLock<Arc<ClusterView>>,
    /// The config file, read again on SIGHUP.
    path: PathBuf,
    /// The command line's say, applied over every load.
    options: ClusterOptions,
    /// Every view's leases (one for the node's life), at hand without
    /// taking the view lock on each peer request.
    pub leases: Arc<Leases>,
    /// This node's warm-up (`warm.rs`).
    pub warm: Arc<Warm>,
}

impl Cluster {
    /// Loads the config at `path`.
    pub fn load(path: &Path, options: ClusterOptions) -> Result<Cluster, String> {
        let topology = Self::read(path, &options)?;
        let warming = options.warm_rate.is_some() && topology.zones.len() > 1;
        let view = ClusterView::new(topology, None);
        let cluster = Cluster {
            warm: Warm::new(warming, options.warm_rate.unwrap_or(0)),
            leases: view.leases.clone(),
            current: RwLock::new(Arc::new(view)),
            path: path.to_path_buf(),
            options,
        };
        cluster.load_drains()?;
        Ok(cluster)
    }

    /// The file with the command line's say on top.
    fn read(path: &Path, options: &ClusterOptions) -> Result<NodeTopology, String> {
        let mut topology = NodeTopology::load_as(path, options.node.as_deref())?;
        options.overrides.apply(&mut topology);
        Ok(topology)
    }

    /// Where this node keeps the zones' drain weights, so a restart keeps
    /// them: in its state directory, else beside its config.
    fn drains_path(&self) -> PathBuf {
        match &self.options.state_dir {
            Some(dir) => dir.join(format!("{}.drain", self.current().me.id)),
            None => {
                let mut name = self.path.as_os_str().to_owned();
                name.push(".drain");
                PathBuf::from(name)
            }
        }
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

    /// At start, in a multi-zone cluster: the drain weights as the other
    /// nodes have them, which are newer than the kept ones when this node
    /// was down during a drain. Asks until a peer answers (10 s at most).
    pub async fn learn_drains(self: Arc<Self>) {
        let until = Instant::now() + LEARN_DRAINS_WITHIN;
        while Instant::now() < until {
            let view = self.current();
            if view.router.topology.zones.len() < 2 {
                return;
            }
            let me = Some(view.me.id.as_str());
            let topology = &view.router.topology;
            if let Some(weights) = read_weights(&view.peers, topology, me, ASK_DEADLINE).await {
                let drains = &view.router.drains;
                let changed = weights.iter().any(|(z, p)| drains.get(z) != *p);
                for (zone, percent) in weights {
                    drains.set(&zone, percent);
                }
                if changed {
                    tracing::info!("drain weights learned from peers");
                    self.save_drains();
                }
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
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
        (self.leases.leaving() && super::reads_store(cmd))
            || (super::needs_fresh(cmd) && !self.leases.serving())
    }

    /// `zc_leave`: this node is about to stop; from now on its store
    /// serves no reads (its peers and its clients read other zones).
    pub fn leave(&self) -> Reply {
        if !self.leases.leaving() {
            tracing::info!("leaving: reads go to other zones from now on");
        }
        self.leases.leave();
        Reply::Send(Response::Ok)
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

    /// Answers a peer's `zc_dump` from this node's store.
    pub fn dump(&self, exec: &Executor, cmd: &Command) -> Reply {
        let view = self.current();
        Reply::Send(super::dump::page(
            &*exec.storage,
            &view.router.topology,
            cmd,
        ))
    }

    /// Routes a client's command with the cluster as of now, marking in
    /// `tried` the zones it calls.
    pub async fn serve(
        &self,
        exec: &Arc<Executor>,
        cmd: Command,
        lane: Lane,
        tried: &Arc<Tried>,
    ) -> Reply {
        let drain = matches!(cmd, Command::PeerDrain { .. });
        let reply = self.current().serve(exec, cmd, lane, tried).await;
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
        let topology = Self::read(&self.path, &self.options)?;
        let previous = self.current();
        if topology.me.id != previous.me.id {
            return Err("the config names another node; restart to change identity".into());
        }
        let next = Arc::new(ClusterView::new(topology, Some(&previous)));
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = next;
        Ok(())
    }
}
