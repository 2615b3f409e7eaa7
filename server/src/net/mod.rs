//! The network front: the listener (socket2), the per-connection loop with
//! pipelining and admission control. A connection hands each command to the
//! cluster (when this node is part of one and the connection is not a
//! peer's) or to the executor, and encodes the `Response` it gets back.

mod binary;
mod connection;
mod listener;
mod peer_auth;
pub mod request_log;

use std::sync::Arc;
use std::time::Duration;

use zonecache_proto::ParserConfig;

use crate::cluster::Cluster;
use crate::exec::Executor;

pub use listener::{bind, serve, Listeners, HANDSHAKE_TIMEOUT};
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
    /// The TLS ports' configuration; `None` without TLS ports.
    pub tls: Option<Arc<crate::tls::Tls>>,
    /// The password file clients sign in against; `None`: no
    /// authentication.
    pub auth: Option<Arc<crate::auth::AuthFile>>,
    /// Clients sign in with SASL over the binary protocol (`-S`, and the
    /// node speaks only that to clients); otherwise with the text
    /// protocol's sign-in `set` (`-Y`, and the node speaks only text).
    pub sasl: bool,
}

impl Front {
    /// Re-reads the TLS ports' certificates (SIGHUP, `refresh_certs`): new
    /// handshakes use them, open connections go on as they are. On error
    /// the running ones stay.
    pub fn reload_certs(&self) -> Result<(), String> {
        let Some(tls) = &self.tls else {
            return Err("no TLS port to refresh certificates for".into());
        };
        tls.reload()?;
        let now = self.exec.storage.clock().unix_now() as u64;
        self.exec
            .stats
            .tls_loaded_at
            .store(now, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}
