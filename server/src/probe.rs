//! `zonecache ready` and `zonecache leave`: one node's side of a load
//! balancer or orchestrator (a Kubernetes readiness probe and preStop
//! hook), so a node takes client traffic only when it can serve it well
//! and stops taking reads before it stops.

use std::time::Duration;

use zonecache_client::NodeAddr;

use crate::status::{exchange, Figures};

/// Whether the node at `addr` is ready for clients: it answers, is not
/// warming (≥ 95 % of its keys copied, or nothing to copy), serves reads
/// from its store (holds its peers' leases) and is not leaving. `Err`
/// says why not.
pub fn ready(addr: &NodeAddr) -> Result<(), String> {
    let figures = Figures::read(addr).ok_or_else(|| format!("{addr} does not answer"))?;
    let stat = |name: &str| figures.stats.get(name).map(String::as_str);
    if stat("warm_state") == Some("warming") {
        let progress = stat("warm_progress").unwrap_or("?");
        return Err(format!(
            "{addr} is warming ({progress} % of its keys copied)"
        ));
    }
    let zones = |name: &str| figures.zones.get(name).map(String::as_str);
    if zones("leaving") == Some("1") {
        return Err(format!("{addr} is leaving"));
    }
    if zones("serving_reads") == Some("0") {
        return Err(format!(
            "{addr} serves no reads from its store yet (lacks a peer's read lease)"
        ));
    }
    Ok(())
}

/// Tells the node at `addr` it is leaving (its reads go to other zones
/// from now on), then waits `grace` for requests in flight to finish.
pub fn leave(addr: &NodeAddr, grace: Duration) -> Result<(), String> {
    let reply = exchange(addr, b"zc_leave\r\n", |t| t.ends_with("\r\n"))?;
    if reply != "OK\r\n" {
        return Err(format!(
            "{addr} answered {:?} (not a cluster node?)",
            reply.trim_end()
        ));
    }
    std::thread::sleep(grace);
    Ok(())
}
