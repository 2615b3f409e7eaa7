//! One client connection: read, parse every complete request in the
//! buffer, answer them in order with as few writes as possible.
//!
//! Back-pressure: the next read happens only after the replies so far are
//! written, so a client that doesn't read its replies stops being read.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::BytesMut;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use zonecache_client::Lane;
use zonecache_proto::binary::{BinaryParser, REQUEST_MAGIC};
use zonecache_proto::{Command, RequestParser, Response, StoreMode, BATCH_SHED_MESSAGE};

use super::binary::{self, Frame, Step};
use super::peer_auth::PeerAuth;
use super::request_log::{self, Entry};
use super::{Front, HIGH_WATER};
use crate::cluster::{fell_back, is_local, is_read, Tried};
use crate::exec::{MultiRead, Reply};
use crate::record::hotkeys::{self, HotKeyMode};
use crate::record::latency::{self, Class};
use crate::stats::ConnCounters;
use crate::store::ScanCursor;

/// What a peer hears when it asks a node that may have missed writes to
/// read or decide: it tries another zone instead.
const CATCHING_UP: &str =
    "may have missed writes (no read lease from every peer); ask another zone";
/// Read buffer growth step; memcached reads 16 KiB at a time too.
const READ_CHUNK: usize = 16 * 1024;
/// Buffers grown past this by a large value are released once empty.
const KEEP_BUFFER: usize = 256 * 1024;
/// Serves one connection on `lane` until it closes or the node stops.
/// `stream` is the accepted socket, or a TLS session over it; `local` is
/// the address it was accepted on.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    front: Arc<Front>,
    mut stream: S,
    peer: SocketAddr,
    local: SocketAddr,
    lane: Lane,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let clock = front.exec.storage.clock();
    let guard = front.exec.conns.register(peer, local, clock.now());
    tracing::debug!(%peer, "connection opened");
    let mut wire: Option<Wire> = None;
    // A binary connection: how much of `wbuf` memcached would have sent.
    let mut sent_upto = 0;
    let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
    let mut wbuf = BytesMut::with_capacity(READ_CHUNK);
    let mut counters = ConnCounters::default();
    // Peer traffic (a connection that proved the cluster secret) is
    // applied here and never routed.
    let mut auth = PeerAuth::default();
    let mut from_peer = false;
    // Under `-Y` or `-S` nothing is served until the client signs in (or
    // proves the cluster secret, as a peer does).
    let mut signed_in = front.auth.is_none();
    let result = 'conn: loop {
        if rbuf.capacity() - rbuf.len() < READ_CHUNK / 4 {
            rbuf.reserve(READ_CHUNK);
        }
        let read = async {
            match front.idle_timeout {
                Some(idle) => match tokio::time::timeout(idle, stream.read_buf(&mut rbuf)).await {
                    Ok(r) => r,
                    Err(_) => Ok(0), // idle too long: close like a disconnect
                },
                None => stream.read_buf(&mut rbuf).await,
            }
        };
        let n = tokio::select! {
            r = read => r,
            _ = shutdown.changed() => break 'conn Ok(()),
        };
        // At the end of input a refused block's refusal may still have an
        // effect to apply (its reply silenced): one last round for it.
        let ended = matches!(n, Ok(0));
        let n = match n {
            Ok(0) if wire.as_mut().is_some_and(Wire::end_of_input) => 0,
            Ok(0) => break 'conn Ok(()),
            Ok(n) => n,
            Err(e) => break 'conn Err(e),
        };
        if ended && matches!(wire, Some(Wire::Binary(_))) {
            // memcached closes here, dropping the replies it held.
            wbuf.clear();
        }
        counters.bytes_read += n as u64;
        // Each request's service time runs from the previous one's end (or
        // the read) to its reply: one clock read per request.
        let mut mark = Instant::now();
        let count_keys = front.exec.settings.hot_keys != HotKeyMode::Off;
        let seconds = clock.now();
        loop {
            // memcached tells the protocol by the connection's first byte
            // (text only under `-Y`, binary only under `-S`).
            if wire.is_none() && !rbuf.is_empty() {
                let binary = rbuf[0] == REQUEST_MAGIC && (front.sasl || front.auth.is_none());
                wire = Some(match binary {
                    true => Wire::Binary(BinaryParser::new(front.parser, front.sasl)),
                    false => Wire::Text(RequestParser::new(front.parser)),
                });
            }
            let (cmd, frame) = match &mut wire {
                None => break,
                Some(Wire::Text(parser)) => match parser.parse(&mut rbuf) {
                    Ok(Some(cmd)) => (cmd, None),
                    Ok(None) => break,
                    Err(fatal) => {
                        tracing::debug!(%peer, %fatal, "closing connection");
                        let _ = flush(&mut stream, &mut wbuf, &mut counters).await;
                        break 'conn Ok(());
                    }
                },
                Some(Wire::Binary(parser)) => {
                    let Some(req) = parser.parse(&mut rbuf) else {
                        if !parser.mid_request() {
                            sent_upto = wbuf.len();
                        }
                        break;
                    };
                    match binary::admit(&front, req, &mut signed_in, &mut wbuf) {
                        Step::Run(cmd, frame) => (cmd, Some(frame)),
                        Step::Answered { flushes } => {
                            if flushes {
                                sent_upto = wbuf.len();
                            }
                            continue;
                        }
                        Step::CloseAfterWrite => {
                            flush(&mut stream, &mut wbuf, &mut counters).await?;
                            break 'conn Ok(());
                        }
                        Step::Close => {
                            wbuf.truncate(sent_upto);
                            flush(&mut stream, &mut wbuf, &mut counters).await?;
                            break 'conn Ok(());
                        }
                    }
                }
            };
            // (A binary request was admitted above.)
            if !signed_in
                && frame.is_none()
                && !matches!(
                    cmd,
                    Command::PeerChallenge { .. } | Command::PeerHello { .. }
                )
            {
                // Under `-S` a text connection is a peer's or nobody's:
                // memcached, binary-only, closes it.
                if front.sasl {
                    break 'conn Ok(());
                }
                let (response, ok) = sign_in(&front, &cmd);
                signed_in = ok;
                response.encode(&mut wbuf);
                continue;
            }
            let class = Class::of(&cmd);
            let data = !is_local(&cmd);
            let (name, keys, read) = (
                request_log::command_name(&cmd),
                cmd.keys().len(),
                is_read(&cmd),
            );
            let mut tried: Option<Arc<Tried>> = None;
            let mut hits = None;
            if count_keys {
                // Every keyed request this node serves, a peer's too.
                hotkeys::record(cmd.keys(), seconds);
            }
            if lane == Lane::Batch && data && starved(&front) {
                front.exec.stats.batch_shed.fetch_add(1, Ordering::Relaxed);
                if !cmd.noreply() {
                    let shed = Response::ServerError(BATCH_SHED_MESSAGE.into());
                    answer(frame.as_ref(), &shed, &mut wbuf);
                }
                continue;
            }
            let reply = match (&front.cluster, from_peer) {
                (cluster, _)
                    if matches!(
                        cmd,
                        Command::PeerChallenge { .. } | Command::PeerHello { .. }
                    ) =>
                {
                    let secret = cluster.as_ref().map(|c| c.current().secret.clone());
                    let answer = auth.answer(&cmd, secret.as_ref(), &front.exec.stats, peer);
                    from_peer = auth.is_peer();
                    signed_in |= from_peer;
                    Reply::Send(answer)
                }
                // What bypasses routing or steers the node needs the secret.
                (Some(_), false) if cmd.is_peer_only() => Reply::Send(Response::Error),
                (Some(cluster), true) if cluster.refuses_for_peer(&cmd) => {
                    Reply::Send(Response::ServerError(CATCHING_UP.into()))
                }
                (Some(cluster), _) if cmd == Command::Leave => cluster.leave(),
                // memcached's `refresh_certs`: a node without TLS ports
                // does not know it.
                (_, _) if matches!(cmd, Command::RefreshCerts { .. }) => match front.reload_certs()
                {
                    _ if front.tls.is_none() => Reply::Send(Response::Error),
                    _ if cmd.noreply() => Reply::Silent,
                    Ok(()) => Reply::Send(Response::Ok),
                    Err(e) => Reply::Send(Response::ServerError(e.into())),
                },
                // Only a peer may dump this node's store (others: ERROR).
                (Some(cluster), true) if matches!(cmd, Command::PeerDump { .. }) => {
                    cluster.dump(&front.exec, &cmd)
                }
                (Some(cluster), _)
                    if matches!(
                        cmd,
                        Command::PeerLease { .. }
                            | Command::PeerAsked { .. }
                            | Command::PeerDrain { .. }
                    ) =>
                {
                    cluster.serve(&front.exec, cmd, lane, &Arc::default()).await
                }
                (Some(cluster), false) if data => {
                    let t = tried.insert(Arc::default());
                    cluster.serve(&front.exec, cmd, lane, t).await
                }
                _ if matches!(
                    cmd,
                    Command::KeyDump {
                        everything: true,
                        ..
                    }
                ) =>
                {
                    let Command::KeyDump { mg, .. } = cmd else {
                        unreachable!("matched above")
                    };
                    stream_key_dump(&front, mg, &mut stream, &mut wbuf, &mut counters).await?;
                    Reply::Silent
                }
                _ => match MultiRead::of(&cmd, &mut counters) {
                    Some(read) => {
                        hits = Some(
                            stream_read(&front, &read, &mut stream, &mut wbuf, &mut counters)
                                .await?,
                        );
                        Reply::Silent
                    }
                    None => front.exec.execute(cmd, &mut counters),
                },
            };
            let outcome = match hits {
                Some(hits) => request_log::read_outcome(hits, keys),
                None => request_log::outcome(&reply, keys),
            };
            let now = Instant::now();
            let took = now - mark;
            latency::record(class, lane, took);
            mark = now;
            if front.log.wants(took, outcome) {
                let zones = match (&front.cluster, &tried) {
                    (Some(cluster), Some(t)) => cluster.current().zones.names(t.zones()),
                    _ => String::new(),
                };
                front.log.write(&Entry {
                    command: name,
                    keys,
                    lane,
                    zones: &zones,
                    fallback: fell_back(read, tried.as_ref().map_or(0, |t| t.zones())),
                    outcome,
                    took,
                    client: peer,
                    from_peer,
                });
            }
            let before = wbuf.len();
            match reply {
                Reply::Send(response) => answer(frame.as_ref(), &response, &mut wbuf),
                Reply::Silent => {}
                Reply::Close => {
                    // A binary `quit` is answered (unless quiet) first.
                    if let Some(frame) = frame.as_ref().filter(|f| binary::is_quit(&f.header)) {
                        frame.answer(&Response::Ok, &mut wbuf);
                    }
                    flush(&mut stream, &mut wbuf, &mut counters).await?;
                    break 'conn Ok(());
                }
                Reply::Drop => break 'conn Ok(()),
            }
            if frame.as_ref().is_some_and(|f| f.flushes(&wbuf[before..])) {
                sent_upto = wbuf.len();
            }
            if wbuf.len() >= HIGH_WATER {
                flush(&mut stream, &mut wbuf, &mut counters).await?;
            }
        }
        // memcached holds the replies since its last send while it waits
        // inside a binary request's body (and drops them if the client
        // leaves there): they go once it reads on.
        let held = match &wire {
            Some(Wire::Binary(parser)) if parser.mid_request() => wbuf.split_off(sent_upto),
            _ => BytesMut::new(),
        };
        flush(&mut stream, &mut wbuf, &mut counters).await?;
        if !held.is_empty() {
            wbuf = held;
        }
        sent_upto = 0;
        if ended {
            break 'conn Ok(());
        }
        if rbuf.is_empty() && rbuf.capacity() > KEEP_BUFFER {
            rbuf = BytesMut::with_capacity(READ_CHUNK);
        }
        if wbuf.capacity() > KEEP_BUFFER {
            wbuf = BytesMut::with_capacity(READ_CHUNK);
        }
        front.exec.stats.absorb(&mut counters);
        guard.info.last_cmd.store(clock.now(), Ordering::Relaxed);
        // Let the worker's other ready connections go first, as memcached's
        // event loop does; otherwise a fast client is served again and again
        // while others wait (a long tail under load).
        tokio::task::yield_now().await;
    };
    front.exec.stats.absorb(&mut counters);
    tracing::debug!(%peer, "connection closed");
    result
}

/// How a connection speaks, decided by its first byte.
enum Wire {
    Text(RequestParser),
    Binary(BinaryParser),
}

impl Wire {
    /// See [`RequestParser::end_of_input`] and
    /// [`BinaryParser::end_of_input`].
    fn end_of_input(&mut self) -> bool {
        match self {
            Wire::Text(parser) => parser.end_of_input(),
            Wire::Binary(parser) => parser.end_of_input(),
        }
    }
}

/// Writes `response` as the connection speaks: a text reply, or the
/// binary response to `frame`'s request.
fn answer(frame: Option<&Frame>, response: &Response, wbuf: &mut BytesMut) {
    match frame {
        Some(frame) => frame.answer(response, wbuf),
        None => response.encode(wbuf),
    }
}

/// A command before the connection signed in under `-Y`: memcached's text
/// login, a `set` whose data block is `<user> <password>` (key, flags and
/// exptime ignored); everything else is refused. Returns the reply and
/// whether the connection is now signed in.
fn sign_in(front: &Front, cmd: &Command) -> (Response, bool) {
    let refuse = |m: &'static str| (Response::ClientError(m.into()), false);
    let (Some(auth), Command::Store(store)) = (&front.auth, cmd) else {
        return refuse("unauthenticated");
    };
    if store.mode != StoreMode::Set {
        return refuse("unauthenticated");
    }
    let stats = &front.exec.stats;
    match auth.check(&store.data) {
        None => refuse("bad authentication token format"),
        Some(ok) => {
            stats.auth_cmds.fetch_add(1, Ordering::Relaxed);
            if ok {
                return (Response::Stored, true);
            }
            stats.auth_errors.fetch_add(1, Ordering::Relaxed);
            refuse("authentication failure")
        }
    }
}

/// Whether the batch thread is starved of CPU by realtime work.
fn starved(front: &Front) -> bool {
    front.exec.stats.batch_lag_us.load(Ordering::Relaxed) > front.exec.settings.batch_shed_after_us
}

/// Streams a local multi-key read from the store into `wbuf`, sending it
/// whenever it passes [`HIGH_WATER`] so a huge multi-get stays bounded.
/// Returns how many keys were found.
async fn stream_read<S: AsyncWrite + Unpin>(
    front: &Front,
    read: &MultiRead<'_>,
    stream: &mut S,
    wbuf: &mut BytesMut,
    counters: &mut ConnCounters,
) -> std::io::Result<usize> {
    let mut hits = 0;
    for key in read.keys {
        hits += usize::from(front.exec.push_hit(key, read.touch, read.cas, wbuf));
        if wbuf.len() >= HIGH_WATER {
            flush(stream, wbuf, counters).await?;
        }
    }
    // The end of a `VALUE … END` reply.
    Response::Values(Vec::new()).encode(wbuf);
    Ok(hits)
}

/// Streams a crawler key dump of the whole store into `wbuf`, sending it
/// whenever it passes [`HIGH_WATER`].
async fn stream_key_dump<S: AsyncWrite + Unpin>(
    front: &Front,
    mg: bool,
    stream: &mut S,
    wbuf: &mut BytesMut,
    counters: &mut ConnCounters,
) -> std::io::Result<()> {
    let mut cursor = Some(ScanCursor::default());
    while let Some(at) = cursor {
        cursor = front.exec.push_key_dump(mg, at, wbuf);
        if wbuf.len() >= HIGH_WATER {
            flush(stream, wbuf, counters).await?;
        }
        // A long dump must not keep this worker's other connections waiting.
        tokio::task::yield_now().await;
    }
    Ok(())
}

async fn flush<S: AsyncWrite + Unpin>(
    stream: &mut S,
    wbuf: &mut BytesMut,
    counters: &mut ConnCounters,
) -> std::io::Result<()> {
    if !wbuf.is_empty() {
        stream.write_all(wbuf).await?;
        // A TLS session holds records until flushed (a no-op on TCP).
        stream.flush().await?;
        counters.bytes_written += wbuf.len() as u64;
        wbuf.clear();
    }
    Ok(())
}
