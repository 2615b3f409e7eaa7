//! `zonecache`: the operator's tool. `zonecache local` starts a whole
//! cluster on loopback — zones × nodes, each its own `zonecached` process —
//! prints every node's zone, address and pid, and stops them all on Ctrl-C.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "zonecache", about = "Operate a zonecache cluster")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one node (what `zonecached` does; used by `local`).
    Node(zonecache_server::config::Config),
    /// Start a local multi-zone cluster on 127.0.0.1 (no config file needed).
    Local {
        /// Number of zones.
        #[arg(long, default_value_t = 3)]
        zones: usize,
        /// Nodes per zone.
        #[arg(long, default_value_t = 2)]
        nodes: usize,
        /// Port of the first node; the others follow, then the nodes' batch
        /// ports in the same order.
        #[arg(long, default_value_t = 11211)]
        base_port: u16,
        /// `-m` of every node (MiB).
        #[arg(long, default_value_t = 64)]
        memory: usize,
        /// Write policy: one, quorum, all-minus-one, all.
        #[arg(long, default_value = "all-minus-one")]
        write_policy: String,
        /// Where the generated configs go (default: a temporary folder).
        #[arg(long)]
        config_dir: Option<PathBuf>,
    },
}

const ZONE_NAMES: [&str; 8] = ["a", "b", "c", "d", "e", "f", "g", "h"];

fn main() -> std::process::ExitCode {
    let (zones, nodes, base_port, memory, write_policy, config_dir) = match Cli::parse().command {
        Cmd::Node(config) => return zonecache_server::node::run_node(config),
        Cmd::Local {
            zones,
            nodes,
            base_port,
            memory,
            write_policy,
            config_dir,
        } => (zones, nodes, base_port, memory, write_policy, config_dir),
    };
    match local(zones, nodes, base_port, memory, &write_policy, config_dir) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("zonecache: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The config file for node `me` of a zones × nodes cluster.
fn cluster_config(zones: usize, nodes: usize, base_port: u16, me: &str, policy: &str) -> String {
    let mut text = format!("node = \"{me}\"\nwrite_policy = \"{policy}\"\n");
    for (z, name) in ZONE_NAMES.iter().enumerate().take(zones) {
        let list: Vec<String> = (0..nodes)
            .map(|n| {
                let port = base_port as usize + z * nodes + n;
                let batch = port + zones * nodes;
                format!(
                    "{{ id = \"{name}{}\", addr = \"127.0.0.1:{port}\", batch_addr = \"127.0.0.1:{batch}\" }}",
                    n + 1
                )
            })
            .collect();
        text.push_str(&format!(
            "\n[[zones]]\nname = \"{name}\"\nnodes = [{}]\n",
            list.join(", ")
        ));
    }
    text
}

fn local(
    zones: usize,
    nodes: usize,
    base_port: u16,
    memory: usize,
    policy: &str,
    dir: Option<PathBuf>,
) -> Result<(), String> {
    if zones == 0 || zones > ZONE_NAMES.len() || nodes == 0 {
        return Err(format!(
            "zones must be 1 to {}, nodes at least 1",
            ZONE_NAMES.len()
        ));
    }
    if base_port as usize + 2 * zones * nodes > 65535 {
        return Err("ports beyond 65535: choose a lower --base-port".into());
    }
    let dir = dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("zonecache-local-{}", std::process::id()))
    });
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // Every node is this same binary running `zonecache node`.
    let binary = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut children: Vec<(String, u16, Child)> = Vec::new();
    for (z, name) in ZONE_NAMES.iter().enumerate().take(zones) {
        for n in 0..nodes {
            let id = format!("{name}{}", n + 1);
            let port = base_port + (z * nodes + n) as u16;
            let batch_port = port + (zones * nodes) as u16;
            let path = dir.join(format!("{id}.toml"));
            std::fs::write(&path, cluster_config(zones, nodes, base_port, &id, policy))
                .map_err(|e| e.to_string())?;
            let child = Command::new(&binary)
                .args([
                    "node",
                    "-l",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "--batch-port",
                    &batch_port.to_string(),
                    "-m",
                    &memory.to_string(),
                    "--config",
                ])
                .arg(&path)
                .stdin(Stdio::null())
                .spawn()
                .map_err(|e| format!("starting {id}: {e}"))?;
            children.push((id, port, child));
        }
    }
    // Wait until every node listens (bounded), then report.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut failed = None;
    'nodes: for (id, port, child) in &mut children {
        while std::net::TcpStream::connect(("127.0.0.1", *port)).is_err() {
            if Instant::now() > deadline || matches!(child.try_wait(), Ok(Some(_))) {
                failed = Some(format!(
                    "node {id} did not start on port {port} (port taken? try --base-port)"
                ));
                break 'nodes;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    if let Some(e) = failed {
        stop(&mut children);
        return Err(e);
    }
    println!("zone  node  address          batch port  pid");
    for (id, port, child) in &children {
        println!(
            "{:<5} {:<5} 127.0.0.1:{:<6} {:<11} {}",
            &id[..1],
            id,
            port,
            *port as usize + zones * nodes,
            child.id()
        );
    }
    println!("configs in {}; Ctrl-C stops every node", dir.display());
    wait_for_ctrl_c();
    stop(&mut children);
    println!("stopped {} nodes", children.len());
    Ok(())
}

fn stop(children: &mut [(String, u16, Child)]) {
    for (_, _, c) in children.iter_mut() {
        // SIGTERM for a graceful stop, then wait.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    }
    for (_, _, c) in children.iter_mut() {
        let _ = c.wait();
    }
}

fn wait_for_ctrl_c() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("signal handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    });
}
