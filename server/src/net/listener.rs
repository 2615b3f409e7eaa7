//! The listening socket and the accept loop with the connection limit.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::connection;
use super::Shared;

/// Binds a listener the way memcached does: reuseaddr, the given backlog.
pub fn bind(addr: SocketAddr, backlog: i32) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Accepts connections until `shutdown` turns true.
pub async fn serve(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let listener = TcpListener::from_std(listener)?;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return Ok(()),
        };
        let (mut stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let stats = &shared.stats;
        if stats.curr_connections.load(Ordering::Relaxed) as usize
            >= shared.settings.max_connections
        {
            stats.rejected_connections.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "connection limit reached");
            tokio::spawn(async move {
                let _ = stream
                    .write_all(b"SERVER_ERROR too many open connections\r\n")
                    .await;
                let _ = stream.shutdown().await;
            });
            continue;
        }
        stats.curr_connections.fetch_add(1, Ordering::Relaxed);
        stats.total_connections.fetch_add(1, Ordering::Relaxed);
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = connection::serve(&shared, stream, peer, shutdown).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            shared
                .stats
                .curr_connections
                .fetch_sub(1, Ordering::Relaxed);
        });
    }
}
