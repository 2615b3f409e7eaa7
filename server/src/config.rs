//! Command-line settings, named and defaulted as memcached's where they overlap.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Parser;

pub use crate::record::hotkeys::HotKeyMode;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The oldest TLS version a node accepts on its TLS ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TlsMinVersion {
    /// TLS 1.2 and 1.3 (memcached's default).
    #[value(name = "1.2")]
    Tls12,
    /// TLS 1.3 only.
    #[value(name = "1.3")]
    Tls13,
}

impl TlsMinVersion {
    /// As memcached's `stats settings` names it.
    pub fn name(self) -> &'static str {
        match self {
            TlsMinVersion::Tls12 => "tlsv1.2",
            TlsMinVersion::Tls13 => "tlsv1.3",
        }
    }
}

/// Where a node's TLS identity comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, the node's own certificate first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates; when set, clients must present a certificate
    /// that chains to one of them (mutual TLS).
    pub client_ca: Option<PathBuf>,
    /// The oldest protocol version accepted.
    pub min_version: TlsMinVersion,
}

/// zonecached: one zonecache node. Speaks the memcached text and meta protocol.
#[derive(Debug, Clone, Parser)]
#[command(name = "zonecached", version, about)]
pub struct Config {
    /// TCP port to listen on.
    #[arg(short = 'p', long = "port", default_value_t = 11211)]
    pub port: u16,

    /// Interface to listen on (loopback unless asked otherwise).
    #[arg(short = 'l', long = "listen", default_value = "127.0.0.1")]
    pub listen: IpAddr,

    /// Memory for items in MiB, including all per-item overhead and the index.
    #[arg(short = 'm', long = "memory-limit", default_value_t = 64)]
    pub memory_mb: usize,

    /// Maximum simultaneous connections.
    #[arg(short = 'c', long = "conn-limit", default_value_t = 1024)]
    pub max_connections: usize,

    /// Worker threads (default: number of cores).
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,

    /// Largest item, e.g. 1m, 512k or a byte count (memcached's -I).
    #[arg(short = 'I', long = "max-item-size", default_value = "1m", value_parser = parse_size)]
    pub item_size_max: usize,

    /// Where a key's prefix ends for `stats detail` (memcached's -D).
    #[arg(short = 'D', long = "prefix-delimiter", default_value_t = ':')]
    pub prefix_delimiter: char,

    /// Let the `shutdown` command stop this node (memcached's -A); off, it
    /// answers `ERROR: shutdown not enabled`.
    #[arg(short = 'A', long = "enable-shutdown")]
    pub enable_shutdown: bool,

    /// memcached's text-protocol authentication: a file of `user:password`
    /// lines; a client must first send `set <any> 0 0 <n>` with `<user>
    /// <password>` as its data (re-read on SIGHUP).
    #[arg(short = 'Y', long = "auth-file")]
    pub auth_file: Option<PathBuf>,

    /// memcached's SASL authentication (-S): clients speak the binary
    /// protocol only and are served nothing before a SASL PLAIN sign-in
    /// checked against --sasl-pwdb (cluster peers prove the cluster secret
    /// instead).
    #[arg(short = 'S', long = "enable-sasl")]
    pub enable_sasl: bool,

    /// The `user:password` file SASL PLAIN is checked against (re-read on
    /// SIGHUP); memcached's MEMCACHED_SASL_PWDB is read when this is not given.
    #[arg(long = "sasl-pwdb")]
    pub sasl_pwdb: Option<PathBuf>,

    /// Serve TLS on this port too (0: none), with --tls-cert and --tls-key;
    /// the plain port stays, so a fleet can move clients over.
    #[arg(long = "tls-port", default_value_t = 0)]
    pub tls_port: u16,

    /// Serve the batch lane over TLS on this port too (0: none).
    #[arg(long = "tls-batch-port", default_value_t = 0)]
    pub tls_batch_port: u16,

    /// PEM certificate chain of the TLS ports (re-read on SIGHUP and
    /// `refresh_certs`).
    #[arg(long = "tls-cert")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of the TLS ports.
    #[arg(long = "tls-key")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificates: clients of the TLS ports must present a
    /// certificate signed by one of them (mutual TLS).
    #[arg(long = "tls-client-ca")]
    pub tls_client_ca: Option<PathBuf>,

    /// Oldest TLS version accepted: 1.2 or 1.3.
    #[arg(long = "tls-min-version", value_enum, default_value_t = TlsMinVersion::Tls12)]
    pub tls_min_version: TlsMinVersion,

    /// Verbose logging; repeat for more (-vv).
    #[arg(short = 'v', action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Log format: `text`, or `json` (one object per line, the request
    /// log's fields as keys).
    #[arg(long = "log-format", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Share of requests (0–1) that get a line in the request log; errors
    /// and slow requests always do.
    #[arg(long = "log-sample", default_value_t = 0.0)]
    pub log_sample: f64,

    /// Requests at least this slow (µs) always get a request-log line
    /// (0: every request).
    #[arg(long = "log-slow-us", default_value_t = 10_000)]
    pub log_slow_us: u64,

    /// Close connections idle for this many seconds (0 = never).
    #[arg(long = "idle-timeout", default_value_t = 0)]
    pub idle_timeout: u64,

    /// Listen backlog.
    #[arg(short = 'b', long = "listen-backlog", default_value_t = 1024)]
    pub backlog: i32,

    /// Port for `/metrics` (Prometheus), `/healthz` and `/readyz` over
    /// HTTP, on the `-l` interface (0 = none).
    #[arg(long = "metrics-port", default_value_t = 0)]
    pub metrics_port: u16,

    /// Count the hottest keys (`stats hotkeys`, `zonecache_hot_key_*`
    /// metrics, `zonecache status --hot`) and show them by name, by a hash
    /// of the key (for keys that are personal data), or not at all.
    #[arg(long = "hot-keys", value_enum, default_value_t = HotKeyMode::Names)]
    pub hot_keys: HotKeyMode,

    /// Hot-key counts are halved this often (seconds): the hot keys shown
    /// are those of about the last one to two half-lives.
    #[arg(long = "hot-key-half-life", default_value_t = crate::record::hotkeys::HALF_LIFE_SECS)]
    pub hot_key_half_life: u32,

    /// Port for batch-lane connections (0 = none): served by one thread at
    /// the lowest CPU priority, shed first under load.
    #[arg(long = "batch-port", default_value_t = 0)]
    pub batch_port: u16,

    /// Maximum simultaneous batch-lane connections.
    #[arg(long = "batch-connections", default_value_t = 256)]
    pub batch_connections: usize,

    /// Shed batch requests (`SERVER_ERROR busy`) while the batch thread is
    /// starved this long by realtime work (milliseconds its timer runs late).
    #[arg(long = "batch-shed-after-ms", default_value_t = 10)]
    pub batch_shed_after_ms: u64,

    /// How long a delete's tombstone is kept (seconds): late copies of what
    /// it deleted are refused for this long.
    #[arg(long = "tombstone-ttl", default_value_t = 60)]
    pub tombstone_ttl: u32,

    /// Cluster config (TOML: zones, nodes, this node, write policy). Without
    /// it the node is a single-zone, single-node cache.
    #[arg(long = "config")]
    pub cluster_config: Option<std::path::PathBuf>,

    /// This node's id, instead of the config's `node` (a Kubernetes pod
    /// passes its name, so every pod mounts the same file).
    #[arg(long = "node", requires = "cluster_config")]
    pub node: Option<String>,

    /// Where the node keeps what it must remember across restarts (zone
    /// drain weights); default: beside the config file.
    #[arg(long = "state-dir", requires = "cluster_config")]
    pub state_dir: Option<std::path::PathBuf>,

    /// Override the config's write policy: one, quorum, all-minus-one, all.
    #[arg(long = "write-policy", requires = "cluster_config")]
    pub write_policy: Option<String>,

    /// Override the config's read deadline (milliseconds).
    #[arg(long = "read-deadline-ms", requires = "cluster_config")]
    pub read_deadline_ms: Option<u64>,

    /// Override the config's write deadline (milliseconds).
    #[arg(long = "write-deadline-ms", requires = "cluster_config")]
    pub write_deadline_ms: Option<u64>,

    /// Bytes of missed writes (hints) kept per unreachable peer; beyond it
    /// the peer is flushed when it is back (overrides the config).
    #[arg(long = "hints-max", requires = "cluster_config")]
    pub hints_max: Option<usize>,

    /// Turn read repair off (it is on unless the config says otherwise).
    #[arg(long = "no-read-repair", requires = "cluster_config")]
    pub no_read_repair: bool,

    /// Keys per second this node copies from another zone when it starts
    /// empty in a multi-zone cluster (warm-up, on the batch lane); 0 = as
    /// fast as the sources answer.
    #[arg(long = "warm-rate", default_value_t = 50_000)]
    pub warm_rate: u32,

    /// Start without warming: the node fills only as clients write and
    /// reads repair it, and reports itself ready at once.
    #[arg(long = "no-warm")]
    pub no_warm: bool,
}

/// How clients prove who they are, and the password file they prove it against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `user:password` lines.
    pub file: PathBuf,
    /// SASL over the binary protocol (`-S`); otherwise the text
    /// protocol's sign-in `set` (`-Y`).
    pub sasl: bool,
}

impl Config {
    /// The password file and how it is proven (`-Y` or `-S`), if any; an
    /// error says what is missing or in conflict.
    pub fn credentials(&self) -> Result<Option<Credentials>, String> {
        let pwdb = self
            .sasl_pwdb
            .clone()
            .or_else(|| std::env::var_os("MEMCACHED_SASL_PWDB").map(PathBuf::from));
        match (&self.auth_file, self.enable_sasl) {
            (Some(_), true) => Err(
                "-Y (text sign-in) and -S (SASL) cannot be combined: -Y makes \
                 the node text-only, -S binary-only; choose one"
                    .into(),
            ),
            (Some(file), false) if self.sasl_pwdb.is_none() => Ok(Some(Credentials {
                file: file.clone(),
                sasl: false,
            })),
            (None, true) => match pwdb {
                Some(file) => Ok(Some(Credentials { file, sasl: true })),
                None => Err("-S needs a password file of user:password lines: \
                     --sasl-pwdb FILE (or MEMCACHED_SASL_PWDB=FILE)"
                    .into()),
            },
            _ if self.sasl_pwdb.is_some() => {
                Err("--sasl-pwdb is only read with -S (SASL authentication)".into())
            }
            _ => Ok(None),
        }
    }

    /// The TLS ports' files, when a TLS port is asked for; an error says
    /// what is missing.
    pub fn tls_files(&self) -> Result<Option<TlsFiles>, String> {
        let wanted = self.tls_port != 0 || self.tls_batch_port != 0;
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) if wanted => Ok(Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
                min_version: self.tls_min_version,
            })),
            (None, None) if !wanted && self.tls_client_ca.is_none() => Ok(None),
            _ if !wanted => Err("--tls-cert, --tls-key and --tls-client-ca need a \
                 --tls-port or --tls-batch-port to serve"
                .into()),
            _ => Err("a TLS port needs both --tls-cert and --tls-key (PEM files)".into()),
        }
    }

    /// Worker threads to run.
    pub fn worker_threads(&self) -> usize {
        self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(4)
        })
    }
}

/// Parses `1m`, `512k`, `2g` or a plain byte count, as memcached's -I does.
fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (digits, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], c.to_ascii_lowercase()),
        _ => (s, 'b'),
    };
    let n: usize = digits
        .parse()
        .map_err(|_| format!("'{s}' is not a size: use e.g. 1m, 512k or 1048576"))?;
    let bytes = match unit {
        'b' => n,
        'k' => n << 10,
        'm' => n << 20,
        'g' => n << 30,
        _ => return Err(format!("'{s}': unknown unit, use k, m or g")),
    };
    if !(1024..=1 << 30).contains(&bytes) {
        return Err(format!("item size {bytes} out of range: use 1k to 1g"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("2048"), Ok(2048));
        assert!(parse_size("0").is_err());
        assert!(parse_size("abc").is_err());
    }

    #[test]
    fn defaults_match_memcached() {
        let c = Config::parse_from(["zonecached"]);
        assert_eq!(c.port, 11211);
        assert_eq!(c.listen.to_string(), "127.0.0.1");
        assert_eq!(c.memory_mb, 64);
        assert_eq!(c.max_connections, 1024);
        assert_eq!(c.item_size_max, 1 << 20);
    }
}
