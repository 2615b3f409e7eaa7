//! This node's view of the cluster config: the shared topology (parsed by
//! the client crate, which reads the same file) plus which node this is.

use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::sync::Arc;

pub use zonecache_client::topology::{ClusterConfig, NodeConfig, Overrides, Topology, WritePolicy};
use zonecache_client::{ClusterSecret, PeerTls};

/// The topology as seen from one node: its zone is the home zone.
#[derive(Debug, Clone)]
pub struct NodeTopology {
    /// This node.
    pub me: NodeConfig,
    /// Zones (home first), rings, policy and deadlines.
    pub cluster: Topology,
    /// What peers prove to each other (`credential.rs` in the client).
    pub secret: ClusterSecret,
    /// The config's `[peer_tls]`, read when the config is.
    pub peer_tls: Option<PeerTlsLoaded>,
}

/// The config's `[peer_tls]` as read: its files, a digest of their
/// contents, and the client configuration peer links speak TLS with. A
/// reload that finds either changed (a certificate rotated under the same
/// name) makes new peer links.
#[derive(Debug, Clone)]
pub struct PeerTlsLoaded {
    pub files: PeerTls,
    digest: u32,
    pub config: Arc<rustls::ClientConfig>,
}

impl PartialEq for PeerTlsLoaded {
    fn eq(&self, other: &PeerTlsLoaded) -> bool {
        self.files == other.files && self.digest == other.digest
    }
}

impl Deref for NodeTopology {
    type Target = Topology;
    fn deref(&self) -> &Topology {
        &self.cluster
    }
}

impl DerefMut for NodeTopology {
    fn deref_mut(&mut self) -> &mut Topology {
        &mut self.cluster
    }
}

impl NodeTopology {
    /// Parses and checks a config file's text; it must name this node.
    pub fn parse(text: &str) -> Result<NodeTopology, String> {
        NodeTopology::from_config(ClusterConfig::parse(text)?)
    }

    /// Reads a config file.
    pub fn load(path: &Path) -> Result<NodeTopology, String> {
        NodeTopology::load_as(path, None)
    }

    /// Reads a config file as node `node` (`None`: the one it names).
    pub fn load_as(path: &Path, node: Option<&str>) -> Result<NodeTopology, String> {
        let mut config = ClusterConfig::load(path)?;
        if let Some(id) = node {
            config.node = Some(id.to_string());
        }
        NodeTopology::from_config(config).map_err(|e| format!("{}: {e}", path.display()))
    }

    fn from_config(config: ClusterConfig) -> Result<NodeTopology, String> {
        let id = config
            .node
            .clone()
            .ok_or("the config names no `node`: say which node this is")?;
        let me = config
            .zone_of(&id)
            .and_then(|z| z.nodes.iter().find(|n| n.id == id))
            .cloned()
            .ok_or_else(|| format!("this node {id:?} is in no zone"))?;
        // Peers apply each other's writes unrouted: never without a credential.
        let secret = config.cluster_secret()?.ok_or(
            "the config names no cluster secret: add `secret_file = \"<file>\"` \
             (a file of random text, e.g. `head -c 32 /dev/urandom | base64 > secret`) \
             and give every node the same one",
        )?;
        let files = config.peer_tls.clone();
        // The shape is checked first (every node has a tls_addr), then the
        // files are read.
        let cluster = Topology::from_config(config, None)?;
        let peer_tls = match files {
            Some(files) => Some(PeerTlsLoaded {
                digest: files.digest(),
                config: files.client_config()?,
                files,
            }),
            None => None,
        };
        Ok(NodeTopology {
            me,
            cluster,
            secret,
            peer_tls,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const CONFIG: &str = r#"
        node = "b2"
        secret = "a test secret of enough bytes"
        [[zones]]
        name = "a"
        nodes = [{ id = "a1", addr = "127.0.0.1:1" }]
        [[zones]]
        name = "b"
        nodes = [{ id = "b1", addr = "127.0.0.1:3" }, { id = "b2", addr = "127.0.0.1:4" }]
    "#;

    #[test]
    fn the_node_is_found_and_its_zone_is_home() {
        let t = NodeTopology::parse(CONFIG).unwrap();
        assert_eq!(t.me.id, "b2");
        assert_eq!(t.zones[0].name, "b");
        let unknown = CONFIG.replace("node = \"b2\"", "node = \"zz\"");
        assert!(NodeTopology::parse(&unknown)
            .unwrap_err()
            .contains("in no zone"));
        let nameless = CONFIG.replace("node = \"b2\"", "");
        assert!(NodeTopology::parse(&nameless)
            .unwrap_err()
            .contains("names no `node`"));
        let open = CONFIG.replace("secret = \"a test secret of enough bytes\"", "");
        assert!(NodeTopology::parse(&open)
            .unwrap_err()
            .contains("no cluster secret"));
        let short = CONFIG.replace("a test secret of enough bytes", "short");
        assert!(NodeTopology::parse(&short)
            .unwrap_err()
            .contains("at least 16"));
    }

    #[test]
    fn peer_tls_needs_every_nodes_tls_port_and_readable_files() {
        let tls = CONFIG.replacen(
            "[[zones]]",
            "[peer_tls]\nca = \"/nonexistent/ca.pem\"\n[[zones]]",
            1,
        );
        let err = NodeTopology::parse(&tls).unwrap_err();
        assert!(err.contains("has no tls_addr"), "{err}");
        let with_ports = tls
            .replace(
                "127.0.0.1:1\"",
                "127.0.0.1:1\", tls_addr = \"127.0.0.1:11\"",
            )
            .replace(
                "127.0.0.1:3\"",
                "127.0.0.1:3\", tls_addr = \"127.0.0.1:13\"",
            )
            .replace(
                "127.0.0.1:4\"",
                "127.0.0.1:4\", tls_addr = \"127.0.0.1:14\"",
            )
            .replace("[peer_tls]", "[peer_tls]\ncert = \"/nonexistent/node.pem\"");
        let err = NodeTopology::parse(&with_ports).unwrap_err();
        assert!(err.contains("both `cert` and `key`"), "{err}");
        let err = NodeTopology::parse(&with_ports.replace("cert = \"/nonexistent/node.pem\"", ""))
            .unwrap_err();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn overrides_win_over_the_file() {
        let mut t = NodeTopology::parse(CONFIG).unwrap();
        Overrides {
            write_policy: Some(WritePolicy::from_name("all").unwrap()),
            read_deadline: Some(Duration::from_millis(5)),
            write_deadline: None,
            read_repair: Some(false),
            batch_deadline: None,
            hints_max_bytes: None,
        }
        .apply(&mut t);
        assert_eq!(t.write_policy, WritePolicy::All);
        assert_eq!(t.read_deadline, Duration::from_millis(5));
        assert_eq!(t.write_deadline, Duration::from_millis(50));
        assert!(!t.read_repair);
    }
}
