//! One pipelined connection to a node: many requests in flight, replies
//! matched to requests in order (memcached answers in order on a
//! connection). A writer task gathers queued requests into few writes; a
//! reader task parses replies and hands each to its caller.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Semaphore};
use zonecache_proto::{parse_response, Command, Response};

use crate::error::{Error, CONNECTION_CLOSED, NOBODY_LISTENING};

/// A request on its way: its bytes and where its reply goes.
struct Pending {
    bytes: BytesMut,
    reply: oneshot::Sender<Result<Response, Error>>,
}

/// Callers waiting for replies, in the order their requests were written,
/// and whether the connection is closed: once the reader has stopped, a
/// request written after it would wait for a reply nobody reads.
#[derive(Default)]
struct Replies {
    queue: Mutex<VecDeque<oneshot::Sender<Result<Response, Error>>>>,
    /// Set under the queue's lock; read without it by `is_open` on every call.
    closed: AtomicBool,
}

type Waiting = Arc<Replies>;

/// A pipelined connection. Cloning shares it.
#[derive(Clone)]
pub struct Connection {
    queue: mpsc::Sender<Pending>,
    waiting: Waiting,
    /// Bounds the requests in flight on this connection.
    in_flight: Arc<Semaphore>,
}

impl Connection {
    /// Connects to `addr` within `timeout`, allowing `max_in_flight` requests
    /// in flight at once.
    pub async fn connect(
        addr: SocketAddr,
        timeout: Duration,
        max_in_flight: usize,
    ) -> Result<Connection, Error> {
        Self::connect_tls(addr, timeout, max_in_flight, None).await
    }

    /// [`Connection::connect`], over TLS when `tls` gives a configuration
    /// and the name to check the node's certificate against (the handshake
    /// counts against `timeout` too).
    pub async fn connect_tls(
        addr: SocketAddr,
        timeout: Duration,
        max_in_flight: usize,
        tls: Option<(
            Arc<rustls::ClientConfig>,
            rustls::pki_types::ServerName<'static>,
        )>,
    ) -> Result<Connection, Error> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| Error::Timeout)?
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::ConnectionRefused => {
                    Error::Connection(format!("{NOBODY_LISTENING} at {addr}"))
                }
                _ => Error::Connection(format!("{addr}: {e}")),
            })?;
        let _ = stream.set_nodelay(true);
        let (queue, incoming) = mpsc::channel(max_in_flight.max(1));
        let waiting: Waiting = Arc::default();
        match tls {
            None => {
                let (rd, wr) = stream.into_split();
                tokio::spawn(write_loop(wr, incoming, waiting.clone()));
                tokio::spawn(read_loop(rd, waiting.clone()));
            }
            Some((config, name)) => {
                let connector = tokio_rustls::TlsConnector::from(config);
                let stream = tokio::time::timeout(timeout, connector.connect(name, stream))
                    .await
                    .map_err(|_| Error::Timeout)?
                    .map_err(|e| Error::Connection(format!("{addr}: TLS handshake: {e}")))?;
                let (rd, wr) = tokio::io::split(stream);
                tokio::spawn(write_loop(wr, incoming, waiting.clone()));
                tokio::spawn(read_loop(rd, waiting.clone()));
            }
        }
        Ok(Connection {
            queue,
            waiting,
            in_flight: Arc::new(Semaphore::new(max_in_flight.max(1))),
        })
    }

    /// Sends `cmd` and waits for its reply until `deadline` passes. Error
    /// replies (`ERROR`, `CLIENT_ERROR`, `SERVER_ERROR`) become errors.
    pub async fn call(&self, cmd: &Command, deadline: Duration) -> Result<Response, Error> {
        let _permit = self
            .in_flight
            .clone()
            .try_acquire_owned()
            .map_err(|_| Error::Busy)?;
        let mut bytes = BytesMut::new();
        cmd.encode(&mut bytes);
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending { bytes, reply })
            .await
            .map_err(|_| Error::Connection("connection closed before sending".into()))?;
        let response = tokio::time::timeout(deadline, answer)
            .await
            .map_err(|_| Error::Timeout)?
            .map_err(|_| Error::Connection(format!("{CONNECTION_CLOSED}: reply dropped")))??;
        Error::from_reply(response)
    }

    /// Whether the connection still works (its tasks are running).
    pub fn is_open(&self) -> bool {
        !self.queue.is_closed() && !self.waiting.closed.load(Ordering::Acquire)
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut incoming: mpsc::Receiver<Pending>,
    waiting: Waiting,
) {
    let mut out = BytesMut::with_capacity(16 * 1024);
    while let Some(first) = incoming.recv().await {
        out.clear();
        let mut batch = vec![first];
        // Gather whatever else is queued into the same write.
        while batch.len() < 256 {
            match incoming.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        {
            let Ok(mut queue) = waiting.queue.lock() else {
                return;
            };
            if waiting.closed.load(Ordering::Acquire) {
                // The reader is gone: no reply would ever be read.
                for p in batch {
                    let _ = p.reply.send(Err(closed("closed by the node")));
                }
                return;
            }
            for p in batch {
                out.extend_from_slice(&p.bytes);
                queue.push_back(p.reply);
            }
        }
        // (flush: a TLS session holds records until flushed; no-op on TCP)
        if wr.write_all(&out).await.is_err() || wr.flush().await.is_err() {
            fail_all(&waiting, || closed("write failed"));
            return;
        }
    }
}

async fn read_loop<R: AsyncRead + Unpin>(mut rd: R, waiting: Waiting) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        loop {
            match parse_response(&mut buf) {
                Ok(Some(response)) => {
                    let next = waiting.queue.lock().ok().and_then(|mut q| q.pop_front());
                    match next {
                        Some(reply) => {
                            let _ = reply.send(Ok(response));
                        }
                        None => {
                            fail_all(&waiting, || closed("reply without a request"));
                            return;
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let msg = e.to_string();
                    fail_all(&waiting, || Error::Protocol(msg.clone()));
                    return;
                }
            }
        }
        buf.reserve(16 * 1024);
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => {
                fail_all(&waiting, || closed("connection closed by the node"));
                return;
            }
            Ok(_) => {}
        }
    }
}

/// Fails every caller waiting with `error()` and marks the connection
/// closed.
fn fail_all(waiting: &Waiting, error: impl Fn() -> Error) {
    if let Ok(mut queue) = waiting.queue.lock() {
        waiting.closed.store(true, Ordering::Release);
        for reply in queue.drain(..) {
            let _ = reply.send(Err(error()));
        }
    }
}

fn closed(why: &str) -> Error {
    Error::Connection(format!("{CONNECTION_CLOSED}: {why}"))
}
