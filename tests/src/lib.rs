//! # zonecache-tests
//!
//! The one harness for end-to-end tests and the bench: real processes on
//! loopback, never mocks. `zonecached` nodes (and stock `memcached` where a
//! comparison is needed) start on free ports from binaries built fresh
//! (`procs`), whole multi-zone clusters are laid out by the same
//! `ClusterConfig::local` that `zonecache local` uses (`cluster`), and
//! byte-level connections have bounded waits (`conn`), and faults between
//! processes are injected by a TCP proxy (`proxy`). Every process is killed
//! when its handle is dropped.

pub mod binary;
pub mod cluster;
pub mod conn;
pub mod corpus;
pub mod fuzz;
pub mod fuzz_binary;
pub mod procs;
pub mod proxy;
pub mod tls;

pub use cluster::{loopback, ClusterNode, TestCluster};
pub use conn::{Conn, REPLY_TIMEOUT};
pub use procs::{
    free_port, free_port_range, http_get, request_at, server_binary, stats_at, zonecache_tool,
    zonecached_binary, Server,
};
pub use proxy::{Fault, Proxy};
