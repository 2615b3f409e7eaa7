//! # zonecache-tests
//!
//! End-to-end tests with real processes on loopback: `zonecached` nodes
//! (and stock `memcached` where a comparison is needed) started on free
//! ports, driven over TCP, and killed when a test ends. Every wait is bounded.

pub mod corpus;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a server may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a single reply may take.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A free loopback port (the OS picks it; we release it for the server).
/// Never the same port twice in one test process: tests run in parallel,
/// and a port handed to one test's server but not yet bound must not be
/// handed to another's (its server would fail to bind while the first
/// test talked to the wrong process).
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if handed_out.insert(port) {
            return port;
        }
    }
}

/// The workspace's target directory for the profile these tests run in.
fn target_dir() -> PathBuf {
    // tests run from target/<profile>/deps/<test-binary>
    let exe = std::env::current_exe().expect("test binary path");
    if let Some(profile) = exe
        .parent()
        .filter(|deps| deps.ends_with("deps"))
        .and_then(|deps| deps.parent())
    {
        return profile.to_path_buf();
    }
    // Doc tests run from a temporary folder: use the workspace's target.
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")))
        .join("debug")
}

/// Path of the `zonecached` binary, built once per test process so the
/// tests never run a stale server (`cargo test -p zonecache-tests` alone
/// would not rebuild another package's binary).
pub fn zonecached_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = target_dir();
            let mut cmd = Command::new(env!("CARGO"));
            cmd.args([
                "build",
                "--quiet",
                "-p",
                "zonecache-server",
                "--bin",
                "zonecached",
            ]);
            if dir.ends_with("release") {
                cmd.arg("--release");
            }
            let status = cmd.status().expect("run cargo build");
            assert!(status.success(), "building zonecached failed");
            dir.join("zonecached")
        })
        .clone()
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
        Self::start("zonecached", |port| {
            let mut c = Command::new(zonecached_binary());
            c.args(["-p", &port.to_string(), "-l", "127.0.0.1"])
                .args(args);
            c
        })
    }

    /// Starts `zonecached` on `port` (which the caller chose, e.g. for a
    /// cluster config) with extra arguments.
    pub fn zonecached_on(port: u16, args: &[&str]) -> Server {
        let mut c = Command::new(zonecached_binary());
        c.args(["-p", &port.to_string(), "-l", "127.0.0.1"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let child = c.spawn().expect("start zonecached");
        let mut server = Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            name: "zonecached",
        };
        assert!(
            server.wait_ready(),
            "zonecached did not start on port {port}"
        );
        server
    }

    /// Starts stock `memcached` on a free port with extra arguments.
    pub fn memcached(args: &[&str]) -> Server {
        Self::start("memcached", |port| {
            let mut c = Command::new("memcached");
            c.args(["-p", &port.to_string(), "-l", "127.0.0.1", "-U", "0"]);
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } == 0 {
                c.args(["-u", "root"]);
            }
            c.args(args);
            c
        })
    }

    fn start(name: &'static str, command: impl Fn(u16) -> Command) -> Server {
        for _attempt in 0..5 {
            let port = free_port();
            let child = command(port)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {name}: {e} (is it installed?)"));
            let mut server = Server {
                child,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                name,
            };
            if server.wait_ready() {
                return server;
            }
        }
        panic!("{name} did not start listening");
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false; // exited, e.g. port taken
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return true;
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

    /// Sends a signal (SIGSTOP, SIGCONT, SIGKILL, …).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill has no memory preconditions.
        unsafe { libc::kill(self.pid() as i32, signal) };
    }

    /// A new blocking connection with reply timeouts.
    pub fn connect(&self) -> Conn {
        Conn::open(self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One node of a [`TestCluster`].
pub struct ClusterNode {
    /// Node id (`a1`, `b2`, …).
    pub id: String,
    /// Zone name.
    pub zone: String,
    /// The process.
    pub server: Server,
}

/// A node as the configs name it: (id, port, batch port).
type LaidOutNode = (String, u16, u16);

/// A multi-zone cluster of real `zonecached` processes on loopback.
pub struct TestCluster {
    pub nodes: Vec<ClusterNode>,
    /// Zones with their (node id, port, batch port), as written to the configs.
    layout: Vec<(String, Vec<LaidOutNode>)>,
    /// Top-level config lines (policy, deadlines).
    header: String,
    dir: PathBuf,
}

impl TestCluster {
    /// Starts `zones` × `per_zone` nodes with `write_policy` and optional
    /// extra top-level config lines.
    pub fn start(zones: usize, per_zone: usize, write_policy: &str, extra: &str) -> TestCluster {
        let names = ["a", "b", "c", "d"];
        let layout: Vec<(String, Vec<LaidOutNode>)> = (0..zones)
            .map(|z| {
                let nodes = (0..per_zone)
                    .map(|n| (format!("{}{}", names[z], n + 1), free_port(), free_port()))
                    .collect();
                (names[z].to_string(), nodes)
            })
            .collect();
        let dir = std::env::temp_dir().join(format!(
            "zc-cluster-{}-{}",
            std::process::id(),
            layout[0].1[0].1
        ));
        std::fs::create_dir_all(&dir).expect("config dir");
        let mut cluster = TestCluster {
            nodes: Vec::new(),
            layout,
            header: format!("write_policy = \"{write_policy}\"\n{extra}\n"),
            dir,
        };
        cluster.write_configs();
        let all: Vec<(String, String, u16, u16)> = cluster
            .layout
            .iter()
            .flat_map(|(zone, nodes)| {
                nodes
                    .iter()
                    .map(move |(id, port, batch)| (zone.clone(), id.clone(), *port, *batch))
            })
            .collect();
        for (zone, id, port, batch) in all {
            cluster.spawn(&zone, &id, port, batch);
        }
        cluster
    }

    /// The config file of node `id` (clients read the same files).
    pub fn config_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.toml"))
    }

    /// Writes every node's config from the layout.
    fn write_configs(&self) {
        let mut zones_toml = String::new();
        for (zone, nodes) in &self.layout {
            let list: Vec<String> = nodes
                .iter()
                .map(|(id, port, batch)| {
                    format!(
                        "{{ id = \"{id}\", addr = \"127.0.0.1:{port}\", batch_addr = \"127.0.0.1:{batch}\" }}"
                    )
                })
                .collect();
            zones_toml.push_str(&format!(
                "\n[[zones]]\nname = \"{zone}\"\nnodes = [{}]\n",
                list.join(", ")
            ));
        }
        for (_, nodes) in &self.layout {
            for (id, _, _) in nodes {
                let text = format!("node = \"{id}\"\n{}{zones_toml}", self.header);
                std::fs::write(self.config_path(id), text).expect("write config");
            }
        }
    }

    fn spawn(&mut self, zone: &str, id: &str, port: u16, batch: u16) {
        let path = self.config_path(id);
        let server = Server::zonecached_on(
            port,
            &[
                "--batch-port",
                &batch.to_string(),
                "-m",
                "16",
                "-t",
                "1",
                "--config",
                path.to_str().expect("utf-8 path"),
            ],
        );
        self.nodes.push(ClusterNode {
            id: id.to_string(),
            zone: zone.to_string(),
            server,
        });
    }

    /// Adds a node to `zone`: rewrites every config, starts the new node,
    /// and sends SIGHUP to the others so they reload. Returns its id.
    pub fn add_node(&mut self, zone: &str) -> String {
        let (port, batch) = (free_port(), free_port());
        let entry = self
            .layout
            .iter_mut()
            .find(|(z, _)| z == zone)
            .expect("zone");
        let id = format!("{zone}{}", entry.1.len() + 1);
        entry.1.push((id.clone(), port, batch));
        self.write_configs();
        self.spawn(zone, &id, port, batch);
        for n in &self.nodes {
            if n.id != id {
                n.server.signal(libc::SIGHUP);
            }
        }
        id
    }

    /// The node with this id.
    pub fn node(&self, id: &str) -> &ClusterNode {
        self.nodes.iter().find(|n| n.id == id).expect("node id")
    }

    /// Mutable access to the node with this id.
    pub fn node_mut(&mut self, id: &str) -> &mut ClusterNode {
        self.nodes.iter_mut().find(|n| n.id == id).expect("node id")
    }

    /// A connection marked as peer traffic: reads this node's own store only.
    pub fn local(&self, id: &str) -> Conn {
        let mut c = self.node(id).server.connect();
        assert_eq!(c.request(b"zc_peer\r\n"), b"OK\r\n");
        c
    }

    /// Node ids of one zone.
    pub fn zone(&self, zone: &str) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.zone == zone)
            .map(|n| n.id.clone())
            .collect()
    }

    /// The ids of the nodes whose own store holds `key`.
    pub fn holders(&self, key: &str) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.server.is_alive())
            .filter(|n| {
                let mut c = self.local(&n.id);
                c.request(format!("mg {key}\r\n").as_bytes()) == b"HD\r\n"
            })
            .map(|n| n.id.clone())
            .collect()
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            // A SIGSTOPped node must be continued to be killed cleanly.
            // SAFETY: kill has no memory preconditions.
            unsafe { libc::kill(n.server.pid() as i32, libc::SIGCONT) };
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A blocking client connection for byte-level tests.
pub struct Conn {
    stream: TcpStream,
    /// Counter making each sync marker unique.
    sync: u64,
}

impl Conn {
    /// Connects with bounded timeouts.
    pub fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect_timeout(&addr, REPLY_TIMEOUT).expect("connect");
        stream
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .expect("timeout");
        stream
            .set_write_timeout(Some(REPLY_TIMEOUT))
            .expect("timeout");
        let _ = stream.set_nodelay(true);
        Conn { stream, sync: 0 }
    }

    /// Sends raw bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Reads until the accumulated reply ends with `end` (bounded by the timeout).
    pub fn read_until(&mut self, end: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 64 * 1024];
        while !out.ends_with(end) {
            match self.stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => panic!(
                    "reading reply: {e}; got so far {:?}",
                    String::from_utf8_lossy(&out)
                ),
            }
        }
        out
    }

    /// A `stats` value. Read without the sync marker, which is itself a read
    /// and would show in read counters.
    pub fn stat(&mut self, name: &str) -> u64 {
        self.send(b"stats\r\n");
        let reply = String::from_utf8_lossy(&self.read_until(b"END\r\n")).to_string();
        reply
            .lines()
            .find_map(|l| l.strip_prefix(&format!("STAT {name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no stat {name}"))
    }

    /// Sends `bytes` then a sync marker (a meta miss with a unique opaque,
    /// which no step can produce by itself), and returns everything before
    /// the marker's reply.
    pub fn request(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.sync += 1;
        let marker = format!("EN Ozcsync{}\r\n", self.sync);
        self.send(bytes);
        self.send(format!("mg zc:sync:marker Ozcsync{}\r\n", self.sync).as_bytes());
        let mut out = self.read_until(marker.as_bytes());
        out.truncate(out.len().saturating_sub(marker.len()));
        out
    }

    /// Half-closes and reads everything until the server closes.
    pub fn finish(mut self) -> Vec<u8> {
        let _ = self.stream.shutdown(Shutdown::Write);
        self.read_to_close()
    }

    /// Reads until the server closes the connection.
    pub fn read_to_close(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 64 * 1024];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return out,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return out,
                Err(e) => panic!(
                    "waiting for close: {e}; got {:?}",
                    String::from_utf8_lossy(&out)
                ),
            }
        }
    }
}
