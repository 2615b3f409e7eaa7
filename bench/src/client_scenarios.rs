//! Scenarios driven through the Rust client (`zonecache-client`) against
//! clusters started with `zonecache local`:
//! - `lanes`: realtime reads at a fixed rate, unloaded, then with a batch
//!   job flooding the node on the batch lane, then the same flood with
//!   lanes disabled (batch calls on the realtime connections and port), and
//!   as a control the flood against another node on the same machine (what
//!   sharing the cores costs, whatever the node does);
//! - `coalesce`: requests of 50 lookups with 30 % duplicates, naive per-key
//!   gets vs a request scope; network requests counted by the nodes;
//! - `routing`: direct routing vs front routing, same load.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::join_all;
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use zonecache_client::{Client, Error, Lookup, Mode, StoreOptions};

use crate::cluster::LocalCluster;
use crate::load::{new_histogram, Schedule};
use crate::report::{self, format_number, Table};
use crate::workload::key_name;

/// Latency figures of one phase.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub name: String,
    pub ops_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub timeouts: u64,
    pub errors: u64,
}

/// What a load loop records.
struct Recorder {
    histogram: Mutex<Histogram<u64>>,
    timeouts: AtomicU64,
    errors: AtomicU64,
}

impl Recorder {
    fn new() -> Arc<Recorder> {
        Arc::new(Recorder {
            histogram: Mutex::new(new_histogram()),
            timeouts: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        })
    }

    fn record<T>(&self, since: Instant, result: &Result<T, Error>) {
        match result {
            Ok(_) => {
                let ns = since.elapsed().as_nanos().max(1) as u64;
                let _ = self
                    .histogram
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .record(ns.min(60_000_000_000));
            }
            Err(Error::Timeout) => {
                self.timeouts.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn latency(&self, name: &str, seconds: f64) -> Latency {
        let h = self.histogram.lock().unwrap_or_else(|e| e.into_inner());
        let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Latency {
            name: name.into(),
            ops_per_sec: h.len() as f64 / seconds,
            p50_us: us(0.5),
            p99_us: us(0.99),
            p999_us: us(0.999),
            max_us: h.max() as f64 / 1000.0,
            timeouts: self.timeouts.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}

/// The run whose `key` is the median (the upper one of an even count);
/// the whole run is kept, so its figures belong together.
fn median_by<T: Clone>(runs: &[T], key: impl Fn(&T) -> f64) -> T {
    let mut sorted = runs.to_vec();
    sorted.sort_by(|a, b| key(a).total_cmp(&key(b)));
    sorted[sorted.len() / 2].clone()
}

/// A `stats` value of the node at `addr` (0 when unreadable).
pub fn node_stat(addr: SocketAddr, name: &str) -> u64 {
    zonecache_tests::stats_at(addr)
        .get(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A runtime; `background` threads run under `SCHED_IDLE`: the batch job,
/// which in production runs on other machines, must not take CPU from the
/// realtime path it is measured against on this shared machine.
fn runtime(
    name: &str,
    threads: usize,
    background: bool,
) -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .on_thread_start(move || {
            if background {
                // SAFETY: plain syscalls on this thread's own id with a valid param.
                unsafe {
                    let tid = libc::syscall(libc::SYS_gettid) as libc::pid_t;
                    let param = libc::sched_param { sched_priority: 0 };
                    libc::sched_setscheduler(tid, libc::SCHED_IDLE, &param);
                }
            }
        })
        .build()
        .map_err(|e| e.to_string())
}

/// Writes `keys` values of `value_size` bytes into the cluster of the
/// config at `config`, through a client of its own with loose deadlines (so
/// a slow start does not mark nodes down for the measured clients).
async fn preload(config: &Path, keys: u64, value_size: usize) -> Result<(), String> {
    let client = Client::builder_file(config)
        .realtime_deadlines(Duration::from_secs(2), Duration::from_secs(2))
        .build()
        .map_err(|e| e.to_string())?;
    let value = Bytes::from(vec![b'v'; value_size]);
    for chunk in (0..keys).collect::<Vec<u64>>().chunks(256) {
        let sets = chunk
            .iter()
            .map(|i| client.set(key_name(*i, 16), value.clone(), StoreOptions::default()));
        for r in join_all(sets).await {
            r.map_err(|e| format!("preload: {e}"))?;
        }
    }
    Ok(())
}

/// Open-loop reads at `rate` for `duration`: a plain thread keeps the
/// schedule (tokio's 1 ms timer would skew it) and hands each read to the
/// runtime; latency counts from the intended send time.
fn realtime_reads(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    keys: u64,
    rate: f64,
    duration: Duration,
) -> Arc<Recorder> {
    let recorder = Recorder::new();
    let schedule = Schedule::for_connection(Instant::now(), rate, 1, 0);
    let mut rng = SmallRng::seed_from_u64(7);
    let mut n = 0u64;
    loop {
        let at = schedule.at(n);
        if at.duration_since(schedule.start) >= duration {
            break;
        }
        let now = Instant::now();
        if at > now {
            std::thread::sleep(at - now);
        }
        let (client, recorder) = (client.clone(), recorder.clone());
        let key = key_name(rng.gen_range(0..keys), 16);
        rt.spawn(async move {
            let result = client.get(key).await;
            recorder.record(at, &result);
        });
        n += 1;
    }
    // Let the last reads finish (each is bounded by its deadline).
    std::thread::sleep(Duration::from_millis(300));
    recorder
}

/// A batch job: `workers` tasks each reading `batch` random keys at a time
/// until `stop`; returns lookups done and calls refused (shed).
fn flood(
    rt: &tokio::runtime::Runtime,
    client: Client,
    keys: u64,
    workers: usize,
    batch: usize,
    stop: Arc<AtomicBool>,
) -> (Arc<AtomicU64>, Arc<AtomicU64>) {
    let (done, shed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    for w in 0..workers {
        let (client, stop, done, shed) = (client.clone(), stop.clone(), done.clone(), shed.clone());
        rt.spawn(async move {
            let mut rng = SmallRng::seed_from_u64(100 + w as u64);
            while !stop.load(Ordering::Relaxed) {
                let ks: Vec<Bytes> = (0..batch)
                    .map(|_| key_name(rng.gen_range(0..keys), 16))
                    .collect();
                let Ok(found) = client.get_many(&ks).await else {
                    continue;
                };
                let was_shed = |l: &Lookup| matches!(l, Err(e) if e.is_shed());
                if found.values().any(was_shed) {
                    shed.fetch_add(1, Ordering::Relaxed);
                    // A batch job backs off when told to.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                } else if found.values().all(Result::is_ok) {
                    done.fetch_add(batch as u64, Ordering::Relaxed);
                }
            }
        });
    }
    (done, shed)
}

/// Settings of the `lanes` scenario.
#[derive(Debug, Clone, Serialize)]
pub struct LanesOptions {
    pub keys: u64,
    pub value_size: usize,
    /// Realtime reads per second.
    pub rate: f64,
    /// Seconds per phase.
    pub seconds: f64,
    /// Concurrent batch readers.
    pub batch_workers: usize,
    /// Keys per batch read.
    pub batch_size: usize,
    /// Rounds of all phases, alternated; medians are reported.
    pub rounds: usize,
}

#[derive(Serialize, Clone)]
struct LanePhase {
    realtime: Latency,
    batch_lookups_per_sec: f64,
    batch_shed_calls: u64,
    node_batch_shed: u64,
}

/// Runs the `lanes` scenario.
pub fn lanes(opts: &LanesOptions, out_dir: &Path) -> Result<(), String> {
    let cluster = LocalCluster::start(1, 1, 64, "all")?;
    let other = LocalCluster::start(1, 1, 64, "all")?;
    let config = cluster.config_path("a1");
    let node = cluster.node("a1").addr;
    let rt = runtime("realtime", 2, false)?;
    let batch_rt = runtime("batch-job", 2, true)?;
    let duration = Duration::from_secs_f64(opts.seconds);
    let build = |path: &Path, lanes: bool| {
        Client::builder_file(path)
            .separate_lanes(lanes)
            .build()
            .map_err(|e| e.to_string())
    };
    let with_lanes = build(&config, true)?;
    let without_lanes = build(&config, false)?;
    let elsewhere = build(&other.config_path("a1"), true)?;
    rt.block_on(preload(&config, opts.keys, opts.value_size))?;
    rt.block_on(preload(
        &other.config_path("a1"),
        opts.keys,
        opts.value_size,
    ))?;
    // Open the realtime connections from the realtime runtime.
    rt.block_on(async {
        let _ = with_lanes.get("warm").await;
        let _ = without_lanes.get("warm").await;
    });

    let phase = |name: &str, realtime: &Client, batch: Option<Client>| {
        eprintln!("lanes: {name}");
        let stop = Arc::new(AtomicBool::new(false));
        let shed_before = node_stat(node, "batch_shed");
        let started = Instant::now();
        let counters = batch.map(|b| {
            flood(
                &batch_rt,
                b,
                opts.keys,
                opts.batch_workers,
                opts.batch_size,
                stop.clone(),
            )
        });
        if counters.is_some() {
            // Let the flood reach full speed first.
            std::thread::sleep(Duration::from_millis(500));
        }
        let recorder = realtime_reads(&rt, realtime, opts.keys, opts.rate, duration);
        let elapsed = started.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(200));
        let (done, shed) = counters
            .map(|(d, s)| (d.load(Ordering::Relaxed), s.load(Ordering::Relaxed)))
            .unwrap_or((0, 0));
        LanePhase {
            realtime: recorder.latency(name, opts.seconds),
            batch_lookups_per_sec: done as f64 / elapsed,
            batch_shed_calls: shed,
            node_batch_shed: node_stat(node, "batch_shed") - shed_before,
        }
    };
    let mut rounds: Vec<Vec<LanePhase>> = vec![Vec::new(); 4];
    for _ in 0..opts.rounds.max(1) {
        rounds[0].push(phase("realtime alone", &with_lanes, None));
        rounds[1].push(phase(
            "with batch flood, lanes on",
            &with_lanes,
            Some(with_lanes.batch()),
        ));
        rounds[2].push(phase(
            "with batch flood, lanes off",
            &without_lanes,
            Some(without_lanes.batch()),
        ));
        rounds[3].push(phase(
            "control: flood on another node",
            &with_lanes,
            Some(elsewhere.batch()),
        ));
    }
    drop(batch_rt);
    // The median round of each phase, by realtime p99.
    let phases: Vec<LanePhase> = rounds
        .iter()
        .map(|runs| median_by(runs, |p| p.realtime.p99_us))
        .collect();

    let mut table = Table::new(&[
        "phase",
        "realtime/s",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "max µs",
        "timeouts",
        "errors",
        "batch lookups/s",
        "batch shed",
    ]);
    for p in &phases {
        let r = &p.realtime;
        table.row(vec![
            r.name.clone(),
            format_number(r.ops_per_sec),
            format_number(r.p50_us),
            format_number(r.p99_us),
            format_number(r.p999_us),
            format_number(r.max_us),
            r.timeouts.to_string(),
            r.errors.to_string(),
            format_number(p.batch_lookups_per_sec),
            format!("{} client / {} node", p.batch_shed_calls, p.node_batch_shed),
        ]);
    }
    println!(
        "\nlanes: one node (-t 2, batch port), realtime gets at {}/s through the client; batch job = {} tasks × get_many({}) on a SCHED_IDLE runtime; {} cores shared by all; median of {} rounds",
        opts.rate,
        opts.batch_workers,
        opts.batch_size,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        opts.rounds.max(1)
    );
    table.print();
    let base_p99 = phases[0].realtime.p99_us.max(1e-9);
    println!(
        "\nrealtime p99 with flood / alone: lanes on {:.2} (goal ≤ 1.2), lanes off {:.2}, control (flood on another node) {:.2}",
        phases[1].realtime.p99_us / base_p99,
        phases[2].realtime.p99_us / base_p99,
        phases[3].realtime.p99_us / base_p99
    );
    let base = report::output_base(out_dir, "lanes");
    let svg = report::plot_bars(
        &base,
        "realtime p99 µs",
        &[
            ("alone".to_string(), phases[0].realtime.p99_us),
            ("lanes on".to_string(), phases[1].realtime.p99_us),
            ("lanes off".to_string(), phases[2].realtime.p99_us),
            ("control".to_string(), phases[3].realtime.p99_us),
        ],
    )?;
    let json = report::write_json(
        &base,
        &serde_json::json!({ "scenario": "lanes", "options": opts, "phases": phases, "rounds": rounds }),
    )?;
    println!("wrote {} and {}", json.display(), svg.display());
    Ok(())
}

/// Settings of the `coalesce` scenario.
#[derive(Debug, Clone, Serialize)]
pub struct CoalesceOptions {
    pub keys: u64,
    pub value_size: usize,
    /// Lookups per request.
    pub lookups: usize,
    /// Share of lookups that repeat a key of the same request.
    pub duplicates: f64,
    /// Requests served at once (closed loop).
    pub concurrency: usize,
    pub seconds: f64,
}

/// How a request's lookups are made.
#[derive(Debug, Clone, Copy, Serialize)]
enum Lookups {
    /// `client.get` per lookup, each awaited before the next.
    NaiveInTurn,
    /// `client.get` per lookup, all at once.
    NaiveAtOnce,
    /// All lookups through one `client.scope()`, at once.
    Scoped,
}

#[derive(Serialize)]
struct CoalescePhase {
    how: Lookups,
    requests_per_sec: f64,
    lookups_per_sec: f64,
    request_p50_us: f64,
    request_p99_us: f64,
    network_requests_per_request: f64,
    errors: u64,
}

/// The lookups of request `n`: distinct keys plus repeats of them, shuffled.
fn request_keys(opts: &CoalesceOptions, rng: &mut SmallRng) -> Vec<Bytes> {
    let repeats = (opts.lookups as f64 * opts.duplicates).round() as usize;
    let distinct: Vec<Bytes> = (0..opts.lookups - repeats)
        .map(|_| key_name(rng.gen_range(0..opts.keys), 16))
        .collect();
    let mut all = distinct.clone();
    for _ in 0..repeats {
        all.push(distinct[rng.gen_range(0..distinct.len())].clone());
    }
    for i in (1..all.len()).rev() {
        all.swap(i, rng.gen_range(0..=i));
    }
    all
}

/// Runs the `coalesce` scenario.
pub fn coalesce(opts: &CoalesceOptions, out_dir: &Path) -> Result<(), String> {
    let cluster = LocalCluster::start(3, 2, 64, "all-minus-one")?;
    let rt = runtime("app", 2, false)?;
    let client = Client::builder_file(cluster.config_path("a1"))
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(preload(
        &cluster.config_path("a1"),
        opts.keys,
        opts.value_size,
    ))?;
    let reads = || -> u64 {
        cluster
            .nodes
            .iter()
            .map(|n| node_stat(n.addr, "read_requests"))
            .sum()
    };
    let mut phases = Vec::new();
    for how in [Lookups::NaiveInTurn, Lookups::NaiveAtOnce, Lookups::Scoped] {
        eprintln!("coalesce: {how:?}");
        let before = reads();
        let recorder = Recorder::new();
        let requests = Arc::new(AtomicU64::new(0));
        let end = Instant::now() + Duration::from_secs_f64(opts.seconds);
        rt.block_on(async {
            let tasks = (0..opts.concurrency).map(|t| {
                let (client, recorder, requests) =
                    (client.clone(), recorder.clone(), requests.clone());
                let opts = opts.clone();
                tokio::spawn(async move {
                    let mut rng = SmallRng::seed_from_u64(t as u64);
                    while Instant::now() < end {
                        let keys = request_keys(&opts, &mut rng);
                        let started = Instant::now();
                        let result: Result<(), Error> = match how {
                            Lookups::NaiveInTurn => {
                                let mut r = Ok(());
                                for k in &keys {
                                    if let Err(e) = client.get(k).await {
                                        r = Err(e);
                                    }
                                }
                                r
                            }
                            Lookups::NaiveAtOnce => join_all(keys.iter().map(|k| client.get(k)))
                                .await
                                .into_iter()
                                .try_for_each(|r| r.map(|_| ())),
                            Lookups::Scoped => {
                                let scope = client.scope();
                                join_all(keys.iter().map(|k| scope.get(k)))
                                    .await
                                    .into_iter()
                                    .try_for_each(|r| r.map(|_| ()))
                            }
                        };
                        recorder.record(started, &result);
                        requests.fetch_add(1, Ordering::Relaxed);
                    }
                })
            });
            join_all(tasks).await;
        });
        let n = requests.load(Ordering::Relaxed).max(1);
        let latency = recorder.latency("", opts.seconds);
        phases.push(CoalescePhase {
            how,
            requests_per_sec: n as f64 / opts.seconds,
            lookups_per_sec: (n * opts.lookups as u64) as f64 / opts.seconds,
            request_p50_us: latency.p50_us,
            request_p99_us: latency.p99_us,
            network_requests_per_request: (reads() - before) as f64 / n as f64,
            errors: latency.errors + latency.timeouts,
        });
    }
    let mut table = Table::new(&[
        "lookups",
        "requests/s",
        "lookups/s",
        "request p50 µs",
        "request p99 µs",
        "node requests per request",
        "errors",
    ]);
    for p in &phases {
        table.row(vec![
            format!("{:?}", p.how),
            format_number(p.requests_per_sec),
            format_number(p.lookups_per_sec),
            format_number(p.request_p50_us),
            format_number(p.request_p99_us),
            format!("{:.2}", p.network_requests_per_request),
            p.errors.to_string(),
        ]);
    }
    println!(
        "\ncoalesce: 3 zones × 2 nodes, direct client in zone a; a request = {} lookups, {:.0} % duplicates, {} requests at once; {} cores shared by all",
        opts.lookups,
        opts.duplicates * 100.0,
        opts.concurrency,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    table.print();
    let base = report::output_base(out_dir, "coalesce");
    let svg = report::plot_bars(
        &base,
        "node requests per app request",
        &phases
            .iter()
            .map(|p| (format!("{:?}", p.how), p.network_requests_per_request))
            .collect::<Vec<_>>(),
    )?;
    let json = report::write_json(
        &base,
        &serde_json::json!({ "scenario": "coalesce", "options": opts, "phases": phases }),
    )?;
    println!("wrote {} and {}", json.display(), svg.display());
    Ok(())
}

/// Settings of the `routing` scenario.
#[derive(Debug, Clone, Serialize)]
pub struct RoutingOptions {
    pub keys: u64,
    pub value_size: usize,
    /// Share of sets (the rest are gets).
    pub set_share: f64,
    /// Calls in flight at once (closed loop).
    pub concurrency: usize,
    pub seconds: f64,
    /// Alternations of direct and front runs (the median is reported).
    pub pairs: usize,
}

/// Runs the `routing` scenario.
pub fn routing(opts: &RoutingOptions, out_dir: &Path) -> Result<(), String> {
    let cluster = LocalCluster::start(3, 2, 64, "all-minus-one")?;
    let rt = runtime("app", 2, false)?;
    let build = |mode: Mode| {
        Client::builder_file(cluster.config_path("a1"))
            .mode(mode)
            .build()
            .map_err(|e| e.to_string())
    };
    let (direct, front) = (build(Mode::Direct)?, build(Mode::Front)?);
    rt.block_on(preload(
        &cluster.config_path("a1"),
        opts.keys,
        opts.value_size,
    ))?;
    let value = Bytes::from(vec![b'v'; opts.value_size]);
    let run = |client: &Client, name: &str| -> Latency {
        let recorder = Recorder::new();
        let end = Instant::now() + Duration::from_secs_f64(opts.seconds);
        rt.block_on(async {
            let tasks = (0..opts.concurrency).map(|t| {
                let (client, recorder, value) = (client.clone(), recorder.clone(), value.clone());
                let opts = opts.clone();
                tokio::spawn(async move {
                    let mut rng = SmallRng::seed_from_u64(t as u64);
                    while Instant::now() < end {
                        let key = key_name(rng.gen_range(0..opts.keys), 16);
                        let started = Instant::now();
                        if rng.gen_bool(opts.set_share) {
                            let r = client
                                .set(key, value.clone(), StoreOptions::default())
                                .await;
                            recorder.record(started, &r);
                        } else {
                            let r = client.get(key).await;
                            recorder.record(started, &r);
                        }
                    }
                })
            });
            join_all(tasks).await;
        });
        recorder.latency(name, opts.seconds)
    };
    let mut runs: Vec<Vec<Latency>> = vec![Vec::new(), Vec::new()];
    for _ in 0..opts.pairs.max(1) {
        eprintln!("routing: direct, then front");
        runs[0].push(run(&direct, "direct (client → owner)"));
        runs[1].push(run(&front, "front (client → home node → owners)"));
    }
    let by_p99 = |l: &Latency| l.p99_us;
    let figures = [median_by(&runs[0], by_p99), median_by(&runs[1], by_p99)];
    let mut table = Table::new(&["routing", "ops/s", "p50 µs", "p99 µs", "p99.9 µs", "errors"]);
    for f in &figures {
        table.row(vec![
            f.name.clone(),
            format_number(f.ops_per_sec),
            format_number(f.p50_us),
            format_number(f.p99_us),
            format_number(f.p999_us),
            (f.errors + f.timeouts).to_string(),
        ]);
    }
    println!(
        "\nrouting: 3 zones × 2 nodes (all-minus-one), client in zone a, {:.0} % sets, {} calls in flight; {} cores shared by all",
        opts.set_share * 100.0,
        opts.concurrency,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    table.print();
    println!(
        "\nfront / direct: p99 {:.2}, ops/s {:.2}",
        figures[1].p99_us / figures[0].p99_us.max(1e-9),
        figures[1].ops_per_sec / figures[0].ops_per_sec.max(1e-9)
    );
    let base = report::output_base(out_dir, "routing");
    let svg = report::plot_bars(
        &base,
        "p99 µs",
        &[
            ("direct".to_string(), figures[0].p99_us),
            ("front".to_string(), figures[1].p99_us),
        ],
    )?;
    let json = report::write_json(
        &base,
        &serde_json::json!({ "scenario": "routing", "options": opts, "runs": runs }),
    )?;
    println!("wrote {} and {}", json.display(), svg.display());
    Ok(())
}
