//! Gradual zone drain: a share of the reads a zone would serve — as home
//! zone or as fallback — goes to the other zones instead. Which keys move
//! is decided by a hash of the key (not the ring's), so at a given weight
//! the same keys move on every node and client, and the other zones'
//! caches stay hot for them. A drained zone still takes every write (it is
//! write-only at 100 %), so undrain is instant and finds it warm; it is
//! still read as a last resort for a key no other zone could answer.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;

/// The drain weight of each zone, in percent of its reads moved away.
#[derive(Default)]
pub struct Drains {
    weights: RwLock<BTreeMap<String, u8>>,
    /// Some zone has a weight above 0 (reads skip the lookup otherwise).
    active: AtomicBool,
}

impl Drains {
    /// Sets `zone`'s weight (capped at 100).
    pub fn set(&self, zone: &str, percent: u8) {
        let mut w = self.weights.write().unwrap_or_else(|e| e.into_inner());
        match percent.min(100) {
            0 => w.remove(zone),
            p => w.insert(zone.to_string(), p),
        };
        self.active.store(!w.is_empty(), Ordering::Release);
    }

    /// `zone`'s weight.
    pub fn get(&self, zone: &str) -> u8 {
        if !self.active.load(Ordering::Acquire) {
            return 0;
        }
        let w = self.weights.read().unwrap_or_else(|e| e.into_inner());
        w.get(zone).copied().unwrap_or(0)
    }

    /// Every zone with a weight above 0.
    pub fn all(&self) -> Vec<(String, u8)> {
        let w = self.weights.read().unwrap_or_else(|e| e.into_inner());
        w.iter().map(|(z, p)| (z.clone(), *p)).collect()
    }

    /// Whether reads of `key` skip `zone` (its share is drained).
    pub fn skips(&self, zone: &str, key: &[u8]) -> bool {
        let weight = self.get(zone);
        weight > 0 && (crc32fast::hash(key) % 100) < u32::from(weight)
    }
}

/// The zones' drain weights as the nodes have them: `stats zones` from one
/// node per zone (the first that answers; never `skip`), each zone's weight
/// taken from a node outside it when one answered, since a drain reaches
/// the other zones first and the drained zone may be down. `None` when no
/// node answered.
pub async fn read_weights<T: super::Transport>(
    t: &T,
    topology: &crate::topology::Topology,
    skip: Option<&str>,
    deadline: std::time::Duration,
) -> Option<BTreeMap<String, u8>> {
    use zonecache_proto::{Command, Response};
    let ask = Command::Stats {
        args: vec![bytes::Bytes::from_static(b"zones")],
    };
    // zone -> (weight, said by a node outside it)
    let mut weights: BTreeMap<String, (u8, bool)> = BTreeMap::new();
    let mut heard = false;
    for zone in &topology.zones {
        for node in zone.nodes.iter().filter(|n| Some(n.id.as_str()) != skip) {
            let Ok(Response::Stats(lines)) = t
                .call(node, &ask, crate::lane::Lane::Realtime, deadline)
                .await
            else {
                continue;
            };
            heard = true;
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
    heard.then(|| weights.into_iter().map(|(z, (p, _))| (z, p)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_weight_moves_that_share_of_keys_and_the_same_keys_as_it_grows() {
        let d = Drains::default();
        let keys: Vec<String> = (0..10_000).map(|i| format!("key:{i}")).collect();
        let skipped =
            |d: &Drains| -> Vec<bool> { keys.iter().map(|k| d.skips("c", k.as_bytes())).collect() };
        assert!(skipped(&d).iter().all(|s| !s), "no drain, no skip");
        d.set("c", 30);
        let at_30 = skipped(&d);
        let share = at_30.iter().filter(|s| **s).count();
        assert!((2_700..3_300).contains(&share), "{share} of 10000 at 30 %");
        assert!(!d.skips("a", b"key:1"), "other zones untouched");
        d.set("c", 60);
        let at_60 = skipped(&d);
        assert!(
            at_30.iter().zip(&at_60).all(|(a, b)| !a || *b),
            "moved keys stay moved"
        );
        d.set("c", 100);
        assert!(skipped(&d).iter().all(|s| *s));
        d.set("c", 0);
        assert!(d.all().is_empty() && skipped(&d).iter().all(|s| !s));
    }
}
