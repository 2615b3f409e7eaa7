//! The drain scenario, like Slack's per-zone traffic graph: a 3-zone ×
//! 2-node cluster (`zonecache local`) under steady realtime reads through a
//! front in every zone; `zonecache drain c` takes zone c from 0 to 100 % in
//! 1-point steps and back. Per second: each zone's share of the reads its
//! nodes served, zone c's weight, the clients' p99 and errors. Reports how
//! far zone c's share strays from what its weight says, p99 during the
//! drain against steady state, and the time to 100 %.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use zonecache_tests::{server_binary, stats_at};

use crate::cluster::LocalCluster;
use crate::load::{self, LoadSpec, Mode, RunResult};
use crate::report::{self, format_number, Table};
use crate::scenarios::preload;
use crate::workload::{ValueSize, Workload};

/// Settings of the drain scenario.
#[derive(Debug, Clone, Serialize)]
pub struct DrainOptions {
    pub keys: u64,
    /// Reads per second through each zone's front.
    pub rate_per_front: f64,
    /// Milliseconds between 1-point steps.
    pub interval_ms: u64,
    /// Seconds of steady state before and after.
    pub steady_seconds: u64,
}

/// One second of the run.
#[derive(Debug, Clone, Serialize)]
struct Second {
    t: f64,
    /// Zone c's drain weight at the end of the second (percent).
    weight: u8,
    /// Share of the reads served by zones a, b, c (percent).
    shares: [f64; 3],
    p99_us: f64,
    errors: u64,
}

fn hits(cluster: &LocalCluster) -> [u64; 3] {
    let mut out = [0; 3];
    for n in &cluster.nodes {
        let zone = (n.zone.as_bytes()[0] - b'a') as usize;
        let stats = stats_at(n.addr);
        out[zone] += stats
            .get("get_hits")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    out
}

fn weight_of_c(addr: SocketAddr) -> u8 {
    let mut c = zonecache_tests::Conn::open(addr);
    c.send(b"stats zones\r\n");
    let text = String::from_utf8_lossy(&c.read_until(b"END\r\n")).to_string();
    text.lines()
        .find_map(|l| l.strip_prefix("STAT c:drain_percent "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Runs the drain scenario.
pub fn drain(opts: &DrainOptions, out_dir: &Path) -> Result<(), String> {
    eprintln!("drain: starting the cluster and writing {} keys", opts.keys);
    let cluster = LocalCluster::start(3, 2, 64, "all-minus-one")?;
    let workload = Workload {
        keys: opts.keys,
        value: ValueSize::Fixed(100),
        get: 1.0,
        set: 0.0,
        ..Workload::default()
    };
    preload(cluster.node("a1").addr, &workload)?;
    let fronts: Vec<SocketAddr> = ["a1", "b1", "c1"]
        .iter()
        .map(|id| cluster.node(id).addr)
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    // Each load thread's results, one per second.
    let windows: Arc<Mutex<Vec<RunResult>>> = Arc::default();
    let threads: Vec<_> = fronts
        .iter()
        .map(|front| {
            let (stop, windows, workload, front) =
                (stop.clone(), windows.clone(), workload.clone(), *front);
            let rate = opts.rate_per_front;
            std::thread::spawn(move || {
                let mut seed = u64::from(front.port()) << 32;
                while !stop.load(Ordering::Relaxed) {
                    // Each second draws other keys (a run's keys follow its seed).
                    seed += 1;
                    let workload = Workload {
                        seed,
                        ..workload.clone()
                    };
                    let run = load::run(
                        &workload,
                        &LoadSpec {
                            target: front,
                            connections: 4,
                            threads: 1,
                            mode: Mode::Open { rate },
                            duration: Duration::from_secs(1),
                            warmup: Duration::ZERO,
                            max_requests: None,
                            timeout: Duration::from_secs(2),
                            progress: false,
                            tls: None,
                        },
                    );
                    windows.lock().unwrap().push(run);
                }
            })
        })
        .collect();
    let config = cluster.config_path("a1");
    let binary = server_binary("zonecache")?;
    let drain_to = |to: u8| {
        let binary = binary.clone();
        let config = config.clone();
        let interval = opts.interval_ms.to_string();
        std::thread::spawn(move || {
            let started = Instant::now();
            let ok = Command::new(binary)
                .args(["drain", "c", "--to", &to.to_string(), "--step", "1"])
                .args(["--interval-ms", &interval, "--config"])
                .arg(config)
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            (ok, started.elapsed())
        })
    };
    let started = Instant::now();
    let mut seconds = Vec::new();
    let mut last = hits(&cluster);
    let mut sample = |seconds: &mut Vec<Second>| {
        std::thread::sleep(Duration::from_secs(1));
        let now = hits(&cluster);
        let served: Vec<u64> = (0..3).map(|z| now[z] - last[z]).collect();
        last = now;
        let total = served.iter().sum::<u64>().max(1) as f64;
        let runs: Vec<RunResult> = std::mem::take(&mut *windows.lock().unwrap());
        let mut merged = load::new_histogram();
        let mut errors = 0;
        for r in &runs {
            let _ = merged.add(&r.latency);
            errors += r.errors.values().sum::<u64>() + r.timeouts;
        }
        seconds.push(Second {
            t: started.elapsed().as_secs_f64(),
            weight: weight_of_c(fronts[0]),
            shares: [0, 1, 2].map(|z| 100.0 * served[z] as f64 / total),
            p99_us: merged.value_at_quantile(0.99) as f64 / 1000.0,
            errors,
        });
    };
    for _ in 0..opts.steady_seconds {
        sample(&mut seconds);
    }
    let steady = seconds.len();
    let down = drain_to(100);
    while !down.is_finished() {
        sample(&mut seconds);
    }
    let (down_ok, down_took) = down.join().map_err(|_| "drain thread")?;
    let up = drain_to(0);
    while !up.is_finished() {
        sample(&mut seconds);
    }
    let (up_ok, up_took) = up.join().map_err(|_| "undrain thread")?;
    let during = seconds.len();
    for _ in 0..opts.steady_seconds {
        sample(&mut seconds);
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    if !(down_ok && up_ok) {
        return Err("a zonecache drain step failed".into());
    }
    // Zone c's share at weight w should be its steady share × (1 - w).
    let steady_c = report::median(
        &seconds[..steady]
            .iter()
            .map(|s| s.shares[2])
            .collect::<Vec<_>>(),
    );
    let expected = |w: u8| steady_c * (1.0 - f64::from(w) / 100.0);
    let stray: Vec<f64> = seconds[steady..during]
        .iter()
        .map(|s| (s.shares[2] - expected(s.weight)).abs())
        .collect();
    let p99 =
        |range: &[Second]| report::median(&range.iter().map(|s| s.p99_us).collect::<Vec<_>>());
    let p99_steady = p99(&seconds[..steady]);
    let p99_during = seconds[steady..during]
        .iter()
        .map(|s| s.p99_us)
        .fold(0.0, f64::max);
    let errors: u64 = seconds.iter().map(|s| s.errors).sum();
    let mut table = Table::new(&["figure", "value"]);
    let rows = [
        ("zone c share, steady (%)", format!("{steady_c:.1}")),
        (
            "zone c share vs weight: median / max stray (points)",
            format!(
                "{:.2} / {:.2}",
                report::median(&stray),
                stray.iter().copied().fold(0.0, f64::max)
            ),
        ),
        (
            "p99 steady (µs, median of seconds)",
            format_number(p99_steady),
        ),
        (
            "p99 during the drain (µs, median / worst second)",
            format!(
                "{} / {}",
                format_number(p99(&seconds[steady..during])),
                format_number(p99_during)
            ),
        ),
        ("client errors", errors.to_string()),
        (
            "drain 0 → 100 % took (s)",
            format!("{:.1}", down_took.as_secs_f64()),
        ),
        (
            "undrain 100 → 0 % took (s)",
            format!("{:.1}", up_took.as_secs_f64()),
        ),
    ];
    for (k, v) in rows {
        table.row(vec![k.to_string(), v]);
    }
    println!(
        "\ndrain: zone c 0 → 100 % → 0 % in 1-point steps every {} ms; {} reads/s through a front in each zone, {} keys",
        opts.interval_ms, opts.rate_per_front, opts.keys
    );
    table.print();
    let base = report::output_base(out_dir, "drain");
    let line = |f: &dyn Fn(&Second) -> f64| seconds.iter().map(|s| (s.t, f(s))).collect::<Vec<_>>();
    let svg = report::plot_timelines(
        &base,
        &[
            (
                "reads served per zone".into(),
                "% of reads".into(),
                vec![
                    ("zone a".into(), line(&|s| s.shares[0])),
                    ("zone b".into(), line(&|s| s.shares[1])),
                    ("zone c".into(), line(&|s| s.shares[2])),
                    ("zone c expected".into(), line(&|s| expected(s.weight))),
                ],
            ),
            (
                "clients: p99 per second".into(),
                "µs".into(),
                vec![("p99".into(), line(&|s| s.p99_us))],
            ),
        ],
    )?;
    let json = report::write_json(
        &base,
        &serde_json::json!({ "scenario": "drain", "options": opts, "seconds": seconds }),
    )?;
    println!("wrote {} and {}", json.display(), svg.display());
    Ok(())
}
