//! `zonecache-bench pinned`: each server with one worker thread pinned to
//! one core, driven by an independent load generator — libmemcached's
//! `memcaslap` — pinned to another, runs alternating memcached and
//! zonecached. So the per-core figure does not depend on our own load
//! generator, and neither server nor generator steals the other's core.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde::Serialize;

use crate::procs::{Kind, ServerProc};
use crate::report::{format_number, median, output_base, write_json, Table};

/// What a pinned comparison runs.
#[derive(Debug, Clone)]
pub struct PinnedOptions {
    /// The core the servers' threads run on.
    pub server_cpu: usize,
    /// The core `memcaslap` runs on.
    pub load_cpu: usize,
    /// memcaslap `-c`: concurrent connections.
    pub connections: usize,
    /// memcaslap `-X`: value size in bytes.
    pub value_size: usize,
    /// memcaslap `-t`: seconds per run.
    pub seconds: u64,
    /// memcached/zonecached pairs of runs.
    pub pairs: usize,
    /// `-m` of both servers.
    pub memory_mb: usize,
}

/// One memcaslap run.
#[derive(Debug, Clone, Serialize)]
struct PinnedRun {
    server: &'static str,
    ops_per_sec: f64,
    /// Server CPU time per operation (µs), from /proc.
    server_cpu_us_per_op: f64,
    /// memcaslap's own summary line.
    summary: String,
}

/// Pins every thread of process `pid` to `cpu`.
fn pin_process(pid: u32, cpu: usize) -> Result<(), String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).map_err(|e| e.to_string())?;
    for task in tasks.flatten() {
        let tid: i32 = task
            .file_name()
            .to_string_lossy()
            .parse()
            .map_err(|_| "bad task id".to_string())?;
        pin_thread(tid, cpu)?;
    }
    Ok(())
}

/// Pins thread `tid` (0: the calling one) to `cpu`.
fn pin_thread(tid: i32, cpu: usize) -> Result<(), String> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes
    // inside it; sched_setaffinity reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(format!(
                "pinning thread {tid} to core {cpu}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// Runs memcaslap against `server` on `opts.load_cpu`.
fn run_memcaslap(server: &ServerProc, opts: &PinnedOptions) -> Result<PinnedRun, String> {
    let cpu_before = server.cpu_seconds();
    let mut command = Command::new("memcaslap");
    command
        .arg("-s")
        .arg(server.addr.to_string())
        .args(["-T", "1"])
        .args(["-c", &opts.connections.to_string()])
        .args(["-X", &opts.value_size.to_string()])
        .args(["-t", &format!("{}s", opts.seconds)]);
    let load_cpu = opts.load_cpu;
    // SAFETY: between fork and exec only sched_setaffinity runs (async-
    // signal-safe, no allocation).
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
            pin_thread(0, load_cpu).map_err(std::io::Error::other)
        });
    }
    let output = command
        .output()
        .map_err(|e| format!("memcaslap: {e} (it comes with Debian's libmemcached-tools)"))?;
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    // The last "Run time: 5.0s Ops: 1211234 TPS: 242246 Net_rate: …" line.
    let summary = text
        .lines()
        .rev()
        .find(|l| l.starts_with("Run time:"))
        .ok_or_else(|| {
            format!(
                "memcaslap printed no summary: {text}{}",
                String::from_utf8_lossy(&output.stderr)
            )
        })?
        .trim()
        .to_string();
    let field = |name: &str| -> Option<f64> {
        let mut words = summary.split_whitespace();
        words.find(|w| *w == name)?;
        words.next()?.trim_end_matches('s').parse().ok()
    };
    let (ops, tps) = (field("Ops:"), field("TPS:"));
    let (Some(ops), Some(tps)) = (ops, tps) else {
        return Err(format!("memcaslap summary not understood: {summary}"));
    };
    let cpu_us = (server.cpu_seconds() - cpu_before) * 1e6;
    Ok(PinnedRun {
        server: server.label,
        ops_per_sec: tps,
        server_cpu_us_per_op: cpu_us / ops.max(1.0),
        summary,
    })
}

/// Starts both servers pinned, runs memcaslap pairs alternating which goes
/// first, prints the table and writes the runs as JSON.
pub fn pinned(opts: &PinnedOptions, out_dir: &Path) -> Result<(), String> {
    let memcached = ServerProc::start(Kind::Memcached, opts.memory_mb, 1)?;
    let zonecached = ServerProc::start(Kind::Zonecached, opts.memory_mb, 1)?;
    for server in [&memcached, &zonecached] {
        pin_process(server.pid(), opts.server_cpu)?;
    }
    eprintln!(
        "pinned: servers on core {}, memcaslap -T 1 -c {} -X {} -t {}s on core {}, {} pairs",
        opts.server_cpu, opts.connections, opts.value_size, opts.seconds, opts.load_cpu, opts.pairs
    );
    let mut runs = Vec::new();
    for pair in 0..opts.pairs {
        let order = match pair % 2 {
            0 => [&memcached, &zonecached],
            _ => [&zonecached, &memcached],
        };
        for server in order {
            let run = run_memcaslap(server, opts)?;
            eprintln!("  {}: {}", run.server, run.summary);
            runs.push(run);
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let of = |name: &str, f: fn(&PinnedRun) -> f64| {
        let values: Vec<f64> = runs.iter().filter(|r| r.server == name).map(f).collect();
        (median(&values), values)
    };
    let mut table = Table::new(&[
        "figure (median of runs)",
        "memcached",
        "zonecached",
        "zc/mc",
        "runs (mc | zc)",
    ]);
    type Figure = fn(&PinnedRun) -> f64;
    let figures: [(&str, Figure); 2] = [
        ("ops/s", |r| r.ops_per_sec),
        ("server CPU µs/op", |r| r.server_cpu_us_per_op),
    ];
    for (name, f) in figures {
        let (m, mv) = of("memcached", f);
        let (z, zv) = of("zonecached", f);
        let list = |v: &[f64]| {
            v.iter()
                .map(|x| format_number(*x))
                .collect::<Vec<_>>()
                .join(" ")
        };
        table.row(vec![
            name.to_string(),
            format_number(m),
            format_number(z),
            format!("{:.2}", z / m.max(1e-9)),
            format!("{} | {}", list(&mv), list(&zv)),
        ]);
    }
    table.print();
    let base = output_base(out_dir, "pinned");
    let path = write_json(&base, &runs)?;
    println!("runs: {}", path.display());
    Ok(())
}
