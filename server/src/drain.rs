//! `zonecache drain` / `undrain`: the operator's side of gradual zone drain
//! (`client/src/route/drain.rs`). The weight is raised in steps and sent
//! to every node — the other zones' nodes first, since they are the ones
//! that move the reads; the drained zone's own nodes learn it when they
//! answer — so a drain never depends on the drained zone. Each node keeps
//! the weight beside its config. Interrupting leaves the weight where it
//! is.

use std::time::Duration;
use zonecache_client::{ClusterSecret, NodeAddr};

use crate::status::{exchange_as_peer, nodes, Figures, Source};

/// Moves `zone`'s weight from where the nodes have it to `to` percent,
/// `step` points at a time, `interval` apart, printing each step. Fails
/// when a step reached no node outside the zone, or a node outside the
/// zone missed the final weight; the zone's own nodes that missed it (it
/// may be down: that is when it is drained) are only named. Nodes take a
/// weight only from a holder of the cluster `secret`.
pub fn drain(
    source: &Source,
    secret: &ClusterSecret,
    zone: &str,
    to: u8,
    step: u8,
    interval: Duration,
) -> Result<(), String> {
    let mut all = nodes(source)?;
    if !all.iter().any(|(_, z, _)| z == zone) {
        return Err(format!("no zone {zone} in this cluster"));
    }
    if all.iter().all(|(_, z, _)| z == zone) {
        return Err(format!(
            "{zone} is the only zone: its reads have nowhere to go"
        ));
    }
    // The other zones first.
    all.sort_by_key(|(_, z, _)| z == zone);
    let from = current_weight(&all, zone);
    let weights = steps(from, to.min(100), step.max(1));
    let mut missed = Vec::new();
    for (i, w) in weights.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(interval);
        }
        missed.clear();
        let (mut others, mut own) = (0, 0);
        for (id, z, addr) in &all {
            match set_weight(addr, secret, zone, *w) {
                Ok(()) if z == zone => own += 1,
                Ok(()) => others += 1,
                Err(e) => missed.push((z == zone, format!("{id}: {e}"))),
            }
        }
        let in_zone = all.iter().filter(|(_, z, _)| z == zone).count();
        println!(
            "{zone}: {w:>3} %  (other zones: {others}/{} nodes, {zone}: {own}/{in_zone})",
            all.len() - in_zone
        );
        if others == 0 {
            return Err(format!(
                "no node outside {zone} took the weight; it stays where it was"
            ));
        }
    }
    let (own, others): (Vec<_>, Vec<_>) = missed.into_iter().partition(|(own, _)| *own);
    let names = |m: Vec<(bool, String)>| m.into_iter().map(|(_, n)| n).collect::<Vec<_>>();
    if !own.is_empty() {
        println!(
            "{zone}'s own nodes that did not take it (they route their clients' reads by it): {}",
            names(own).join("; ")
        );
    }
    match others.is_empty() {
        true => Ok(()),
        false => Err(format!(
            "these nodes did not take the final weight: {}",
            names(others).join("; ")
        )),
    }
}

/// The weights from `from` to `to`, `step` apart, `to` last (just `to`
/// when already there).
fn steps(from: u8, to: u8, step: u8) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = from;
    while w != to {
        w = match w < to {
            true => w.saturating_add(step).min(to),
            false => w.saturating_sub(step).max(to),
        };
        out.push(w);
    }
    if out.is_empty() {
        out.push(to);
    }
    out
}

/// The weight the first answering node outside the zone has for it (0
/// when none answers).
fn current_weight(nodes: &[(String, String, NodeAddr)], zone: &str) -> u8 {
    let key = format!("{zone}:drain_percent");
    nodes
        .iter()
        .filter(|(_, z, _)| z != zone)
        .find_map(|(_, _, addr)| Figures::read(addr))
        .and_then(|f| f.zones.get(&key).and_then(|w| w.parse().ok()))
        .unwrap_or(0)
}

fn set_weight(
    addr: &NodeAddr,
    secret: &ClusterSecret,
    zone: &str,
    percent: u8,
) -> Result<(), String> {
    let request = format!("zc_drain {zone} {percent}\r\n");
    let reply = exchange_as_peer(addr, secret, request.as_bytes(), |t| t.ends_with("\r\n"))?;
    match reply.trim_end() {
        "OK" => Ok(()),
        other => Err(format!("answered {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::steps;

    #[test]
    fn steps_go_from_the_current_weight_to_the_target() {
        assert_eq!(steps(0, 3, 1), [1, 2, 3]);
        assert_eq!(steps(0, 100, 40), [40, 80, 100]);
        assert_eq!(steps(90, 20, 50), [40, 20]);
        assert_eq!(steps(30, 30, 1), [30]);
    }
}
