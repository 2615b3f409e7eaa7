//! Servers under test as child processes: stock memcached and zonecached,
//! on free loopback ports, with their CPU time and RSS read from /proc.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// A running server, killed on drop.
pub struct ServerProc {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Which server.
    pub kind: Kind,
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A binary of the server package (`zonecached`, `zonecache`) built with
/// the same profile as this one, built if missing.
pub fn server_binary(name: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut dir = exe.parent().ok_or("no binary directory")?.to_path_buf();
    if dir.ends_with("deps") {
        dir.pop(); // running as a test binary
    }
    let path = dir.join(name);
    if !path.exists() {
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(["build", "-p", "zonecache-server", "--bin", name]);
        if dir.ends_with("release") {
            cmd.arg("--release");
        }
        let status = cmd
            .status()
            .map_err(|e| format!("cannot run cargo to build zonecached: {e}"))?;
        if !status.success() {
            return Err(format!("building {name} failed"));
        }
    }
    Ok(path)
}

impl ServerProc {
    /// Starts `kind` with `-m memory_mb -t threads` on a free loopback port.
    pub fn start(kind: Kind, memory_mb: usize, threads: usize) -> Result<ServerProc, String> {
        for _ in 0..5 {
            let port = free_port().map_err(|e| e.to_string())?;
            let mut cmd = match kind {
                Kind::Memcached => {
                    let mut c = Command::new("memcached");
                    c.args(["-U", "0"]);
                    // SAFETY: geteuid has no preconditions.
                    if unsafe { libc::geteuid() } == 0 {
                        c.args(["-u", "root"]);
                    }
                    c
                }
                Kind::Zonecached => Command::new(server_binary("zonecached")?),
            };
            cmd.args(["-l", "127.0.0.1", "-p", &port.to_string()])
                .args(["-m", &memory_mb.to_string(), "-t", &threads.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let child = cmd
                .spawn()
                .map_err(|e| format!("cannot start {}: {e} (is it installed?)", kind.name()))?;
            let mut server = ServerProc {
                child,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                kind,
            };
            if server.wait_ready() {
                return Ok(server);
            }
        }
        Err(format!("{} did not start", kind.name()))
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(100)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// CPU seconds (user + system) the server has used.
    pub fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the ")" that closes the command name; utime and stime are 14 and 15.
        let after = stat.rsplit_once(')').map(|(_, a)| a).unwrap_or("");
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        (ticks(11) + ticks(12)) / hz.max(1.0)
    }

    /// Resident set size in bytes.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    }

    /// The `stats` the server reports.
    pub fn stats(&self) -> BTreeMap<String, String> {
        let reply = self.request(b"stats\r\n", b"END\r\n");
        String::from_utf8_lossy(&reply)
            .lines()
            .filter_map(|l| l.strip_prefix("STAT "))
            .filter_map(|l| l.split_once(' '))
            .map(|(k, v)| (k.to_string(), v.trim().to_string()))
            .collect()
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
        let mut out = Vec::new();
        let Ok(mut s) = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5)) else {
            return out;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
        if s.write_all(bytes).is_err() {
            return out;
        }
        let mut buf = vec![0u8; 64 * 1024];
        while !out.ends_with(end) {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
        out
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
