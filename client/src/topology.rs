//! The cluster's shape, read from a TOML file: zones, their nodes, the
//! write policy and the deadlines. Nodes and clients read the same file; a
//! node names itself in `node`, a client names its home zone instead.
//!
//! ```toml
//! node = "a1"                      # this node (nodes only)
//! write_policy = "all-minus-one"   # one | quorum | all-minus-one | all
//! read_deadline_ms = 20
//! write_deadline_ms = 50
//! fallback = ["b", "c"]            # zones to read from after the home zone
//! read_repair = true               # copy hits from other zones home (default)
//! batch_deadline_ms = 500          # batch lane calls between nodes
//! hints_max_bytes = 67108864       # writes kept per unreachable peer
//! hedge_percent = 5                # realtime reads hedged at most (0: none)
//! hedge_min_delay_us = 1000        # a hedge waits at least this long
//!
//! [[zones]]
//! name = "a"
//! nodes = [{ id = "a1", addr = "127.0.0.1:21001", batch_addr = "127.0.0.1:22001" },
//!          { id = "a2", addr = "127.0.0.1:21002", weight = 2 }]
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use crate::credential::ClusterSecret;
use serde::{Deserialize, Serialize};

pub use crate::addr::NodeAddr;
use crate::Ring;

/// How many zone copies must acknowledge a write before the caller hears
/// success; the rest complete in the background.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WritePolicy {
    One,
    Quorum,
    AllMinusOne,
    All,
}

impl WritePolicy {
    /// Acknowledgements needed out of `zones` copies.
    pub fn needed(self, zones: usize) -> usize {
        match self {
            WritePolicy::One => 1,
            WritePolicy::Quorum => zones / 2 + 1,
            WritePolicy::AllMinusOne => zones.saturating_sub(1).max(1),
            WritePolicy::All => zones,
        }
        .min(zones)
        .max(1)
    }

    /// The policy named `name` (as in config files).
    pub fn from_name(name: &str) -> Result<WritePolicy, String> {
        [
            WritePolicy::One,
            WritePolicy::Quorum,
            WritePolicy::AllMinusOne,
            WritePolicy::All,
        ]
        .into_iter()
        .find(|p| p.name() == name)
        .ok_or_else(|| format!("write policy {name:?}: use one, quorum, all-minus-one or all"))
    }

    /// The name used in config files and error messages.
    pub fn name(self) -> &'static str {
        match self {
            WritePolicy::One => "one",
            WritePolicy::Quorum => "quorum",
            WritePolicy::AllMinusOne => "all-minus-one",
            WritePolicy::All => "all",
        }
    }
}

fn default_policy() -> WritePolicy {
    WritePolicy::AllMinusOne
}
fn default_read_ms() -> u64 {
    20
}
fn default_write_ms() -> u64 {
    50
}
fn default_hints_max() -> usize {
    64 << 20
}
fn default_hedge_percent() -> u32 {
    5
}
fn default_hedge_min_delay_us() -> u64 {
    1_000
}

fn default_batch_ms() -> u64 {
    500
}
fn default_weight() -> u32 {
    1
}

/// One node as the config names it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Names the node in the config, in stats, and on the ring.
    pub id: String,
    /// Where realtime traffic goes: `ip:port` or `name:port` (resolved on
    /// every connect).
    pub addr: NodeAddr,
    /// The node's batch-lane port (`--batch-port`), served with lower
    /// priority and shed first; without it batch traffic uses `addr` on
    /// connections of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_addr: Option<NodeAddr>,
    /// The node's TLS port (`--tls-port`): where peers and direct-mode
    /// clients connect when the config has `[peer_tls]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_addr: Option<NodeAddr>,
    /// Its batch lane over TLS (`--tls-batch-port`); without it batch
    /// traffic over TLS uses `tls_addr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_batch_addr: Option<NodeAddr>,
    /// Share of the zone's keys, relative to the other nodes.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

impl NodeConfig {
    /// A node known only by its address (a seed list, a stock memcached).
    pub fn at(addr: SocketAddr) -> NodeConfig {
        NodeConfig {
            id: addr.to_string(),
            addr: addr.into(),
            batch_addr: None,
            tls_addr: None,
            tls_batch_addr: None,
            weight: 1,
        }
    }
}

/// One zone as the config names it.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ZoneConfig {
    pub name: String,
    pub nodes: Vec<NodeConfig>,
}

/// The file's contents.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The node this file configures; clients leave it out (or ignore it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default = "default_policy")]
    pub write_policy: WritePolicy,
    #[serde(default = "default_read_ms")]
    pub read_deadline_ms: u64,
    #[serde(default = "default_write_ms")]
    pub write_deadline_ms: u64,
    #[serde(default)]
    pub fallback: Vec<String>,
    #[serde(default = "default_true")]
    pub read_repair: bool,
    #[serde(default = "default_batch_ms")]
    pub batch_deadline_ms: u64,
    /// Bytes of missed writes (hints) kept per peer; beyond it the peer is
    /// treated as cold (flushed) when it is back.
    #[serde(default = "default_hints_max")]
    pub hints_max_bytes: usize,
    /// The share (percent) of realtime reads to the home zone that may
    /// also be sent to the next zone when the home owner is slow to answer
    /// (`route/hedge.rs`); 0 turns hedged reads off.
    #[serde(default = "default_hedge_percent")]
    pub hedge_percent: u32,
    /// The least a read waits for the home owner before it is hedged,
    /// whatever that owner's learned p99.
    #[serde(default = "default_hedge_min_delay_us")]
    pub hedge_min_delay_us: u64,
    /// The cluster secret in the file itself (prefer `secret_file`): the
    /// credential peer links and direct-mode clients prove.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// A file holding the cluster secret (relative to this config file's
    /// folder): a mounted Kubernetes Secret, a file only the service
    /// account can read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<std::path::PathBuf>,
    /// TLS for peer links and direct-mode clients (`tls.rs`): every node
    /// then needs a `tls_addr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_tls: Option<crate::tls::PeerTls>,
    pub zones: Vec<ZoneConfig>,
}

impl ClusterConfig {
    /// Parses a config file's text.
    pub fn parse(text: &str) -> Result<ClusterConfig, String> {
        toml::from_str(text).map_err(|e| format!("cluster config: {e}"))
    }

    /// Reads a config file; a relative `secret_file` or `[peer_tls]` file
    /// is taken from the file's folder.
    pub fn load(path: &std::path::Path) -> Result<ClusterConfig, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut config =
            ClusterConfig::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if let Some(folder) = path.parent() {
            config.secret_file = config.secret_file.map(|file| folder.join(file));
            config.peer_tls = config.peer_tls.map(|tls| tls.relative_to(folder));
        }
        Ok(config)
    }

    /// The cluster secret the config names (`secret` or `secret_file`), if any.
    pub fn cluster_secret(&self) -> Result<Option<ClusterSecret>, String> {
        match (&self.secret, &self.secret_file) {
            (Some(_), Some(_)) => {
                Err("cluster config: give `secret` or `secret_file`, not both".into())
            }
            (Some(text), None) => ClusterSecret::new(text.as_bytes())
                .map(Some)
                .map_err(|e| format!("cluster config: {e}")),
            (None, Some(path)) => ClusterSecret::read(path).map(Some),
            (None, None) => Ok(None),
        }
    }

    /// The zone `node` belongs to.
    pub fn zone_of(&self, node: &str) -> Option<&ZoneConfig> {
        self.zones
            .iter()
            .find(|z| z.nodes.iter().any(|n| n.id == node))
    }

    /// A single-zone cluster of these addresses: a seed list, or stock
    /// memcached servers.
    pub fn single_zone(addrs: &[SocketAddr]) -> ClusterConfig {
        ClusterConfig::with_zones(vec![ZoneConfig {
            name: "default".into(),
            nodes: addrs.iter().map(|a| NodeConfig::at(*a)).collect(),
        }])
    }

    /// A cluster of `zones` × `nodes` on loopback, as `zonecache local`,
    /// the tests and the bench start it: zones `a`, `b`, …, nodes `a1`,
    /// `a2`, …; realtime ports from `base_port` in that order, then as many
    /// batch ports after them. A new random secret, in the file itself.
    /// Defaults for everything else.
    pub fn local(zones: usize, nodes: usize, base_port: u16) -> Result<ClusterConfig, String> {
        const NAMES: &str = "abcdefgh";
        if zones == 0 || zones > NAMES.len() || nodes == 0 {
            return Err(format!(
                "zones must be 1 to {}, nodes at least 1",
                NAMES.len()
            ));
        }
        let count = zones * nodes;
        if base_port as usize + 2 * count > 65_536 {
            return Err("ports beyond 65535: choose a lower base port".into());
        }
        let port = |i: usize| SocketAddr::from(([127, 0, 0, 1], base_port + i as u16));
        let zone_list = NAMES[..zones]
            .chars()
            .enumerate()
            .map(|(z, name)| ZoneConfig {
                name: name.to_string(),
                nodes: (0..nodes)
                    .map(|n| NodeConfig {
                        id: format!("{name}{}", n + 1),
                        addr: port(z * nodes + n).into(),
                        batch_addr: Some(port(count + z * nodes + n).into()),
                        tls_addr: None,
                        tls_batch_addr: None,
                        weight: 1,
                    })
                    .collect(),
            })
            .collect();
        Ok(ClusterConfig {
            secret: Some(ClusterSecret::generate()),
            ..ClusterConfig::with_zones(zone_list)
        })
    }

    fn with_zones(zones: Vec<ZoneConfig>) -> ClusterConfig {
        ClusterConfig {
            node: None,
            write_policy: default_policy(),
            read_deadline_ms: default_read_ms(),
            write_deadline_ms: default_write_ms(),
            fallback: Vec::new(),
            read_repair: true,
            batch_deadline_ms: default_batch_ms(),
            hints_max_bytes: default_hints_max(),
            hedge_percent: default_hedge_percent(),
            hedge_min_delay_us: default_hedge_min_delay_us(),
            secret: None,
            secret_file: None,
            peer_tls: None,
            zones,
        }
    }

    /// The config file for node `node` of this cluster, in TOML.
    pub fn file_for(&self, node: &str) -> String {
        let config = ClusterConfig {
            node: Some(node.to_string()),
            ..self.clone()
        };
        toml::to_string(&config).expect("a cluster config is plain TOML")
    }
}

fn default_true() -> bool {
    true
}

/// Settings that take precedence over the config file: a node's command
/// line (on start and on every reload), a client's builder.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub write_policy: Option<WritePolicy>,
    pub read_deadline: Option<Duration>,
    pub write_deadline: Option<Duration>,
    pub read_repair: Option<bool>,
    pub batch_deadline: Option<Duration>,
    pub hints_max_bytes: Option<usize>,
}

impl Overrides {
    /// Applies the overrides to a loaded topology.
    pub fn apply(&self, t: &mut Topology) {
        if let Some(p) = self.write_policy {
            t.write_policy = p;
        }
        if let Some(d) = self.read_deadline {
            t.read_deadline = d;
        }
        if let Some(d) = self.write_deadline {
            t.write_deadline = d;
        }
        if let Some(r) = self.read_repair {
            t.read_repair = r;
        }
        if let Some(d) = self.batch_deadline {
            t.batch_deadline = d;
        }
        if let Some(n) = self.hints_max_bytes {
            t.hints_max_bytes = n;
        }
    }
}

/// A zone with its ring.
#[derive(Debug, Clone)]
pub struct Zone {
    pub name: String,
    pub nodes: Vec<NodeConfig>,
    pub ring: Ring,
}

impl Zone {
    /// The node of this zone that owns `key`.
    pub fn owner(&self, key: &[u8]) -> &NodeConfig {
        &self.nodes[self.ring.owner(key).expect("zones have nodes")]
    }
}

/// The topology a node or a client routes by.
#[derive(Debug, Clone)]
pub struct Topology {
    /// Zones in read-preference order: the home zone first, then the fallback order.
    pub zones: Vec<Zone>,
    pub write_policy: WritePolicy,
    pub read_deadline: Duration,
    pub write_deadline: Duration,
    /// Indexes into `zones` in the config file's order: the first zone
    /// that answers decides conditional writes.
    pub arbiter_order: Vec<usize>,
    /// Copy hits found in other zones back to the home zone.
    pub read_repair: bool,
    /// Deadline of batch-lane calls.
    pub batch_deadline: Duration,
    /// Bytes of hints kept per peer.
    pub hints_max_bytes: usize,
    /// Realtime home-zone reads that may be hedged, in percent (0: none).
    pub hedge_percent: u32,
    /// The least a read waits for the home owner before it is hedged.
    pub hedge_min_delay: Duration,
}

impl Topology {
    /// Checks a parsed config and orders its zones for reading from
    /// `home_zone` (`None`: the zone of the config's `node`).
    pub fn from_config(config: ClusterConfig, home_zone: Option<&str>) -> Result<Topology, String> {
        if config.zones.is_empty() {
            return Err("no zones: add at least one [[zones]] with nodes".into());
        }
        let mut ids = std::collections::HashSet::new();
        for z in &config.zones {
            if z.nodes.is_empty() {
                return Err(format!("zone {:?} has no nodes", z.name));
            }
            for n in &z.nodes {
                if !ids.insert(n.id.clone()) {
                    return Err(format!("node id {:?} appears twice", n.id));
                }
                if config.peer_tls.is_some() && n.tls_addr.is_none() {
                    return Err(format!(
                        "node {:?} has no tls_addr: with [peer_tls] peers connect to \
                         every node's TLS port (--tls-port)",
                        n.id
                    ));
                }
            }
        }
        let home = match (home_zone, &config.node) {
            (Some(name), _) => config
                .zones
                .iter()
                .position(|z| z.name == name)
                .ok_or_else(|| format!("home zone {name:?} is not in the config"))?,
            (None, Some(node)) => config
                .zones
                .iter()
                .position(|z| z.nodes.iter().any(|n| &n.id == node))
                .ok_or_else(|| format!("this node {node:?} is in no zone"))?,
            (None, None) => 0,
        };
        // Home first, then the configured fallback order, then the rest in config order.
        let config_names: Vec<String> = config.zones.iter().map(|z| z.name.clone()).collect();
        let mut order = vec![home];
        for name in &config.fallback {
            let i = config
                .zones
                .iter()
                .position(|z| &z.name == name)
                .ok_or_else(|| format!("fallback names unknown zone {name:?}"))?;
            if !order.contains(&i) {
                order.push(i);
            }
        }
        for i in 0..config.zones.len() {
            if !order.contains(&i) {
                order.push(i);
            }
        }
        let zones = order
            .into_iter()
            .map(|i| {
                let z = &config.zones[i];
                let ring_nodes: Vec<(String, u32)> =
                    z.nodes.iter().map(|n| (n.id.clone(), n.weight)).collect();
                Zone {
                    name: z.name.clone(),
                    nodes: z.nodes.clone(),
                    ring: Ring::new(&ring_nodes),
                }
            })
            .collect::<Vec<Zone>>();
        let arbiter_order = config_names
            .iter()
            .filter_map(|name| zones.iter().position(|z| &z.name == name))
            .collect();
        Ok(Topology {
            zones,
            arbiter_order,
            read_repair: config.read_repair,
            write_policy: config.write_policy,
            read_deadline: Duration::from_millis(config.read_deadline_ms),
            write_deadline: Duration::from_millis(config.write_deadline_ms),
            batch_deadline: Duration::from_millis(config.batch_deadline_ms),
            hints_max_bytes: config.hints_max_bytes,
            hedge_percent: config.hedge_percent.min(100),
            hedge_min_delay: Duration::from_micros(config.hedge_min_delay_us),
        })
    }

    /// Every node of every zone.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeConfig> {
        self.zones.iter().flat_map(|z| z.nodes.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
        node = "b2"
        write_policy = "quorum"
        fallback = ["c"]
        [[zones]]
        name = "a"
        nodes = [{ id = "a1", addr = "127.0.0.1:1" }, { id = "a2", addr = "127.0.0.1:2" }]
        [[zones]]
        name = "b"
        nodes = [{ id = "b1", addr = "127.0.0.1:3" }, { id = "b2", addr = "127.0.0.1:4" }]
        [[zones]]
        name = "c"
        nodes = [{ id = "c1", addr = "127.0.0.1:5" }]
    "#;

    fn parse(text: &str) -> Result<Topology, String> {
        Topology::from_config(ClusterConfig::parse(text)?, None)
    }

    #[test]
    fn home_zone_first_then_fallback_order() {
        let t = parse(CONFIG).unwrap();
        let names: Vec<&str> = t.zones.iter().map(|z| z.name.as_str()).collect();
        assert_eq!(names, ["b", "c", "a"]);
        assert_eq!(t.write_policy, WritePolicy::Quorum);
        assert_eq!(t.read_deadline, Duration::from_millis(20));
    }

    #[test]
    fn a_client_names_its_home_zone() {
        let config = ClusterConfig::parse(CONFIG).unwrap();
        let t = Topology::from_config(config.clone(), Some("a")).unwrap();
        assert_eq!(t.zones[0].name, "a");
        assert!(Topology::from_config(config, Some("zz"))
            .unwrap_err()
            .contains("not in the config"));
        assert!(WritePolicy::from_name("most").is_err());
    }

    #[test]
    fn policies() {
        assert_eq!(WritePolicy::One.needed(3), 1);
        assert_eq!(WritePolicy::Quorum.needed(3), 2);
        assert_eq!(WritePolicy::AllMinusOne.needed(3), 2);
        assert_eq!(WritePolicy::All.needed(3), 3);
        assert_eq!(WritePolicy::AllMinusOne.needed(1), 1);
    }

    #[test]
    fn bad_configs_say_what_is_wrong() {
        assert!(parse("node = \"x\"\nzones = []")
            .unwrap_err()
            .contains("no zones"));
        let unknown = CONFIG.replace("node = \"b2\"", "node = \"zz\"");
        assert!(parse(&unknown).unwrap_err().contains("in no zone"));
        let dup = CONFIG.replace("\"c1\"", "\"a1\"");
        assert!(parse(&dup).unwrap_err().contains("twice"));
    }

    #[test]
    fn a_local_cluster_is_written_and_read_back() {
        let local = ClusterConfig::local(3, 2, 21000).unwrap();
        let text = local.file_for("b2");
        let back = ClusterConfig::parse(&text).unwrap();
        assert_eq!(back.node.as_deref(), Some("b2"));
        let ids: Vec<&str> = back
            .zones
            .iter()
            .flat_map(|z| &z.nodes)
            .map(|n| n.id.as_str())
            .collect();
        assert_eq!(ids, ["a1", "a2", "b1", "b2", "c1", "c2"]);
        let b2 = &back.zones[1].nodes[1];
        assert_eq!(b2.addr.port(), 21003);
        assert_eq!(b2.batch_addr.as_ref().map(|a| a.port()), Some(21009));
        assert_eq!(back.write_policy, WritePolicy::AllMinusOne);
        assert!(ClusterConfig::local(9, 1, 1000).is_err());
        assert!(ClusterConfig::local(3, 2, 65530).is_err());
    }

    #[test]
    fn every_zone_has_one_owner_per_key() {
        let t = parse(CONFIG).unwrap();
        for z in &t.zones {
            let owner = z.owner(b"some-key");
            assert!(z.nodes.contains(owner));
        }
    }
}
