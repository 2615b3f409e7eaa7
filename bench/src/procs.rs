//! The servers under test: stock memcached and zonecached, started by the
//! harness the end-to-end tests use (`zonecache-tests`), so the bench runs
//! the binaries cargo just built, on ports no test or scenario shares.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use zonecache_tests::Server;

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Memcached,
    Zonecached,
}

impl Kind {
    /// Its name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Memcached => "memcached",
            Kind::Zonecached => "zonecached",
        }
    }
}

/// A running server of a known kind, killed on drop.
pub struct ServerProc {
    server: Server,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Which server.
    pub kind: Kind,
    /// Its name in tables (its kind's, unless started with settings of
    /// its own).
    pub label: &'static str,
    /// `addr` speaks TLS.
    pub tls: bool,
}

impl ServerProc {
    /// Starts `kind` with `-m memory_mb -t threads` on a free loopback port.
    pub fn start(kind: Kind, memory_mb: usize, threads: usize) -> Result<ServerProc, String> {
        Self::start_with(kind, kind.name(), memory_mb, threads, &[])
    }

    /// [`ServerProc::start`] with more arguments, named `label` in tables.
    pub fn start_with(
        kind: Kind,
        label: &'static str,
        memory_mb: usize,
        threads: usize,
        extra: &[&str],
    ) -> Result<ServerProc, String> {
        let (memory, threads) = (memory_mb.to_string(), threads.to_string());
        let mut args = vec!["-m", memory.as_str(), "-t", threads.as_str()];
        args.extend_from_slice(extra);
        let server = match kind {
            Kind::Memcached => Server::try_memcached(&args)?,
            Kind::Zonecached => Server::try_zonecached(&args)?,
        };
        Ok(ServerProc {
            addr: server.addr,
            server,
            kind,
            label,
            tls: false,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.server.pid()
    }

    /// CPU seconds (user + system) the server has used.
    pub fn cpu_seconds(&self) -> f64 {
        self.server.cpu_seconds()
    }

    /// Resident set size in bytes.
    pub fn rss_bytes(&self) -> u64 {
        self.server.rss_kib() * 1024
    }

    /// The `stats` the server reports.
    pub fn stats(&self) -> BTreeMap<String, String> {
        self.server.stats()
    }

    /// A numeric stat, 0 if absent.
    pub fn stat(&self, name: &str) -> u64 {
        self.stats()
            .get(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Sends `bytes` and reads until the reply ends with `end` (bounded).
    pub fn request(&self, bytes: &[u8], end: &[u8]) -> Vec<u8> {
        self.server.request(bytes, end)
    }
}
