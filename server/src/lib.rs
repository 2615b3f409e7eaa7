//! # zonecache-server
//!
//! The `zonecached` node: the storage engine (`store/`), the cluster layer
//! (`cluster/`: topology, routing, replication, peer health — reaching peers
//! through `zonecache-client`), the network front (`net/`), running a node
//! (`node.rs`), stats and configuration.

#[cfg(not(loom))]
pub mod cluster;
pub mod config;
// tokio has no networking under `--cfg loom`; loom models cover `store`.
#[cfg(not(loom))]
pub mod net;
#[cfg(not(loom))]
pub mod node;
pub mod stats;
pub mod store;
