//! `zonecache`: the operator's tool. `zonecache local` starts a whole
//! cluster on loopback — zones × nodes, each its own `zonecached` process —
//! prints every node's zone, address and pid, and stops them all on Ctrl-C.
//! `zonecache status` shows every node and exits non-zero when one is down
//! or the cluster is degraded; `drain`/`undrain` move a zone's reads;
//! `ready`/`leave` are a node's readiness probe and preStop hook.

use std::path::PathBuf;
use std::process::Child;
use std::time::Duration;

use clap::{Parser, Subcommand};
use zonecache_client::{ClusterConfig, ClusterSecret, WritePolicy};
use zonecache_server::local::{spawn, wait_listening, LocalNode, LocalState};

#[derive(Parser)]
#[command(name = "zonecache", about = "Operate a zonecache cluster")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one node (what `zonecached` does; used by `local`).
    Node(Box<zonecache_server::config::Config>),
    /// Start a local multi-zone cluster on 127.0.0.1 (no config file needed).
    Local {
        /// Number of zones.
        #[arg(long, default_value_t = 3)]
        zones: usize,
        /// Nodes per zone.
        #[arg(long, default_value_t = 2)]
        nodes: usize,
        /// Port of the first node; the others follow, then the nodes' batch
        /// ports in the same order, then their `/metrics` ports (which
        /// `deploy/prometheus/prometheus.yml` scrapes).
        #[arg(long, default_value_t = 11211)]
        base_port: u16,
        /// Serve TLS too: a CA and a node certificate are made in the
        /// config dir (`ca.pem` is what clients trust) and every node gets
        /// a TLS port after its other ports.
        #[arg(long)]
        tls: bool,
        /// Require memcached's text sign-in (`-Y`): a user `zonecache` with
        /// a new password, in the config dir's file `auth`.
        #[arg(long)]
        auth: bool,
        /// Serve no `/metrics`, `/healthz` and `/readyz`.
        #[arg(long)]
        no_metrics: bool,
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
    /// One row per node: zone, address, up/down (also as its peers see
    /// it), items, memory, hit ratio and ops/s over the sample, whether it
    /// serves reads, queued hints, replication failures. Exit code 0:
    /// healthy, 1: a node is down, 2: degraded.
    Status {
        #[command(flatten)]
        nodes: NodesArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Refresh every sample until interrupted.
        #[arg(long)]
        watch: bool,
        /// Milliseconds between the two readings that rates and hit ratio
        /// are computed over.
        #[arg(long, default_value_t = 1000)]
        sample_ms: u64,
        /// Also list each node's hottest keys (5 unless a number is given).
        #[arg(long, num_args = 0..=1, default_missing_value = "5", value_name = "N")]
        hot: Option<usize>,
    },
    /// Move a zone's reads to the other zones in steps (the zone still
    /// takes writes). Ctrl-C holds the weight where it is.
    Drain {
        /// The zone to drain.
        zone: String,
        /// Final weight: percent of the zone's reads moved away.
        #[arg(long, value_parser = clap::value_parser!(u8).range(0..=100))]
        to: u8,
        /// Percentage points per step.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=100))]
        step: u8,
        /// Milliseconds between steps.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
        #[command(flatten)]
        nodes: NodesArgs,
    },
    /// Restart every node of a `zonecache local` cluster in turn, empty —
    /// one node first, then zone by zone — each warmed before the next;
    /// stops on its own when its probe client sees errors or a slow p99.
    Roll {
        /// The cluster's config directory (`zonecache local --config-dir`).
        #[arg(long)]
        config_dir: PathBuf,
        /// Probe errors allowed per restarted node.
        #[arg(long, default_value_t = 0)]
        max_errors: u64,
        /// Probe p99 allowed per restarted node (milliseconds).
        #[arg(long, default_value_t = 100)]
        max_p99_ms: u64,
        /// Milliseconds between telling a node it leaves and stopping it.
        #[arg(long, default_value_t = 500)]
        grace_ms: u64,
        /// Longest wait for a restarted node to be ready (seconds).
        #[arg(long, default_value_t = 300)]
        ready_timeout_s: u64,
        /// Probe requests per second (0: no probe).
        #[arg(long, default_value_t = 200)]
        probe_rate: u32,
    },
    /// Exit 0 when the node is ready for clients (answers, not warming,
    /// serves reads, not leaving), 1 otherwise: a readiness probe. With
    /// --config or --secret-file it proves the cluster secret first (a
    /// node under -Y serves nothing before sign-in).
    Ready {
        /// The node (host:port).
        #[arg(default_value = "127.0.0.1:11211")]
        addr: String,
        #[command(flatten)]
        credential: SecretArgs,
    },
    /// Tell a node it is about to stop: its reads go to other zones from
    /// now on; then wait for requests in flight. A preStop hook.
    Leave {
        /// The node (host:port).
        #[arg(default_value = "127.0.0.1:11211")]
        addr: String,
        /// Milliseconds to wait after telling it.
        #[arg(long, default_value_t = 3000)]
        grace_ms: u64,
        #[command(flatten)]
        credential: SecretArgs,
    },
    /// Give a drained zone all its reads back at once.
    Undrain {
        zone: String,
        #[command(flatten)]
        nodes: NodesArgs,
    },
}

/// Which cluster: its config file, or nodes to ask.
#[derive(clap::Args)]
struct NodesArgs {
    /// A cluster config file (any node's); its secret is the credential
    /// for commands that need one.
    #[arg(long, conflicts_with = "seeds")]
    config: Option<PathBuf>,
    /// Nodes to ask (host:port, comma-separated); the others are learned
    /// from them. Default: 127.0.0.1:11211.
    #[arg(long, value_delimiter = ',')]
    seeds: Vec<String>,
    /// The cluster secret's file, with `--seeds` (for `drain`).
    #[arg(long, conflicts_with = "config")]
    secret_file: Option<PathBuf>,
}

/// The cluster secret a command that steers nodes proves (as peers do).
#[derive(clap::Args)]
struct SecretArgs {
    /// A cluster config file naming the secret (any node's).
    #[arg(long, conflicts_with = "secret_file")]
    config: Option<PathBuf>,
    /// The cluster secret's file.
    #[arg(long)]
    secret_file: Option<PathBuf>,
}

impl SecretArgs {
    fn secret(&self) -> Result<ClusterSecret, String> {
        let secret = match (&self.config, &self.secret_file) {
            (Some(config), _) => ClusterConfig::load(config)?.cluster_secret()?,
            (None, Some(file)) => Some(ClusterSecret::read(file)?),
            (None, None) => None,
        };
        secret.ok_or_else(|| {
            "nodes take this only from a holder of the cluster secret: \
             give --config (a config naming it) or --secret-file"
                .into()
        })
    }
}

impl NodesArgs {
    fn secret(&self) -> Result<ClusterSecret, String> {
        SecretArgs {
            config: self.config.clone(),
            secret_file: self.secret_file.clone(),
        }
        .secret()
    }

    fn source(self) -> Result<zonecache_server::status::Source, String> {
        use zonecache_server::status::Source;
        // With the secret at hand, reads prove it too (nodes under -Y
        // serve nothing before).
        if let Ok(secret) = self.secret() {
            zonecache_server::status::hold_secret(secret);
        }
        if let Some(path) = self.config {
            return Ok(Source::Config(Box::new(ClusterConfig::load(&path)?)));
        }
        let seeds = match self.seeds.is_empty() {
            true => vec!["127.0.0.1:11211".to_string()],
            false => self.seeds,
        };
        let addrs = seeds
            .iter()
            .map(|s| {
                std::net::ToSocketAddrs::to_socket_addrs(s)
                    .ok()
                    .and_then(|mut a| a.next())
                    .ok_or_else(|| format!("{s}: not a host:port"))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Source::Seeds(addrs))
    }
}

fn main() -> std::process::ExitCode {
    let (zones, nodes, ports, memory, write_policy, config_dir) = match Cli::parse().command {
        Cmd::Node(config) => return zonecache_server::node::run_node(*config),
        Cmd::Status {
            nodes,
            json,
            watch,
            sample_ms,
            hot,
        } => {
            let sample = Duration::from_millis(sample_ms);
            return status(nodes, json, watch, sample, hot.unwrap_or(0));
        }
        Cmd::Drain {
            zone,
            to,
            step,
            interval_ms,
            nodes,
        } => return drain(nodes, &zone, to, step, Duration::from_millis(interval_ms)),
        Cmd::Undrain { zone, nodes } => return drain(nodes, &zone, 0, 100, Duration::ZERO),
        Cmd::Roll {
            config_dir,
            max_errors,
            max_p99_ms,
            grace_ms,
            ready_timeout_s,
            probe_rate,
        } => {
            let opts = zonecache_server::roll::RollOptions {
                max_errors,
                max_p99: Duration::from_millis(max_p99_ms),
                grace: Duration::from_millis(grace_ms),
                ready_within: Duration::from_secs(ready_timeout_s),
                probe_rate,
            };
            return match zonecache_server::roll::roll(&config_dir, &opts) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("zonecache: {e}");
                    std::process::ExitCode::FAILURE
                }
            };
        }
        Cmd::Ready { addr, credential } => {
            let asked = credential.config.is_some() || credential.secret_file.is_some();
            match credential.secret() {
                Ok(secret) => zonecache_server::status::hold_secret(secret),
                Err(e) if asked => {
                    eprintln!("zonecache: {e}");
                    return std::process::ExitCode::from(3);
                }
                Err(_) => {}
            }
            return probe(&addr, zonecache_server::probe::ready);
        }
        Cmd::Leave {
            addr,
            grace_ms,
            credential,
        } => {
            let grace = Duration::from_millis(grace_ms);
            let secret = match credential.secret() {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("zonecache: {e}");
                    return std::process::ExitCode::from(3);
                }
            };
            return probe(&addr, |a| zonecache_server::probe::leave(a, &secret, grace));
        }
        Cmd::Local {
            zones,
            nodes,
            base_port,
            no_metrics,
            tls,
            auth,
            memory,
            write_policy,
            config_dir,
        } => (
            zones,
            nodes,
            (base_port, !no_metrics, tls, auth),
            memory,
            write_policy,
            config_dir,
        ),
    };
    match local(zones, nodes, ports, memory, &write_policy, config_dir) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("zonecache: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `zonecache status`: prints the report (again and again with `watch`)
/// and exits with its code.
fn status(
    nodes: NodesArgs,
    json: bool,
    watch: bool,
    sample: Duration,
    hot: usize,
) -> std::process::ExitCode {
    use zonecache_server::status::{report, table};
    let source = match nodes.source() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("zonecache: {e}");
            return std::process::ExitCode::from(3);
        }
    };
    loop {
        let r = match report(&source, sample, hot) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("zonecache: {e}");
                return std::process::ExitCode::from(3);
            }
        };
        let text = match json {
            true => serde_json::to_string_pretty(&r).expect("a report is plain data") + "\n",
            false => table(&r),
        };
        if watch {
            // Clear the screen and print at the top.
            print!("\x1b[2J\x1b[H");
        }
        print!("{text}");
        if !watch {
            return std::process::ExitCode::from(r.exit_code);
        }
    }
}

/// `zonecache ready` / `leave`: exit 0 on success, 1 with the reason, 3
/// on a bad address.
fn probe(
    addr: &str,
    run: impl FnOnce(&zonecache_client::NodeAddr) -> Result<(), String>,
) -> std::process::ExitCode {
    let addr = match zonecache_client::NodeAddr::parse(addr) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("zonecache: {e}");
            return std::process::ExitCode::from(3);
        }
    };
    match run(&addr) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("zonecache: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `zonecache drain` / `undrain`: exit 0 when every node took the final
/// weight, 1 otherwise, 3 on bad arguments.
fn drain(
    nodes: NodesArgs,
    zone: &str,
    to: u8,
    step: u8,
    interval: Duration,
) -> std::process::ExitCode {
    let source = match nodes
        .secret()
        .and_then(|secret| Ok((nodes.source()?, secret)))
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("zonecache: {e}");
            return std::process::ExitCode::from(3);
        }
    };
    match zonecache_server::drain::drain(&source.0, &source.1, zone, to, step, interval) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("zonecache: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn local(
    zones: usize,
    nodes: usize,
    (base_port, metrics, tls, auth): (u16, bool, bool, bool),
    memory: usize,
    policy: &str,
    dir: Option<PathBuf>,
) -> Result<(), String> {
    let count = zones * nodes;
    // Realtime, batch, then metrics and TLS ports: a block of `count` each.
    let blocks = 2 + usize::from(metrics) + usize::from(tls);
    if base_port as usize + blocks * count > 65_536 {
        return Err("ports beyond 65535: choose a lower base port".into());
    }
    let mut config = ClusterConfig::local(zones, nodes, base_port)?;
    config.write_policy = WritePolicy::from_name(policy)?;
    let dir = dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("zonecache-local-{}", std::process::id()))
    });
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // The cluster secret goes in a file only this user reads; the
    // configs name it.
    let secret = config.secret.take().expect("a local cluster has a secret");
    write_private(&dir.join("secret"), &secret)?;
    config.secret_file = Some("secret".into());
    let password = auth.then(ClusterSecret::generate);
    if let Some(password) = &password {
        write_private(&dir.join("auth"), &format!("zonecache:{password}\n"))?;
    }
    let identity = match tls {
        true => Some(zonecache_server::local::make_tls_identity(&dir)?),
        false => None,
    };
    // After every other port.
    let tls_port = |i: usize| base_port + ((blocks - 1) * count + i) as u16;
    if tls {
        // Peer links (and direct-mode clients of these configs) speak TLS
        // to the nodes' TLS ports, checking them against the local CA.
        let all = config.zones.iter_mut().flat_map(|z| z.nodes.iter_mut());
        for (i, node) in all.enumerate() {
            node.tls_addr = Some(node.addr.with_port(tls_port(i)));
        }
        config.peer_tls = Some(zonecache_client::PeerTls {
            ca: "ca.pem".into(),
            cert: Some("node.pem".into()),
            key: Some("node.key".into()),
        });
    }
    // Every node is this same binary running `zonecache node`.
    let binary = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut state = LocalState {
        binary,
        nodes: Vec::new(),
    };
    let mut children: Vec<Child> = Vec::new();
    for zone in &config.zones {
        for node in &zone.nodes {
            let path = dir.join(format!("{}.toml", node.id));
            std::fs::write(&path, config.file_for(&node.id)).map_err(|e| e.to_string())?;
            let mut local = LocalNode {
                id: node.id.clone(),
                zone: zone.name.clone(),
                port: node.addr.port(),
                batch_port: node
                    .batch_addr
                    .as_ref()
                    .expect("local nodes have a batch port")
                    .port(),
                metrics_port: match metrics {
                    // After the realtime and batch ports.
                    true => base_port + (2 * count + state.nodes.len()) as u16,
                    false => 0,
                },
                memory_mb: memory,
                config: path,
                pid: 0,
                tls_port: match tls {
                    true => tls_port(state.nodes.len()),
                    false => 0,
                },
                tls_cert: identity.as_ref().map(|(cert, _)| cert.clone()),
                tls_key: identity.as_ref().map(|(_, key)| key.clone()),
                auth_file: auth.then(|| dir.join("auth")),
            };
            let child = spawn(&state.binary, &local, None)?;
            local.pid = child.id();
            state.nodes.push(local);
            children.push(child);
        }
    }
    // Wait until every node listens (bounded), then report.
    let failed = state
        .nodes
        .iter()
        .zip(children.iter_mut())
        .find_map(|(node, child)| {
            (!wait_listening(node, child, Duration::from_secs(20))).then(|| {
                format!(
                    "node {} did not start on 127.0.0.1:{} (port taken? try --base-port)",
                    node.id, node.port
                )
            })
        });
    if let Some(e) = failed.or_else(|| state.save(&dir).err()) {
        stop_all(&dir, &state, &mut children);
        return Err(e);
    }
    println!("zone  node  address          batch port  metrics                         pid");
    for n in &state.nodes {
        let metrics = match n.metrics_port {
            0 => "-".to_string(),
            port => format!("http://127.0.0.1:{port}/metrics"),
        };
        println!(
            "{:<5} {:<5} {:<16} {:<11} {:<31} {}",
            n.zone,
            n.id,
            format!("127.0.0.1:{}", n.port),
            n.batch_port,
            metrics,
            n.pid
        );
    }
    println!(
        "configs in {} (cluster secret in its file `secret`); Ctrl-C stops every node",
        dir.display()
    );
    if let Some(password) = &password {
        let login = format!("zonecache {password}");
        println!(
            "sign-in required (-Y {}): send first  set auth 0 0 {}\\r\\n{login}\\r\\n  \
             (memcached's text auth; `zonecache status/drain --config` prove the cluster secret instead)",
            dir.join("auth").display(),
            login.len()
        );
    }
    if let Some(first) = state.nodes.first().filter(|n| n.tls_port != 0) {
        println!(
            "TLS on ports {}..{} (the same store as the plain ports; peer links use them too), \
             certificates in {}; try: openssl s_client -quiet -CAfile {} -connect 127.0.0.1:{}",
            first.tls_port,
            first.tls_port as usize + count - 1,
            dir.display(),
            dir.join("ca.pem").display(),
            first.tls_port
        );
    }
    wait_for_ctrl_c();
    stop_all(&dir, &state, &mut children);
    println!("stopped {} nodes", state.nodes.len());
    Ok(())
}

/// Writes `text` to a new file only its owner may read.
fn write_private(path: &std::path::Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    file.write_all(text.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Stops every node: the processes the state file names now (`zonecache
/// roll` may have replaced some), and this tool's own children.
fn stop_all(dir: &std::path::Path, started: &LocalState, children: &mut [Child]) {
    let current = LocalState::load(dir).unwrap_or_else(|_| started.clone());
    let mine: Vec<u32> = children.iter().map(Child::id).collect();
    for node in current.nodes.iter().filter(|n| !mine.contains(&n.pid)) {
        zonecache_server::local::stop(node.pid, None, Duration::from_secs(10));
    }
    for child in children.iter_mut() {
        let pid = child.id();
        zonecache_server::local::stop(pid, Some(child), Duration::from_secs(10));
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
