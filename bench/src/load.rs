//! The load generator: closed loop (N connections, each keeping a pipeline
//! of requests in flight) and open loop (a fixed request rate, latency
//! measured from each request's intended send time, so queueing in the
//! server is not hidden by the client waiting — no coordinated omission).

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use zonecache_proto::{parse_response, MetaCode, Response};

use crate::workload::{OpGen, OpKind, Workload};

/// How requests are paced.
#[derive(Debug, Clone, Copy, Serialize)]
pub enum Mode {
    /// Each connection keeps `depth` requests in flight.
    Closed { depth: usize },
    /// Requests are sent at `rate` per second in total, whatever the replies do.
    Open { rate: f64 },
}

/// One run's settings.
#[derive(Debug, Clone, Serialize)]
pub struct LoadSpec {
    /// The server.
    pub target: SocketAddr,
    /// Connections in total.
    pub connections: usize,
    /// Load threads (each with its own event loop).
    pub threads: usize,
    /// Pacing.
    pub mode: Mode,
    /// Measured time (after warm-up).
    pub duration: Duration,
    /// Time before measuring starts.
    pub warmup: Duration,
    /// Stop after this many measured requests (whichever comes first).
    pub max_requests: Option<u64>,
    /// A reply slower than this counts as a timeout and ends the connection.
    pub timeout: Duration,
    /// Show a live progress bar.
    pub progress: bool,
    /// Speak TLS with this client configuration (closed loop only).
    #[serde(skip)]
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// Requests answered during the measured window.
    pub ops: u64,
    /// Length of the measured window.
    pub seconds: f64,
    /// Latency of every measured request, nanoseconds.
    pub latency: Histogram<u64>,
    /// Keys found.
    pub hits: u64,
    /// Keys not found.
    pub misses: u64,
    /// Error replies and failures by kind.
    pub errors: BTreeMap<String, u64>,
    /// Requests that got no reply in time.
    pub timeouts: u64,
    /// CPU seconds the load generator itself used.
    pub client_cpu: f64,
}

/// A summary for tables and JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub ops: u64,
    pub ops_per_sec: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub hits: u64,
    pub misses: u64,
    pub errors: BTreeMap<String, u64>,
    pub timeouts: u64,
    pub client_cpu_seconds: f64,
}

impl RunResult {
    fn empty() -> RunResult {
        RunResult {
            ops: 0,
            seconds: 0.0,
            latency: new_histogram(),
            hits: 0,
            misses: 0,
            errors: BTreeMap::new(),
            timeouts: 0,
            client_cpu: 0.0,
        }
    }

    fn merge(&mut self, other: RunResult) {
        self.ops += other.ops;
        self.latency
            .add(&other.latency)
            .expect("same histogram bounds");
        self.hits += other.hits;
        self.misses += other.misses;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.timeouts += other.timeouts;
    }

    /// Latency at quantile `q` in microseconds.
    pub fn quantile_us(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }

    /// Requests per second over the measured window.
    pub fn ops_per_sec(&self) -> f64 {
        if self.seconds > 0.0 {
            self.ops as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// The figures of this run.
    pub fn summary(&self) -> Summary {
        Summary {
            ops: self.ops,
            ops_per_sec: self.ops_per_sec(),
            p50_us: self.quantile_us(0.5),
            p90_us: self.quantile_us(0.9),
            p99_us: self.quantile_us(0.99),
            p999_us: self.quantile_us(0.999),
            max_us: self.latency.max() as f64 / 1000.0,
            hits: self.hits,
            misses: self.misses,
            errors: self.errors.clone(),
            timeouts: self.timeouts,
            client_cpu_seconds: self.client_cpu,
        }
    }
}

/// Latencies from 1 ns to 60 s at 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// When the open loop intends to send each request of one connection.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Intended time of request 0.
    pub start: Instant,
    /// Time between requests.
    pub interval: Duration,
}

impl Schedule {
    /// The schedule of connection `index` of `connections` sharing `rate`
    /// requests per second; connections are staggered evenly.
    pub fn for_connection(start: Instant, rate: f64, connections: usize, index: usize) -> Schedule {
        let per_conn = rate / connections.max(1) as f64;
        let interval = Duration::from_secs_f64(1.0 / per_conn.max(1e-9));
        let offset = interval.mul_f64(index as f64 / connections.max(1) as f64);
        Schedule {
            start: start + offset,
            interval,
        }
    }

    /// Intended send time of request `n`.
    pub fn at(&self, n: u64) -> Instant {
        self.start + self.interval.mul_f64(n as f64)
    }
}

/// CPU seconds (user + system) this process has used.
pub fn process_cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct we hand it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let secs = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    secs(ru.ru_utime) + secs(ru.ru_stime)
}

/// Most open-loop requests one connection may have outstanding; beyond it
/// requests are counted as `overload` instead of being queued without bound.
const MAX_OUTSTANDING: usize = 100_000;

/// Shared by every connection of a run.
struct RunClock {
    measure_from: Instant,
    end: Instant,
    measured: AtomicU64,
    max_requests: Option<u64>,
}

impl RunClock {
    fn done(&self, now: Instant) -> bool {
        now >= self.end
            || self
                .max_requests
                .is_some_and(|m| self.measured.load(Ordering::Relaxed) >= m)
    }
}

/// Runs `workload` under `spec` and returns what it measured.
pub fn run(workload: &Workload, spec: &LoadSpec) -> RunResult {
    let cpu_before = process_cpu_seconds();
    let start = Instant::now();
    let clock = Arc::new(RunClock {
        measure_from: start + spec.warmup,
        end: start + spec.warmup + spec.duration,
        measured: AtomicU64::new(0),
        max_requests: spec.max_requests,
    });
    let progress = spec
        .progress
        .then(|| spawn_progress(clock.clone(), spec.duration + spec.warmup));
    let threads = spec.threads.clamp(1, spec.connections.max(1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let conns: Vec<usize> = (0..spec.connections).filter(|c| c % threads == t).collect();
            let (workload, spec, clock) = (workload.clone(), spec.clone(), clock.clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("load runtime");
                let local = tokio::task::LocalSet::new();
                local.block_on(&rt, async move {
                    let tasks: Vec<_> = conns
                        .into_iter()
                        .map(|c| {
                            let (w, s, k) = (workload.clone(), spec.clone(), clock.clone());
                            tokio::task::spawn_local(async move { connection(&w, &s, &k, c).await })
                        })
                        .collect();
                    let mut total = RunResult::empty();
                    for t in tasks {
                        if let Ok(r) = t.await {
                            total.merge(r);
                        }
                    }
                    total
                })
            })
        })
        .collect();
    let mut result = RunResult::empty();
    for h in handles {
        if let Ok(r) = h.join() {
            result.merge(r);
        }
    }
    let measured_end = Instant::now().min(clock.end);
    result.seconds = measured_end
        .saturating_duration_since(clock.measure_from)
        .as_secs_f64();
    result.client_cpu = process_cpu_seconds() - cpu_before;
    if let Some((bar, handle)) = progress {
        bar.store(1, Ordering::Relaxed);
        let _ = handle.join();
    }
    result
}

fn spawn_progress(
    clock: Arc<RunClock>,
    total: Duration,
) -> (Arc<AtomicU64>, std::thread::JoinHandle<()>) {
    let stop = Arc::new(AtomicU64::new(0));
    let flag = stop.clone();
    let handle = std::thread::spawn(move || {
        let bar = indicatif::ProgressBar::new(total.as_millis() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let started = Instant::now();
        let mut last = (Instant::now(), 0u64);
        while flag.load(Ordering::Relaxed) == 0 {
            std::thread::sleep(Duration::from_millis(250));
            let now = Instant::now();
            let ops = clock.measured.load(Ordering::Relaxed);
            let rate = (ops - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
            last = (now, ops);
            bar.set_position(started.elapsed().as_millis() as u64);
            bar.set_message(format!("{:.0} ops/s", rate));
        }
        bar.finish_and_clear();
    });
    (stop, handle)
}

/// Reads the next complete reply, or None on timeout/close.
async fn read_reply<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    timeout: Duration,
) -> Result<Response, String> {
    loop {
        match parse_response(buf) {
            Ok(Some(r)) => return Ok(r),
            Ok(None) => {}
            Err(e) => return Err(format!("protocol: {e}")),
        }
        buf.reserve(64 * 1024);
        match tokio::time::timeout(timeout, rd.read_buf(buf)).await {
            Ok(Ok(0)) => return Err("closed".into()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(format!("io: {}", e.kind())),
            Err(_) => return Err("timeout".into()),
        }
    }
}

/// Counts a reply against what was asked.
fn account(result: &mut RunResult, kind: OpKind, reply: &Response) {
    match (kind, reply) {
        (OpKind::Get, Response::Values(v)) => {
            if v.is_empty() {
                result.misses += 1
            } else {
                result.hits += 1
            }
        }
        (OpKind::MultiGet(n), Response::Values(v)) => {
            result.hits += v.len() as u64;
            result.misses += (n - v.len().min(n)) as u64;
        }
        (OpKind::Get, Response::Meta(m)) => match m.code {
            MetaCode::Miss => result.misses += 1,
            _ => result.hits += 1,
        },
        (_, Response::Error) => *result.errors.entry("ERROR".into()).or_default() += 1,
        (_, Response::ClientError(m)) => {
            *result
                .errors
                .entry(format!("CLIENT_ERROR {}", String::from_utf8_lossy(m)))
                .or_default() += 1
        }
        (_, Response::ServerError(m)) => {
            *result
                .errors
                .entry(format!("SERVER_ERROR {}", String::from_utf8_lossy(m)))
                .or_default() += 1
        }
        _ => {}
    }
}

async fn connection(
    workload: &Workload,
    spec: &LoadSpec,
    clock: &RunClock,
    index: usize,
) -> RunResult {
    let mut result = RunResult::empty();
    let stream = match TcpStream::connect(spec.target).await {
        Ok(s) => s,
        Err(e) => {
            *result
                .errors
                .entry(format!("connect: {}", e.kind()))
                .or_default() += 1;
            return result;
        }
    };
    let _ = stream.set_nodelay(true);
    let gen = OpGen::new(workload, index as u64);
    if let Some(config) = &spec.tls {
        let Mode::Closed { depth } = spec.mode else {
            *result
                .errors
                .entry("the open loop does not speak TLS".into())
                .or_default() += 1;
            return result;
        };
        let name = rustls::pki_types::ServerName::IpAddress(spec.target.ip().into());
        let connector = tokio_rustls::TlsConnector::from(config.clone());
        match connector.connect(name, stream).await {
            Ok(tls) => {
                let (rd, wr) = tokio::io::split(tls);
                closed_loop(gen, rd, wr, depth.max(1), spec, clock, &mut result).await;
            }
            Err(e) => {
                *result
                    .errors
                    .entry(format!("TLS handshake: {e}"))
                    .or_default() += 1;
            }
        }
        return result;
    }
    let (rd, wr) = stream.into_split();
    match spec.mode {
        Mode::Closed { depth } => {
            closed_loop(gen, rd, wr, depth.max(1), spec, clock, &mut result).await
        }
        Mode::Open { rate } => {
            let schedule = Schedule::for_connection(
                clock.measure_from - spec.warmup,
                rate,
                spec.connections,
                index,
            );
            open_loop(gen, rd, wr, schedule, spec, clock, &mut result).await
        }
    }
    result
}

async fn closed_loop<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    mut gen: OpGen,
    mut rd: R,
    mut wr: W,
    depth: usize,
    spec: &LoadSpec,
    clock: &RunClock,
    result: &mut RunResult,
) {
    let mut out = BytesMut::with_capacity(16 * 1024);
    let mut inbuf = BytesMut::with_capacity(64 * 1024);
    let mut kinds = Vec::with_capacity(depth);
    while !clock.done(Instant::now()) {
        out.clear();
        kinds.clear();
        for _ in 0..depth {
            kinds.push(gen.next(&mut out));
        }
        let sent = Instant::now();
        // (flush: a TLS session holds records until flushed; no-op on TCP)
        if let Err(e) = async {
            wr.write_all(&out).await?;
            wr.flush().await
        }
        .await
        {
            *result
                .errors
                .entry(format!("io: {}", e.kind()))
                .or_default() += 1;
            return;
        }
        for &kind in &kinds {
            match read_reply(&mut rd, &mut inbuf, spec.timeout).await {
                Ok(reply) => {
                    let now = Instant::now();
                    if sent >= clock.measure_from && now <= clock.end {
                        result.ops += 1;
                        clock.measured.fetch_add(1, Ordering::Relaxed);
                        let _ = result.latency.record((now - sent).as_nanos().max(1) as u64);
                        account(result, kind, &reply);
                    }
                }
                Err(e) if e == "timeout" => {
                    result.timeouts += 1;
                    return;
                }
                Err(e) => {
                    *result.errors.entry(e).or_default() += 1;
                    return;
                }
            }
        }
    }
}

/// The open loop: a plain thread sends on schedule (tokio's timer has 1 ms
/// granularity, which would be measured as latency; a thread sleeping on
/// its own wakes within tens of microseconds), while the event loop reads
/// replies and matches them, in order, to their intended send times.
async fn open_loop(
    mut gen: OpGen,
    rd: tokio::net::tcp::OwnedReadHalf,
    wr: tokio::net::tcp::OwnedWriteHalf,
    schedule: Schedule,
    spec: &LoadSpec,
    clock: &RunClock,
    result: &mut RunResult,
) {
    type InFlight = std::sync::Mutex<VecDeque<(Instant, OpKind)>>;
    let in_flight: Arc<InFlight> = Arc::default();
    let sender_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let overload = Arc::new(AtomicU64::new(0));
    // Hand the write half to a std thread as a blocking socket.
    let std_stream = match wr.reunite(rd) {
        Ok(s) => s.into_std(),
        Err(_) => return,
    };
    let Ok(std_stream) = std_stream else { return };
    // The clone shares the socket's non-blocking mode with the reading side
    // (it must stay non-blocking for tokio), so the sender retries writes.
    let Ok(writer) = std_stream.try_clone() else {
        return;
    };
    let Ok(stream) = TcpStream::from_std(std_stream) else {
        return;
    };
    let (mut rd, _keep_write_half) = stream.into_split();
    let end = clock.end;
    let sender = {
        let (in_flight, sender_done, overload) =
            (in_flight.clone(), sender_done.clone(), overload.clone());
        std::thread::spawn(move || {
            let mut writer = writer;
            let mut out = BytesMut::with_capacity(1024);
            let mut n = 0u64;
            loop {
                let intended = schedule.at(n);
                n += 1;
                if intended >= end {
                    break;
                }
                let now = Instant::now();
                if intended > now {
                    std::thread::sleep(intended - now);
                }
                if in_flight.lock().map_or(0, |q| q.len()) >= MAX_OUTSTANDING {
                    overload.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                out.clear();
                let kind = gen.next(&mut out);
                if let Ok(mut q) = in_flight.lock() {
                    q.push_back((intended, kind));
                }
                if write_all_nonblocking(&mut writer, &out).is_err() {
                    break;
                }
            }
            sender_done.store(true, Ordering::Release);
        })
    };
    let mut inbuf = BytesMut::with_capacity(64 * 1024);
    loop {
        let empty = in_flight.lock().map_or(true, |q| q.is_empty());
        if empty {
            if sender_done.load(Ordering::Acquire)
                && in_flight.lock().map_or(true, |q| q.is_empty())
            {
                break;
            }
            // Wake on the reply itself (a timer here would add its
            // granularity to every measured latency). Draining first clears
            // stale readiness, so `readable` really waits.
            inbuf.reserve(4096);
            match rd.try_read_buf(&mut inbuf) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => break,
            }
            let _ = tokio::time::timeout(Duration::from_millis(5), rd.readable()).await;
            continue;
        }
        match read_reply(&mut rd, &mut inbuf, spec.timeout).await {
            Ok(reply) => {
                let now = Instant::now();
                let Some((intended, kind)) = in_flight.lock().ok().and_then(|mut q| q.pop_front())
                else {
                    continue;
                };
                if intended >= clock.measure_from && intended <= clock.end {
                    result.ops += 1;
                    clock.measured.fetch_add(1, Ordering::Relaxed);
                    let _ = result
                        .latency
                        .record((now - intended).as_nanos().max(1) as u64);
                    account(result, kind, &reply);
                }
            }
            Err(e) => {
                let lost = in_flight.lock().map_or(0, |q| q.len()) as u64;
                if e == "timeout" {
                    result.timeouts += lost;
                } else {
                    *result.errors.entry(e).or_default() += lost;
                }
                break;
            }
        }
    }
    let _ = sender.join();
    let overloaded = overload.load(Ordering::Relaxed);
    if overloaded > 0 {
        *result
            .errors
            .entry("overload (client backlog full)".into())
            .or_default() += overloaded;
    }
}

/// `write_all` on a non-blocking socket from a plain thread: waits briefly
/// while the socket buffer is full.
fn write_all_nonblocking(w: &mut std::net::TcpStream, mut buf: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    while !buf.is_empty() {
        match w.write(buf) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_micros(50))
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_spreads_the_rate_over_connections() {
        let start = Instant::now();
        let s0 = Schedule::for_connection(start, 1000.0, 4, 0);
        let s1 = Schedule::for_connection(start, 1000.0, 4, 1);
        // 250 req/s per connection = 4 ms apart, connections 1 ms apart.
        assert_eq!(s0.interval, Duration::from_millis(4));
        assert_eq!(s0.at(10) - s0.at(0), Duration::from_millis(40));
        assert_eq!(s1.at(0) - s0.at(0), Duration::from_millis(1));
    }

    #[test]
    fn histogram_bookkeeping() {
        let mut r = RunResult::empty();
        for us in 1..=1000u64 {
            r.latency.record(us * 1000).unwrap();
        }
        r.ops = 1000;
        r.seconds = 2.0;
        assert!((r.quantile_us(0.5) - 500.0).abs() < 1.0);
        assert!((r.quantile_us(0.99) - 990.0).abs() < 1.0);
        assert_eq!(r.ops_per_sec(), 500.0);
        let mut other = RunResult::empty();
        other.latency.record(5_000_000).unwrap();
        other.hits = 3;
        other.errors.insert("ERROR".into(), 2);
        r.merge(other);
        assert_eq!(r.latency.len(), 1001);
        assert_eq!(r.hits, 3);
        assert_eq!(r.errors["ERROR"], 2);
        assert!((r.summary().max_us - 5000.0).abs() < 5.0);
    }

    #[test]
    fn replies_are_accounted() {
        let mut r = RunResult::empty();
        account(&mut r, OpKind::Get, &Response::Values(vec![]));
        account(&mut r, OpKind::MultiGet(3), &Response::Values(vec![]));
        account(&mut r, OpKind::Set, &Response::ServerError("busy".into()));
        assert_eq!((r.hits, r.misses), (0, 4));
        assert_eq!(r.errors["SERVER_ERROR busy"], 1);
    }
}
