//! What the request path records for the node's figures: service-time
//! histograms (`latency`) and the hottest keys (`hotkeys`). Both are kept
//! per worker thread, so recording shares nothing between threads, and
//! merged when `stats` or a scrape reads them. Below `net` (which records)
//! and `stats`/`metrics` (which read), importing neither.

pub mod hotkeys;
pub mod latency;
