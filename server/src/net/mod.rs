//! The network front: the listener (socket2), the per-connection loop with
//! pipelining and admission control, and command execution.

mod connection;
mod exec;
mod listener;

use std::sync::Arc;
use std::time::Duration;

use zonecache_proto::ParserConfig;

use crate::stats::{ConnRegistry, ServerStats, Settings};
use crate::store::Storage;

pub use exec::{execute_local, HIGH_WATER};
pub use listener::{bind, serve};

/// What every connection shares.
pub struct Shared {
    /// Where items live.
    pub storage: Arc<dyn Storage>,
    /// Process-wide counters.
    pub stats: ServerStats,
    /// Settings echoed by `stats settings`.
    pub settings: Settings,
    /// Open connections, for `stats conns`.
    pub conns: Arc<ConnRegistry>,
    /// Limits the request parser enforces.
    pub parser: ParserConfig,
    /// Close connections idle this long.
    pub idle_timeout: Option<Duration>,
    /// Routing across zones; `None` for a single node.
    pub cluster: Option<crate::cluster::ClusterHandle>,
}
