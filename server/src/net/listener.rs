//! The listening sockets and accept loops, with the connection limit.
//!
//! Like memcached, the node runs one event loop per worker thread: each
//! worker has its own single-threaded runtime and its own `SO_REUSEPORT`
//! listener on the same address, so the kernel spreads connections over
//! workers and a connection never migrates between threads.

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

/// Binds a listener the way memcached does (reuseaddr, the given backlog),
/// plus reuseport so every worker can have its own.
pub fn bind(addr: SocketAddr, backlog: i32) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Runs `workers` event loops accepting on `addr` until `shutdown` turns
/// true. The first listener is bound by the caller (so bind errors surface
/// before start-up completes); the others join it on the same port.
pub fn serve(
    first: std::net::TcpListener,
    workers: usize,
    backlog: i32,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
    let addr = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..workers.max(1) {
        listeners.push(bind(addr, backlog)?);
    }
    let mut handles = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        let handle = std::thread::Builder::new()
            .name(format!("worker-{i}"))
            .spawn(move || {
                let local = tokio::task::LocalSet::new();
                local.block_on(&runtime, accept_loop(listener, shared, shutdown));
            })?;
        handles.push(handle);
    }
    Ok(handles)
}

async fn accept_loop(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot register the listener");
            return;
        }
    };
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
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
            tokio::task::spawn_local(async move {
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
        tokio::task::spawn_local(async move {
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
