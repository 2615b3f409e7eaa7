//! The listening socket, the acceptor, and the worker event loops.
//!
//! Like memcached, the node runs one event loop per worker thread (a
//! single-threaded runtime each), and one acceptor deals new connections to
//! the workers round-robin, so load is balanced and a connection never
//! migrates between threads.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

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

/// Starts `workers` event-loop threads and returns their handles and the
/// acceptor, which runs on the caller's runtime until `shutdown` turns true.
pub fn serve(
    listener: std::net::TcpListener,
    workers: usize,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<(
    Vec<std::thread::JoinHandle<()>>,
    impl std::future::Future<Output = ()>,
)> {
    let mut handles = Vec::new();
    let mut queues = Vec::new();
    for i in 0..workers.max(1) {
        let (tx, rx) = mpsc::unbounded_channel::<(std::net::TcpStream, SocketAddr)>();
        queues.push(tx);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        let handle = std::thread::Builder::new()
            .name(format!("worker-{i}"))
            .spawn(move || {
                let local = tokio::task::LocalSet::new();
                local.block_on(&runtime, worker(rx, shared, shutdown));
            })?;
        handles.push(handle);
    }
    let listener = TcpListener::from_std(listener)?;
    Ok((handles, accept_loop(listener, queues, shared, shutdown)))
}

/// Serves the connections the acceptor hands this worker.
async fn worker(
    mut incoming: mpsc::UnboundedReceiver<(std::net::TcpStream, SocketAddr)>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            next = incoming.recv() => match next {
                Some(c) => c,
                None => return,
            },
            _ = shutdown.changed() => return,
        };
        let stream = match TcpStream::from_std(stream) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "cannot register connection");
                shared
                    .stats
                    .curr_connections
                    .fetch_sub(1, Ordering::Relaxed);
                continue;
            }
        };
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        tokio::task::spawn_local(async move {
            if let Err(e) = connection::serve(shared.clone(), stream, peer, shutdown).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            shared
                .stats
                .curr_connections
                .fetch_sub(1, Ordering::Relaxed);
        });
    }
}

async fn accept_loop(
    listener: TcpListener,
    workers: Vec<mpsc::UnboundedSender<(std::net::TcpStream, SocketAddr)>>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut next = 0usize;
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
            tokio::spawn(async move {
                let _ = stream
                    .write_all(b"SERVER_ERROR too many open connections\r\n")
                    .await;
                let _ = stream.shutdown().await;
            });
            continue;
        }
        let Ok(std_stream) = stream.into_std() else {
            continue;
        };
        stats.curr_connections.fetch_add(1, Ordering::Relaxed);
        stats.total_connections.fetch_add(1, Ordering::Relaxed);
        if workers[next % workers.len()]
            .send((std_stream, peer))
            .is_err()
        {
            stats.curr_connections.fetch_sub(1, Ordering::Relaxed);
        }
        next = next.wrapping_add(1);
    }
}
