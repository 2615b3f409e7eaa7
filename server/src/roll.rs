//! `zonecache roll`: a rolling restart of a `zonecache local` cluster, in
//! the way deployments go out in waves: one node first, then the rest of
//! its zone, then zone by zone. Each node is told it is leaving, stopped,
//! started again empty, and waited for until it is ready (warm) before the
//! next one goes. Meanwhile a probe — a Rust client in direct mode, as an
//! EVCache-style app would run — reads and writes keys of its own; the roll
//! stops on its own, leaving the cluster as it is, when the probe sees more
//! errors or a higher p99 than allowed since the previous node.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zonecache_client::{ClientBuilder, ClusterConfig, NodeAddr, StoreOptions};

use crate::local::{self, LocalState};
use crate::probe;

/// When the roll stops, and how long it waits.
#[derive(Debug, Clone)]
pub struct RollOptions {
    /// Probe errors allowed per restarted node.
    pub max_errors: u64,
    /// Probe p99 allowed per restarted node.
    pub max_p99: Duration,
    /// Between `zc_leave` and SIGTERM.
    pub grace: Duration,
    /// Longest wait for a restarted node to be ready.
    pub ready_within: Duration,
    /// Probe requests per second (0: no probe).
    pub probe_rate: u32,
}

/// What the probe saw since it was last read.
#[derive(Default)]
struct Window {
    latencies_us: Vec<u64>,
    errors: u64,
    hits: u64,
    misses: u64,
    last_error: Option<String>,
}

/// The probe: a direct-mode client at a steady rate on a thread of its own.
struct Probe {
    window: Arc<Mutex<Window>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Keys the probe writes and reads.
const PROBE_KEYS: u64 = 1000;

impl Probe {
    fn start(config: ClusterConfig, rate: u32) -> Result<Probe, String> {
        let window = Arc::new(Mutex::new(Window::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let client = ClientBuilder::config(config)
            .build()
            .map_err(|e| format!("probe client: {e}"))?;
        let (w, s) = (window.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let key = |i: u64| format!("zc:roll:probe:{}", i % PROBE_KEYS);
                for i in 0..PROBE_KEYS {
                    let _ = client.set(key(i), "probe", StoreOptions::default()).await;
                }
                let gap = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
                let n = AtomicU64::new(0);
                let mut next = tokio::time::Instant::now();
                while !s.load(Ordering::Relaxed) {
                    next += gap;
                    tokio::time::sleep_until(next).await;
                    let i = n.fetch_add(1, Ordering::Relaxed).wrapping_mul(7919);
                    let started = Instant::now();
                    let result = match i % 10 {
                        0 => client
                            .set(key(i), "probe", StoreOptions::default())
                            .await
                            .map(|_| None),
                        _ => client.get(key(i)).await.map(Some),
                    };
                    let us = started.elapsed().as_micros() as u64;
                    let mut w = w.lock().unwrap_or_else(|e| e.into_inner());
                    w.latencies_us.push(us);
                    match result {
                        Ok(Some(Some(_))) => w.hits += 1,
                        Ok(Some(None)) => w.misses += 1,
                        Ok(None) => {}
                        Err(e) => {
                            w.errors += 1;
                            w.last_error = Some(e.to_string());
                        }
                    }
                }
            });
        });
        Ok(Probe {
            window,
            stop,
            thread: Some(thread),
        })
    }

    /// What it saw since the last call.
    fn take(&self) -> Window {
        std::mem::take(&mut *self.window.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn p99(latencies: &mut [u64]) -> u64 {
    if latencies.is_empty() {
        return 0;
    }
    latencies.sort_unstable();
    latencies[(latencies.len() - 1) * 99 / 100]
}

/// Restarts every node of the local cluster in `dir` in turn, printing
/// each step. `Err` says why it stopped (the nodes not yet restarted run on).
pub fn roll(dir: &Path, opts: &RollOptions) -> Result<(), String> {
    let mut state = LocalState::load(dir)?;
    let config = ClusterConfig::load(&state.nodes[0].config)?;
    let secret = config
        .cluster_secret()?
        .ok_or("the cluster's config names no secret")?;
    // Readiness reads prove it too: nodes under -Y serve nothing before.
    crate::status::hold_secret(secret.clone());
    let probe = match opts.probe_rate {
        0 => None,
        rate => Some(Probe::start(config, rate)?),
    };
    let check = |what: &str| -> Result<(), String> {
        let Some(probe) = &probe else {
            return Ok(());
        };
        let mut w = probe.take();
        let p99_us = p99(&mut w.latencies_us);
        let gets = w.hits + w.misses;
        println!(
            "  probe {what}: {} requests, {} errors, p99 {p99_us} µs, hit ratio {:.3}",
            w.latencies_us.len(),
            w.errors,
            w.hits as f64 / gets.max(1) as f64
        );
        if w.errors > opts.max_errors {
            return Err(format!(
                "stopped: the probe saw {} errors {what} (allowed {}; last: {})",
                w.errors,
                opts.max_errors,
                w.last_error.unwrap_or_default()
            ));
        }
        if Duration::from_micros(p99_us) > opts.max_p99 {
            return Err(format!(
                "stopped: the probe's p99 {what} was {p99_us} µs (allowed {} µs)",
                opts.max_p99.as_micros()
            ));
        }
        Ok(())
    };
    std::thread::sleep(Duration::from_secs(1));
    check("before the roll")?;
    let started = Instant::now();
    println!("rolling {} nodes", state.nodes.len());
    let count = state.nodes.len();
    for i in 0..count {
        let node = state.nodes[i].clone();
        let addr = NodeAddr::from(std::net::SocketAddr::from(([127, 0, 0, 1], node.port)));
        let wave = if i == 0 { " (the first, alone)" } else { "" };
        let at = || format!("[{:.2} s]", started.elapsed().as_secs_f64());
        println!(
            "{} {} ({}/{count}, zone {}){wave}: leaving",
            at(),
            node.id,
            i + 1,
            node.zone
        );
        if let Err(e) = probe::leave(&addr, &secret, opts.grace) {
            println!("  leave: {e} (stopping it anyway)");
        }
        println!("{} {}: stopping", at(), node.id);
        local::stop(node.pid, None, Duration::from_secs(10));
        println!("{} {}: stopped; starting it empty", at(), node.id);
        // It outlives this tool: its output goes to a file, not our pipes.
        let log = dir.join(format!("{}.log", node.id));
        let mut child = local::spawn(&state.binary, &node, Some(&log))?;
        if !local::wait_listening(&node, &mut child, Duration::from_secs(20)) {
            return Err(format!("stopped: {} did not start again", node.id));
        }
        state.nodes[i].pid = child.id();
        state.save(dir)?;
        let restarted = Instant::now();
        loop {
            match probe::ready_as(&addr, false) {
                Ok(()) => break,
                Err(why) if restarted.elapsed() > opts.ready_within => {
                    return Err(format!(
                        "stopped: {} not ready after {:?}: {why}",
                        node.id, opts.ready_within
                    ));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        let copied = crate::status::Figures::read(&addr)
            .and_then(|f| f.stats.get("warm_keys").cloned())
            .unwrap_or_default();
        println!(
            "{} {}: restarted (pid {}, log {}), ready in {:.1} s, {copied} keys copied from other zones",
            at(),
            node.id,
            child.id(),
            log.display(),
            restarted.elapsed().as_secs_f64()
        );
        // Reaped by init once this tool exits; `zonecache local` stops it.
        drop(child);
        check(&format!("while {} restarted", node.id))?;
    }
    println!(
        "rolled {count} nodes in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
