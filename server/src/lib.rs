//! # zonecache-server
//!
//! The `zonecached` node: the storage engine (`store/`), the network front
//! (`net/`), stats and configuration. The cluster layer (topology, ring,
//! routing, replication, health) will sit between the network front and the
//! storage, in `cluster/`, and reach peers through `zonecache-client`.

pub mod config;
// tokio has no networking under `--cfg loom`; loom models cover `store`.
#[cfg(not(loom))]
pub mod net;
pub mod stats;
pub mod store;
