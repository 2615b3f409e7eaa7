//! Named scenarios, each one command: `compare`, `memory`, `hitratio`.
//! A scenario is a workload, the servers it starts, and the figures it
//! reports; the running, alternating and reporting are shared.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use bytes::BytesMut;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use zonecache_proto::{Command, Store, StoreMode};

use crate::load::{self, LoadSpec, Mode, RunResult, Summary};
use crate::procs::{Kind, ServerProc};
use crate::report::{self, format_number, median, Curve, Machine, Table, CURVE_QUANTILES};
use crate::workload::{key_name, KeyDist, KeySampler, ValueSize, Workload};

/// Settings shared by the scenarios that start servers.
#[derive(Debug, Clone, Serialize)]
pub struct ServerSettings {
    /// `-m` for both servers, MiB.
    pub memory_mb: usize,
    /// `-t` for both servers.
    pub threads: usize,
}

fn machine(servers: &[&ServerProc]) -> Machine {
    let version = |k: Kind| {
        servers
            .iter()
            .find(|s| s.kind == k)
            .map(|s| s.stats().get("version").cloned().unwrap_or_default())
            .unwrap_or_default()
    };
    Machine {
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        memcached_version: version(Kind::Memcached),
        zonecached_version: version(Kind::Zonecached),
    }
}

fn value_len(v: ValueSize) -> usize {
    match v {
        ValueSize::Fixed(n) => n,
        ValueSize::Uniform(lo, hi) => (lo + hi) / 2,
    }
}

/// A pipelined `set … noreply` of `value` under `key`.
fn noreply_set(key: bytes::Bytes, value: bytes::Bytes, exptime: i32) -> Command {
    Command::Store(Store {
        mode: StoreMode::Set,
        key,
        flags: 0,
        exptime,
        data: value,
        cas_unique: 0,
        noreply: true,
    })
}

/// A connection for bulk work: no Nagle, or a small write after a noreply
/// batch waits for a delayed ACK (40 ms) every time.
fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    let s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    Ok(s)
}

/// Stores every key of the workload once (pipelined, noreply) and waits
/// until the server has taken them all.
pub fn preload(addr: SocketAddr, workload: &Workload) -> Result<(), String> {
    let mut s = connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let data = bytes::Bytes::from(vec![b'p'; value_len(workload.value)]);
    let mut buf = BytesMut::with_capacity(1 << 20);
    for i in 0..workload.keys {
        noreply_set(workload.key_at(i), data.clone(), workload.ttl).encode(&mut buf);
        if buf.len() > 512 * 1024 {
            s.write_all(&buf).map_err(|e| e.to_string())?;
            buf.clear();
        }
    }
    send_and_sync(&mut s, buf)
}

/// Sends `buf` followed by `mn` and waits for `MN`: everything before it
/// (noreply writes included) has then been applied.
fn send_and_sync(s: &mut TcpStream, mut buf: BytesMut) -> Result<(), String> {
    buf.extend_from_slice(b"mn\r\n");
    s.write_all(&buf).map_err(|e| e.to_string())?;
    let mut reply = Vec::new();
    let mut chunk = [0u8; 4096];
    while !reply.ends_with(b"MN\r\n") {
        let n = s.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the server closed the connection".into());
        }
        reply.extend_from_slice(&chunk[..n]);
    }
    Ok(())
}

/// The median server CPU per request of `label`'s runs, µs.
pub fn cpu_per_op(runs: &[Measured], label: &str) -> f64 {
    median(
        &runs
            .iter()
            .filter(|r| r.server == label)
            .map(|r| r.server_cpu_us_per_op)
            .collect::<Vec<_>>(),
    )
}

/// One measured run against one server.
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    pub server: &'static str,
    pub pair: usize,
    pub mode: Mode,
    pub summary: Summary,
    pub server_cpu_seconds: f64,
    pub server_cpu_us_per_op: f64,
}

/// Runs the same load against each server in turn, `pairs` times (A B A B …),
/// so drift on a shared machine hits both alike.
pub fn alternate(
    servers: &[&ServerProc],
    workload: &Workload,
    spec: &LoadSpec,
    pairs: usize,
) -> (Vec<Measured>, Vec<Vec<RunResult>>) {
    let mut measured = Vec::new();
    let mut results: Vec<Vec<RunResult>> = servers.iter().map(|_| Vec::new()).collect();
    for pair in 0..pairs {
        for (i, server) in servers.iter().enumerate() {
            let spec = LoadSpec {
                target: server.addr,
                tls: spec.tls.clone().filter(|_| server.tls),
                ..spec.clone()
            };
            let cpu_before = server.cpu_seconds();
            let r = load::run(workload, &spec);
            let cpu = server.cpu_seconds() - cpu_before;
            let summary = r.summary();
            eprintln!(
                "  pair {} {:<10} {:>10.0} ops/s  p50 {:>7.1} µs  p99 {:>7.1} µs  errors {}  timeouts {}",
                pair + 1,
                server.label,
                summary.ops_per_sec,
                summary.p50_us,
                summary.p99_us,
                summary.errors.values().sum::<u64>(),
                summary.timeouts
            );
            measured.push(Measured {
                server: server.label,
                pair,
                mode: spec.mode,
                server_cpu_us_per_op: if r.ops > 0 {
                    cpu * 1e6 / r.ops as f64
                } else {
                    0.0
                },
                server_cpu_seconds: cpu,
                summary,
            });
            results[i].push(r);
        }
    }
    (measured, results)
}

/// Settings of `compare`.
#[derive(Debug, Clone, Serialize)]
pub struct CompareOptions {
    pub servers: ServerSettings,
    pub workload: Workload,
    pub load: LoadSpec,
    pub pairs: usize,
    /// Open-loop rate as a share of memcached's closed-loop peak.
    pub open_fraction: f64,
}

#[derive(Serialize)]
struct CompareReport<'a> {
    scenario: &'static str,
    machine: Machine,
    options: &'a CompareOptions,
    open_loop_rate: f64,
    runs: Vec<Measured>,
    medians: Vec<(String, f64, f64, f64)>,
}

fn med(results: &[RunResult], f: impl Fn(&RunResult) -> f64) -> f64 {
    median(&results.iter().map(f).collect::<Vec<_>>())
}

/// `compare`: memcached and zonecached with the same `-m`/`-t`, closed loop
/// then open loop at a fraction of memcached's peak, alternating.
pub fn compare(opts: &CompareOptions, out_dir: &Path) -> Result<(), String> {
    let m = ServerProc::start(
        Kind::Memcached,
        opts.servers.memory_mb,
        opts.servers.threads,
    )?;
    let z = ServerProc::start(
        Kind::Zonecached,
        opts.servers.memory_mb,
        opts.servers.threads,
    )?;
    let servers = [&m, &z];
    for s in servers {
        preload(s.addr, &opts.workload)?;
    }
    eprintln!(
        "compare: {} connections, {:?}, {} s per run, {} pairs",
        opts.load.connections,
        opts.load.mode,
        opts.load.duration.as_secs_f64(),
        opts.pairs
    );
    let (mut runs, closed) = alternate(&servers, &opts.workload, &opts.load, opts.pairs);
    let peak = med(&closed[0], RunResult::ops_per_sec);
    let rate = (peak * opts.open_fraction).max(1.0);
    eprintln!(
        "open loop at {rate:.0} req/s ({:.0} % of memcached's peak)",
        opts.open_fraction * 100.0
    );
    let open_spec = LoadSpec {
        mode: Mode::Open { rate },
        ..opts.load.clone()
    };
    let (open_runs, open) = alternate(&servers, &opts.workload, &open_spec, opts.pairs);
    runs.extend(open_runs);

    let cpu_per_op = |name: &str, open_mode: bool| {
        median(
            &runs
                .iter()
                .filter(|r| r.server == name && matches!(r.mode, Mode::Open { .. }) == open_mode)
                .map(|r| r.server_cpu_us_per_op)
                .collect::<Vec<_>>(),
        )
    };
    let figures: Vec<(String, f64, f64)> = vec![
        (
            "closed: ops/s".into(),
            med(&closed[0], RunResult::ops_per_sec),
            med(&closed[1], RunResult::ops_per_sec),
        ),
        (
            "closed: p50 µs".into(),
            med(&closed[0], |r| r.quantile_us(0.5)),
            med(&closed[1], |r| r.quantile_us(0.5)),
        ),
        (
            "closed: p99 µs".into(),
            med(&closed[0], |r| r.quantile_us(0.99)),
            med(&closed[1], |r| r.quantile_us(0.99)),
        ),
        (
            "closed: p99.9 µs".into(),
            med(&closed[0], |r| r.quantile_us(0.999)),
            med(&closed[1], |r| r.quantile_us(0.999)),
        ),
        (
            "closed: server CPU µs/op".into(),
            cpu_per_op("memcached", false),
            cpu_per_op("zonecached", false),
        ),
        (
            format!("open {rate:.0}/s: p50 µs"),
            med(&open[0], |r| r.quantile_us(0.5)),
            med(&open[1], |r| r.quantile_us(0.5)),
        ),
        (
            format!("open {rate:.0}/s: p99 µs"),
            med(&open[0], |r| r.quantile_us(0.99)),
            med(&open[1], |r| r.quantile_us(0.99)),
        ),
        (
            format!("open {rate:.0}/s: p99.9 µs"),
            med(&open[0], |r| r.quantile_us(0.999)),
            med(&open[1], |r| r.quantile_us(0.999)),
        ),
        (
            "open: server CPU µs/op".into(),
            cpu_per_op("memcached", true),
            cpu_per_op("zonecached", true),
        ),
    ];
    let mut table = Table::new(&[
        "figure (median of pairs)",
        "memcached",
        "zonecached",
        "zonecached/memcached",
    ]);
    for (name, a, b) in &figures {
        table.row(vec![
            name.clone(),
            format_number(*a),
            format_number(*b),
            format!("{:.2}", b / a.max(1e-9)),
        ]);
    }
    println!();
    table.print();
    let pair_ratios: Vec<f64> = closed[0]
        .iter()
        .zip(&closed[1])
        .map(|(a, b)| b.ops_per_sec() / a.ops_per_sec().max(1e-9))
        .collect();
    let p99_ratios: Vec<f64> = open[0]
        .iter()
        .zip(&open[1])
        .map(|(a, b)| b.quantile_us(0.99) / a.quantile_us(0.99).max(1e-9))
        .collect();
    println!(
        "\nper pair, closed ops/s ratio: {}  (median {:.2})",
        pair_ratios
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(" "),
        median(&pair_ratios)
    );
    println!(
        "per pair, open p99 ratio:     {}  (median {:.2})",
        p99_ratios
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(" "),
        median(&p99_ratios)
    );
    let client_cpu: f64 = runs.iter().map(|r| r.summary.client_cpu_seconds).sum();
    let server_cpu: f64 = runs.iter().map(|r| r.server_cpu_seconds).sum();
    println!("load generator CPU {client_cpu:.1} s, servers' CPU {server_cpu:.1} s (all runs)");

    let base = report::output_base(out_dir, "compare");
    let curves: Vec<Curve> = [("memcached", &open[0]), ("zonecached", &open[1])]
        .iter()
        .map(|(label, rs)| Curve {
            label: format!("{label} (open loop)"),
            points: CURVE_QUANTILES
                .iter()
                .map(|&q| (q, med(rs, |r| r.quantile_us(q))))
                .collect(),
        })
        .collect();
    let bars = vec![
        ("memcached".to_string(), figures[0].1),
        ("zonecached".to_string(), figures[0].2),
    ];
    let svg = report::plot_comparison(
        &base,
        &format!("latency at {rate:.0} req/s"),
        &curves,
        "closed-loop ops/s",
        &bars,
    )?;
    let json = report::write_json(
        &base,
        &CompareReport {
            scenario: "compare",
            machine: machine(&servers),
            options: opts,
            open_loop_rate: rate,
            runs,
            medians: figures
                .iter()
                .map(|(n, a, b)| (n.clone(), *a, *b, b / a.max(1e-9)))
                .collect(),
        },
    )?;
    println!("wrote {} and {}", json.display(), svg.display());
    Ok(())
}

#[derive(Serialize)]
struct TlsReport<'a> {
    scenario: &'static str,
    machine: Machine,
    options: &'a CompareOptions,
    runs: Vec<Measured>,
    /// (figure, memcached, memcached TLS, zonecached, zonecached TLS).
    medians: Vec<(String, f64, f64, f64, f64)>,
}

/// `compare --tls`: what TLS costs. memcached plain and with `-Z`,
/// zonecached on its plain port and on its TLS port (`--tls-port`), the
/// same certificate for both (a CA made for the run), closed loop,
/// alternating A B C D; each connection's handshake is outside the
/// measured window (warm-up), so the figures are the cost per request.
pub fn compare_tls(opts: &CompareOptions, out_dir: &Path) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("zonecache-bench-tls-{}", std::process::id()));
    let pki = zonecache_tests::tls::Pki::new(&dir);
    let id = pki.issue("server");
    let (cert, key) = (
        id.cert_file.display().to_string(),
        id.key_file.display().to_string(),
    );
    let (memory, threads) = (opts.servers.memory_mb, opts.servers.threads);
    let m = ServerProc::start(Kind::Memcached, memory, threads)?;
    let z = ServerProc::start(Kind::Zonecached, memory, threads)?;
    // memcached -Z speaks TLS on its -p port; a `notls:` listener beside
    // it takes the preload, as zonecached's plain port does.
    let ssl = format!("ssl_chain_cert={cert},ssl_key={key}");
    let m_plain = zonecache_tests::free_port_range(1)?;
    let notls = format!("notls:127.0.0.1:{m_plain}");
    let mut m_tls = ServerProc::start_with(
        Kind::Memcached,
        "memcached TLS",
        memory,
        threads,
        &["-Z", "-o", &ssl, "-l", &notls],
    )?;
    let tls_port = zonecache_tests::free_port_range(1)?;
    let port = tls_port.to_string();
    let mut z_tls = ServerProc::start_with(
        Kind::Zonecached,
        "zonecached TLS",
        memory,
        threads,
        &["--tls-port", &port, "--tls-cert", &cert, "--tls-key", &key],
    )?;
    for addr in [
        m.addr,
        z.addr,
        z_tls.addr,
        SocketAddr::from(([127, 0, 0, 1], m_plain)),
    ] {
        preload(addr, &opts.workload)?;
    }
    m_tls.tls = true;
    z_tls.addr = SocketAddr::from(([127, 0, 0, 1], tls_port));
    z_tls.tls = true;
    let servers = [&m, &m_tls, &z, &z_tls];
    let spec = LoadSpec {
        tls: Some(pki.client_config(None, false)),
        ..opts.load.clone()
    };
    eprintln!(
        "compare --tls: {} connections, {:?}, {} s per run, {} rounds",
        spec.connections,
        spec.mode,
        spec.duration.as_secs_f64(),
        opts.pairs
    );
    let (runs, closed) = alternate(&servers, &opts.workload, &spec, opts.pairs);
    let cpu = |label: &str| cpu_per_op(&runs, label);
    let figure = |name: &str, f: &dyn Fn(&RunResult) -> f64| {
        let at = |i: usize| med(&closed[i], f);
        (name.to_string(), at(0), at(1), at(2), at(3))
    };
    let mut figures = vec![
        figure("closed: ops/s", &RunResult::ops_per_sec),
        figure("closed: p50 µs", &|r| r.quantile_us(0.5)),
        figure("closed: p99 µs", &|r| r.quantile_us(0.99)),
        figure("closed: p99.9 µs", &|r| r.quantile_us(0.999)),
    ];
    figures.push((
        "closed: server CPU µs/op".into(),
        cpu("memcached"),
        cpu("memcached TLS"),
        cpu("zonecached"),
        cpu("zonecached TLS"),
    ));
    let mut table = Table::new(&[
        "figure (median of rounds)",
        "memcached",
        "memcached TLS",
        "TLS/plain",
        "zonecached",
        "zonecached TLS",
        "TLS/plain",
        "zc TLS/mc TLS",
    ]);
    for (name, m, mt, z, zt) in &figures {
        table.row(vec![
            name.clone(),
            format_number(*m),
            format_number(*mt),
            format!("{:.2}", mt / m.max(1e-9)),
            format_number(*z),
            format_number(*zt),
            format!("{:.2}", zt / z.max(1e-9)),
            format!("{:.2}", zt / mt.max(1e-9)),
        ]);
    }
    println!();
    table.print();
    let base = report::output_base(out_dir, "compare-tls");
    let json = report::write_json(
        &base,
        &TlsReport {
            scenario: "compare-tls",
            machine: machine(&servers),
            options: opts,
            runs,
            medians: figures,
        },
    )?;
    println!("wrote {}", json.display());
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Settings of `memory`.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryOptions {
    pub servers: ServerSettings,
    pub key_size: usize,
    pub value_size: usize,
    /// Set exactly this many distinct keys (steady churn once the cache is
    /// full) instead of filling until the first eviction + 10 %.
    pub sets: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
struct MemoryResult {
    server: &'static str,
    items: u64,
    rss_bytes: u64,
    items_per_mib_rss: f64,
    bytes_per_item_within_limit: f64,
    overhead_bytes_per_item: f64,
    evictions: u64,
}

/// Fills a server with sequential keys until it evicts, then 10 % more.
/// Sets distinct keys until the first eviction and 10 % more, or exactly
/// `sets` of them.
fn fill(
    server: &ServerProc,
    key_size: usize,
    value_size: usize,
    sets: Option<u64>,
) -> Result<(), String> {
    let mut s = connect(server.addr)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let data = bytes::Bytes::from(vec![b'm'; value_size]);
    let batch = 20_000u64;
    let mut next = 0u64;
    let mut extra_batches: Option<u64> = None;
    loop {
        let mut buf = BytesMut::with_capacity(batch as usize * (key_size + value_size + 40));
        let end = sets.map_or(next + batch, |sets| sets.min(next + batch));
        for i in next..end {
            noreply_set(key_name(i, key_size), data.clone(), 0).encode(&mut buf);
        }
        next += batch;
        send_and_sync(&mut s, buf)?;
        if let Some(sets) = sets {
            if next >= sets {
                return Ok(());
            }
            continue;
        }
        match extra_batches {
            None if server.stat("evictions") > 0 => {
                extra_batches = Some((next / batch / 10).max(1))
            }
            Some(0) => return Ok(()),
            Some(n) => extra_batches = Some(n - 1),
            None if next > 200_000_000 => return Err("never evicted".into()),
            None => {}
        }
    }
}

/// `memory`: items held, RSS and per-item overhead at the same `-m`.
pub fn memory(opts: &MemoryOptions, out_dir: &Path) -> Result<(), String> {
    let mut results = Vec::new();
    let mut versions = Vec::new();
    for kind in [Kind::Memcached, Kind::Zonecached] {
        let server = ServerProc::start(kind, opts.servers.memory_mb, opts.servers.threads)?;
        eprintln!(
            "filling {} with {}-byte keys and {}-byte values…",
            kind.name(),
            opts.key_size,
            opts.value_size
        );
        fill(&server, opts.key_size, opts.value_size, opts.sets)?;
        std::thread::sleep(Duration::from_millis(300));
        let items = server.stat("curr_items");
        let rss = server.rss_bytes();
        let limit = server.stat("limit_maxbytes") as f64;
        let per_item = limit / items.max(1) as f64;
        results.push(MemoryResult {
            server: kind.name(),
            items,
            rss_bytes: rss,
            items_per_mib_rss: items as f64 / (rss as f64 / (1 << 20) as f64),
            bytes_per_item_within_limit: per_item,
            overhead_bytes_per_item: per_item - (opts.key_size + opts.value_size) as f64,
            evictions: server.stat("evictions"),
        });
        versions.push(machine(&[&server]));
    }
    let mut table = Table::new(&["figure", "memcached", "zonecached", "zonecached/memcached"]);
    let (a, b) = (&results[0], &results[1]);
    let rows: [(&str, f64, f64); 4] = [
        ("items held", a.items as f64, b.items as f64),
        (
            "RSS MiB",
            a.rss_bytes as f64 / 1048576.0,
            b.rss_bytes as f64 / 1048576.0,
        ),
        (
            "items per MiB of RSS",
            a.items_per_mib_rss,
            b.items_per_mib_rss,
        ),
        (
            "overhead bytes per item (beyond key+value)",
            a.overhead_bytes_per_item,
            b.overhead_bytes_per_item,
        ),
    ];
    for (name, x, y) in rows {
        table.row(vec![
            name.into(),
            format_number(x),
            format_number(y),
            format!("{:.2}", y / x.max(1e-9)),
        ]);
    }
    let filled = match opts.sets {
        Some(n) => format!("{n} sets of distinct keys"),
        None => "filled until eviction + 10 %".into(),
    };
    println!(
        "\nmemory: -m {} -t {}, {}-byte keys, {}-byte values, {filled}",
        opts.servers.memory_mb, opts.servers.threads, opts.key_size, opts.value_size
    );
    table.print();
    let base = report::output_base(out_dir, "memory");
    let svg = report::plot_bars(
        &base,
        "items per MiB of RSS",
        &[
            ("memcached".into(), a.items_per_mib_rss),
            ("zonecached".into(), b.items_per_mib_rss),
        ],
    )?;
    let json = report::write_json(
        &base,
        &serde_json::json!({
            "scenario": "memory",
            "machine": Machine {
                cores: versions[0].cores,
                memcached_version: versions[0].memcached_version.clone(),
                zonecached_version: versions[1].zonecached_version.clone(),
            },
            "options": opts,
            "results": results,
        }),
    )?;
    println!("wrote {} and {}", json.display(), svg.display());
    Ok(())
}

/// Settings of `hitratio`.
#[derive(Debug, Clone, Serialize)]
pub struct HitRatioOptions {
    pub servers: ServerSettings,
    pub keys: u64,
    pub skew: f64,
    /// The share of requests for keys asked for once only (one-hit
    /// wonders, a large share in Twitter's cache traces).
    pub one_hit: f64,
    pub requests: u64,
    pub value_size: usize,
    pub seed: u64,
}

/// Replays a cache-aside Zipf trace (get; on a miss, set) and counts hits.
/// Requests go in pipelined batches; the trace is identical for every server.
fn replay(server: &ServerProc, opts: &HitRatioOptions) -> Result<(u64, u64), String> {
    let mut s = connect(server.addr)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let sampler = KeySampler::new(opts.keys, KeyDist::Zipf(opts.skew));
    let mut rng = SmallRng::seed_from_u64(opts.seed);
    let data = bytes::Bytes::from(vec![b'h'; opts.value_size]);
    let (mut hits, mut gets) = (0u64, 0u64);
    let mut once = opts.keys;
    let batch = 100;
    let mut inbuf = BytesMut::with_capacity(1 << 20);
    let mut done = 0;
    // The first fifth warms the cache and is not counted.
    let warm = opts.requests / 5;
    while done < opts.requests {
        let keys: Vec<_> = (0..batch)
            .map(|_| match rng.gen_bool(opts.one_hit) {
                true => {
                    once += 1;
                    key_name(once, 16)
                }
                false => key_name(sampler.sample(&mut rng), 16),
            })
            .collect();
        let mut out = BytesMut::new();
        for k in &keys {
            Command::Get {
                keys: vec![k.clone()],
                cas: false,
            }
            .encode(&mut out);
        }
        s.write_all(&out).map_err(|e| e.to_string())?;
        let mut misses = Vec::new();
        for k in &keys {
            let reply = loop {
                if let Some(r) =
                    zonecache_proto::parse_response(&mut inbuf).map_err(|e| e.to_string())?
                {
                    break r;
                }
                let mut chunk = [0u8; 65536];
                let n = s.read(&mut chunk).map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err("closed".into());
                }
                inbuf.extend_from_slice(&chunk[..n]);
            };
            let hit = matches!(&reply, zonecache_proto::Response::Values(v) if !v.is_empty());
            if done >= warm {
                gets += 1;
                hits += u64::from(hit);
            }
            if !hit {
                misses.push(k.clone());
            }
            done += 1;
        }
        let mut sets = BytesMut::new();
        for k in misses {
            noreply_set(k, data.clone(), 0).encode(&mut sets);
        }
        s.write_all(&sets).map_err(|e| e.to_string())?;
    }
    Ok((hits, gets))
}

/// `hitratio`: the same Zipf trace against both servers at the same `-m`.
pub fn hitratio(opts: &HitRatioOptions, out_dir: &Path) -> Result<(), String> {
    let mut rows = Vec::new();
    for kind in [Kind::Memcached, Kind::Zonecached] {
        let server = ServerProc::start(kind, opts.servers.memory_mb, opts.servers.threads)?;
        eprintln!(
            "replaying {} requests against {}…",
            opts.requests,
            kind.name()
        );
        let (hits, gets) = replay(&server, opts)?;
        let items = server.stat("curr_items");
        rows.push((
            kind.name(),
            hits as f64 / gets.max(1) as f64,
            items,
            server.stat("evictions"),
        ));
    }
    println!(
        "\nhitratio: Zipf({}) over {} keys, {} % one-hit wonders, {}-byte values, {} requests (first 20 % warm-up), -m {}",
        opts.skew,
        opts.keys,
        opts.one_hit * 100.0,
        opts.value_size,
        opts.requests,
        opts.servers.memory_mb
    );
    let mut table = Table::new(&[
        "server",
        "hit ratio",
        "items held",
        "share of key space",
        "evictions",
    ]);
    for (name, ratio, items, evictions) in &rows {
        table.row(vec![
            name.to_string(),
            format!("{:.4}", ratio),
            items.to_string(),
            format!("{:.1} %", 100.0 * *items as f64 / opts.keys as f64),
            evictions.to_string(),
        ]);
    }
    table.print();
    let base = report::output_base(out_dir, "hitratio");
    let svg = report::plot_bars(
        &base,
        "hit ratio",
        &rows
            .iter()
            .map(|r| (r.0.to_string(), r.1))
            .collect::<Vec<_>>(),
    )?;
    let json = report::write_json(
        &base,
        &serde_json::json!({
            "scenario": "hitratio",
            "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "options": opts,
            "results": rows.iter().map(|(n, r, i, e)| serde_json::json!({
                "server": n, "hit_ratio": r, "items": i, "evictions": e
            })).collect::<Vec<_>>(),
        }),
    )?;
    println!("wrote {} and {}", json.display(), svg.display());
    Ok(())
}
