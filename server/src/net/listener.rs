//! The listening socket, the acceptor, and the worker event loops.
//!
//! Like memcached, the node runs one event loop per worker thread (a
//! single-threaded runtime each), and one acceptor deals new connections to
//! the workers round-robin, so load is balanced and a connection never
//! migrates between threads.
//!
//! TLS ports (`--tls-port`, `--tls-batch-port`) beside the plain ones take
//! the same path: the worker that serves a connection does its handshake
//! first (bounded by [`HANDSHAKE_TIMEOUT`]), counted in `stats`.
//!
//! The batch port (`--batch-port`) has a thread of its own that accepts and
//! serves every batch connection at the lowest CPU priority (`SCHED_IDLE`:
//! any realtime thread that wakes takes the core at once), so batch work
//! runs on what realtime work leaves. The thread measures how
//! late its timer fires; when it is starved, batch requests are shed with a
//! quick `SERVER_ERROR busy` instead of queueing behind realtime work.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use super::connection;
use super::Front;
use zonecache_client::Lane;

/// How often the batch thread checks how late it runs.
const LAG_TICK: Duration = Duration::from_millis(2);
/// A client that has not finished its TLS handshake by then is dropped, so
/// half-open handshakes cannot hold connection slots.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The sockets a node serves: the client port, and optionally the batch
/// port and the TLS twins of both.
pub struct Listeners {
    pub client: std::net::TcpListener,
    pub batch: Option<std::net::TcpListener>,
    pub client_tls: Option<std::net::TcpListener>,
    pub batch_tls: Option<std::net::TcpListener>,
}

/// An accepted connection on its way to a worker.
type Accepted = (std::net::TcpStream, SocketAddr, Tls);

/// Whether a connection speaks TLS (accepted on a TLS port).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tls {
    Plain,
    Tls,
}

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

/// Starts `workers` event-loop threads (and the batch thread when there is
/// a batch listener) and returns their handles and the acceptor, which runs
/// on the caller's runtime until `shutdown` turns true.
pub fn serve(
    listeners: Listeners,
    workers: usize,
    front: Arc<Front>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<(
    Vec<std::thread::JoinHandle<()>>,
    impl std::future::Future<Output = ()>,
)> {
    let mut handles = Vec::new();
    let mut queues = Vec::new();
    for i in 0..workers.max(1) {
        let (tx, rx) = mpsc::unbounded_channel::<Accepted>();
        queues.push(tx);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let front = front.clone();
        let shutdown = shutdown.clone();
        let handle = std::thread::Builder::new()
            .name(format!("worker-{i}"))
            .spawn(move || {
                let local = tokio::task::LocalSet::new();
                local.block_on(&runtime, worker(rx, front, shutdown));
            })?;
        handles.push(handle);
    }
    let batch: Vec<_> = [
        (listeners.batch, Tls::Plain),
        (listeners.batch_tls, Tls::Tls),
    ]
    .into_iter()
    .filter_map(|(l, tls)| l.map(|l| (l, tls)))
    .collect();
    if !batch.is_empty() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (front, shutdown) = (front.clone(), shutdown.clone());
        let handle = std::thread::Builder::new()
            .name("batch".into())
            .spawn(move || {
                lowest_priority();
                let local = tokio::task::LocalSet::new();
                local.block_on(&runtime, batch_worker(batch, front, shutdown));
            })?;
        handles.push(handle);
    }
    let plain = TcpListener::from_std(listeners.client)?;
    let tls = listeners
        .client_tls
        .map(TcpListener::from_std)
        .transpose()?;
    let acceptor = async move {
        let tls_loop = async {
            if let Some(tls) = tls {
                accept_loop(
                    tls,
                    Tls::Tls,
                    queues.clone(),
                    front.clone(),
                    shutdown.clone(),
                )
                .await;
            }
        };
        tokio::join!(
            accept_loop(
                plain,
                Tls::Plain,
                queues.clone(),
                front.clone(),
                shutdown.clone()
            ),
            tls_loop
        );
    };
    Ok((handles, acceptor))
}

/// Serves the connections the acceptor hands this worker.
async fn worker(
    mut incoming: mpsc::UnboundedReceiver<Accepted>,
    front: Arc<Front>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, peer, tls) = tokio::select! {
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
                front
                    .exec
                    .stats
                    .curr_connections
                    .fetch_sub(1, Ordering::Relaxed);
                continue;
            }
        };
        serve_counted(&front, stream, peer, Lane::Realtime, tls, &shutdown);
    }
}

/// Serves one accepted connection on this thread (after its TLS handshake
/// when it came to a TLS port); when it ends, takes it off its lane's
/// open-connection count.
fn serve_counted(
    front: &Arc<Front>,
    stream: TcpStream,
    peer: SocketAddr,
    lane: Lane,
    tls: Tls,
    shutdown: &watch::Receiver<bool>,
) {
    let (front, shutdown) = (front.clone(), shutdown.clone());
    tokio::task::spawn_local(async move {
        let served = async {
            let local = stream.local_addr()?;
            match tls {
                Tls::Plain => {
                    connection::serve(front.clone(), stream, peer, local, lane, shutdown).await
                }
                Tls::Tls => match handshake(&front, stream, peer).await {
                    Some(stream) => {
                        connection::serve(front.clone(), stream, peer, local, lane, shutdown).await
                    }
                    None => Ok(()),
                },
            }
        };
        if let Err(e) = served.await {
            tracing::debug!(%peer, lane = lane.name(), error = %e, "connection ended with an error");
        }
        open_count(&front, lane).fetch_sub(1, Ordering::Relaxed);
    });
}

/// The server side of a TLS handshake with the configuration current now;
/// `None` (counted, logged) when it fails or takes too long.
async fn handshake(
    front: &Front,
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let stats = &front.exec.stats;
    let Some(tls) = &front.tls else {
        stats.tls_handshake_errors.fetch_add(1, Ordering::Relaxed);
        return None;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => {
            stats.tls_handshakes.fetch_add(1, Ordering::Relaxed);
            Some(stream)
        }
        Ok(Err(e)) => {
            stats.tls_handshake_errors.fetch_add(1, Ordering::Relaxed);
            tracing::info!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            stats.tls_handshake_errors.fetch_add(1, Ordering::Relaxed);
            tracing::info!(%peer, "TLS handshake timed out");
            None
        }
    }
}

/// The open-connection count of `lane`.
fn open_count(front: &Front, lane: Lane) -> &std::sync::atomic::AtomicU64 {
    match lane {
        Lane::Realtime => &front.exec.stats.curr_connections,
        Lane::Batch => &front.exec.stats.batch_connections,
    }
}

/// The next connection, with Nagle off; `None` once `shutdown` turns.
/// Accept errors (out of file descriptors and the like) back off and retry.
async fn next_connection(
    listener: &TcpListener,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return None,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                return Some((stream, peer));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// If `lane` is at its connection limit: counts the refusal and returns
/// memcached's error for the client.
fn at_limit(front: &Front, lane: Lane) -> Option<&'static [u8]> {
    let limit = match lane {
        Lane::Realtime => front.exec.settings.max_connections,
        Lane::Batch => front.exec.settings.batch_connections,
    };
    if (open_count(front, lane).load(Ordering::Relaxed) as usize) < limit {
        return None;
    }
    front
        .exec
        .stats
        .rejected_connections
        .fetch_add(1, Ordering::Relaxed);
    Some(match lane {
        Lane::Realtime => b"ERROR Too many open connections\r\n",
        Lane::Batch => b"ERROR Too many open batch connections\r\n",
    })
}

/// Tells a refused client why, then closes.
fn refuse(mut stream: TcpStream, message: &'static [u8]) {
    tokio::spawn(async move {
        let _ = stream.write_all(message).await;
        let _ = stream.shutdown().await;
    });
}

async fn accept_loop(
    listener: TcpListener,
    tls: Tls,
    workers: Vec<mpsc::UnboundedSender<Accepted>>,
    front: Arc<Front>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut next = 0usize;
    while let Some((stream, peer)) = next_connection(&listener, &mut shutdown).await {
        if let Some(message) = at_limit(&front, Lane::Realtime) {
            tracing::debug!(%peer, "connection limit reached");
            refuse(stream, message);
            continue;
        }
        let stats = &front.exec.stats;
        let Ok(std_stream) = stream.into_std() else {
            continue;
        };
        stats.curr_connections.fetch_add(1, Ordering::Relaxed);
        stats.total_connections.fetch_add(1, Ordering::Relaxed);
        if workers[next % workers.len()]
            .send((std_stream, peer, tls))
            .is_err()
        {
            stats.curr_connections.fetch_sub(1, Ordering::Relaxed);
        }
        next = next.wrapping_add(1);
    }
}

/// Runs this thread under `SCHED_IDLE` (else nice 19): the kernel gives it
/// CPU only when realtime threads leave some, and a waking realtime thread
/// preempts it at once. Unprivileged processes may lower their own threads.
fn lowest_priority() {
    // SAFETY: plain syscalls on this thread's own id with a valid param.
    let lowered = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::pid_t;
        let param = libc::sched_param { sched_priority: 0 };
        libc::sched_setscheduler(tid, libc::SCHED_IDLE, &param) == 0
            || libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19) == 0
    };
    if !lowered {
        tracing::warn!(
            "cannot lower the batch thread's priority; batch work competes with realtime"
        );
    }
}

/// Accepts and serves batch connections (plain and TLS) on this
/// (low-priority) thread, and keeps `batch_lag_us` current.
async fn batch_worker(
    listeners: Vec<(std::net::TcpListener, Tls)>,
    front: Arc<Front>,
    shutdown: watch::Receiver<bool>,
) {
    let lag = {
        let front = front.clone();
        tokio::task::spawn_local(async move {
            loop {
                let start = Instant::now();
                tokio::time::sleep(LAG_TICK).await;
                let late = start.elapsed().saturating_sub(LAG_TICK).as_micros() as u64;
                // A decaying peak: one late tick counts for a while.
                let s = &front.exec.stats.batch_lag_us;
                let old = s.load(Ordering::Relaxed);
                s.store(late.max(old - old / 8), Ordering::Relaxed);
            }
        })
    };
    let mut accepting = Vec::new();
    for (listener, tls) in listeners {
        let Ok(listener) = TcpListener::from_std(listener) else {
            tracing::error!("cannot register a batch listener");
            continue;
        };
        let (front, mut shutdown) = (front.clone(), shutdown.clone());
        accepting.push(tokio::task::spawn_local(async move {
            while let Some((stream, peer)) = next_connection(&listener, &mut shutdown).await {
                if let Some(message) = at_limit(&front, Lane::Batch) {
                    refuse(stream, message);
                    continue;
                }
                let stats = &front.exec.stats;
                stats.batch_connections.fetch_add(1, Ordering::Relaxed);
                stats.total_connections.fetch_add(1, Ordering::Relaxed);
                serve_counted(&front, stream, peer, Lane::Batch, tls, &shutdown);
            }
        }));
    }
    for task in accepting {
        let _ = task.await;
    }
    lag.abort();
}
