//! Following drains: a direct-mode client routes reads itself, so it must
//! know the zones' drain weights as the nodes do. Every second it reads
//! them (`stats zones`, `<zone>:drain_percent`) from one node per zone it
//! already talks to, so a `zonecache drain` moves its reads too, without a
//! restart. A zone's weight is taken from a node outside that zone when one
//! answers: a drain reaches the other zones first, and the drained zone may
//! be down.

use std::sync::Weak;
use std::time::Duration;

use super::Inner;
use crate::route::read_weights;

/// How often the weights are read.
pub(crate) const FOLLOW_EVERY: Duration = Duration::from_secs(1);
/// How long one node may take to answer.
const ASK_DEADLINE: Duration = Duration::from_millis(200);

/// Runs until the client is dropped.
pub(crate) async fn follow_drains(inner: Weak<Inner>) {
    loop {
        tokio::time::sleep(FOLLOW_EVERY).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let topology = &inner.router.topology;
        let Some(weights) = read_weights(&inner.nodes, topology, None, ASK_DEADLINE).await else {
            continue;
        };
        for (zone, percent) in weights {
            if inner.router.drains.get(&zone) != percent {
                tracing::info!(%zone, percent, "drain weight followed");
                inner.router.drains.set(&zone, percent);
            }
        }
    }
}
