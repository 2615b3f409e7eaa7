//! What the request path records for the node's figures: service-time
//! histograms (`latency`), the hottest keys (`hotkeys`), the request
//! log's dropped lines, and memcached's prefix statistics (`prefixes`,
//! off unless `stats detail on`). Histograms and hot keys are kept
//! per worker thread, so recording shares nothing between threads, and
//! merged when `stats` or a scrape reads them. Below `net`/`exec` (which
//! record) and `stats`/`metrics` (which read), importing neither.

pub mod hotkeys;
#[cfg(not(loom))]
pub mod latency;
pub mod prefixes;

use std::sync::atomic::AtomicU64;

/// Request-log lines not written because a thread was over its cap
/// (`net::request_log`), for `stats` and the scrape.
pub static REQUEST_LOG_DROPPED: AtomicU64 = AtomicU64::new(0);
