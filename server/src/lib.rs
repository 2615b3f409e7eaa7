//! # zonecache-server
//!
//! The `zonecached` node, in layers whose dependencies point down only:
//! `net/` (listeners, the connection loop, admission) → `cluster/` (routes
//! a command with the client crate's router; reload, `stats zones|peers`)
//! → `exec/` (a command in, a `Response` value out) → `store/` (the engine:
//! no sockets, zones or wire format). Beside them `node.rs` runs a node and
//! wires the layers together, `config.rs` reads the command line,
//! `stats.rs` holds the counters every layer adds to, `record/` the
//! per-thread histograms and hot keys the request path records,
//! `metrics/` serves them (and the probes) over HTTP for Prometheus, and
//! `tls.rs` makes the TLS ports' rustls configuration from the node's files.

// tokio has no networking under `--cfg loom`: the loom models cover
// `store` and the cluster's stall counter, and everything that does I/O is
// left out of that build.
#[cfg(not(loom))]
pub mod auth;
#[cfg(not(loom))]
pub mod cluster;
pub mod config;
#[cfg(not(loom))]
pub mod drain;
#[cfg(not(loom))]
pub mod exec;
#[cfg(not(loom))]
pub mod local;
#[cfg(not(loom))]
pub mod metrics;
#[cfg(not(loom))]
pub mod net;
#[cfg(not(loom))]
pub mod node;
#[cfg(not(loom))]
pub mod probe;
pub mod record;
#[cfg(not(loom))]
pub mod roll;
#[cfg(loom)]
#[allow(dead_code)]
#[path = "cluster/stalls.rs"]
mod stalls;
#[cfg(not(loom))]
pub mod stats;
#[cfg(not(loom))]
pub mod status;
pub mod store;
#[cfg(not(loom))]
pub mod tls;
