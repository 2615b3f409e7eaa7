//! `zonecache ready` and `zonecache leave`: one node's side of a load
//! balancer or orchestrator (a Kubernetes readiness probe and preStop
//! hook), so a node takes client traffic only when it can serve it well
//! and stops taking reads before it stops.

use std::collections::BTreeMap;
use std::time::Duration;

use zonecache_client::{ClusterSecret, NodeAddr};

use crate::status::{exchange_as_peer, Figures};

/// Why a node is not ready for clients, from its `stats` and `stats
/// zones` lines; `None`: ready. Ready means it is not warming (≥ 95 % of
/// its keys copied, or nothing to copy), serves reads from its store
/// (holds its peers' leases), is not leaving and — with `count_drain` — its
/// zone is not drained to 100 % (it then serves no reads at all). One rule
/// for `zonecache ready`, `/readyz` and `zonecache roll` (which restarts
/// nodes of a drained zone too, so it passes `count_drain: false`).
pub fn unready(
    stats: &BTreeMap<String, String>,
    zones: &BTreeMap<String, String>,
    count_drain: bool,
) -> Option<String> {
    let stat = |name: &str| stats.get(name).map(String::as_str);
    let zone = |name: &str| zones.get(name).map(String::as_str);
    if stat("warm_state") == Some("warming") {
        let progress = stat("warm_progress").unwrap_or("?");
        return Some(format!("is warming ({progress} % of its keys copied)"));
    }
    if zone("leaving") == Some("1") {
        return Some("is leaving".into());
    }
    if zone("serving_reads") == Some("0") {
        return Some("serves no reads from its store yet (lacks a peer's read lease)".into());
    }
    let home = zone("home_zone").unwrap_or_default();
    if count_drain && zone(&format!("{home}:drain_percent")) == Some("100") {
        return Some(format!("is in zone {home}, drained to 100 %"));
    }
    None
}

/// Whether the node at `addr` is ready for clients ([`unready`]); `Err`
/// says why not.
pub fn ready(addr: &NodeAddr) -> Result<(), String> {
    ready_as(addr, true)
}

/// [`ready`], with or without its zone's drain counted.
pub fn ready_as(addr: &NodeAddr, count_drain: bool) -> Result<(), String> {
    let figures = Figures::read(addr).ok_or_else(|| format!("{addr} does not answer"))?;
    match unready(&figures.stats, &figures.zones, count_drain) {
        Some(why) => Err(format!("{addr} {why}")),
        None => Ok(()),
    }
}

/// Tells the node at `addr` it is leaving (its reads go to other zones
/// from now on), then waits `grace` for requests in flight to finish.
/// Only a holder of the cluster `secret` may.
pub fn leave(addr: &NodeAddr, secret: &ClusterSecret, grace: Duration) -> Result<(), String> {
    let reply = exchange_as_peer(addr, secret, b"zc_leave\r\n", |t| t.ends_with("\r\n"))
        .map_err(|e| format!("{addr} {e}"))?;
    if reply != "OK\r\n" {
        return Err(format!(
            "{addr} answered {:?} (not a cluster node?)",
            reply.trim_end()
        ));
    }
    std::thread::sleep(grace);
    Ok(())
}
