//! # zonecache-server
//!
//! The `zonecached` node: the storage engine (`store/`), the cluster layer
//! (`cluster/`: topology, routing, replication, peer health — reaching peers
//! through `zonecache-client`), the network front (`net/`), running a node
//! (`node.rs`), stats and configuration.

// tokio has no networking under `--cfg loom`: the loom models cover
// `store`, and everything that does I/O is left out of that build.
#[cfg(not(loom))]
pub mod cluster;
pub mod config;
#[cfg(not(loom))]
pub mod net;
#[cfg(not(loom))]
pub mod node;
#[cfg(not(loom))]
pub mod stats;
pub mod store;
