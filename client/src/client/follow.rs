//! Following drains: a direct-mode client routes reads itself, so it must
//! know the zones' drain weights as the nodes do. Every second it reads
//! them (`stats zones`, `<zone>:drain_percent`) from one node per zone it
//! already talks to, so a `zonecache drain` moves its reads too, without a
//! restart. A zone's weight is taken from a node outside that zone when one
//! answers: a drain reaches the other zones first, and the drained zone may
//! be down.

use std::collections::HashMap;
use std::sync::Weak;
use std::time::Duration;

use zonecache_proto::{Command, Response};

use super::Inner;
use crate::lane::Lane;
use crate::route::Transport;

/// How often the weights are read.
pub(crate) const FOLLOW_EVERY: Duration = Duration::from_secs(1);
/// How long one node may take to answer.
const ASK_DEADLINE: Duration = Duration::from_millis(200);

/// Runs until the client is dropped.
pub(crate) async fn follow_drains(inner: Weak<Inner>) {
    let ask = Command::Stats {
        args: vec![bytes::Bytes::from_static(b"zones")],
    };
    loop {
        tokio::time::sleep(FOLLOW_EVERY).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let topology = &inner.router.topology;
        // zone -> (weight, said by a node outside it)
        let mut weights: HashMap<String, (u8, bool)> = HashMap::new();
        for zone in &topology.zones {
            for node in &zone.nodes {
                let Ok(Response::Stats(lines)) = inner
                    .nodes
                    .call(node, &ask, Lane::Realtime, ASK_DEADLINE)
                    .await
                else {
                    continue;
                };
                for (key, value) in &lines {
                    let key = String::from_utf8_lossy(key);
                    let (Some(drained), Some(percent)) = (
                        key.strip_suffix(":drain_percent"),
                        std::str::from_utf8(value)
                            .ok()
                            .and_then(|v| v.parse::<u8>().ok()),
                    ) else {
                        continue;
                    };
                    let outside = drained != zone.name;
                    let entry = weights
                        .entry(drained.to_string())
                        .or_insert((percent, outside));
                    if outside && !entry.1 {
                        *entry = (percent, true);
                    }
                }
                break;
            }
        }
        for (zone, (percent, _)) in weights {
            if inner.router.drains.get(&zone) != percent {
                tracing::info!(%zone, percent, "drain weight followed");
                inner.router.drains.set(&zone, percent);
            }
        }
    }
}
