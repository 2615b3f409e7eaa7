//! `/metrics`, `/healthz` and `/readyz` over HTTP (`--metrics-port`): the
//! node's figures in Prometheus's text format — memcached's under the names
//! `memcached_exporter` publishes (`memcached.rs`), zonecache's own under
//! `zonecache_` (`zonecache.rs`: hot keys too), latency histograms — and
//! the probes Kubernetes and load balancers use. Everything is read at
//! scrape time from the figures `stats` answers with.

mod families;
mod http;
mod memcached;
mod zonecache;

use std::collections::BTreeMap;

use bytes::Bytes;
use zonecache_client::Lane;

use crate::record::latency::{self, Class};
pub use families::Families;
pub use http::serve;

use crate::net::Front;

type Lines = BTreeMap<String, String>;

/// The lines of `stats <group>` (empty when the node has no such group).
fn lines(front: &Front, group: Option<&'static str>) -> Lines {
    let args: Vec<Bytes> = group
        .map(|g| Bytes::from_static(g.as_bytes()))
        .into_iter()
        .collect();
    front
        .exec
        .stats_lines(&args)
        .unwrap_or_default()
        .into_iter()
        .collect()
}

/// One scrape of the node, in the text format.
pub fn scrape(front: &Front) -> String {
    let mut f = Families::default();
    let general = lines(front, None);
    memcached::add(&mut f, &general, &lines(front, Some("settings")));
    zonecache::add_node(&mut f, &general);
    zonecache::add_hot_keys(&mut f, &lines(front, Some("hotkeys")));
    if let Some(cluster) = &front.cluster {
        zonecache::add_zones(&mut f, &lines(front, Some("zones")));
        zonecache::add_peers(&mut f, &lines(front, Some("peers")));
        // A cluster node's `stats` carries its `stats warm` lines.
        zonecache::add_warm(&mut f, &general);
        for (peer, zone, lane, s) in cluster.current().peer_latency() {
            f.histogram(
                "zonecache_peer_call_duration_seconds",
                "Calls to a peer, sent to answered (or given up on), per lane.",
                &[("peer", &peer), ("zone", &zone), ("lane", lane.name())],
                &s.buckets(),
                s.count,
                s.sum_seconds,
            );
        }
    }
    for lane in Lane::ALL {
        let mut requests = 0;
        for class in Class::ALL {
            let s = latency::snapshot(class, lane);
            requests += s.count;
            f.histogram(
                "zonecache_request_duration_seconds",
                "Requests served by this node, parsed to answered, per command class and lane.",
                &[("class", class.name()), ("lane", lane.name())],
                &s.buckets(),
                s.count,
                s.sum_seconds,
            );
        }
        f.counter(
            "zonecache_lane_requests_total",
            "Requests served per lane.",
            &[("lane", lane.name())],
            requests as f64,
        );
    }
    f.render()
}

/// Why the node should not get client reads now (`/readyz`), its zone's
/// drain counted or not; `None`: ready.
pub fn unready(front: &Front, count_drain: bool) -> Option<String> {
    front.cluster.as_ref()?;
    crate::probe::unready(
        &lines(front, None),
        &lines(front, Some("zones")),
        count_drain,
    )
}
