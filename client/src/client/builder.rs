//! Building a [`Client`]: where the topology comes from, the home zone, the
//! mode, deadlines and connection budgets.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use std::sync::Mutex;

use super::view::{Basis, Views};
use super::{Client, Counters, Inner, Mode};
use crate::credential::ClusterSecret;
use crate::error::Error;
use crate::lane::Lane;
use crate::remote::NodeOptions;
use crate::topology::{ClusterConfig, Overrides, Topology, WritePolicy};

/// Where the topology comes from.
#[derive(Debug, Clone)]
enum Source {
    Config(Box<ClusterConfig>),
    File(std::path::PathBuf),
    Seeds(Vec<SocketAddr>),
}

/// Builds a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    source: Source,
    home_zone: Option<String>,
    mode: Mode,
    overrides: Overrides,
    options: NodeOptions,
    secret: Option<ClusterSecret>,
}

impl ClientBuilder {
    /// A cluster described by the same TOML file the nodes read.
    pub fn config_file(path: impl AsRef<Path>) -> ClientBuilder {
        ClientBuilder::from_source(Source::File(path.as_ref().to_path_buf()))
    }

    /// A cluster described by a parsed config.
    pub fn config(config: ClusterConfig) -> ClientBuilder {
        ClientBuilder::from_source(Source::Config(Box::new(config)))
    }

    /// One zone of these servers (zonecached nodes or stock memcached).
    pub fn seeds(addrs: &[SocketAddr]) -> ClientBuilder {
        ClientBuilder::from_source(Source::Seeds(addrs.to_vec()))
    }

    fn from_source(source: Source) -> ClientBuilder {
        ClientBuilder {
            source,
            home_zone: None,
            mode: Mode::Direct,
            overrides: Overrides::default(),
            options: NodeOptions::default(),
            secret: None,
        }
    }

    /// Speaks TLS on every connection with `config` (its roots are what the
    /// nodes' certificates must chain to; a client certificate in it is
    /// presented for mutual TLS), to each node's `tls_addr` (seeds, or
    /// config nodes without one, must then be the nodes' TLS ports,
    /// `--tls-port`). A direct-mode client of a config with `[peer_tls]`
    /// does so by itself.
    pub fn tls(mut self, config: Arc<rustls::ClientConfig>) -> ClientBuilder {
        self.options.tls = Some(config);
        self
    }

    /// The zone this client runs in (default: the config's `node`'s zone,
    /// else the first zone).
    pub fn home_zone(mut self, zone: &str) -> ClientBuilder {
        self.home_zone = Some(zone.to_string());
        self
    }

    /// Direct (default) or front routing.
    pub fn mode(mut self, mode: Mode) -> ClientBuilder {
        self.mode = mode;
        self
    }

    /// The cluster secret a direct-mode client proves to the nodes (as
    /// peers do), instead of the one the config names.
    pub fn cluster_secret(mut self, secret: ClusterSecret) -> ClientBuilder {
        self.secret = Some(secret);
        self
    }

    /// Overrides the config's write policy.
    pub fn write_policy(mut self, policy: WritePolicy) -> ClientBuilder {
        self.overrides.write_policy = Some(policy);
        self
    }

    /// Realtime deadlines per node call (default: the config's, 20 ms / 50 ms).
    pub fn realtime_deadlines(mut self, read: Duration, write: Duration) -> ClientBuilder {
        self.overrides.read_deadline = Some(read);
        self.overrides.write_deadline = Some(write);
        self
    }

    /// Batch deadline per node call (default: the config's, 500 ms).
    pub fn batch_deadline(mut self, deadline: Duration) -> ClientBuilder {
        self.overrides.batch_deadline = Some(deadline);
        self
    }

    /// Copy hits found in another zone back home (direct mode; default: the config's).
    pub fn read_repair(mut self, on: bool) -> ClientBuilder {
        self.overrides.read_repair = Some(on);
        self
    }

    /// Connections per node and lane (default 2).
    pub fn connections_per_node(mut self, n: usize) -> ClientBuilder {
        self.options.connections = n.max(1);
        self
    }

    /// Requests in flight per node: realtime and batch budgets (default
    /// 2048 and 256); beyond them calls fail at once with [`Error::Busy`].
    pub fn in_flight(mut self, realtime: usize, batch: usize) -> ClientBuilder {
        self.options.max_in_flight = [realtime.max(1), batch.max(1)];
        self
    }

    /// `false` sends batch calls on the realtime connections and budget —
    /// only for measuring what lanes are worth.
    pub fn separate_lanes(mut self, on: bool) -> ClientBuilder {
        self.options.separate_lanes = on;
        self
    }

    /// Checks the topology and makes the client; connections open on first use.
    pub fn build(self) -> Result<Client, Error> {
        // A seed list may be stock memcached: nothing to follow.
        let from_config = !matches!(self.source, Source::Seeds(_));
        let config = match self.source {
            Source::Config(c) => *c,
            Source::File(path) => ClusterConfig::load(&path).map_err(Error::Config)?,
            Source::Seeds(addrs) if addrs.is_empty() => {
                return Err(Error::Config("no seed addresses".into()))
            }
            Source::Seeds(addrs) => ClusterConfig::single_zone(&addrs),
        };
        let home = Topology::from_config(config.clone(), self.home_zone.as_deref())
            .map_err(Error::Config)?
            .zones[0]
            .name
            .clone();
        let mut options = self.options;
        // Direct mode writes each zone's copy itself: the node must apply
        // it, not route it again, so the client proves the cluster secret
        // as a peer does (and reads with the peers' versioned reads).
        if self.mode == Mode::Direct {
            options.secret = match self.secret {
                Some(secret) => Some(secret),
                None => config.cluster_secret().map_err(Error::Config)?,
            };
            // A direct-mode client reaches the nodes as their peers do: over
            // TLS to their TLS ports when the config asks for it.
            if let (None, Some(tls)) = (&options.tls, &config.peer_tls) {
                options.tls = Some(tls.client_config().map_err(Error::Config)?);
            }
            if options.secret.is_none() && config.zones.len() > 1 {
                return Err(Error::Config(
                    "a direct-mode client of a multi-zone cluster needs the cluster secret: \
                     name it in the config (`secret_file`) or call `cluster_secret`"
                        .into(),
                ));
            }
        }
        let basis = Basis {
            config,
            home,
            overrides: self.overrides,
            options,
        };
        let inner = Arc::new(Inner {
            views: Views::new(basis, rand::random()).map_err(Error::Config)?,
            mode: self.mode,
            stats: Counters::default(),
            in_flight: [Mutex::default(), Mutex::default()],
        });
        // A direct-mode client routes by itself: it follows the zones'
        // drain weights and membership (in front mode the nodes do).
        if self.mode == Mode::Direct && from_config {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(super::follow::follow_cluster(Arc::downgrade(&inner)));
            }
        }
        Ok(Client {
            inner,
            lane: Lane::Realtime,
        })
    }
}
