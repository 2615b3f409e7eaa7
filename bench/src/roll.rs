//! The rolling-restart scenario: a 3-zone × 2-node cluster (`zonecache
//! local`) under steady load from a Rust client in direct mode (90 % gets,
//! 10 % sets over keys written first), while `zonecache roll` restarts
//! every node empty in turn. Per second: the clients' hit ratio, p99 and
//! errors. Reports the hit-ratio dip against steady state, the worst p99,
//! errors, and how long the roll took.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use zonecache_client::{ClientBuilder, ClusterConfig, StoreOptions};
use zonecache_tests::server_binary;

use crate::cluster::LocalCluster;
use crate::load::new_histogram;
use crate::report::{self, format_number, Table};
use crate::scenarios::preload;
use crate::workload::{key_name, ValueSize, Workload};

/// Settings of the rolling-restart scenario.
#[derive(Debug, Clone, Serialize)]
pub struct RollOptions {
    pub keys: u64,
    /// Client requests per second.
    pub rate: f64,
    /// Seconds of steady state before and after.
    pub steady_seconds: u64,
}

#[derive(Default)]
struct Window {
    latencies: Vec<u64>,
    hits: u64,
    misses: u64,
    errors: u64,
    /// Errors by message (the first words of it).
    kinds: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize)]
struct Second {
    t: f64,
    hit_ratio: f64,
    p99_us: f64,
    errors: u64,
    requests: usize,
    error_kinds: std::collections::BTreeMap<String, u64>,
}

/// Runs the rolling-restart scenario.
pub fn roll(opts: &RollOptions, out_dir: &Path) -> Result<(), String> {
    eprintln!("roll: starting the cluster and writing {} keys", opts.keys);
    let cluster = LocalCluster::start(3, 2, 64, "all-minus-one")?;
    let workload = Workload {
        keys: opts.keys,
        value: ValueSize::Fixed(100),
        ..Workload::default()
    };
    preload(cluster.node("a1").addr, &workload)?;
    let config = ClusterConfig::load(&cluster.config_path("a1"))?;
    let window: Arc<Mutex<Window>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let loader = {
        let (window, stop, keys, rate) = (window.clone(), stop.clone(), opts.keys, opts.rate);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let client = ClientBuilder::config(config).build().expect("client");
                let tasks = 16;
                let gap = Duration::from_secs_f64(tasks as f64 / rate);
                let mut handles = Vec::new();
                for t in 0..tasks {
                    let (client, window, stop) = (client.clone(), window.clone(), stop.clone());
                    handles.push(tokio::spawn(async move {
                        let mut next = tokio::time::Instant::now();
                        let mut n: u64 = t;
                        while !stop.load(Ordering::Relaxed) {
                            next += gap;
                            tokio::time::sleep_until(next).await;
                            n = n
                                .wrapping_mul(6364136223846793005)
                                .wrapping_add(1442695040888963407);
                            let key = key_name((n >> 33) % keys, 16);
                            let started = Instant::now();
                            let result = if (n >> 20).is_multiple_of(10) {
                                client
                                    .set(key, vec![b'p'; 100], StoreOptions::default())
                                    .await
                                    .map(|_| None)
                            } else {
                                client.get(key).await.map(|v| Some(v.is_some()))
                            };
                            let us = started.elapsed().as_micros() as u64;
                            let mut w = window.lock().unwrap();
                            w.latencies.push(us);
                            match result {
                                Ok(Some(true)) => w.hits += 1,
                                Ok(Some(false)) => w.misses += 1,
                                Ok(None) => {}
                                Err(e) => {
                                    w.errors += 1;
                                    let kind: String = e.to_string().chars().take(90).collect();
                                    *w.kinds.entry(kind).or_default() += 1;
                                }
                            }
                        }
                    }));
                }
                for h in handles {
                    let _ = h.await;
                }
            });
        })
    };
    let started = Instant::now();
    let mut seconds: Vec<Second> = Vec::new();
    let sample = |seconds: &mut Vec<Second>| {
        std::thread::sleep(Duration::from_secs(1));
        let w = std::mem::take(&mut *window.lock().unwrap());
        let mut h = new_histogram();
        for l in &w.latencies {
            let _ = h.record(l * 1000);
        }
        seconds.push(Second {
            t: started.elapsed().as_secs_f64(),
            hit_ratio: w.hits as f64 / (w.hits + w.misses).max(1) as f64,
            p99_us: h.value_at_quantile(0.99) as f64 / 1000.0,
            errors: w.errors,
            requests: w.latencies.len(),
            error_kinds: w.kinds,
        });
    };
    for _ in 0..opts.steady_seconds {
        sample(&mut seconds);
    }
    let steady = seconds.len();
    let roll_started = Instant::now();
    let mut child = Command::new(server_binary("zonecache")?)
        .args(["roll", "--max-p99-ms", "1000", "--config-dir"])
        .arg(&cluster.config_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("zonecache roll: {e}"))?;
    let out = child.stdout.take().ok_or("no stdout")?;
    let printer = std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            eprintln!("  roll: {line}");
        }
    });
    while child.try_wait().map_err(|e| e.to_string())?.is_none() {
        sample(&mut seconds);
    }
    let roll_seconds = roll_started.elapsed().as_secs_f64();
    let rolled = child.wait().map_err(|e| e.to_string())?.success();
    let _ = printer.join();
    let during = seconds.len();
    for _ in 0..opts.steady_seconds {
        sample(&mut seconds);
    }
    stop.store(true, Ordering::Relaxed);
    let _ = loader.join();
    let med = |v: Vec<f64>| report::median(&v);
    let steady_hit = med(seconds[..steady].iter().map(|s| s.hit_ratio).collect());
    let min_hit = seconds[steady..]
        .iter()
        .map(|s| s.hit_ratio)
        .fold(1.0, f64::min);
    let p99_steady = med(seconds[..steady].iter().map(|s| s.p99_us).collect());
    let p99_worst = seconds[steady..during]
        .iter()
        .map(|s| s.p99_us)
        .fold(0.0, f64::max);
    let errors: u64 = seconds.iter().map(|s| s.errors).sum();
    let requests: usize = seconds.iter().map(|s| s.requests).sum();
    let mut table = Table::new(&["figure", "value"]);
    for (k, v) in [
        ("roll finished", rolled.to_string()),
        ("roll took (s)", format!("{roll_seconds:.1}")),
        ("client requests / errors", format!("{requests} / {errors}")),
        (
            "hit ratio steady / lowest second (dip, points)",
            format!(
                "{:.4} / {:.4} ({:.2})",
                steady_hit,
                min_hit,
                100.0 * (steady_hit - min_hit)
            ),
        ),
        (
            "p99 steady / worst second during the roll (µs)",
            format!(
                "{} / {}",
                format_number(p99_steady),
                format_number(p99_worst)
            ),
        ),
    ] {
        table.row(vec![k.to_string(), v]);
    }
    println!(
        "\nroll: 3 zones × 2 nodes, {} keys, {} req/s from a direct-mode client (90 % gets), every node restarted empty in turn",
        opts.keys, opts.rate
    );
    table.print();
    let mut kinds = std::collections::BTreeMap::<&str, u64>::new();
    for s in &seconds {
        for (k, n) in &s.error_kinds {
            *kinds.entry(k).or_default() += n;
        }
    }
    for (kind, n) in kinds {
        println!("  {n} × {kind}");
    }
    let base = report::output_base(out_dir, "roll");
    let line = |f: &dyn Fn(&Second) -> f64| seconds.iter().map(|s| (s.t, f(s))).collect::<Vec<_>>();
    let svg = report::plot_timelines(
        &base,
        &[
            (
                "clients: hit ratio per second".into(),
                "hits / gets".into(),
                vec![("hit ratio".into(), line(&|s| s.hit_ratio))],
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
        &serde_json::json!({ "scenario": "roll", "options": opts, "seconds": seconds, "roll_seconds": roll_seconds, "rolled": rolled }),
    )?;
    println!("wrote {} and {}", json.display(), svg.display());
    if !rolled {
        return Err("zonecache roll stopped before the end".into());
    }
    Ok(())
}
