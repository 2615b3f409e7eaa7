//! Running one node: the runtime, the storage, the listener and workers,
//! the sweeper, and a graceful stop on SIGINT/SIGTERM. Both `zonecached` and
//! `zonecache node` run a node through here.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::cluster::topology::{Overrides, WritePolicy};
use crate::cluster::{Cluster, ClusterOptions};
use crate::config::{Config, LogFormat};
use crate::exec::Executor;
use crate::net::{self, Front, RequestLog};
use crate::stats::{ConnRegistry, ServerStats, Settings, StatsGroups};
use crate::store::{Engine, EngineConfig, Storage};
use tokio::sync::watch;
use zonecache_proto::ParserConfig;

/// How often expired items are reclaimed in the background.
const SWEEP_INTERVAL: Duration = Duration::from_millis(100);

/// Runs a node with `config` until SIGINT/SIGTERM.
pub fn run_node(config: Config) -> std::process::ExitCode {
    init_tracing(config.verbose, config.log_format);
    crate::record::hotkeys::set_half_life(config.hot_key_half_life);
    let threads = config.worker_threads();
    // This runtime only runs start-up, signals and the sweeper; connections
    // are served by the per-worker event loops in `net`.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("zonecached: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config, threads)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("zonecached: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_tracing(verbose: u8, format: LogFormat) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    // The request log is on at any verbosity (what it logs is chosen by
    // --log-sample and --log-slow-us); RUST_LOG overrides everything.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{default},zonecache::request=info"))
    });
    // Colours only for a person at a terminal, not in a log file.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
}

async fn run(config: Config, threads: usize) -> Result<(), String> {
    let cluster = match &config.cluster_config {
        Some(path) => {
            let overrides = Overrides {
                write_policy: config
                    .write_policy
                    .as_deref()
                    .map(WritePolicy::from_name)
                    .transpose()?,
                read_deadline: config.read_deadline_ms.map(Duration::from_millis),
                write_deadline: config.write_deadline_ms.map(Duration::from_millis),
                read_repair: config.no_read_repair.then_some(false),
                batch_deadline: None,
                hints_max_bytes: config.hints_max,
            };
            let options = ClusterOptions {
                overrides,
                node: config.node.clone(),
                warm_rate: (!config.no_warm).then_some(config.warm_rate),
                state_dir: config.state_dir.clone(),
            };
            Some(Arc::new(Cluster::load(path, options)?))
        }
        None => None,
    };
    let engine = Engine::new(EngineConfig {
        memory_limit: config.memory_mb << 20,
        threads,
        tombstone_secs: config.tombstone_ttl,
    });
    let shards = engine.shard_count();
    let storage: Arc<dyn Storage> = Arc::new(engine);
    let addr = SocketAddr::new(config.listen, config.port);
    let extra = |port: u16, flag: &str| -> Result<Option<std::net::TcpListener>, String> {
        if port == 0 {
            return Ok(None);
        }
        let addr = SocketAddr::new(config.listen, port);
        net::bind(addr, config.backlog)
            .map(Some)
            .map_err(|e| format!("cannot listen on {flag} {addr}: {e} (choose another {flag})"))
    };
    if let Some(c) = &cluster {
        check_peer_tls_ports(&c.current(), &config)?;
    }
    let tls_files = config.tls_files()?;
    let tls = match &tls_files {
        Some(files) => Some(Arc::new(crate::tls::Tls::load(files.clone())?)),
        None => None,
    };
    let credentials = config.credentials()?;
    let auth = match &credentials {
        Some(c) => Some(Arc::new(crate::auth::AuthFile::load(&c.file)?)),
        None => None,
    };
    let sasl = credentials.as_ref().is_some_and(|c| c.sasl);
    // The client port is bound last: once it accepts, every other port
    // does too (a harness or probe that waits for it may use them all).
    let batch = extra(config.batch_port, "--batch-port")?;
    let client_tls = extra(config.tls_port, "--tls-port")?;
    let batch_tls = extra(config.tls_batch_port, "--tls-batch-port")?;
    let metrics_listener = match config.metrics_port {
        0 => None,
        port => {
            let addr = SocketAddr::new(config.listen, port);
            Some(tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                format!("cannot listen on metrics port {addr}: {e} (choose another --metrics-port)")
            })?)
        }
    };
    let listener = net::bind(addr, config.backlog).map_err(|e| {
        format!("cannot listen on {addr}: {e} (is another server using the port? try -p)")
    })?;
    let listeners = net::Listeners {
        client: listener,
        batch,
        client_tls,
        batch_tls,
    };
    let exec = Arc::new(Executor {
        storage: storage.clone(),
        stats: ServerStats::default(),
        settings: Settings {
            max_connections: config.max_connections,
            port: config.port,
            interface: config.listen.to_string(),
            threads,
            item_size_max: config.item_size_max,
            backlog: config.backlog,
            idle_timeout: config.idle_timeout,
            shards,
            batch_connections: config.batch_connections,
            batch_shed_after_us: config.batch_shed_after_ms.saturating_mul(1000),
            hot_keys: config.hot_keys,
            prefix_delimiter: config.prefix_delimiter as u8,
            shutdown_command: config.enable_shutdown,
            tls: tls_files,
            auth_file: config.auth_file.clone(),
            sasl,
        },
        conns: Arc::new(ConnRegistry::default()),
        groups: cluster.clone().map(|c| c as Arc<dyn StatsGroups>),
        versions: cluster.as_ref().and_then(|c| c.versions()),
    });
    let front = Arc::new(Front {
        exec,
        parser: ParserConfig {
            item_size_max: config.item_size_max,
            ..ParserConfig::default()
        },
        idle_timeout: (config.idle_timeout > 0).then(|| Duration::from_secs(config.idle_timeout)),
        log: RequestLog::new(
            config.log_sample,
            Duration::from_micros(config.log_slow_us),
            match &cluster {
                Some(c) => c.current().me.id.clone(),
                None => addr.to_string(),
            },
        ),
        cluster,
        tls,
        auth,
        sasl,
    });
    if front.tls.is_some() {
        front
            .exec
            .stats
            .tls_loaded_at
            .store(storage.clock().unix_now() as u64, Ordering::Relaxed);
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let sweeper = {
        let storage = storage.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_INTERVAL);
            loop {
                tokio::select! {
                    _ = tick.tick() => storage.sweep(),
                    _ = stop.changed() => return,
                }
            }
        })
    };
    tracing::info!(%addr, memory_mb = config.memory_mb, threads, shards, "zonecached listening");
    let reloader = tokio::spawn(reload_on_sighup(front.clone()));
    let lease_asker = front
        .cluster
        .clone()
        .map(|c| tokio::spawn(c.keep_leases(front.exec.clone())));
    let warmer = front
        .cluster
        .clone()
        .map(|c| tokio::spawn(c.warm_up(front.exec.clone())));
    let drain_learner = front
        .cluster
        .clone()
        .map(|c| tokio::spawn(c.learn_drains()));
    let metrics = metrics_listener.map(|listener| {
        tracing::info!(addr = ?listener.local_addr().ok(), "metrics on /metrics, probes on /healthz and /readyz");
        tokio::spawn(crate::metrics::serve(listener, front.clone(), stop_rx.clone()))
    });
    let (workers, acceptor) = net::serve(listeners, threads, front.clone(), stop_rx)
        .map_err(|e| format!("cannot start worker threads: {e}"))?;
    let acceptor = tokio::spawn(acceptor);
    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let _ = sweeper.await;
    let _ = acceptor.await;
    reloader.abort();
    for task in lease_asker
        .into_iter()
        .chain(warmer)
        .chain(drain_learner)
        .chain(metrics)
    {
        task.abort();
    }
    for worker in workers {
        let _ = worker.join();
    }
    Ok(())
}

/// Reloads the cluster config and the TLS certificates on every SIGHUP.
async fn reload_on_sighup(front: Arc<Front>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        match &front.cluster {
            Some(cluster) => match cluster.reload() {
                Ok(()) => tracing::info!("cluster config reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "cluster config not reloaded; the running one stays")
                }
            },
            None => tracing::info!("SIGHUP: no cluster config to reload"),
        }
        if let Some(auth) = &front.auth {
            match auth.reload() {
                Ok(()) => tracing::info!("auth file reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "auth file not reloaded; the running one stays")
                }
            }
        }
        if front.tls.is_some() {
            match front.reload_certs() {
                Ok(()) => tracing::info!("TLS certificates reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "TLS certificates not reloaded; the running ones stay")
                }
            }
        }
    }
}

/// Waits for SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// With `[peer_tls]`, peers connect to the TLS ports the config gives this
/// node: they must be the ones it serves.
fn check_peer_tls_ports(view: &crate::cluster::ClusterView, config: &Config) -> Result<(), String> {
    if !view.speaks_peer_tls() {
        return Ok(());
    }
    let ports = [
        (&view.me.tls_addr, config.tls_port, "tls_addr", "--tls-port"),
        (
            &view.me.tls_batch_addr,
            config.tls_batch_port,
            "tls_batch_addr",
            "--tls-batch-port",
        ),
    ];
    for (addr, served, field, flag) in ports {
        if let Some(addr) = addr {
            if addr.port() != served {
                return Err(format!(
                    "the cluster config has [peer_tls] and gives node {} {field} {addr}, \
                     but {flag} is {served}: serve that port (with --tls-cert and \
                     --tls-key) or change the config",
                    view.me.id
                ));
            }
        }
    }
    Ok(())
}
