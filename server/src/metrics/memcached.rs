//! The node's memcached-level figures under exactly the names and labels
//! `memcached_exporter` publishes, made from the same `stats` and
//! `stats settings` lines the exporter reads, so a memcached dashboard or
//! alert works unchanged. Figures the node does not have (slab classes,
//! extstore, listener yields) are left out rather than faked.

use std::collections::BTreeMap;

use prometheus::proto::MetricType;

use super::families::Families;

/// Adds the exporter's families from `stats` (`general`) and
/// `stats settings` (`settings`).
pub fn add(
    f: &mut Families,
    general: &BTreeMap<String, String>,
    settings: &BTreeMap<String, String>,
) {
    let num = |k: &str| general.get(k).and_then(|v| v.parse::<f64>().ok());
    f.gauge(
        "memcached_up",
        "Could the memcached server be reached.",
        &[],
        1.0,
    );
    if let Some(version) = general.get("version") {
        f.gauge(
            "memcached_version",
            "The version of this memcached server.",
            &[("version", version)],
            1.0,
        );
    }
    const COMMANDS: &str =
        "Total number of all requests broken down by command (get, set, etc.) and status.";
    for op in ["get", "delete", "incr", "decr", "cas", "touch"] {
        for (suffix, status) in [("hits", "hit"), ("misses", "miss")] {
            if let Some(v) = num(&format!("{op}_{suffix}")) {
                let labels = [("command", op), ("status", status)];
                f.counter("memcached_commands_total", COMMANDS, &labels, v);
            }
        }
    }
    if let Some(v) = num("cas_badval") {
        let labels = [("command", "cas"), ("status", "badval")];
        f.counter("memcached_commands_total", COMMANDS, &labels, v);
    }
    if let Some(v) = num("cmd_flush") {
        let labels = [("command", "flush"), ("status", "hit")];
        f.counter("memcached_commands_total", COMMANDS, &labels, v);
    }
    // memcached counts cas commands in cmd_set too; the exporter takes them out.
    if let (Some(set), Some(h), Some(m), Some(b)) = (
        num("cmd_set"),
        num("cas_hits"),
        num("cas_misses"),
        num("cas_badval"),
    ) {
        let labels = [("command", "set"), ("status", "hit")];
        f.counter(
            "memcached_commands_total",
            COMMANDS,
            &labels,
            set - h - m - b,
        );
    }
    let counters = [
        (
            "rusage_user",
            "memcached_process_user_cpu_seconds_total",
            "Accumulated user time for this process.",
        ),
        (
            "rusage_system",
            "memcached_process_system_cpu_seconds_total",
            "Accumulated system time for this process.",
        ),
        (
            "total_items",
            "memcached_items_total",
            "Total number of items stored during the life of this instance.",
        ),
        (
            "bytes_read",
            "memcached_read_bytes_total",
            "Total number of bytes read by this server from network.",
        ),
        (
            "bytes_written",
            "memcached_written_bytes_total",
            "Total number of bytes sent by this server to network.",
        ),
        (
            "total_connections",
            "memcached_connections_total",
            "Total number of connections opened since the server started running.",
        ),
        (
            "rejected_connections",
            "memcached_connections_rejected_total",
            "Total number of connections rejected due to hitting the -c limit.",
        ),
        (
            "evictions",
            "memcached_items_evicted_total",
            "Total number of valid items removed from cache to free memory for new items.",
        ),
        (
            "reclaimed",
            "memcached_items_reclaimed_total",
            "Total number of times an entry was stored using memory from an expired entry.",
        ),
        (
            "store_too_large",
            "memcached_item_too_large_total",
            "The number of times an item exceeded the max-item-size when being stored.",
        ),
        (
            "store_no_memory",
            "memcached_item_no_memory_total",
            "The number of times an item could not be stored due to no more memory.",
        ),
    ];
    f.rows(MetricType::COUNTER, &counters, &[], num);
    // The exporter types uptime a counter; as a gauge it keeps its name
    // and passes promtool's lint (counters end in `_total`).
    let gauges = [
        (
            "uptime",
            "memcached_uptime_seconds",
            "Number of seconds since the server started.",
        ),
        (
            "time",
            "memcached_time_seconds",
            "current UNIX time according to the server.",
        ),
        (
            "bytes",
            "memcached_current_bytes",
            "Current number of bytes used to store items.",
        ),
        (
            "limit_maxbytes",
            "memcached_limit_bytes",
            "Number of bytes this server is allowed to use for storage.",
        ),
        (
            "curr_items",
            "memcached_current_items",
            "Current number of items stored by this instance.",
        ),
        (
            "curr_connections",
            "memcached_current_connections",
            "Current number of open connections.",
        ),
        (
            "accepting_conns",
            "memcached_accepting_connections",
            "The Memcached server is currently accepting new connections.",
        ),
        (
            "engine_allocated_bytes",
            "memcached_malloced_bytes",
            "Number of bytes of memory allocated to slab pages.",
        ),
    ];
    f.rows(MetricType::GAUGE, &gauges, &[], num);
    if let Some(v) = settings.get("maxconns").and_then(|v| v.parse().ok()) {
        f.gauge(
            "memcached_max_connections",
            "Maximum number of clients allowed.",
            &[],
            v,
        );
    }
}
