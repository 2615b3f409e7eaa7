//! The consistent-hash ring: ketama-style, many points per node, so that
//! adding one node to a zone of N moves about 1/(N+1) of its keys. Both the
//! client and the server route with this one implementation.

/// A ring over a set of nodes, identified by their index in `nodes`.
#[derive(Debug, Clone)]
pub struct Ring {
    /// Sorted (point, node index) pairs.
    points: Vec<(u32, usize)>,
}

/// Points per unit of weight; ketama uses 160 (40 hashes × 4 points).
pub const POINTS_PER_NODE: usize = 160;

impl Ring {
    /// Builds a ring from node names (usually `host:port`) and weights.
    pub fn new<S: AsRef<str>>(nodes: &[(S, u32)]) -> Ring {
        let mut points = Vec::new();
        for (index, (name, weight)) in nodes.iter().enumerate() {
            let count = POINTS_PER_NODE * (*weight).max(1) as usize;
            for i in 0..count {
                let label = format!("{}-{}", name.as_ref(), i);
                points.push((point_hash(label.as_bytes()), index));
            }
        }
        points.sort_unstable();
        Ring { points }
    }

    /// The index of the node that owns `key`, or `None` for an empty ring.
    pub fn owner(&self, key: &[u8]) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let h = point_hash(key);
        let i = self.points.partition_point(|&(p, _)| p < h);
        Some(self.points[i % self.points.len()].1)
    }
}

/// A 32-bit point on the ring: FNV-1a, then a final avalanche so that
/// consecutive labels spread evenly.
fn point_hash(data: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in data {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adding_a_node_moves_about_one_in_n_plus_one() {
        let three: Vec<(String, u32)> = (0..3).map(|i| (format!("10.0.0.{i}:11211"), 1)).collect();
        let mut four = three.clone();
        four.push(("10.0.0.3:11211".into(), 1));
        let (a, b) = (Ring::new(&three), Ring::new(&four));
        let keys = 20_000;
        let moved = (0..keys)
            .filter(|i| {
                let k = format!("key:{i}");
                a.owner(k.as_bytes()) != b.owner(k.as_bytes())
            })
            .count();
        let share = moved as f64 / keys as f64;
        assert!((0.15..0.35).contains(&share), "moved share {share}");
    }

    #[test]
    fn empty_ring_has_no_owner() {
        let empty: Vec<(String, u32)> = Vec::new();
        assert_eq!(Ring::new(&empty).owner(b"k"), None);
    }
}
