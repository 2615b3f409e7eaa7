//! `zonecache-bench`: one command per scenario; see `bench/README.md`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use zonecache_bench::client_scenarios;
use zonecache_bench::load::{self, LoadSpec, Mode};
use zonecache_bench::report::{format_number, Table};
use zonecache_bench::scenarios::{
    self, CompareOptions, HitRatioOptions, MemoryOptions, ServerSettings,
};
use zonecache_bench::workload::{KeyDist, Protocol, ValueSize, Workload};

#[derive(Parser)]
#[command(
    name = "zonecache-bench",
    about = "Load tests for zonecache, side by side with memcached"
)]
struct Cli {
    /// Where JSON and SVG files go.
    #[arg(long, default_value = "bench/results", global = true)]
    out: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Load one running server (any memcached-protocol server).
    Run {
        /// host:port of the server.
        #[arg(long)]
        target: SocketAddr,
        #[command(flatten)]
        workload: WorkloadArgs,
        #[command(flatten)]
        load: LoadArgs,
        /// Open loop at this many requests per second (default: closed loop).
        #[arg(long)]
        rate: Option<f64>,
    },
    /// Start memcached and zonecached, alternate runs A B A B, compare.
    Compare {
        #[command(flatten)]
        servers: ServerArgs,
        #[command(flatten)]
        workload: WorkloadArgs,
        #[command(flatten)]
        load: LoadArgs,
        /// A/B pairs of runs.
        #[arg(long, default_value_t = 3)]
        pairs: usize,
        /// Open-loop rate as a share of memcached's closed-loop peak.
        #[arg(long, default_value_t = 0.5)]
        open_fraction: f64,
        /// Measure what TLS costs instead: memcached plain and with -Z,
        /// zonecached's plain and TLS ports (closed loop).
        #[arg(long)]
        tls: bool,
    },
    /// One worker thread per server pinned to a core, memcaslap (an
    /// independent load generator) pinned to another; alternating runs.
    Pinned {
        /// The core the servers run on.
        #[arg(long, default_value_t = 1)]
        server_cpu: usize,
        /// The core memcaslap runs on.
        #[arg(long, default_value_t = 0)]
        load_cpu: usize,
        /// memcaslap -c: concurrent connections.
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// memcaslap -X: value size (bytes).
        #[arg(long, default_value_t = 100)]
        value_size: usize,
        /// memcaslap -t: seconds per run.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// memcached/zonecached pairs of runs.
        #[arg(long, default_value_t = 3)]
        pairs: usize,
        /// -m of both servers (MiB).
        #[arg(long, default_value_t = 64)]
        memory: usize,
    },
    /// Fill both servers until eviction; items held and RSS.
    Memory {
        #[command(flatten)]
        servers: ServerArgs,
        #[arg(long, default_value_t = 16)]
        key_size: usize,
        #[arg(long, default_value_t = 64)]
        value_size: usize,
        /// Set exactly this many distinct keys (e.g. 2000000: steady churn
        /// at 4.5× what -m 64 holds) instead of filling until the first
        /// eviction + 10 %.
        #[arg(long)]
        sets: Option<u64>,
    },
    /// The hot-key sketch: throughput with and without it (memcached
    /// beside), and its top 10 against the workload's true top 10. The
    /// keys follow Zipf(1.1) unless `--dist zipf:<skew>` says otherwise.
    Hotkeys {
        #[command(flatten)]
        servers: ServerArgs,
        #[command(flatten)]
        workload: WorkloadArgs,
        #[command(flatten)]
        load: LoadArgs,
        /// Rounds of one run per server.
        #[arg(long, default_value_t = 3)]
        pairs: usize,
    },
    /// A 3-zone × 2-node cluster (`zonecache local`) against a single node:
    /// front vs direct reads, sets under the write policy, hung home owner.
    Cluster {
        /// `-m` of every node (MiB).
        #[arg(long, default_value_t = 64)]
        memory: usize,
        /// Keys (all owned by one node of zone a).
        #[arg(long, default_value_t = 20_000)]
        keys: u64,
        #[arg(long, default_value_t = 100)]
        value_size: usize,
        #[command(flatten)]
        load: LoadArgs,
        #[arg(long, default_value_t = 2)]
        pairs: usize,
        /// Realtime read rate while the home owner is hung.
        #[arg(long, default_value_t = 2000.0)]
        hung_rate: f64,
    },
    /// Zone c of a 3 × 2 cluster drained 0 → 100 % → 0 % in 1-point steps
    /// under steady reads through every zone: per-zone read share per
    /// second against the weight, p99, errors, time to 100 %.
    Drain {
        #[arg(long, default_value_t = 100_000)]
        keys: u64,
        /// Reads per second through each zone's front.
        #[arg(long, default_value_t = 2000.0)]
        rate: f64,
        /// Milliseconds between steps.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
        /// Seconds of steady state before and after.
        #[arg(long, default_value_t = 5)]
        steady_seconds: u64,
    },
    /// `zonecache roll` of a 3 × 2 cluster under steady direct-mode client
    /// load: hit-ratio dip, p99, errors, roll time.
    Roll {
        #[arg(long, default_value_t = 100_000)]
        keys: u64,
        /// Client requests per second.
        #[arg(long, default_value_t = 2000.0)]
        rate: f64,
        /// Seconds of steady state before and after.
        #[arg(long, default_value_t = 5)]
        steady_seconds: u64,
    },
    /// A node of a 3 × 2 cluster restarted empty under load: warm-up from
    /// another zone vs refill by read repair (time to 95 % of its keys,
    /// clients' p99, errors and hit ratio per second).
    Warm {
        /// `-m` of every node (MiB).
        #[arg(long, default_value_t = 256)]
        memory: usize,
        #[arg(long, default_value_t = 500_000)]
        keys: u64,
        #[arg(long, default_value_t = 100)]
        value_size: usize,
        /// Realtime requests per second through the front.
        #[arg(long, default_value_t = 5000.0)]
        rate: f64,
        /// The restarted node's --warm-rate (keys/s).
        #[arg(long, default_value_t = 50_000)]
        warm_rate: u32,
        /// Longest wait for 95 % per mode.
        #[arg(long, default_value_t = 60.0)]
        max_seconds: f64,
    },
    /// Through the Rust client: realtime reads alone, beside a batch flood
    /// with lanes, and beside the same flood without lanes.
    Lanes {
        #[arg(long, default_value_t = 20_000)]
        keys: u64,
        #[arg(long, default_value_t = 100)]
        value_size: usize,
        /// Realtime reads per second.
        #[arg(long, default_value_t = 2000.0)]
        rate: f64,
        /// Seconds per phase.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Concurrent batch readers.
        #[arg(long, default_value_t = 32)]
        batch_workers: usize,
        /// Keys per batch read.
        #[arg(long, default_value_t = 50)]
        batch_size: usize,
        /// Rounds of all phases (medians reported).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Through the Rust client: requests of many lookups with duplicates,
    /// naive per-key gets vs a request scope.
    Coalesce {
        #[arg(long, default_value_t = 20_000)]
        keys: u64,
        #[arg(long, default_value_t = 100)]
        value_size: usize,
        #[arg(long, default_value_t = 50)]
        lookups: usize,
        #[arg(long, default_value_t = 0.3)]
        duplicates: f64,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
    /// Through the Rust client: direct routing vs front routing.
    Routing {
        #[arg(long, default_value_t = 20_000)]
        keys: u64,
        #[arg(long, default_value_t = 100)]
        value_size: usize,
        #[arg(long, default_value_t = 0.1)]
        set_share: f64,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        #[arg(long, default_value_t = 2)]
        pairs: usize,
    },
    /// The same Zipf trace against both; hit ratios.
    Hitratio {
        #[command(flatten)]
        servers: ServerArgs,
        #[arg(long, default_value_t = 1_000_000)]
        keys: u64,
        #[arg(long, default_value_t = 0.99)]
        skew: f64,
        /// Share (0 to 1) of requests for keys asked for once only, as in
        /// Twitter's cache traces (e.g. 0.3).
        #[arg(long, default_value_t = 0.0)]
        one_hit: f64,
        #[arg(long, default_value_t = 3_000_000)]
        requests: u64,
        #[arg(long, default_value_t = 100)]
        value_size: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

#[derive(Args, Clone)]
struct ServerArgs {
    /// `-m` for both servers (MiB).
    #[arg(long, default_value_t = 64)]
    memory: usize,
    /// `-t` for both servers.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

impl ServerArgs {
    fn settings(&self) -> ServerSettings {
        ServerSettings {
            memory_mb: self.memory,
            threads: self.threads,
        }
    }
}

#[derive(Args, Clone)]
struct WorkloadArgs {
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    #[arg(long, default_value_t = 16)]
    key_size: usize,
    /// `uniform` or `zipf:<skew>`.
    #[arg(long, default_value = "uniform")]
    dist: String,
    /// Bytes, or `min-max`.
    #[arg(long, default_value = "100")]
    value_size: String,
    #[arg(long, default_value_t = 0.9)]
    get: f64,
    #[arg(long, default_value_t = 0.1)]
    set: f64,
    #[arg(long, default_value_t = 0.0)]
    delete: f64,
    #[arg(long, default_value_t = 0.0)]
    multiget: f64,
    #[arg(long, default_value_t = 10)]
    multiget_size: usize,
    #[arg(long, default_value_t = 0)]
    ttl: i32,
    /// `text` or `meta`.
    #[arg(long, default_value = "text")]
    protocol: String,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Args, Clone)]
struct LoadArgs {
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Requests in flight per connection (closed loop).
    #[arg(long, default_value_t = 1)]
    depth: usize,
    /// Load generator threads.
    #[arg(long, default_value_t = 2)]
    load_threads: usize,
    /// Measured seconds per run.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Stop a run after this many measured requests.
    #[arg(long)]
    requests: Option<u64>,
    /// Hide the progress bar.
    #[arg(long)]
    quiet: bool,
}

impl WorkloadArgs {
    fn build(&self) -> Result<Workload, String> {
        let dist = match self.dist.split_once(':') {
            None if self.dist == "uniform" => KeyDist::Uniform,
            Some(("zipf", s)) => KeyDist::Zipf(
                s.parse()
                    .map_err(|_| format!("bad skew in {:?}", self.dist))?,
            ),
            _ => {
                return Err(format!(
                    "--dist {:?}: use uniform or zipf:<skew>",
                    self.dist
                ))
            }
        };
        let value = match self.value_size.split_once('-') {
            None => ValueSize::Fixed(self.value_size.parse().map_err(|_| "bad --value-size")?),
            Some((a, b)) => ValueSize::Uniform(
                a.parse().map_err(|_| "bad --value-size")?,
                b.parse().map_err(|_| "bad --value-size")?,
            ),
        };
        let protocol = match self.protocol.as_str() {
            "text" => Protocol::Text,
            "meta" => Protocol::Meta,
            p => return Err(format!("--protocol {p:?}: use text or meta")),
        };
        Ok(Workload {
            keys: self.keys,
            key_size: self.key_size,
            dist,
            value,
            get: self.get,
            set: self.set,
            delete: self.delete,
            multiget: self.multiget,
            multiget_size: self.multiget_size,
            ttl: self.ttl,
            protocol,
            seed: self.seed,
            key_list: None,
        })
    }
}

impl LoadArgs {
    /// A closed loop at `--depth`, its target set by the scenario.
    fn closed(&self) -> LoadSpec {
        let placeholder = SocketAddr::from(([127, 0, 0, 1], 0));
        self.build(
            placeholder,
            Mode::Closed {
                depth: self.depth.max(1),
            },
        )
    }

    fn build(&self, target: SocketAddr, mode: Mode) -> LoadSpec {
        LoadSpec {
            target,
            connections: self.connections.max(1),
            threads: self.load_threads.max(1),
            mode,
            duration: Duration::from_secs_f64(self.duration),
            warmup: Duration::from_secs_f64(self.warmup),
            max_requests: self.requests,
            timeout: Duration::from_secs(2),
            progress: !self.quiet,
            tls: None,
        }
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Run {
            target,
            workload,
            load,
            rate,
        } => (|| {
            let w = workload.build()?;
            let mode = match rate {
                Some(rate) => Mode::Open { rate },
                None => Mode::Closed {
                    depth: load.depth.max(1),
                },
            };
            let r = load::run(&w, &load.build(target, mode)).summary();
            let mut t = Table::new(&[
                "ops/s",
                "p50 µs",
                "p90 µs",
                "p99 µs",
                "p99.9 µs",
                "max µs",
                "hits",
                "misses",
                "errors",
                "timeouts",
                "client CPU s",
            ]);
            t.row(vec![
                format_number(r.ops_per_sec),
                format_number(r.p50_us),
                format_number(r.p90_us),
                format_number(r.p99_us),
                format_number(r.p999_us),
                format_number(r.max_us),
                r.hits.to_string(),
                r.misses.to_string(),
                r.errors.values().sum::<u64>().to_string(),
                r.timeouts.to_string(),
                format!("{:.2}", r.client_cpu_seconds),
            ]);
            t.print();
            for (kind, n) in &r.errors {
                println!("error {kind}: {n}");
            }
            Ok(())
        })(),
        Cmd::Compare {
            servers,
            workload,
            load,
            pairs,
            open_fraction,
            tls,
        } => workload.build().and_then(|w| {
            let opts = CompareOptions {
                servers: servers.settings(),
                workload: w,
                load: load.closed(),
                pairs: pairs.max(1),
                open_fraction,
            };
            match tls {
                true => scenarios::compare_tls(&opts, &cli.out),
                false => scenarios::compare(&opts, &cli.out),
            }
        }),
        Cmd::Pinned {
            server_cpu,
            load_cpu,
            connections,
            value_size,
            seconds,
            pairs,
            memory,
        } => zonecache_bench::pinned::pinned(
            &zonecache_bench::pinned::PinnedOptions {
                server_cpu,
                load_cpu,
                connections,
                value_size,
                seconds,
                pairs: pairs.max(1),
                memory_mb: memory,
            },
            &cli.out,
        ),
        Cmd::Hotkeys {
            servers,
            workload,
            load,
            pairs,
        } => workload.build().and_then(|mut w| {
            if w.dist == zonecache_bench::workload::KeyDist::Uniform {
                w.dist = zonecache_bench::workload::KeyDist::Zipf(1.1);
            }
            zonecache_bench::hotkeys::hotkeys(
                &zonecache_bench::hotkeys::HotKeysOptions {
                    servers: servers.settings(),
                    workload: w,
                    load: load.closed(),
                    pairs: pairs.max(1),
                },
                &cli.out,
            )
        }),
        Cmd::Cluster {
            memory,
            keys,
            value_size,
            load,
            pairs,
            hung_rate,
        } => {
            let placeholder = SocketAddr::from(([127, 0, 0, 1], 0));
            zonecache_bench::cluster::cluster(
                &zonecache_bench::cluster::ClusterOptions {
                    memory_mb: memory,
                    keys,
                    value_size,
                    load: load.build(
                        placeholder,
                        Mode::Closed {
                            depth: load.depth.max(1),
                        },
                    ),
                    pairs: pairs.max(1),
                    hung_rate,
                },
                &cli.out,
            )
        }
        Cmd::Drain {
            keys,
            rate,
            interval_ms,
            steady_seconds,
        } => zonecache_bench::drain::drain(
            &zonecache_bench::drain::DrainOptions {
                keys,
                rate_per_front: rate,
                interval_ms,
                steady_seconds,
            },
            &cli.out,
        ),
        Cmd::Roll {
            keys,
            rate,
            steady_seconds,
        } => zonecache_bench::roll::roll(
            &zonecache_bench::roll::RollOptions {
                keys,
                rate,
                steady_seconds,
            },
            &cli.out,
        ),
        Cmd::Warm {
            memory,
            keys,
            value_size,
            rate,
            warm_rate,
            max_seconds,
        } => zonecache_bench::warm::warm(
            &zonecache_bench::warm::WarmOptions {
                memory_mb: memory,
                keys,
                value_size,
                rate,
                warm_rate,
                max_seconds,
                before_seconds: 5,
            },
            &cli.out,
        ),
        Cmd::Lanes {
            keys,
            value_size,
            rate,
            seconds,
            batch_workers,
            batch_size,
            rounds,
        } => client_scenarios::lanes(
            &client_scenarios::LanesOptions {
                keys,
                value_size,
                rate,
                seconds,
                batch_workers,
                batch_size,
                rounds,
            },
            &cli.out,
        ),
        Cmd::Coalesce {
            keys,
            value_size,
            lookups,
            duplicates,
            concurrency,
            seconds,
        } => client_scenarios::coalesce(
            &client_scenarios::CoalesceOptions {
                keys,
                value_size,
                lookups: lookups.max(1),
                duplicates: duplicates.clamp(0.0, 0.9),
                concurrency: concurrency.max(1),
                seconds,
            },
            &cli.out,
        ),
        Cmd::Routing {
            keys,
            value_size,
            set_share,
            concurrency,
            seconds,
            pairs,
        } => client_scenarios::routing(
            &client_scenarios::RoutingOptions {
                keys,
                value_size,
                set_share: set_share.clamp(0.0, 1.0),
                concurrency: concurrency.max(1),
                seconds,
                pairs,
            },
            &cli.out,
        ),
        Cmd::Memory {
            servers,
            key_size,
            value_size,
            sets,
        } => scenarios::memory(
            &MemoryOptions {
                servers: servers.settings(),
                key_size,
                value_size,
                sets,
            },
            &cli.out,
        ),
        Cmd::Hitratio {
            servers,
            keys,
            skew,
            one_hit,
            requests,
            value_size,
            seed,
        } => scenarios::hitratio(
            &HitRatioOptions {
                servers: servers.settings(),
                keys,
                skew,
                one_hit: one_hit.clamp(0.0, 1.0),
                requests,
                value_size,
                seed,
            },
            &cli.out,
        ),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("zonecache-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
