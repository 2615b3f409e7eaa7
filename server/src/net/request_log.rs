//! The request log: one structured line per request worth a look — a
//! sample of all (`--log-sample`), and every error and every request
//! slower than `--log-slow-us` — through `tracing` (target
//! `zonecache::request`; JSON with `--log-format json`). What an on-call
//! engineer greps: request id, command, key count, lane, zones tried,
//! fallback, outcome, duration.
//!
//! Deciding costs a comparison or two per request; lines are capped per
//! thread and second ([`LINES_PER_SECOND`]) so an error storm cannot turn
//! the node into a log writer (the rest are counted as dropped).

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use zonecache_client::Lane;
use zonecache_proto::{Command, MetaCode, Response};

use crate::exec::Reply;
use crate::record::REQUEST_LOG_DROPPED;

/// Most lines one worker thread writes per second.
pub const LINES_PER_SECOND: u32 = 1000;

/// Request ids, unique per node run.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// A xorshift state for sampling (never 0).
    static RNG: Cell<u64> = Cell::new(0x9e37_79b9_7f4a_7c15 ^ thread_seed());
    /// (when this second's budget began, lines written in it).
    static BUDGET: Cell<(Option<Instant>, u32)> = const { Cell::new((None, 0)) };
}

fn thread_seed() -> u64 {
    let mut h = ahash::RandomState::with_seeds(1, 2, 3, 4).hash_one(std::thread::current().id());
    if h == 0 {
        h = 1;
    }
    h
}

/// What requests are logged (`--log-sample`, `--log-slow-us`).
#[derive(Debug, Clone)]
pub struct RequestLog {
    /// Log a request when a uniform 64-bit draw falls below this.
    sample_below: u64,
    /// Log every request at least this slow.
    slow: Duration,
    /// Names the node in request ids.
    node: String,
}

/// One request, as logged.
pub struct Entry<'a> {
    pub command: &'static str,
    pub keys: usize,
    pub lane: Lane,
    /// Zones the router called, comma-separated (empty: served here alone).
    pub zones: &'a str,
    pub fallback: bool,
    pub outcome: &'static str,
    pub took: Duration,
    pub client: SocketAddr,
    /// The request came from a peer node (applied here, not routed).
    pub from_peer: bool,
}

impl RequestLog {
    /// Logs a `sample` share of requests (0–1) and every request at least
    /// `slow` long; ids start with `node`.
    pub fn new(sample: f64, slow: Duration, node: String) -> RequestLog {
        let sample_below = match sample {
            s if s >= 1.0 => u64::MAX,
            s if s > 0.0 => (s * u64::MAX as f64) as u64,
            _ => 0,
        };
        RequestLog {
            sample_below,
            slow,
            node,
        }
    }

    /// Whether a request that took `took` with `outcome` gets a line.
    pub fn wants(&self, took: Duration, outcome: &str) -> bool {
        if took >= self.slow || is_error(outcome) {
            return true;
        }
        self.sample_below != 0
            && RNG.with(|rng| {
                let mut x = rng.get();
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                rng.set(x);
                x <= self.sample_below
            })
    }

    /// Writes `entry`'s line, unless this thread is over its cap.
    pub fn write(&self, entry: &Entry<'_>) {
        let allowed = BUDGET.with(|budget| {
            let (start, lines) = budget.get();
            let now = Instant::now();
            match start {
                Some(s) if now - s < Duration::from_secs(1) => {
                    budget.set((start, lines + 1));
                    lines < LINES_PER_SECOND
                }
                _ => {
                    budget.set((Some(now), 1));
                    true
                }
            }
        });
        if !allowed {
            REQUEST_LOG_DROPPED.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let id = format!("{}-{}", self.node, NEXT_ID.fetch_add(1, Ordering::Relaxed));
        tracing::info!(
            target: "zonecache::request",
            id = %id,
            command = entry.command,
            keys = entry.keys,
            lane = entry.lane.name(),
            zones = entry.zones,
            fallback = entry.fallback,
            outcome = entry.outcome,
            duration_us = entry.took.as_micros() as u64,
            client = %entry.client,
            from_peer = entry.from_peer,
            "request"
        );
    }
}

/// Whether an outcome is an error reply.
pub fn is_error(outcome: &str) -> bool {
    matches!(outcome, "error" | "client_error" | "server_error")
}

/// The command's name as the client sent it.
pub fn command_name(cmd: &Command) -> &'static str {
    match cmd {
        Command::Get { cas: false, .. } => "get",
        Command::Get { cas: true, .. } => "gets",
        Command::Gat { cas: false, .. } => "gat",
        Command::Gat { cas: true, .. } => "gats",
        Command::Store(s) => s.mode.name(),
        Command::Arith { incr: true, .. } => "incr",
        Command::Arith { incr: false, .. } => "decr",
        Command::Touch { .. } => "touch",
        Command::Delete { .. } => "delete",
        Command::FlushAll { .. } => "flush_all",
        Command::Version => "version",
        Command::Verbosity { .. } => "verbosity",
        Command::CacheMemlimit { .. } => "cache_memlimit",
        Command::Shutdown { .. } => "shutdown",
        Command::RefreshCerts { .. } => "refresh_certs",
        Command::Stats { .. } => "stats",
        Command::Quit => "quit",
        Command::MetaNoop => "mn",
        Command::MetaDebug { .. } => "me",
        Command::MetaGet(_) => "mg",
        Command::MetaSet { .. } => "ms",
        Command::MetaDelete(_) => "md",
        Command::MetaArith(_) => "ma",
        Command::TooLarge { .. } => "set",
        Command::KeyDump { .. } => "lru_crawler",
        Command::PeerChallenge { .. } => "zc_challenge",
        Command::PeerHello { .. } => "zc_peer",
        Command::PeerLease { .. } => "zc_lease",
        Command::PeerDrain { .. } => "zc_drain",
        Command::PeerAsked { .. } => "zc_asked",
        Command::PeerDump { .. } => "zc_dump",
        Command::VersionedGet { .. } => "zc_gets",
        Command::Leave => "zc_leave",
        Command::Invalid(_) => "invalid",
        Command::Close => "close",
    }
}

/// A read of `keys` keys that found `hits`, in a word.
pub fn read_outcome(hits: usize, keys: usize) -> &'static str {
    match hits {
        0 => "miss",
        h if h >= keys => "hit",
        _ => "partial",
    }
}

/// What the client was told about a request of `keys` keys, in a word.
pub fn outcome(reply: &Reply, keys: usize) -> &'static str {
    let response = match reply {
        Reply::Send(r) => r,
        Reply::Silent => return "streamed",
        Reply::Close | Reply::Drop => return "closed",
    };
    match response {
        Response::Values(v) => read_outcome(v.len(), keys),
        Response::Versioned { .. } => "versioned",
        Response::Dump(_) => "dump",
        Response::Stored => "stored",
        Response::NotStored => "not_stored",
        Response::Exists => "exists",
        Response::NotFound => "not_found",
        Response::Deleted => "deleted",
        Response::Touched => "touched",
        Response::Ok | Response::Reset => "ok",
        Response::Challenge { .. } => "challenge",
        Response::Number(_) => "number",
        Response::Version(_) | Response::Stats(_) | Response::Lines(_) | Response::Raw(_) => "info",
        Response::Meta(m) => match m.code {
            MetaCode::Value => "hit",
            MetaCode::Header => "ok",
            MetaCode::Miss => "miss",
            MetaCode::NotStored => "not_stored",
            MetaCode::Exists => "exists",
            MetaCode::NotFound => "not_found",
        },
        Response::MetaNoop => "ok",
        Response::MetaDebug(_) => "info",
        Response::Error => "error",
        Response::ClientError(_) => "client_error",
        Response::ServerError(_) => "server_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_and_slow_requests_are_always_wanted_others_by_sample() {
        let none = RequestLog::new(0.0, Duration::from_millis(10), "n".into());
        assert!(!none.wants(Duration::from_micros(50), "hit"));
        assert!(none.wants(Duration::from_millis(10), "hit"));
        assert!(none.wants(Duration::from_micros(50), "server_error"));
        let all = RequestLog::new(1.0, Duration::from_secs(1), "n".into());
        assert!((0..1000).all(|_| all.wants(Duration::ZERO, "hit")));
        let tenth = RequestLog::new(0.1, Duration::from_secs(1), "n".into());
        let n = (0..100_000)
            .filter(|_| tenth.wants(Duration::ZERO, "hit"))
            .count();
        assert!((9_000..11_000).contains(&n), "{n}");
    }

    #[test]
    fn a_thread_writes_at_most_its_cap_per_second() {
        let log = RequestLog::new(1.0, Duration::ZERO, "n".into());
        let before = REQUEST_LOG_DROPPED.load(Ordering::Relaxed);
        let entry = Entry {
            command: "get",
            keys: 1,
            lane: Lane::Realtime,
            zones: "",
            fallback: false,
            outcome: "hit",
            took: Duration::ZERO,
            client: SocketAddr::from(([127, 0, 0, 1], 1)),
            from_peer: false,
        };
        for _ in 0..LINES_PER_SECOND + 5 {
            log.write(&entry);
        }
        // Other tests' threads have budgets of their own.
        assert!(REQUEST_LOG_DROPPED.load(Ordering::Relaxed) - before >= 5);
    }
}
