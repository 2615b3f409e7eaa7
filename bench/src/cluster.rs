//! The cluster scenario: a 3-zone × 2-node cluster started with
//! `zonecache local`, against a single node, on one machine. It reports
//! reads through a front node vs straight to the key's owner vs a single
//! node, sets under the write policy vs a single node, and realtime reads
//! while the home owner is hung (SIGSTOP), before and after it is marked down.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use zonecache_client::Ring;

use crate::load::{self, LoadSpec, Mode, RunResult};
use crate::procs::{Kind, ServerProc};
use crate::report::{self, format_number, median, Table};
use crate::scenarios::preload;
use crate::workload::{key_name, Workload};
use zonecache_tests::{free_port_range, server_binary};

/// A node of the local cluster, as `zonecache local` printed it.
#[derive(Debug, Clone, Serialize)]
pub struct LocalNode {
    pub zone: String,
    pub id: String,
    pub addr: SocketAddr,
    /// The node's batch-lane port.
    pub batch_port: u16,
    pub pid: u32,
}

/// A running `zonecache local`; stopping it stops every node.
pub struct LocalCluster {
    child: Child,
    pub nodes: Vec<LocalNode>,
    /// Where the nodes' configs are (clients read the same files).
    pub config_dir: PathBuf,
}

impl LocalCluster {
    /// Starts `zones` × `nodes` with `-m memory_mb` and `policy`.
    pub fn start(
        zones: usize,
        nodes: usize,
        memory_mb: usize,
        policy: &str,
    ) -> Result<LocalCluster, String> {
        // Realtime ports, then as many batch ports and metrics ports.
        let base = free_port_range(3 * (zones * nodes) as u16)?;
        let config_dir =
            std::env::temp_dir().join(format!("zc-bench-local-{}-{base}", std::process::id()));
        let mut child = Command::new(server_binary("zonecache")?)
            .args([
                "local",
                "--zones",
                &zones.to_string(),
                "--nodes",
                &nodes.to_string(),
            ])
            .args([
                "--base-port",
                &base.to_string(),
                "--memory",
                &memory_mb.to_string(),
            ])
            .args(["--write-policy", policy])
            .arg("--config-dir")
            .arg(&config_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start zonecache local: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut found = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.map_err(|e| e.to_string())?;
            if line.starts_with("configs in") {
                break;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            if let [zone, id, addr, batch, _metrics, pid] = words[..] {
                if let (Ok(addr), Ok(batch_port), Ok(pid)) =
                    (addr.parse(), batch.parse(), pid.parse())
                {
                    found.push(LocalNode {
                        zone: zone.into(),
                        id: id.into(),
                        addr,
                        batch_port,
                        pid,
                    });
                }
            }
        }
        let started = found.len();
        let cluster = LocalCluster {
            child,
            nodes: found,
            config_dir,
        };
        if started != zones * nodes {
            // Dropping it stops `zonecache local` with SIGTERM, which stops
            // the nodes it did start (a SIGKILL would leave them running).
            return Err("zonecache local did not start every node".into());
        }
        Ok(cluster)
    }

    /// The node with this id.
    pub fn node(&self, id: &str) -> &LocalNode {
        self.nodes.iter().find(|n| n.id == id).expect("node id")
    }

    /// The config file of node `id`.
    pub fn config_path(&self, id: &str) -> PathBuf {
        self.config_dir.join(format!("{id}.toml"))
    }

    /// Sends a signal to one node.
    pub fn signal(&self, id: &str, signal: i32) {
        // SAFETY: kill has no memory preconditions.
        unsafe { libc::kill(self.node(id).pid as i32, signal) };
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for n in &self.nodes {
            // A stopped node must run again to stop gracefully.
            // SAFETY: kill has no memory preconditions.
            unsafe { libc::kill(n.pid as i32, libc::SIGCONT) };
        }
        // SAFETY: as above.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
    }
}

/// Settings of the cluster scenario.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterOptions {
    pub memory_mb: usize,
    pub keys: u64,
    pub value_size: usize,
    pub load: LoadSpec,
    pub pairs: usize,
    /// Rate of the realtime reads during the hung-owner phase.
    pub hung_rate: f64,
}

#[derive(Serialize)]
struct Figure {
    name: String,
    ops_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    errors: u64,
    timeouts: u64,
}

fn figure(name: &str, runs: &[RunResult]) -> Figure {
    let med = |f: &dyn Fn(&RunResult) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
    Figure {
        name: name.into(),
        ops_per_sec: med(&|r| r.ops_per_sec()),
        p50_us: med(&|r| r.quantile_us(0.5)),
        p99_us: med(&|r| r.quantile_us(0.99)),
        errors: runs.iter().map(|r| r.errors.values().sum::<u64>()).sum(),
        timeouts: runs.iter().map(|r| r.timeouts).sum(),
    }
}

/// Runs the cluster scenario.
pub fn cluster(opts: &ClusterOptions, out_dir: &Path) -> Result<(), String> {
    let cluster = LocalCluster::start(3, 2, opts.memory_mb, "all-minus-one")?;
    let single = ServerProc::start(Kind::Zonecached, opts.memory_mb, 1)?;
    // Keys whose owner in zone a is a1: a1 is "the owner", a2 "a front".
    let ring = Ring::new(&[("a1".to_string(), 1), ("a2".to_string(), 1)]);
    let owned: Vec<Bytes> = (0..opts.keys * 3)
        .map(|i| key_name(i, 16))
        .filter(|k| ring.owner(k) == Some(0))
        .take(opts.keys as usize)
        .collect();
    let get_only = Workload {
        keys: owned.len() as u64,
        value: crate::workload::ValueSize::Fixed(opts.value_size),
        get: 1.0,
        set: 0.0,
        key_list: Some(Arc::new(owned)),
        ..Workload::default()
    };
    let set_only = Workload {
        get: 0.0,
        set: 1.0,
        ..get_only.clone()
    };
    let owner = cluster.node("a1").addr;
    let front = cluster.node("a2").addr;
    preload(front, &get_only)?;
    preload(single.addr, &get_only)?;
    std::thread::sleep(Duration::from_millis(300));

    eprintln!("cluster: reads straight to the owner, through a front, and from a single node");
    let targets = [owner, front, single.addr];
    let mut reads: Vec<Vec<RunResult>> = vec![Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..opts.pairs {
        for (i, t) in targets.iter().enumerate() {
            reads[i].push(load::run(
                &get_only,
                &LoadSpec {
                    target: *t,
                    ..opts.load.clone()
                },
            ));
        }
    }
    eprintln!("cluster: sets through a front (all-minus-one) and to a single node");
    let mut sets: Vec<Vec<RunResult>> = vec![Vec::new(), Vec::new()];
    for _ in 0..opts.pairs {
        for (i, t) in [front, single.addr].iter().enumerate() {
            sets[i].push(load::run(
                &set_only,
                &LoadSpec {
                    target: *t,
                    ..opts.load.clone()
                },
            ));
        }
    }

    eprintln!(
        "cluster: realtime reads at {} req/s with the home owner hung",
        opts.hung_rate
    );
    let realtime = |seconds: f64| {
        load::run(
            &get_only,
            &LoadSpec {
                target: front,
                mode: Mode::Open {
                    rate: opts.hung_rate,
                },
                duration: Duration::from_secs_f64(seconds),
                warmup: Duration::ZERO,
                connections: 8,
                ..opts.load.clone()
            },
        )
    };
    let healthy = realtime(3.0);
    cluster.signal("a1", libc::SIGSTOP);
    let during = realtime(0.5);
    let after = realtime(3.0);
    cluster.signal("a1", libc::SIGCONT);

    let figures = vec![
        figure("get straight to the owner", &reads[0]),
        figure("get through a front node", &reads[1]),
        figure("get from a single node", &reads[2]),
        figure("set through a front (all-minus-one)", &sets[0]),
        figure("set to a single node", &sets[1]),
        figure("realtime get, healthy", std::slice::from_ref(&healthy)),
        figure(
            "realtime get, first 0.5 s after SIGSTOP",
            std::slice::from_ref(&during),
        ),
        figure(
            "realtime get, after mark-down",
            std::slice::from_ref(&after),
        ),
    ];
    let mut table = Table::new(&["figure", "ops/s", "p50 µs", "p99 µs", "errors", "timeouts"]);
    for f in &figures {
        table.row(vec![
            f.name.clone(),
            format_number(f.ops_per_sec),
            format_number(f.p50_us),
            format_number(f.p99_us),
            f.errors.to_string(),
            f.timeouts.to_string(),
        ]);
    }
    println!(
        "\ncluster: 3 zones × 2 nodes + 1 single node, all on this machine's {} cores with the load generator",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    table.print();
    let ratio = |a: usize, b: usize| figures[a].p99_us / figures[b].p99_us.max(1e-9);
    println!("\nfront p99 / direct p99: {:.2} (goal ≤ 1.5)", ratio(1, 0));
    println!(
        "set all-minus-one p99 / single-node p99: {:.2}",
        ratio(3, 4)
    );
    println!(
        "after mark-down p99 / healthy p99: {:.2} (goal ≤ 1.5)",
        ratio(7, 5)
    );

    let base = report::output_base(out_dir, "cluster");
    let svg = report::plot_bars(
        &base,
        "p99 µs",
        &[
            ("direct".into(), figures[0].p99_us),
            ("front".into(), figures[1].p99_us),
            ("single".into(), figures[2].p99_us),
            ("hung: after".into(), figures[7].p99_us),
        ],
    )?;
    let json = report::write_json(
        &base,
        &serde_json::json!({
            "scenario": "cluster",
            "options": opts,
            "nodes": cluster.nodes,
            "figures": figures,
        }),
    )?;
    println!("wrote {} and {}", json.display(), svg.display());
    Ok(())
}
