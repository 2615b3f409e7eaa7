//! Server counters and the `stats` command's groups, with memcached's field
//! names wherever the meaning is the same, so dashboards and exporters built
//! for memcached read zonecached unchanged.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::record::hotkeys::{self, HotKeyMode};
use crate::store::{Storage, StoreStats};

/// The version string in `VERSION` and `stats`; it starts with the memcached
/// release we match so version-sniffing clients behave.
pub const VERSION: &str = concat!("1.6.18-zonecache-", env!("CARGO_PKG_VERSION"));

/// Counters a connection accumulates locally and adds to the server's after
/// each batch of requests, so threads don't contend on every command.
#[derive(Debug, Default, Clone, Copy)]
pub struct ConnCounters {
    pub cmd_get: u64,
    pub cmd_set: u64,
    pub cmd_touch: u64,
    pub cmd_flush: u64,
    pub cmd_meta: u64,
    /// Read commands (`get`/`gets`/`gat`/`gats`/`mg`), however many keys each
    /// asks for: shows how well clients batch.
    pub read_requests: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub store_too_large: u64,
    pub store_no_memory: u64,
}

/// Process-wide counters.
#[derive(Debug, Default)]
pub struct ServerStats {
    pub curr_connections: AtomicU64,
    pub total_connections: AtomicU64,
    pub rejected_connections: AtomicU64,
    /// Open connections on the batch port.
    pub batch_connections: AtomicU64,
    /// Batch-lane requests answered `SERVER_ERROR busy` because the lane was starved.
    pub batch_shed: AtomicU64,
    /// Connections that proved the cluster secret (peer links, direct-mode clients).
    pub peer_links_accepted: AtomicU64,
    /// Proofs of the cluster secret that failed (`zc_peer` answered `ERROR`).
    pub peer_links_refused: AtomicU64,
    /// Authentication attempts (`-Y`) and those that failed.
    pub auth_cmds: AtomicU64,
    pub auth_errors: AtomicU64,
    /// TLS handshakes completed on the TLS ports.
    pub tls_handshakes: AtomicU64,
    /// TLS handshakes that failed or timed out (memcached's
    /// `ssl_handshake_errors`).
    pub tls_handshake_errors: AtomicU64,
    /// When the TLS certificates were last (re)loaded, in unix seconds
    /// (0: no TLS port).
    pub tls_loaded_at: AtomicU64,
    /// How late the batch lane's thread runs its timer (µs, decaying peak):
    /// its measure of being starved by realtime work.
    pub batch_lag_us: AtomicU64,
    cmd_get: AtomicU64,
    read_requests: AtomicU64,
    cmd_set: AtomicU64,
    cmd_touch: AtomicU64,
    cmd_flush: AtomicU64,
    cmd_meta: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    store_too_large: AtomicU64,
    store_no_memory: AtomicU64,
    /// Current `verbosity` level (memcached keeps it as a setting).
    pub verbosity: AtomicU32,
    /// `stats detail`: counts per key prefix, while turned on.
    pub prefixes: crate::record::prefixes::PrefixStats,
}

impl ServerStats {
    /// Adds a connection's counters and zeroes them.
    pub fn absorb(&self, c: &mut ConnCounters) {
        let add = |a: &AtomicU64, v: u64| {
            if v != 0 {
                a.fetch_add(v, Ordering::Relaxed);
            }
        };
        add(&self.cmd_get, c.cmd_get);
        add(&self.cmd_set, c.cmd_set);
        add(&self.cmd_touch, c.cmd_touch);
        add(&self.cmd_flush, c.cmd_flush);
        add(&self.cmd_meta, c.cmd_meta);
        add(&self.read_requests, c.read_requests);
        add(&self.bytes_read, c.bytes_read);
        add(&self.bytes_written, c.bytes_written);
        add(&self.store_too_large, c.store_too_large);
        add(&self.store_no_memory, c.store_no_memory);
        *c = ConnCounters::default();
    }

    /// `stats reset`: zero the counters that memcached resets.
    pub fn reset(&self) {
        self.prefixes.clear();
        for a in [
            &self.total_connections,
            &self.rejected_connections,
            &self.cmd_get,
            &self.cmd_set,
            &self.cmd_touch,
            &self.cmd_flush,
            &self.cmd_meta,
            &self.read_requests,
            &self.batch_shed,
            &self.bytes_read,
            &self.bytes_written,
            &self.store_too_large,
            &self.store_no_memory,
        ] {
            a.store(0, Ordering::Relaxed);
        }
    }
}

/// What `stats conns` reports about one connection.
#[derive(Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// Clock time of the last command.
    pub last_cmd: AtomicU32,
}

/// Open connections, for `stats conns`. Touched on connect and disconnect only.
#[derive(Debug, Default)]
pub struct ConnRegistry {
    next_id: AtomicU64,
    conns: Mutex<BTreeMap<u64, Arc<ConnInfo>>>,
}

impl ConnRegistry {
    /// Registers a connection; drop the guard to unregister it.
    pub fn register(self: &Arc<Self>, peer: SocketAddr, local: SocketAddr, now: u32) -> ConnGuard {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let info = Arc::new(ConnInfo {
            peer,
            local,
            last_cmd: AtomicU32::new(now),
        });
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, info.clone());
        ConnGuard {
            registry: self.clone(),
            id,
            info,
        }
    }
}

/// Keeps a connection listed while alive.
pub struct ConnGuard {
    registry: Arc<ConnRegistry>,
    id: u64,
    pub info: Arc<ConnInfo>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.registry
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

/// Settings reported by `stats settings`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub max_connections: usize,
    pub port: u16,
    pub interface: String,
    pub threads: usize,
    pub item_size_max: usize,
    pub backlog: i32,
    pub idle_timeout: u64,
    pub shards: usize,
    /// Most batch-port connections at once.
    pub batch_connections: usize,
    /// Shed batch requests while the batch thread's timer runs this late (µs).
    pub batch_shed_after_us: u64,
    /// Whether hot keys are counted, and how they are shown.
    pub hot_keys: HotKeyMode,
    /// Where a key's prefix ends for `stats detail` (memcached's `-D`).
    pub prefix_delimiter: u8,
    /// Whether the `shutdown` command stops the node (memcached's `-A`).
    pub shutdown_command: bool,
    /// The TLS ports' files, when there are TLS ports.
    pub tls: Option<crate::config::TlsFiles>,
    /// The text-protocol auth file (`-Y`), if any.
    pub auth_file: Option<std::path::PathBuf>,
    /// SASL authentication over the binary protocol (`-S`).
    pub sasl: bool,
}

/// `stats` groups served by a layer above the executor (the cluster's
/// `zones` and `peers`): the executor answers `stats` without importing it.
pub trait StatsGroups: Send + Sync {
    /// The lines of group `name`, or `None` when this source has no such group.
    fn group(&self, name: &[u8]) -> Option<Vec<(String, String)>>;
}

/// Everything the `stats` command reads.
pub struct StatsContext<'a> {
    pub server: &'a ServerStats,
    pub storage: &'a dyn Storage,
    pub settings: &'a Settings,
    pub conns: &'a ConnRegistry,
    /// More groups (the cluster's), if any.
    pub groups: Option<&'a dyn StatsGroups>,
}

fn rusage() -> (String, String) {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let fmt = |tv: libc::timeval| format!("{}.{:06}", tv.tv_sec, tv.tv_usec);
    (fmt(ru.ru_utime), fmt(ru.ru_stime))
}

/// The lines of one `stats` group, or `None` for an unknown group.
pub fn group(ctx: &StatsContext<'_>, args: &[bytes::Bytes]) -> Option<Vec<(String, String)>> {
    let sub = args.first().map(|a| &a[..]);
    let clock = ctx.storage.clock();
    let now = clock.now();
    let mut out: Vec<(String, String)> = Vec::new();
    let mut put = |k: &str, v: String| out.push((k.to_string(), v));
    match sub {
        None => {
            let s = ctx.server;
            let st: StoreStats = ctx.storage.stats();
            let ld = |a: &AtomicU64| a.load(Ordering::Relaxed).to_string();
            let (user, system) = rusage();
            put("pid", std::process::id().to_string());
            put("uptime", clock.uptime().to_string());
            put("time", clock.unix_now().to_string());
            put("version", VERSION.to_string());
            put(
                "pointer_size",
                (8 * std::mem::size_of::<usize>()).to_string(),
            );
            put("rusage_user", user);
            put("rusage_system", system);
            put("max_connections", ctx.settings.max_connections.to_string());
            put("curr_connections", ld(&s.curr_connections));
            put("total_connections", ld(&s.total_connections));
            put("rejected_connections", ld(&s.rejected_connections));
            put("connection_structures", ld(&s.curr_connections));
            put("cmd_get", ld(&s.cmd_get));
            put("cmd_set", ld(&s.cmd_set));
            put("cmd_flush", ld(&s.cmd_flush));
            put("cmd_touch", ld(&s.cmd_touch));
            put("cmd_meta", ld(&s.cmd_meta));
            put("read_requests", ld(&s.read_requests));
            put("batch_connections", ld(&s.batch_connections));
            put("batch_shed", ld(&s.batch_shed));
            put("batch_lag_us", ld(&s.batch_lag_us));
            put("peer_links_accepted", ld(&s.peer_links_accepted));
            put("peer_links_refused", ld(&s.peer_links_refused));
            // memcached shows its TLS figures only when TLS is on.
            if ctx.settings.tls.is_some() {
                put("tls_handshakes", ld(&s.tls_handshakes));
                put("ssl_handshake_errors", ld(&s.tls_handshake_errors));
                let loaded = s.tls_loaded_at.load(Ordering::Relaxed) as i64;
                put(
                    "time_since_server_cert_refresh",
                    (clock.unix_now() - loaded).max(0).to_string(),
                );
            }
            put(
                "request_log_dropped",
                ld(&crate::record::REQUEST_LOG_DROPPED),
            );
            put("get_hits", st.get_hits.to_string());
            put("get_misses", st.get_misses.to_string());
            put("get_expired", st.get_expired.to_string());
            put("get_flushed", st.get_flushed.to_string());
            put("delete_misses", st.delete_misses.to_string());
            put("delete_hits", st.delete_hits.to_string());
            put("incr_misses", st.incr_misses.to_string());
            put("incr_hits", st.incr_hits.to_string());
            put("decr_misses", st.decr_misses.to_string());
            put("decr_hits", st.decr_hits.to_string());
            put("cas_misses", st.cas_misses.to_string());
            put("cas_hits", st.cas_hits.to_string());
            put("cas_badval", st.cas_badval.to_string());
            put("touch_hits", st.touch_hits.to_string());
            put("touch_misses", st.touch_misses.to_string());
            put("store_too_large", ld(&s.store_too_large));
            put("store_no_memory", ld(&s.store_no_memory));
            put("auth_cmds", ld(&s.auth_cmds));
            put("auth_errors", ld(&s.auth_errors));
            put("bytes_read", ld(&s.bytes_read));
            put("bytes_written", ld(&s.bytes_written));
            put("limit_maxbytes", ctx.storage.limit_maxbytes().to_string());
            put("accepting_conns", "1".into());
            put("threads", ctx.settings.threads.to_string());
            put("bytes", st.bytes.to_string());
            put("curr_items", st.curr_items.to_string());
            put("total_items", st.total_items.to_string());
            put("expired_unfetched", st.expired_unfetched.to_string());
            put("evicted_unfetched", st.evicted_unfetched.to_string());
            put("evictions", st.evictions.to_string());
            put("reclaimed", st.reclaimed.to_string());
            // zonecache's own: what the engine holds and how S3-FIFO moves items.
            put("engine_allocated_bytes", st.allocated.to_string());
            put("engine_small_segments", st.small_segments.to_string());
            put("engine_main_segments", st.main_segments.to_string());
            put("engine_promoted", st.promoted.to_string());
            put("engine_ghost_hits", st.ghost_hits.to_string());
            // Versions: deletes remembered, and late writes refused.
            put("tombstones", st.tombstones.to_string());
            put("tombstones_written", st.tombstones_written.to_string());
            put("tombstones_evicted", st.tombstones_evicted.to_string());
            put("versions_superseded", st.versions_superseded.to_string());
            // A node of a cluster: where its warm-up is.
            if let Some(warm) = ctx.groups.and_then(|g| g.group(b"warm")) {
                out.extend(warm);
            }
        }
        Some(b"hotkeys") => out.extend(hotkeys::stats_lines(ctx.settings.hot_keys, now)),
        Some(b"settings") => {
            let c = ctx.settings;
            put("maxbytes", ctx.storage.limit_maxbytes().to_string());
            put("maxconns", c.max_connections.to_string());
            put("tcpport", c.port.to_string());
            put("udpport", "0".into());
            put("interface", c.interface.clone());
            put(
                "verbosity",
                ctx.server.verbosity.load(Ordering::Relaxed).to_string(),
            );
            put("evictions", "on".into());
            put(
                "detail_enabled",
                if ctx.server.prefixes.enabled() {
                    "yes"
                } else {
                    "no"
                }
                .into(),
            );
            put("stat_key_prefix", (c.prefix_delimiter as char).to_string());
            put(
                "shutdown_command",
                if c.shutdown_command { "yes" } else { "no" }.into(),
            );
            put(
                "auth_enabled_sasl",
                if c.sasl { "yes" } else { "no" }.into(),
            );
            put(
                "auth_enabled_ascii",
                c.auth_file
                    .as_ref()
                    .map_or("no".into(), |p| p.display().to_string()),
            );
            put(
                "ssl_enabled",
                if c.tls.is_some() { "yes" } else { "no" }.into(),
            );
            if let Some(tls) = &c.tls {
                put("ssl_chain_cert", tls.cert.display().to_string());
                put("ssl_key", tls.key.display().to_string());
                let ca = tls.client_ca.as_ref().map(|p| p.display().to_string());
                // memcached's verify modes: 0 none, 3 peer + fail without a cert.
                put(
                    "ssl_verify_mode",
                    if ca.is_some() { "3" } else { "0" }.into(),
                );
                put("ssl_ca_cert", ca.unwrap_or_else(|| "NULL".into()));
                put("ssl_min_version", tls.min_version.name().into());
            }
            put("num_threads", c.threads.to_string());
            put("cas_enabled", "yes".into());
            put("tcp_backlog", c.backlog.to_string());
            put("binding_protocol", "ascii".into());
            put("item_size_max", c.item_size_max.to_string());
            put("idle_timeout", c.idle_timeout.to_string());
            put("eviction_policy", "s3-fifo".into());
            put("segment_size", crate::store::SEGMENT_SIZE.to_string());
            put("shards", c.shards.to_string());
        }
        Some(b"items") => {
            // One "slab class" stands for the whole engine (see README).
            let st = ctx.storage.stats();
            put("items:1:number", st.curr_items.to_string());
            put("items:1:evicted", st.evictions.to_string());
            put(
                "items:1:evicted_unfetched",
                st.evicted_unfetched.to_string(),
            );
            put(
                "items:1:expired_unfetched",
                st.expired_unfetched.to_string(),
            );
            put("items:1:reclaimed", st.reclaimed.to_string());
            put(
                "items:1:outofmemory",
                ctx.server
                    .store_no_memory
                    .load(Ordering::Relaxed)
                    .to_string(),
            );
        }
        Some(b"slabs") => {
            // Segments play the role of slab pages.
            let st = ctx.storage.stats();
            let pages = st.small_segments + st.main_segments;
            put("1:chunk_size", crate::store::SEGMENT_SIZE.to_string());
            put("1:total_pages", pages.to_string());
            put("1:used_chunks", st.curr_items.to_string());
            put("1:mem_requested", st.bytes.to_string());
            put("active_slabs", u64::from(pages > 0).to_string());
            put("total_malloced", st.allocated.to_string());
        }
        Some(b"conns") => {
            let conns = ctx.conns.conns.lock().unwrap_or_else(|e| e.into_inner());
            for (id, c) in conns.iter() {
                put(&format!("{id}:addr"), format!("tcp:{}", c.peer));
                put(&format!("{id}:listen_addr"), format!("tcp:{}", c.local));
                put(&format!("{id}:state"), "conn_parse_cmd".into());
                let idle = now.saturating_sub(c.last_cmd.load(Ordering::Relaxed));
                put(&format!("{id}:secs_since_last_cmd"), idle.to_string());
            }
        }
        Some(name) => out.extend(ctx.groups?.group(name)?),
    }
    Some(out)
}
