//! Which zones a routed request called, for the request log: the router
//! reaches nodes through [`super::LocalHop`], which marks each call's zone
//! here (one bit per zone, in this node's zone order: bit 0 is home).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use zonecache_client::route::{plan, Route};
use zonecache_client::Topology;
use zonecache_proto::Command;

/// The zones one request called (copies still finishing may add more).
#[derive(Debug, Default)]
pub struct Tried(AtomicU64);

impl Tried {
    pub(super) fn mark(&self, zone: u32) {
        if zone < 64 {
            self.0.fetch_or(1 << zone, Ordering::Relaxed);
        }
    }

    /// The zones called, one bit each (bit 0: the home zone).
    pub fn zones(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Each node's zone, by the zones' order in a topology.
#[derive(Debug, Default)]
pub struct ZoneIndex {
    by_node: HashMap<String, u32>,
    names: Vec<String>,
}

impl ZoneIndex {
    pub fn of(topology: &Topology) -> Arc<ZoneIndex> {
        let mut index = ZoneIndex::default();
        for (i, zone) in topology.zones.iter().enumerate() {
            index.names.push(zone.name.clone());
            for node in &zone.nodes {
                index.by_node.insert(node.id.clone(), i as u32);
            }
        }
        Arc::new(index)
    }

    pub(super) fn zone(&self, node: &str) -> Option<u32> {
        self.by_node.get(node).copied()
    }

    /// The names of the zones in `zones` (bits as [`Tried::zones`]),
    /// comma-separated in zone order.
    pub fn names(&self, zones: u64) -> String {
        let mut out = String::new();
        for (i, name) in self.names.iter().enumerate().take(64) {
            if zones & (1 << i) != 0 {
                if !out.is_empty() {
                    out.push(',');
                }
                out.push_str(name);
            }
        }
        out
    }
}

/// Whether a read (`cmd`, routed) that called `zones` went past the home
/// zone: a fallback (a miss, error or deadline at home, or a drained home).
pub fn fell_back(cmd_is_read: bool, zones: u64) -> bool {
    cmd_is_read && zones & !1 != 0
}

/// Whether `cmd` is a read the router may serve from another zone.
pub fn is_read(cmd: &Command) -> bool {
    matches!(plan(cmd), Route::MultiRead | Route::MetaRead)
}
