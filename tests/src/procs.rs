//! Server processes on loopback, for the tests and the bench alike: free
//! ports that are never handed out twice, the server binaries built fresh
//! (never a stale one), and `zonecached` or stock `memcached` started on
//! them, killed when dropped, with their CPU time, RSS and `stats` readable.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::conn::Conn;

/// How long a server may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Lock files of the ports this process has claimed, held until it exits.
static CLAIMED: Mutex<Vec<std::fs::File>> = Mutex::new(Vec::new());

/// Claims `port` against every process on this machine that uses this
/// harness (test binaries and doc tests run in parallel, each a process of
/// its own): an exclusive `flock` on a file named after the port, held
/// until this process exits. False when another claim holds it.
fn claim(port: u16) -> bool {
    use std::os::fd::AsRawFd;
    let dir = std::env::temp_dir().join("zonecache-test-ports");
    let _ = std::fs::create_dir_all(&dir);
    let Ok(file) = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(port.to_string()))
    else {
        return false;
    };
    // SAFETY: flock on a descriptor we own; no memory is passed.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return false;
    }
    CLAIMED.lock().unwrap_or_else(|e| e.into_inner()).push(file);
    true
}

/// A free loopback port for a server to bind, claimed like
/// [`free_port_range`]'s: never one another test — in this process or
/// another — was given, and below Linux's ephemeral range. (A port the OS
/// hands out for `:0` lies in that range, where an outgoing connection may
/// take it before the server binds it, or a readiness probe to it may
/// connect to itself: TCP's simultaneous open.)
pub fn free_port() -> u16 {
    free_port_range(1).expect("a free loopback port")
}

/// The first of `count` consecutive free loopback ports (a cluster laid out
/// by `ClusterConfig::local`), claimed like [`free_port`]'s.
pub fn free_port_range(count: u16) -> Result<u16, String> {
    // Below Linux's ephemeral range, so outgoing connections do not take
    // them; each process starts its search elsewhere.
    const LOW: u16 = 20_000;
    const SPAN: u32 = 12_000;
    let step = u32::from(count.max(1)) + 3;
    let start = std::process::id().wrapping_mul(7_919) % SPAN;
    for i in 0..SPAN / step {
        let base = LOW + ((start + i * step) % (SPAN - step)) as u16;
        let ports = base..base + count;
        let free = ports
            .clone()
            .all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok());
        if free && ports.clone().all(claim) {
            return Ok(base);
        }
    }
    Err(format!("no {count} consecutive free ports on loopback"))
}

/// The workspace's target directory for the profile the running binary
/// was built with (a test, a doc test, or a binary such as the bench).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("own binary path");
    let mut dir = exe.parent().expect("binary directory").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop(); // a test binary
    }
    if dir.ends_with("debug") || dir.ends_with("release") {
        return dir;
    }
    // Doc tests run from a temporary folder: use the workspace's target.
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")))
        .join("debug")
}

/// Path of a binary of the server package (`zonecached`, `zonecache`) in
/// the running binary's profile, built by cargo once per process so it is
/// never stale (`cargo test -p zonecache-tests`, or the bench, would not
/// rebuild another package's binary by themselves).
pub fn server_binary(name: &str) -> Result<PathBuf, String> {
    static BUILT: OnceLock<Mutex<HashMap<String, Result<PathBuf, String>>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    built
        .entry(name.to_string())
        .or_insert_with(|| {
            let dir = profile_dir();
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_string());
            let mut cmd = Command::new(cargo);
            cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
                .args(["build", "--quiet", "-p", "zonecache-server", "--bin", name]);
            if dir.ends_with("release") {
                cmd.arg("--release");
            }
            let status = cmd
                .status()
                .map_err(|e| format!("cannot run cargo to build {name}: {e}"))?;
            if !status.success() {
                return Err(format!("building {name} failed"));
            }
            Ok(dir.join(name))
        })
        .clone()
}

/// Runs the operator tool, `zonecache <args>`: its exit code and what it
/// printed (stdout, then stderr).
pub fn zonecache_tool(args: &[&str]) -> (i32, String) {
    let binary = server_binary("zonecache").unwrap_or_else(|e| panic!("{e}"));
    let out = std::process::Command::new(binary)
        .args(args)
        .output()
        .expect("zonecache runs");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().expect("exited"), text)
}

/// A plain HTTP GET of `path` at `addr`: the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut reply = Vec::new();
    stream
        .read_to_end(&mut reply)
        .unwrap_or_else(|e| panic!("GET {path} at {addr}: {e}"));
    let text = String::from_utf8_lossy(&reply).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {head:?}"));
    (status, body.to_string())
}

/// [`server_binary`] for `zonecached`, for tests (panics if it cannot be built).
pub fn zonecached_binary() -> PathBuf {
    server_binary("zonecached").unwrap_or_else(|e| panic!("{e}"))
}

/// Every `stats` value of the server at `addr`, read on a connection of its
/// own with bounded waits; empty when it does not answer.
pub fn stats_at(addr: SocketAddr) -> BTreeMap<String, String> {
    let reply = request_at(addr, b"stats\r\n", b"END\r\n");
    String::from_utf8_lossy(&reply)
        .lines()
        .filter_map(|l| l.strip_prefix("STAT "))
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// Sends `bytes` to `addr` on a connection of its own and reads until the
/// reply ends with `end`, the connection closes, or a read waits 30 s.
pub fn request_at(addr: SocketAddr, bytes: &[u8], end: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
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

/// A server process that is killed when dropped.
pub struct Server {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// What it is, for messages.
    pub name: &'static str,
}

impl Server {
    /// Starts `zonecached` on a free port with extra arguments.
    pub fn zonecached(args: &[&str]) -> Server {
        Self::try_zonecached(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts `zonecached` on a free port, or says why it could not.
    pub fn try_zonecached(args: &[&str]) -> Result<Server, String> {
        let binary = server_binary("zonecached")?;
        Self::start("zonecached", |port| {
            let mut c = Command::new(&binary);
            c.args(["-p", &port.to_string(), "-l", "127.0.0.1"])
                .args(args);
            c
        })
    }

    /// Starts `zonecached` on a free port with its log (stderr) written to
    /// `log`.
    pub fn zonecached_logging(args: &[&str], log: &Path) -> Server {
        Self::zonecached_logging_on(free_port(), args, Some(log))
    }

    /// Starts `zonecached` on `port` (which the caller chose, e.g. for a
    /// cluster config) with extra arguments.
    pub fn zonecached_on(port: u16, args: &[&str]) -> Server {
        Self::zonecached_logging_on(port, args, None)
    }

    /// [`Server::zonecached_on`] with its log (stderr) written to `log`
    /// instead of the test's own stderr.
    pub fn zonecached_logging_on(port: u16, args: &[&str], log: Option<&Path>) -> Server {
        let mut c = Command::new(zonecached_binary());
        c.args(["-p", &port.to_string(), "-l", "127.0.0.1"])
            .args(args);
        let stderr = log.map(|path| {
            Stdio::from(
                std::fs::File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
            )
        });
        let mut server =
            Server::spawn("zonecached", c, port, stderr).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            server.wait_ready(),
            "zonecached did not start on port {port}"
        );
        server
    }

    /// Starts stock `memcached` on a free port with extra arguments.
    pub fn memcached(args: &[&str]) -> Server {
        Self::try_memcached(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts a real Prometheus (Debian's `prometheus` package) on a free
    /// port with `config`, keeping its data in `data_dir`.
    pub fn prometheus(config: &std::path::Path, data_dir: &std::path::Path) -> Server {
        Self::start("prometheus", |port| {
            let mut c = Command::new("prometheus");
            c.arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", data_dir.display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--log.level=warn");
            c
        })
        .unwrap_or_else(|e| panic!("{e}: install Debian's prometheus package"))
    }

    /// Starts stock `memcached` on a free port, or says why it could not.
    pub fn try_memcached(args: &[&str]) -> Result<Server, String> {
        Self::try_memcached_with_env(args, &[])
    }

    /// [`Server::try_memcached`] with these environment variables set
    /// (`SASL_CONF_PATH` for `-S`).
    pub fn try_memcached_with_env(
        args: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Result<Server, String> {
        Self::start("memcached", |port| {
            let mut c = Command::new("memcached");
            c.args(["-p", &port.to_string(), "-l", "127.0.0.1", "-U", "0"]);
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } == 0 {
                c.args(["-u", "root"]);
            }
            c.args(args);
            c.envs(env.iter().copied());
            c
        })
    }

    fn spawn(
        name: &'static str,
        mut command: Command,
        port: u16,
        stderr: Option<Stdio>,
    ) -> Result<Server, String> {
        let inherit = stderr.is_none();
        if inherit && std::env::var_os("RUST_LOG").is_none() {
            // Warnings only on the test's own stderr: the request log's
            // line per bad request would bury a failure's output.
            command.env("RUST_LOG", "warn");
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr.unwrap_or_else(Stdio::inherit))
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e} (is it installed?)"))?;
        Ok(Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            name,
        })
    }

    fn start(name: &'static str, command: impl Fn(u16) -> Command) -> Result<Server, String> {
        for _attempt in 0..5 {
            let port = free_port();
            let mut server = Server::spawn(name, command(port), port, None)?;
            if server.wait_ready() {
                return Ok(server);
            }
        }
        Err(format!("{name} did not start listening"))
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false; // exited, e.g. port taken
            }
            // A probe that connected to itself is no server.
            if let Ok(probe) = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)) {
                if probe.local_addr().ok() != probe.peer_addr().ok() {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// CPU seconds (user + system) the process has used, from /proc.
    pub fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
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

    /// Every `stats` value, on a connection of its own (empty when the
    /// server does not answer).
    pub fn stats(&self) -> BTreeMap<String, String> {
        stats_at(self.addr)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Whether the process exists (without reaping it; usable through `&self`).
    pub fn is_alive(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .map(|s| !s.contains(") Z"))
            .unwrap_or(false)
    }

    /// Sends a signal (SIGSTOP, SIGCONT, SIGKILL, …). For SIGSTOP and
    /// SIGKILL it returns once the signal has taken effect (every thread
    /// stopped, or the process dead; bounded): `kill` returns before a
    /// thread running on another core has stopped, and a "hung" node that
    /// still answers its next request makes a test fail at random.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill has no memory preconditions.
        unsafe { libc::kill(self.pid() as i32, signal) };
        let done = match signal {
            libc::SIGSTOP => |states: &[char]| states.iter().all(|s| matches!(s, 'T' | 't')),
            libc::SIGKILL => |states: &[char]| states.iter().all(|s| matches!(s, 'Z' | 'X')),
            _ => return,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline && !done(&thread_states(self.pid())) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// A new blocking connection with reply timeouts.
    pub fn connect(&self) -> Conn {
        Conn::open(self.addr)
    }

    /// Sends `bytes` on a connection of its own and reads until the reply
    /// ends with `end` (see [`request_at`]).
    pub fn request(&self, bytes: &[u8], end: &[u8]) -> Vec<u8> {
        request_at(self.addr, bytes, end)
    }
}

/// The scheduler state (`R`, `S`, `T`, `Z`, …) of every thread of `pid`;
/// empty once the process is gone.
fn thread_states(pid: u32) -> Vec<char> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("stat")).ok())
        .filter_map(|stat| stat.rsplit_once(") ")?.1.chars().next())
        .collect()
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
