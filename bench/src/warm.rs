//! The warm-up scenario: a 3-zone × 2-node cluster (`zonecache local`)
//! holding `keys` items under steady realtime load through a front in zone
//! a; node a1 is killed and started again empty, once warming itself from
//! another zone (`--warm-rate`) and once with `--no-warm` (refilled only
//! by read repair, as before warm-up existed). Per second: a1's share of
//! the keys it owns, the clients' p99, errors and hit ratio, and a1's own
//! store hit ratio. Reports the time until a1 holds 95 % of its keys.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;
use zonecache_client::Ring;
use zonecache_tests::{server_binary, stats_at};

use crate::cluster::LocalCluster;
use crate::load::{self, LoadSpec, Mode};
use crate::report::{self, format_number, Table};
use crate::scenarios::preload;
use crate::workload::{key_name, ValueSize, Workload};

/// Settings of the warm-up scenario.
#[derive(Debug, Clone, Serialize)]
pub struct WarmOptions {
    pub memory_mb: usize,
    pub keys: u64,
    pub value_size: usize,
    /// Realtime requests per second through the front (90 % gets).
    pub rate: f64,
    /// The restarted node's `--warm-rate` (keys/s).
    pub warm_rate: u32,
    /// Give up waiting for 95 % after this long.
    pub max_seconds: f64,
    /// Seconds of load measured before the restart.
    pub before_seconds: usize,
}

/// One second of the run.
#[derive(Debug, Clone, Serialize)]
struct Second {
    t: f64,
    /// Percent of the keys a1 owns that it holds.
    held_percent: f64,
    p99_us: f64,
    errors: u64,
    /// Gets that found a value, of all gets (clients' view).
    client_hit_ratio: f64,
    /// a1's own store: hits of its gets in this second.
    a1_hit_ratio: Option<f64>,
}

/// One mode's run.
#[derive(Debug, Clone, Serialize)]
struct ModeRun {
    mode: String,
    p99_before_us: f64,
    seconds: Vec<Second>,
    /// Seconds from the restart until a1 held 95 % of its keys.
    to_95_percent: Option<f64>,
    /// Median and worst per-second p99 until then (or the run's end).
    p99_during_median_us: f64,
    p99_during_max_us: f64,
    errors: u64,
    min_client_hit_ratio: f64,
}

fn stat(stats: &BTreeMap<String, String>, name: &str) -> u64 {
    stats.get(name).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Starts node `id` of `cluster` again, empty, as `zonecache local` did,
/// with `extra` arguments.
fn restart(
    cluster: &LocalCluster,
    id: &str,
    memory_mb: usize,
    extra: &[&str],
) -> Result<Child, String> {
    cluster.signal(id, libc::SIGKILL);
    let node = cluster.node(id);
    std::thread::sleep(Duration::from_millis(200));
    let child = Command::new(server_binary("zonecache")?)
        .args([
            "node",
            "-l",
            "127.0.0.1",
            "-p",
            &node.addr.port().to_string(),
        ])
        .args(["--batch-port", &node.batch_port.to_string()])
        .args(["-m", &memory_mb.to_string(), "--config"])
        .arg(cluster.config_path(id))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("restarting {id}: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(node.addr).is_err() {
        if Instant::now() > deadline {
            return Err(format!("{id} did not come back"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child)
}

fn run_mode(opts: &WarmOptions, warm: bool) -> Result<ModeRun, String> {
    let mode = if warm {
        format!("warm-up ({} keys/s)", opts.warm_rate)
    } else {
        "read repair only".to_string()
    };
    eprintln!(
        "warm: {mode}: starting the cluster and writing {} keys",
        opts.keys
    );
    let cluster = LocalCluster::start(3, 2, opts.memory_mb, "all-minus-one")?;
    let workload = Workload {
        keys: opts.keys,
        value: ValueSize::Fixed(opts.value_size),
        get: 0.9,
        set: 0.1,
        ..Workload::default()
    };
    let front = cluster.node("a2").addr;
    preload(cluster.node("b1").addr, &workload)?;
    let ring = Ring::new(&[("a1".to_string(), 1), ("a2".to_string(), 1)]);
    let owned = (0..opts.keys)
        .filter(|i| ring.owner(&key_name(*i, workload.key_size)) == Some(0))
        .count() as f64;
    // Each second draws other keys (a run's keys follow its seed).
    let seed = std::cell::Cell::new(1u64);
    let second = |target: SocketAddr| {
        seed.set(seed.get() + 1);
        let workload = Workload {
            seed: seed.get(),
            ..workload.clone()
        };
        load::run(
            &workload,
            &LoadSpec {
                target,
                connections: 8,
                threads: 1,
                mode: Mode::Open { rate: opts.rate },
                duration: Duration::from_secs(1),
                warmup: Duration::ZERO,
                max_requests: None,
                timeout: Duration::from_secs(2),
                progress: false,
                tls: None,
            },
        )
    };
    let mut before = Vec::new();
    for _ in 0..opts.before_seconds {
        before.push(second(front).quantile_us(0.99));
    }
    let p99_before_us = report::median(&before);
    let a1 = cluster.node("a1").addr;
    let rate = opts.warm_rate.to_string();
    let extra: Vec<&str> = if warm {
        vec!["--warm-rate", &rate]
    } else {
        vec!["--no-warm"]
    };
    let restarted = Instant::now();
    let mut child = restart(&cluster, "a1", opts.memory_mb, &extra)?;
    let mut seconds = Vec::new();
    let mut to_95 = None;
    let mut last = stats_at(a1);
    while restarted.elapsed().as_secs_f64() < opts.max_seconds {
        let run = second(front);
        let now = stats_at(a1);
        let (hits, misses) = (
            stat(&now, "get_hits").saturating_sub(stat(&last, "get_hits")),
            stat(&now, "get_misses").saturating_sub(stat(&last, "get_misses")),
        );
        let held_percent = 100.0 * stat(&now, "curr_items") as f64 / owned;
        let t = restarted.elapsed().as_secs_f64();
        let gets = run.hits + run.misses;
        seconds.push(Second {
            t,
            held_percent,
            p99_us: run.quantile_us(0.99),
            errors: run.errors.values().sum::<u64>() + run.timeouts,
            client_hit_ratio: run.hits as f64 / gets.max(1) as f64,
            a1_hit_ratio: (hits + misses > 0).then(|| hits as f64 / (hits + misses) as f64),
        });
        last = now;
        if held_percent >= 95.0 && to_95.is_none() {
            to_95 = Some(t);
        }
        if to_95.is_some_and(|at| t > at + 3.0) {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let until = to_95.unwrap_or(f64::MAX);
    let during: Vec<f64> = seconds
        .iter()
        .filter(|s| s.t <= until + 1.0)
        .map(|s| s.p99_us)
        .collect();
    Ok(ModeRun {
        mode,
        p99_before_us,
        to_95_percent: to_95,
        p99_during_median_us: report::median(&during),
        p99_during_max_us: during.iter().copied().fold(0.0, f64::max),
        errors: seconds.iter().map(|s| s.errors).sum(),
        min_client_hit_ratio: seconds
            .iter()
            .map(|s| s.client_hit_ratio)
            .fold(1.0, f64::min),
        seconds,
    })
}

/// Runs the warm-up scenario.
pub fn warm(opts: &WarmOptions, out_dir: &Path) -> Result<(), String> {
    let runs = vec![run_mode(opts, true)?, run_mode(opts, false)?];
    let mut table = Table::new(&[
        "a1 restarted empty",
        "to 95 % of its keys",
        "p99 before µs",
        "p99 during µs (median/max)",
        "client errors",
        "min client hit ratio",
    ]);
    for r in &runs {
        let reached = match r.to_95_percent {
            Some(s) => format!("{s:.1} s"),
            None => format!(
                "not in {:.0} s ({:.1} %)",
                opts.max_seconds,
                r.seconds.last().map_or(0.0, |s| s.held_percent)
            ),
        };
        table.row(vec![
            r.mode.clone(),
            reached,
            format_number(r.p99_before_us),
            format!(
                "{}/{}",
                format_number(r.p99_during_median_us),
                format_number(r.p99_during_max_us)
            ),
            r.errors.to_string(),
            format!("{:.4}", r.min_client_hit_ratio),
        ]);
    }
    println!(
        "\nwarm-up: {} keys of {} B, 3 zones × 2 nodes, {} req/s (90 % gets) through a2; a1 killed and started empty",
        opts.keys, opts.value_size, opts.rate
    );
    table.print();
    let base = report::output_base(out_dir, "warm");
    let series = |f: &dyn Fn(&Second) -> Option<f64>| {
        runs.iter()
            .map(|r| {
                let pts = r
                    .seconds
                    .iter()
                    .filter_map(|s| Some((s.t, f(s)?)))
                    .collect();
                (r.mode.clone(), pts)
            })
            .collect::<Vec<_>>()
    };
    let svg = report::plot_timelines(
        &base,
        &[
            (
                "a1: share of its keys held".into(),
                "% of its keys".into(),
                series(&|s| Some(s.held_percent)),
            ),
            (
                "clients: p99 per second".into(),
                "µs".into(),
                series(&|s| Some(s.p99_us)),
            ),
            (
                "a1: own store hit ratio".into(),
                "hits / gets".into(),
                series(&|s| s.a1_hit_ratio),
            ),
        ],
    )?;
    let json = report::write_json(
        &base,
        &serde_json::json!({ "scenario": "warm", "options": opts, "runs": runs }),
    )?;
    println!("wrote {} and {}", json.display(), svg.display());
    Ok(())
}
