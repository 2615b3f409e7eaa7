//! What the client routes by right now. A direct-mode client follows the
//! nodes' membership (`follow.rs`), so the router and the connection pools
//! are replaced together when a node is added, removed or moved; a call
//! takes the current [`View`] once and sees one topology throughout.

use std::sync::{Arc, RwLock};

use crate::remote::{NodeOptions, RemoteNodes};
use crate::route::{same_zones, Router};
use crate::topology::{ClusterConfig, Overrides, Topology, ZoneConfig};

/// One topology's router and the pools that reach its nodes.
pub(crate) struct View {
    pub router: Router,
    pub nodes: RemoteNodes,
}

/// What a view is built from besides the membership: the config's
/// settings, the home zone and the builder's say.
pub(crate) struct Basis {
    pub config: ClusterConfig,
    pub home: String,
    pub overrides: Overrides,
    pub options: NodeOptions,
}

impl Basis {
    /// The topology of `config` read from the home zone, with the
    /// builder's overrides.
    fn topology(&self, config: ClusterConfig) -> Result<Topology, String> {
        let mut topology = Topology::from_config(config, Some(&self.home))?;
        self.overrides.apply(&mut topology);
        Ok(topology)
    }
}

/// The current view, swapped whole.
pub(crate) struct Views {
    current: RwLock<Arc<View>>,
    basis: RwLock<Basis>,
}

impl Views {
    /// The first view; `tag` stamps the router's writes.
    pub fn new(basis: Basis, tag: u64) -> Result<Views, String> {
        let topology = basis.topology(basis.config.clone())?;
        let nodes = RemoteNodes::new(topology.nodes(), &basis.options, None);
        let router = Router::new(topology, tag, Box::new(|| 0));
        Ok(Views {
            current: RwLock::new(Arc::new(View { router, nodes })),
            basis: RwLock::new(basis),
        })
    }

    /// The view calls use now.
    pub fn current(&self) -> Arc<View> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Routes by `zones` from now on, when they differ from the current
    /// membership: nodes still at the same address keep their connections
    /// and health; hints, drains and counters carry over. `Ok(false)`: no
    /// change. An error (the home zone is gone, say) keeps the current view.
    pub fn adopt(&self, zones: Vec<ZoneConfig>) -> Result<bool, String> {
        let mut basis = self.basis.write().unwrap_or_else(|e| e.into_inner());
        if same_zones(&basis.config.zones, &zones) {
            return Ok(false);
        }
        let config = ClusterConfig {
            zones,
            ..basis.config.clone()
        };
        let topology = basis.topology(config.clone())?;
        let previous = self.current();
        let nodes = RemoteNodes::new(topology.nodes(), &basis.options, Some(&previous.nodes));
        let router = Router::reloaded(topology, &previous.router);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(View { router, nodes });
        basis.config = config;
        Ok(true)
    }
}
