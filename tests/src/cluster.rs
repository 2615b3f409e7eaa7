//! A multi-zone cluster of real `zonecached` processes on loopback, laid
//! out by `ClusterConfig::local` as `zonecache local` lays one out, each
//! node its own process so it can be stopped or killed alone.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use zonecache_client::{ClusterConfig, ClusterSecret, NodeAddr, NodeConfig, Ring, WritePolicy};

use crate::conn::Conn;
use crate::procs::{free_port, free_port_range, Server};
use crate::proxy::Proxy;

/// One node of a [`TestCluster`].
pub struct ClusterNode {
    /// Node id (`a1`, `b2`, …).
    pub id: String,
    /// Zone name.
    pub zone: String,
    /// The process.
    pub server: Server,
    /// Where it serves `/metrics`, `/healthz` and `/readyz`.
    pub metrics: SocketAddr,
}

/// A multi-zone cluster of real `zonecached` processes on loopback.
pub struct TestCluster {
    pub nodes: Vec<ClusterNode>,
    /// What every node's config file says (each names its own `node`).
    config: ClusterConfig,
    /// Top-level settings the test asked for, in TOML, over the config's.
    settings: toml::Table,
    dir: PathBuf,
    /// With [`TestCluster::start_linked`]: a proxy per (from, to) pair of
    /// nodes, where `from`'s config puts `to`.
    links: HashMap<(String, String), Proxy>,
    /// Arguments every node gets (with [`TestCluster::start_tls`], its
    /// TLS identity); each node's own `--tls-port` is added from its
    /// `tls_addr`.
    node_args: Vec<String>,
}

/// TLS for a [`TestCluster`]'s peer links ([`TestCluster::start_tls`]).
pub struct ClusterTls {
    /// The config's `[peer_tls]`: what peers trust and present.
    pub peer: zonecache_client::PeerTls,
    /// The certificate and key every node serves on its TLS port.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Nodes require a client certificate chaining to this CA
    /// (`--tls-client-ca`: mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// Where the harness puts fault-injecting proxies.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Proxying {
    None,
    /// One per ordered pair of nodes.
    PerLink,
}

impl TestCluster {
    /// Starts `zones` × `per_zone` nodes with `write_policy` and optional
    /// top-level config settings in TOML (`"write_deadline_ms = 200"`).
    pub fn start(zones: usize, per_zone: usize, write_policy: &str, extra: &str) -> TestCluster {
        Self::launch(zones, per_zone, write_policy, extra, Proxying::None, None)
    }

    /// Like [`TestCluster::start`], every node also serving a TLS port
    /// (its `tls_addr`) and peer links speaking TLS as `tls` says.
    pub fn start_tls(
        zones: usize,
        per_zone: usize,
        write_policy: &str,
        tls: &ClusterTls,
    ) -> TestCluster {
        Self::launch(zones, per_zone, write_policy, "", Proxying::None, Some(tls))
    }

    /// Like [`TestCluster::start`], with a proxy on every link between two
    /// nodes ([`TestCluster::link`]): each node's config puts every peer at
    /// the proxy of that link (realtime port), so two nodes can be cut
    /// apart while both still reach the others.
    pub fn start_linked(
        zones: usize,
        per_zone: usize,
        write_policy: &str,
        extra: &str,
    ) -> TestCluster {
        Self::launch(
            zones,
            per_zone,
            write_policy,
            extra,
            Proxying::PerLink,
            None,
        )
    }

    fn launch(
        zones: usize,
        per_zone: usize,
        write_policy: &str,
        extra: &str,
        proxying: Proxying,
        tls: Option<&ClusterTls>,
    ) -> TestCluster {
        let base = free_port_range(2 * (zones * per_zone) as u16).expect("free ports");
        let mut config = ClusterConfig::local(zones, per_zone, base).expect("cluster shape");
        config.write_policy = WritePolicy::from_name(write_policy).expect("write policy");
        let mut node_args = Vec::new();
        if let Some(tls) = tls {
            for node in config.zones.iter_mut().flat_map(|z| z.nodes.iter_mut()) {
                node.tls_addr = Some(node.addr.with_port(free_port()));
            }
            config.peer_tls = Some(tls.peer.clone());
            let path = |p: &PathBuf| p.to_str().expect("utf-8 path").to_string();
            node_args = vec![
                "--tls-cert".into(),
                path(&tls.cert),
                "--tls-key".into(),
                path(&tls.key),
            ];
            if let Some(ca) = &tls.client_ca {
                node_args.extend(["--tls-client-ca".into(), path(ca)]);
            }
        }
        let dir = std::env::temp_dir().join(format!("zc-cluster-{}-{base}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("config dir");
        let mut cluster = TestCluster {
            nodes: Vec::new(),
            config,
            settings: extra.parse().expect("extra settings are TOML"),
            dir,
            links: HashMap::new(),
            node_args,
        };
        let all: Vec<(String, NodeConfig)> = cluster
            .config
            .zones
            .iter()
            .flat_map(|z| z.nodes.iter().map(|n| (z.name.clone(), n.clone())))
            .collect();
        for (_, from) in all.iter().filter(|_| proxying == Proxying::PerLink) {
            for (_, to) in all.iter().filter(|(_, to)| to.id != from.id) {
                let proxy = Proxy::start(([127, 0, 0, 1], 0).into(), loopback(&to.addr));
                cluster
                    .links
                    .insert((from.id.clone(), to.id.clone()), proxy);
            }
        }
        cluster.write_configs();
        for (zone, node) in all {
            cluster.spawn(&zone, &node, &[]);
        }
        for id in cluster
            .nodes
            .iter()
            .map(|n| n.id.clone())
            .collect::<Vec<_>>()
        {
            cluster.wait_warm(&id, Duration::from_secs(20));
        }
        cluster
    }

    /// Waits (bounded) until node `id` has finished warming up (a fresh
    /// cluster's nodes warm from each other at start, finding nothing), so
    /// a test's own writes never race a warm-up's copies.
    pub fn wait_warm(&self, id: &str, within: Duration) {
        let start = Instant::now();
        loop {
            let stats = self.node(id).server.stats();
            let state = stats.get("warm_state").map(String::as_str);
            if matches!(state, Some("done" | "off") | None) {
                return;
            }
            assert!(
                start.elapsed() < within,
                "{id} still warming after {within:?}: {stats:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The config file of node `id` (clients read the same files).
    pub fn config_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.toml"))
    }

    /// Writes every node's config.
    fn write_configs(&self) {
        for node in self.config.zones.iter().flat_map(|z| &z.nodes) {
            // With links, this node reaches each peer through its link.
            let mut view = self.config.clone();
            for peer in view.zones.iter_mut().flat_map(|z| z.nodes.iter_mut()) {
                if let Some(link) = self.links.get(&(node.id.clone(), peer.id.clone())) {
                    peer.addr = link.addr.into();
                }
            }
            let text = view.file_for(&node.id);
            let mut table: toml::Table = text.parse().expect("a config is TOML");
            table.extend(self.settings.clone());
            let text = toml::to_string(&table).expect("TOML");
            std::fs::write(self.config_path(&node.id), text).expect("write config");
        }
    }

    fn spawn(&mut self, zone: &str, node: &NodeConfig, extra: &[&str]) {
        self.spawn_logging(zone, node, extra, None)
    }

    fn spawn_logging(
        &mut self,
        zone: &str,
        node: &NodeConfig,
        extra: &[&str],
        log: Option<&std::path::Path>,
    ) {
        let path = self.config_path(&node.id);
        let batch = node
            .batch_addr
            .as_ref()
            .expect("test nodes have a batch port")
            .port();
        let batch = batch.to_string();
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let metrics_port = metrics.port().to_string();
        let mut args = vec![
            "--batch-port",
            &batch,
            "--metrics-port",
            &metrics_port,
            "-m",
            "16",
            "-t",
            "1",
            "--config",
            path.to_str().expect("utf-8 path"),
        ];
        let tls_port = node.tls_addr.as_ref().map(|a| a.port().to_string());
        if let Some(port) = &tls_port {
            args.extend(["--tls-port", port]);
        }
        args.extend(self.node_args.iter().map(String::as_str));
        args.extend_from_slice(extra);
        let server = Server::zonecached_logging_on(node.addr.port(), &args, log);
        self.nodes.push(ClusterNode {
            id: node.id.clone(),
            zone: zone.to_string(),
            server,
            metrics,
        });
    }

    /// Adds a node to `zone`: rewrites every config, starts the new node,
    /// and sends SIGHUP to the others so they reload. Returns its id.
    pub fn add_node(&mut self, zone: &str) -> String {
        let (port, batch) = (free_port(), free_port());
        let entry = self
            .config
            .zones
            .iter_mut()
            .find(|z| z.name == zone)
            .expect("zone");
        let id = format!("{zone}{}", entry.nodes.len() + 1);
        let node = NodeConfig {
            id: id.clone(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)).into(),
            batch_addr: Some(SocketAddr::from(([127, 0, 0, 1], batch)).into()),
            tls_addr: None,
            tls_batch_addr: None,
            weight: 1,
        };
        entry.nodes.push(node.clone());
        self.write_configs();
        self.spawn(zone, &node, &[]);
        for n in &self.nodes {
            if n.id != id {
                n.server.signal(libc::SIGHUP);
            }
        }
        id
    }

    /// Kills node `id` (SIGKILL) and starts it again, empty, on the same
    /// ports with the same config: a replaced or crashed node coming back.
    pub fn restart(&mut self, id: &str) {
        self.restart_with(id, &[]);
    }

    /// [`TestCluster::restart`] with more `zonecached` arguments.
    pub fn restart_with(&mut self, id: &str, extra: &[&str]) {
        self.restart_logging(id, extra, None);
    }

    /// [`TestCluster::restart_with`], the node's log (stderr) written to
    /// `log`.
    pub fn restart_logging(&mut self, id: &str, extra: &[&str], log: Option<&std::path::Path>) {
        let at = self.nodes.iter().position(|n| n.id == id).expect("node id");
        let old = self.nodes.remove(at);
        old.server.signal(libc::SIGKILL);
        drop(old);
        let node = self
            .config
            .zones
            .iter()
            .flat_map(|z| z.nodes.iter().map(move |n| (z.name.clone(), n.clone())))
            .find(|(_, n)| n.id == id)
            .expect("node in config");
        self.spawn_logging(&node.0, &node.1, extra, log);
    }

    /// The owner of `key` in `zone`, computed with the ring the nodes use.
    pub fn owner(&self, zone: &str, key: &str) -> String {
        let ids = self.zone(zone);
        let ring = Ring::new(&ids.iter().map(|id| (id.clone(), 1)).collect::<Vec<_>>());
        ids[ring.owner(key.as_bytes()).expect("nodes")].clone()
    }

    /// The value and CAS (version) node `id` itself holds for `key`,
    /// asked on a peer connection so nothing is routed; `None` also while
    /// the node serves no reads (it lacks a peer's read lease). Ends with
    /// `mn`, not the sync marker: the marker is a read, refused meanwhile.
    pub fn held(&self, id: &str, key: &str) -> Option<(String, String)> {
        let mut conn = self.local(id);
        conn.send(format!("mg {key} v c\r\nmn\r\n").as_bytes());
        let reply = conn.read_until(b"MN\r\n");
        let text = String::from_utf8_lossy(&reply).to_string();
        let mut lines = text.lines();
        let head = lines.next().filter(|h| h.starts_with("VA "))?;
        let cas = head
            .split(' ')
            .find_map(|t| t.strip_prefix('c'))?
            .to_string();
        Some((lines.next()?.to_string(), cas))
    }

    /// The proxy on the link from node `from` to node `to` (a cluster
    /// started with [`TestCluster::start_linked`]).
    pub fn link(&self, from: &str, to: &str) -> &Proxy {
        self.links
            .get(&(from.to_string(), to.to_string()))
            .expect("a linked cluster's link")
    }

    /// The node with this id.
    pub fn node(&self, id: &str) -> &ClusterNode {
        self.nodes.iter().find(|n| n.id == id).expect("node id")
    }

    /// Mutable access to the node with this id.
    pub fn node_mut(&mut self, id: &str) -> &mut ClusterNode {
        self.nodes.iter_mut().find(|n| n.id == id).expect("node id")
    }

    /// A connection that proved the cluster secret (peer traffic): reads
    /// this node's own store only.
    pub fn local(&self, id: &str) -> Conn {
        let mut c = self.node(id).server.connect();
        c.prove(&self.secret());
        c
    }

    /// What every node's config says (less its `node`).
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// The cluster secret every node's config names.
    pub fn secret(&self) -> ClusterSecret {
        self.config
            .cluster_secret()
            .expect("the secret reads")
            .expect("a test cluster has a secret")
    }

    /// Node ids of one zone.
    pub fn zone(&self, zone: &str) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.zone == zone)
            .map(|n| n.id.clone())
            .collect()
    }

    /// The ids of the nodes whose own store holds `key`.
    pub fn holders(&self, key: &str) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.server.is_alive())
            .filter(|n| {
                let mut c = self.local(&n.id);
                c.request(format!("mg {key}\r\n").as_bytes()) == b"HD\r\n"
            })
            .map(|n| n.id.clone())
            .collect()
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            // A SIGSTOPped node must be continued to be killed cleanly.
            // SAFETY: kill has no memory preconditions.
            unsafe { libc::kill(n.server.pid() as i32, libc::SIGCONT) };
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The address of a node the harness laid out on loopback.
pub fn loopback(addr: &NodeAddr) -> SocketAddr {
    addr.socket_addr().expect("test nodes have IP addresses")
}
