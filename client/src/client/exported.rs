//! The client's figures through the `metrics` facade: whatever recorder
//! the application installs (a Prometheus exporter, StatsD, …) receives
//! them next to its own. Without a recorder they cost a no-op call.
//!
//! - `zonecache_client_requests_total{op, lane, outcome}`: calls, by
//!   operation (`get`, `gat`, `set`, `delete`, …) and outcome (`ok`, a
//!   negative answer such as `not_stored`, or `timeout`/`shed`/`error`).
//! - `zonecache_client_request_duration_seconds{op, lane}`: a histogram of
//!   each call's time, routing and fallbacks included.
//! - `zonecache_client_keys_total{lane, result}`: keys read, by `hit`,
//!   `miss` or `error`.
//! - `zonecache_client_fallbacks_total{lane}`: reads that went past the
//!   home zone.
//! - `zonecache_client_coalesced_total{lane}`: lookups answered without a
//!   request of their own (single-flight, a scope's memo).

use std::time::Duration;

use metrics::{counter, histogram};
use zonecache_proto::{MetaCode, Response};

use crate::error::Error;
use crate::lane::Lane;

/// The outcome label of a write that ended with `result` (a negative
/// answer is a reply, not an error, until the caller's method says so).
pub(super) fn write_outcome(result: &Result<Response, Error>) -> &'static str {
    match result {
        Ok(Response::NotStored) => "not_stored",
        Ok(Response::Exists) => "exists",
        Ok(Response::NotFound) => "not_found",
        Ok(Response::Meta(m)) => match m.code {
            MetaCode::NotStored => "not_stored",
            MetaCode::Exists => "exists",
            MetaCode::NotFound => "not_found",
            _ => "ok",
        },
        Ok(_) => "ok",
        Err(e) => failure(e),
    }
}

/// The outcome label of a call that failed with `e`.
pub(super) fn failure(e: &Error) -> &'static str {
    match e {
        Error::NotStored => "not_stored",
        Error::Exists => "exists",
        Error::NotFound => "not_found",
        Error::Timeout => "timeout",
        e if e.is_shed() => "shed",
        _ => "error",
    }
}

/// One call of `op` on `lane` that took `took` and ended in `outcome`.
pub(super) fn call(op: &'static str, lane: Lane, outcome: &'static str, took: Duration) {
    let lane = lane.name();
    counter!("zonecache_client_requests_total", "op" => op, "lane" => lane, "outcome" => outcome)
        .increment(1);
    histogram!("zonecache_client_request_duration_seconds", "op" => op, "lane" => lane)
        .record(took);
}

/// A read's keys by result, and whether it fell back.
pub(super) fn read_keys(lane: Lane, hits: u64, misses: u64, errors: u64, fell_back: bool) {
    let lane = lane.name();
    for (result, n) in [("hit", hits), ("miss", misses), ("error", errors)] {
        if n > 0 {
            counter!("zonecache_client_keys_total", "lane" => lane, "result" => result)
                .increment(n);
        }
    }
    if fell_back {
        counter!("zonecache_client_fallbacks_total", "lane" => lane).increment(1);
    }
}

/// Lookups answered without a request of their own.
pub(super) fn coalesced(lane: Lane, n: u64) {
    counter!("zonecache_client_coalesced_total", "lane" => lane.name()).increment(n);
}
