//! zonecache's own figures under `zonecache_`: lanes, engine, tombstones
//! (from `stats`), and on a cluster node per zone (`stats zones`), per
//! peer (`stats peers`) and warm-up (`stats warm`). Built from the same
//! lines `stats` answers, so the two never disagree.

use std::collections::BTreeMap;

use prometheus::proto::MetricType;

use super::families::Families;

type Lines = BTreeMap<String, String>;

fn num(lines: &Lines, key: &str) -> Option<f64> {
    lines.get(key).and_then(|v| v.parse::<f64>().ok())
}

/// Figures every node has (`stats`).
pub fn add_node(f: &mut Families, general: &Lines) {
    let counters = [
        ("batch_shed", "zonecache_batch_shed_total", "Batch-lane requests answered SERVER_ERROR busy because realtime work starved the lane."),
        ("peer_links_accepted", "zonecache_peer_links_accepted_total", "Connections that proved the cluster secret (peer links and direct-mode clients)."),
        ("peer_links_refused", "zonecache_peer_links_refused_total", "Connections refused as peers: no valid proof of the cluster secret."),
        ("tls_handshakes", "zonecache_tls_handshakes_total", "TLS handshakes completed on the TLS ports (present only with a TLS port)."),
        ("ssl_handshake_errors", "zonecache_tls_handshake_errors_total", "TLS handshakes that failed or took over 10 s (present only with a TLS port)."),
        ("read_requests", "zonecache_read_requests_total", "Read commands however many keys each asked for (compare with cmd_get to see batching)."),
        ("tombstones_written", "zonecache_tombstones_written_total", "Deletes that left a tombstone."),
        ("tombstones_evicted", "zonecache_tombstones_evicted_total", "Tombstones dropped before their time to make room."),
        ("versions_superseded", "zonecache_versions_superseded_total", "Writes refused because the node held a newer version."),
        ("engine_promoted", "zonecache_engine_promotions_total", "Items promoted from the small queue to the main queue."),
        ("engine_ghost_hits", "zonecache_engine_ghost_hits_total", "Writes of keys recently evicted from the small queue (ghost hits)."),
        ("request_log_dropped", "zonecache_request_log_dropped_total", "Request-log lines not written because a worker thread was over its cap of 1000 per second."),
        ("expired_unfetched", "zonecache_items_expired_unfetched_total", "Items expired without ever being read."),
        ("evicted_unfetched", "zonecache_items_evicted_unfetched_total", "Items evicted without ever being read."),
    ];
    f.rows(MetricType::COUNTER, &counters, &[], |k| num(general, k));
    if let Some(v) = num(general, "tombstones") {
        f.gauge("zonecache_tombstones", "Tombstones held now.", &[], v);
    }
    if let Some(v) = num(general, "batch_lag_us") {
        f.gauge(
            "zonecache_batch_lag_seconds",
            "How late the batch lane's thread runs its timer (decaying peak): how starved it is.",
            &[],
            v / 1e6,
        );
    }
    let conns = "Open client connections per lane.";
    if let (Some(all), Some(batch)) = (
        num(general, "curr_connections"),
        num(general, "batch_connections"),
    ) {
        f.gauge(
            "zonecache_lane_connections",
            conns,
            &[("lane", "realtime")],
            all - batch,
        );
        f.gauge(
            "zonecache_lane_connections",
            conns,
            &[("lane", "batch")],
            batch,
        );
    }
    for queue in ["small", "main"] {
        if let Some(v) = num(general, &format!("engine_{queue}_segments")) {
            f.gauge(
                "zonecache_engine_segments",
                "Storage segments in use per S3-FIFO queue.",
                &[("queue", queue)],
                v,
            );
        }
    }
}

/// Per zone and node-wide routing figures (`stats zones`).
pub fn add_zones(f: &mut Families, zones: &Lines) {
    if let (Some(node), Some(zone)) = (zones.get("node"), zones.get("home_zone")) {
        f.gauge(
            "zonecache_node_info",
            "This node's id and zone (always 1): join on instance to group any figure by zone.",
            &[("node", node), ("zone", zone)],
            1.0,
        );
    }
    let node_counters = [
        (
            "hints_replayed",
            "zonecache_hints_replayed_total",
            "Writes a peer missed, delivered on its return.",
        ),
        (
            "hints_dropped",
            "zonecache_hints_dropped_total",
            "Writes a peer missed, dropped because its hint queue was full.",
        ),
        (
            "hints_cold_flushes",
            "zonecache_hints_cold_flushes_total",
            "Peers flushed on return because their hints overflowed.",
        ),
        (
            "hedged_reads",
            "zonecache_hedged_reads_total",
            "Realtime reads also sent to the next zone because the home owner was slow to answer.",
        ),
        (
            "hedge_wins",
            "zonecache_hedge_wins_total",
            "Hedged reads the next zone answered before the home owner.",
        ),
        (
            "hedges_denied",
            "zonecache_hedges_denied_total",
            "Reads not hedged because the hedge budget (hedge_percent) was spent.",
        ),
        (
            "lease_cold_flushes",
            "zonecache_lease_cold_flushes_total",
            "Times this node flushed itself having missed writes it could not get back.",
        ),
    ];
    f.rows(MetricType::COUNTER, &node_counters, &[], |k| num(zones, k));
    let node_gauges = [
        (
            "hints_queued",
            "zonecache_hints_queued",
            "Writes kept now for peers that missed them.",
        ),
        (
            "replication_queue",
            "zonecache_replication_queue",
            "Write copies and read repairs in flight in the background.",
        ),
        (
            "serving_reads",
            "zonecache_serving_reads",
            "1 while this node serves reads from its store (it holds every peer's read lease).",
        ),
        (
            "leaving",
            "zonecache_leaving",
            "1 once the node was told it is leaving (zc_leave).",
        ),
    ];
    f.rows(MetricType::GAUGE, &node_gauges, &[], |k| num(zones, k));
    let names: Vec<&str> = zones
        .keys()
        .filter_map(|k| k.strip_suffix(":drain_percent"))
        .collect();
    for zone in names {
        let labels = [("zone", zone)];
        let get = |figure: &str| num(zones, &format!("{zone}:{figure}"));
        let zone_counters = [
            ("fallback_hits", "zonecache_fallback_hits_total", "Reads answered by this zone after the home zone missed."),
            ("read_repairs", "zonecache_read_repairs_total", "Items found in this zone and copied back to the home zone."),
            ("read_repairs_skipped", "zonecache_read_repairs_skipped_total", "Read repairs from this zone not made (home node down, catching up, or too many in flight)."),
            ("replication_failures", "zonecache_replication_failures_total", "Write copies to this zone that failed or were dropped."),
        ];
        f.rows(MetricType::COUNTER, &zone_counters, &labels, get);
        if let Some(v) = get("drain_percent") {
            f.gauge(
                "zonecache_zone_drain_ratio",
                "Share of the zone's reads moved to other zones (zonecache drain), 0 to 1.",
                &labels,
                v / 100.0,
            );
        }
        if let Some(v) = get("nodes") {
            f.gauge(
                "zonecache_zone_nodes",
                "Nodes in the zone, as this node's config says.",
                &labels,
                v,
            );
        }
    }
}

/// Per peer (`stats peers`): labels `peer` and `zone`.
pub fn add_peers(f: &mut Families, peers: &Lines) {
    let ids: Vec<&str> = peers
        .keys()
        .filter_map(|k| k.strip_suffix(":state"))
        .collect();
    for id in ids {
        let get = |figure: &str| peers.get(&format!("{id}:{figure}"));
        let zone = get("zone").map_or("", String::as_str);
        let labels = [("peer", id), ("zone", zone)];
        let up = get("state").is_some_and(|s| s == "up");
        f.gauge(
            "zonecache_peer_up",
            "1 while the peer is in use, 0 while it is marked down.",
            &labels,
            f64::from(u8::from(up)),
        );
        let counters = [
            ("calls", "zonecache_peer_calls_total", "Calls to the peer."),
            (
                "timeouts",
                "zonecache_peer_timeouts_total",
                "Calls to the peer that ran out of time.",
            ),
            (
                "errors",
                "zonecache_peer_errors_total",
                "Calls to the peer that failed otherwise.",
            ),
            (
                "shed",
                "zonecache_peer_shed_total",
                "Calls not made or refused for load (in-flight budget, SERVER_ERROR busy).",
            ),
            (
                "mark_downs",
                "zonecache_peer_mark_downs_total",
                "Times the peer was marked down.",
            ),
        ];
        f.rows(MetricType::COUNTER, &counters, &labels, |k| {
            get(k).and_then(|v| v.parse().ok())
        });
        if let Some(v) = get("in_flight").and_then(|v| v.parse().ok()) {
            f.gauge(
                "zonecache_peer_in_flight",
                "Calls to the peer in flight now.",
                &labels,
                v,
            );
        }
    }
}

/// Warm-up (`stats warm`, also part of a cluster node's `stats`).
pub fn add_warm(f: &mut Families, warm: &Lines) {
    if let Some(state) = warm.get("warm_state") {
        for s in ["off", "warming", "ready", "done"] {
            f.gauge(
                "zonecache_warm_state",
                "The node's warm-up state (1 for the current one).",
                &[("state", s)],
                f64::from(u8::from(s == state)),
            );
        }
    }
    if let Some(v) = num(warm, "warm_progress") {
        f.gauge(
            "zonecache_warm_progress_ratio",
            "Share of the node's range copied from another zone, 0 to 1.",
            &[],
            v / 100.0,
        );
    }
    let counters = [
        (
            "warm_keys",
            "zonecache_warm_keys_total",
            "Items copied by warm-up.",
        ),
        (
            "warm_tombstones",
            "zonecache_warm_tombstones_total",
            "Tombstones copied by warm-up.",
        ),
        (
            "warm_bytes",
            "zonecache_warm_bytes_total",
            "Bytes copied by warm-up.",
        ),
        (
            "warm_superseded",
            "zonecache_warm_superseded_total",
            "Copies not applied because a newer write had arrived.",
        ),
        (
            "warm_sources_failed",
            "zonecache_warm_sources_failed_total",
            "Warm-up sources given up on.",
        ),
    ];
    f.rows(MetricType::COUNTER, &counters, &[], |k| num(warm, k));
}

/// How many hot keys a scrape shows (`stats hotkeys` lists more).
const HOT_KEYS_SCRAPED: usize = 10;

/// The hottest keys (`stats hotkeys`): decayed request counts and each
/// key's share of the node's keyed requests, by rank. The `key` label is
/// the key's hash when the node runs with `--hot-keys hashed`.
pub fn add_hot_keys(f: &mut Families, hot: &Lines) {
    let Some(total) = num(hot, "hotkeys_requests") else {
        return;
    };
    f.gauge(
        "zonecache_hot_key_window_requests",
        "Keyed requests counted by the hot-key sketch, halved every half-life (stats hotkeys: hotkeys_half_life_seconds).",
        &[],
        total,
    );
    for rank in 1..=HOT_KEYS_SCRAPED {
        let Some((key, count)) = hot
            .get(&format!("hotkey:{rank}"))
            .and_then(|v| v.rsplit_once(' '))
        else {
            break;
        };
        let Ok(count) = count.parse::<f64>() else {
            continue;
        };
        let rank = rank.to_string();
        let labels = [("rank", rank.as_str()), ("key", key)];
        f.gauge(
            "zonecache_hot_key_requests",
            "Estimated requests for one of the node's hottest keys, decayed like the window (never under the true count).",
            &labels,
            count,
        );
        f.gauge(
            "zonecache_hot_key_share",
            "One of the hottest keys' share of the node's keyed requests, 0 to 1.",
            &labels,
            count / total.max(1.0),
        );
    }
}
