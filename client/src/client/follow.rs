//! Following the cluster: a direct-mode client routes by itself, so it
//! must know what the nodes know. Every second it reads, from one node per
//! zone it already talks to:
//! - the zones' drain weights (`stats zones`, `<zone>:drain_percent`), so a
//!   `zonecache drain` moves its reads too. A zone's weight is taken from a
//!   node outside that zone when one answers: a drain reaches the other
//!   zones first, and the drained zone may be down;
//! - the membership (`stats topology`), so a node added to the config (and
//!   the nodes reloaded) gets its share of keys from this client too. It is
//!   adopted once the nodes asked agree on it.

use std::sync::Weak;
use std::time::Duration;

use super::Inner;
use crate::route::{read_membership, read_weights};

/// How often the cluster is read.
pub(crate) const FOLLOW_EVERY: Duration = Duration::from_secs(1);
/// How long one node may take to answer.
const ASK_DEADLINE: Duration = Duration::from_millis(200);

/// Runs until the client is dropped.
pub(crate) async fn follow_cluster(inner: Weak<Inner>) {
    loop {
        tokio::time::sleep(FOLLOW_EVERY).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let view = inner.views.current();
        let topology = &view.router.topology;
        if let Some(zones) = read_membership(&view.nodes, topology, ASK_DEADLINE).await {
            match inner.views.adopt(zones) {
                Ok(true) => tracing::info!("cluster membership followed"),
                Ok(false) => {}
                Err(e) => tracing::warn!("cluster membership not followed: {e}"),
            }
        }
        let Some(weights) = read_weights(&view.nodes, topology, None, ASK_DEADLINE).await else {
            continue;
        };
        // Every view shares one `Drains` (`Router::reloaded` keeps it).
        let drains = &view.router.drains;
        for (zone, percent) in weights {
            if drains.get(&zone) != percent {
                tracing::info!(%zone, percent, "drain weight followed");
                drains.set(&zone, percent);
            }
        }
    }
}
