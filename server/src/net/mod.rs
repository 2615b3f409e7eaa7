//! The network front: the listener (socket2), the per-connection loop with
//! pipelining and admission control. A connection hands each command to the
//! cluster (when this node is part of one and the connection is not a
//! peer's) or to the executor, and encodes the `Response` it gets back.

mod connection;
mod listener;
mod peer_auth;
pub mod request_log;

use std::sync::Arc;
use std::time::Duration;

use zonecache_proto::ParserConfig;

use crate::cluster::Cluster;
use crate::exec::Executor;

pub use listener::{bind, serve};
pub use request_log::RequestLog;

/// Replies above this size are sent before more is added, so a huge
/// multi-get (or a slow reader) cannot make the node buffer without bound.
pub const HIGH_WATER: usize = 256 * 1024;

/// What every connection of the node shares.
pub struct Front {
    /// Runs commands against this node's store.
    pub exec: Arc<Executor>,
    /// Routing across zones; `None` for a single node.
    pub cluster: Option<Arc<Cluster>>,
    /// Limits the request parser enforces.
    pub parser: ParserConfig,
    /// Close connections idle this long.
    pub idle_timeout: Option<Duration>,
    /// Which requests get a line in the request log.
    pub log: RequestLog,
}
