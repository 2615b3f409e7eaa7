//! The cluster's membership as the nodes have it, so a direct-mode client
//! follows node additions (and removals, and address changes) without a
//! restart. Nodes answer `stats topology` with one line per node in the
//! config's order — `STAT node:<id> <zone> <addr> <batch_addr|-> <weight>
//! <tls_addr|-> <tls_batch_addr|->` (the last two may be missing: a node
//! from before TLS peer links) — and a client reads it from one node per
//! zone.

use crate::topology::{NodeAddr, NodeConfig, Topology, ZoneConfig};

/// The `stats` group nodes answer with their membership.
pub const GROUP: &[u8] = b"topology";

/// `topology`'s zones and nodes as `stats topology` lines, zones in the
/// config's order (the order that picks arbiters).
pub fn membership_lines(topology: &Topology) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for &z in &topology.arbiter_order {
        let zone = &topology.zones[z];
        let or_dash =
            |a: &Option<NodeAddr>| a.as_ref().map_or_else(|| "-".into(), |a| a.to_string());
        for n in &zone.nodes {
            let (batch, tls, tls_batch) = (
                or_dash(&n.batch_addr),
                or_dash(&n.tls_addr),
                or_dash(&n.tls_batch_addr),
            );
            out.push((
                format!("node:{}", n.id),
                format!(
                    "{} {} {batch} {} {tls} {tls_batch}",
                    zone.name, n.addr, n.weight
                ),
            ));
        }
    }
    out
}

/// The zones `stats topology` lines describe, in their order.
pub fn parse_membership<K: AsRef<[u8]>, V: AsRef<[u8]>>(
    lines: &[(K, V)],
) -> Result<Vec<ZoneConfig>, String> {
    let mut zones: Vec<ZoneConfig> = Vec::new();
    for (key, value) in lines {
        let key = std::str::from_utf8(key.as_ref()).map_err(|e| e.to_string())?;
        let Some(id) = key.strip_prefix("node:") else {
            continue;
        };
        let value = std::str::from_utf8(value.as_ref()).map_err(|e| e.to_string())?;
        let bad = || format!("topology line for {id}: {value:?}");
        let fields: Vec<&str> = value.split(' ').collect();
        let (zone, addr, batch, weight, tls, tls_batch) = match fields[..] {
            [zone, addr, batch, weight] => (zone, addr, batch, weight, "-", "-"),
            [zone, addr, batch, weight, tls, tls_batch] => {
                (zone, addr, batch, weight, tls, tls_batch)
            }
            _ => return Err(bad()),
        };
        let optional = |text: &str| match text {
            "-" => Ok(None),
            a => NodeAddr::parse(a).map(Some).map_err(|_| bad()),
        };
        let node = NodeConfig {
            id: id.to_string(),
            addr: NodeAddr::parse(addr).map_err(|_| bad())?,
            batch_addr: optional(batch)?,
            tls_addr: optional(tls)?,
            tls_batch_addr: optional(tls_batch)?,
            weight: weight.parse().map_err(|_| bad())?,
        };
        match zones.iter_mut().find(|z| z.name == zone) {
            Some(z) => z.nodes.push(node),
            None => zones.push(ZoneConfig {
                name: zone.to_string(),
                nodes: vec![node],
            }),
        }
    }
    if zones.is_empty() {
        return Err("no topology lines (not a zonecache node?)".into());
    }
    Ok(zones)
}

/// The membership the nodes report: `stats topology` from one node per
/// zone (the first that answers). `None` unless every node that answered
/// reports the same (during a rolling config change the client waits until
/// the nodes agree) and at least one did.
pub async fn read_membership<T: super::Transport>(
    t: &T,
    topology: &Topology,
    deadline: std::time::Duration,
) -> Option<Vec<ZoneConfig>> {
    use zonecache_proto::{Command, Response};
    let ask = Command::Stats {
        args: vec![bytes::Bytes::from_static(GROUP)],
    };
    let mut agreed: Option<Vec<ZoneConfig>> = None;
    for zone in &topology.zones {
        for node in &zone.nodes {
            let Ok(Response::Stats(lines)) = t
                .call(node, &ask, crate::lane::Lane::Realtime, deadline)
                .await
            else {
                continue;
            };
            let Ok(zones) = parse_membership(&lines) else {
                return None;
            };
            match &agreed {
                Some(seen) if !same_zones(seen, &zones) => return None,
                _ => agreed = Some(zones),
            }
            break;
        }
    }
    agreed
}

/// Whether two memberships name the same nodes at the same places.
pub fn same_zones(a: &[ZoneConfig], b: &[ZoneConfig]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.name == y.name && x.nodes == y.nodes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::ClusterConfig;

    #[test]
    fn lines_round_trip_in_config_order_whatever_the_home_zone() {
        let mut config = ClusterConfig::local(3, 2, 21000).unwrap();
        config.zones[1].nodes[0].batch_addr = None;
        config.zones[2].nodes[1].weight = 3;
        config.zones[2].nodes[0].addr = NodeAddr::parse("cache-c1.zonecache:11211").unwrap();
        config.zones[0].nodes[1].tls_addr = Some(NodeAddr::parse("127.0.0.1:21443").unwrap());
        config.zones[0].nodes[1].tls_batch_addr = Some(NodeAddr::parse("127.0.0.1:21444").unwrap());
        let topology = Topology::from_config(config.clone(), Some("c")).unwrap();
        assert_eq!(topology.zones[0].name, "c", "home zone first");
        let lines = membership_lines(&topology);
        assert_eq!(lines.len(), 6);
        let zones = parse_membership(&lines).unwrap();
        assert!(same_zones(&zones, &config.zones), "{zones:?}");
        config.zones[0].nodes.pop();
        assert!(!same_zones(&zones, &config.zones));
    }

    #[test]
    fn bad_lines_are_refused() {
        let none: [(&str, &str); 1] = [("pid", "1")];
        assert!(parse_membership(&none).is_err());
        let short = [("node:a1", "a 127.0.0.1:1")];
        assert!(parse_membership(&short).is_err());
        let weight = [("node:a1", "a 127.0.0.1:1 - heavy")];
        assert!(parse_membership(&weight).is_err());
        let half_tls = [("node:a1", "a 127.0.0.1:1 - 1 127.0.0.1:2")];
        assert!(parse_membership(&half_tls).is_err());
    }

    #[test]
    fn a_node_from_before_tls_peer_links_is_read() {
        let old = [("node:a1", "a 127.0.0.1:1 127.0.0.1:2 1")];
        let zones = parse_membership(&old).unwrap();
        assert_eq!(zones[0].nodes[0].tls_addr, None);
        assert_eq!(
            zones[0].nodes[0].batch_addr,
            Some(NodeAddr::parse("127.0.0.1:2").unwrap())
        );
    }
}
