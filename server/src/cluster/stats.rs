//! `stats zones`, `stats peers`, `stats warm` and `stats topology` (the
//! membership a direct-mode client follows): the cluster's figures, served
//! to the executor's `stats` command through [`StatsGroups`].

use std::sync::atomic::{AtomicU64, Ordering};

use zonecache_client::latency::Snapshot;
use zonecache_client::{route, Lane};

use super::{Cluster, ClusterView};
use crate::stats::StatsGroups;

impl StatsGroups for Cluster {
    fn group(&self, name: &[u8]) -> Option<Vec<(String, String)>> {
        let view = self.current();
        match name {
            b"zones" => Some(view.zone_stats()),
            b"peers" => Some(view.peer_stats()),
            b"warm" => Some(self.warm.stats()),
            name if name == route::MEMBERSHIP_GROUP => {
                Some(route::membership_lines(&view.router.topology))
            }
            _ => None,
        }
    }
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

impl ClusterView {
    /// Per peer and lane: the peer's id, its zone and its call latencies.
    pub fn peer_latency(&self) -> Vec<(String, String, Lane, Snapshot)> {
        let zones = &self.router.topology.zones;
        let mut out = Vec::new();
        for p in self.peers.sorted() {
            let id = &p.config.id;
            let zone = zones
                .iter()
                .find(|z| z.nodes.iter().any(|n| n.id == *id))
                .map_or_else(String::new, |z| z.name.clone());
            for lane in Lane::ALL {
                let s = p.stats.latency[lane.index()].snapshot();
                out.push((id.clone(), zone.clone(), lane, s));
            }
        }
        out
    }

    /// Per peer zone, address, state, calls, mean latency, in flight,
    /// timeouts, errors, shed calls and mark-downs.
    fn peer_stats(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let zones = &self.router.topology.zones;
        for p in self.peers.sorted() {
            let id = &p.config.id;
            if let Some(z) = zones.iter().find(|z| z.nodes.iter().any(|n| n.id == *id)) {
                out.push((format!("{id}:zone"), z.name.clone()));
            }
            let s = &p.stats;
            let calls = load(&s.calls);
            let state = if p.is_down() { "down" } else { "up" };
            out.push((format!("{id}:addr"), p.config.addr.to_string()));
            out.push((format!("{id}:state"), state.into()));
            out.push((format!("{id}:calls"), calls.to_string()));
            out.push((
                format!("{id}:mean_latency_us"),
                (load(&s.latency_us) / calls.max(1)).to_string(),
            ));
            out.push((format!("{id}:in_flight"), load(&s.in_flight).to_string()));
            out.push((format!("{id}:timeouts"), load(&s.timeouts).to_string()));
            out.push((format!("{id}:errors"), load(&s.errors).to_string()));
            out.push((format!("{id}:shed"), load(&s.shed).to_string()));
            out.push((format!("{id}:mark_downs"), load(&s.mark_downs).to_string()));
        }
        out
    }

    /// This node's id, home zone, policy and background queue; per zone
    /// fallbacks, read repairs and replication failures.
    fn zone_stats(&self) -> Vec<(String, String)> {
        let t = &self.router.topology;
        let mut out = vec![
            ("node".to_string(), self.me.id.clone()),
            ("home_zone".to_string(), t.zones[0].name.clone()),
            (
                "write_policy".to_string(),
                t.write_policy.name().to_string(),
            ),
            (
                "replication_queue".to_string(),
                self.router.background_in_flight().to_string(),
            ),
            (
                "serving_reads".to_string(),
                u8::from(self.leases.serving()).to_string(),
            ),
            (
                "leaving".to_string(),
                u8::from(self.leases.leaving()).to_string(),
            ),
            (
                "lease_cold_flushes".to_string(),
                load(&self.leases.cold_flushes).to_string(),
            ),
        ];
        let h = &self.router.hints.stats;
        for (name, value) in [
            ("hints_queued", &h.queued),
            ("hints_replayed", &h.replayed),
            ("hints_dropped", &h.dropped),
            ("hints_cold_flushes", &h.cold_flushes),
            ("hedged_reads", &self.router.hedges.stats.sent),
            ("hedge_wins", &self.router.hedges.stats.won),
            ("hedges_denied", &self.router.hedges.stats.denied),
        ] {
            out.push((name.to_string(), load(value).to_string()));
        }
        for (z, s) in t.zones.iter().zip(self.router.zone_stats.iter()) {
            let name = &z.name;
            out.push((format!("{name}:nodes"), z.nodes.len().to_string()));
            out.push((
                format!("{name}:drain_percent"),
                self.router.drains.get(name).to_string(),
            ));
            for (figure, value) in [
                ("fallback_hits", &s.fallback_hits),
                ("read_repairs", &s.read_repairs),
                ("read_repairs_skipped", &s.read_repairs_skipped),
                ("replication_failures", &s.replication_failures),
            ] {
                out.push((format!("{name}:{figure}"), load(value).to_string()));
            }
        }
        out
    }
}
