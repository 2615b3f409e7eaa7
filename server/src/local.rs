//! The cluster `zonecache local` runs on loopback: how one of its node
//! processes starts, and the state file (`local.json` beside the configs)
//! naming the process that runs each node now. `zonecache roll` restarts
//! nodes one by one and records their new processes there; `local` stops
//! whatever processes the file names when it ends.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// One node of a local cluster and the process running it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LocalNode {
    pub id: String,
    pub zone: String,
    pub port: u16,
    pub batch_port: u16,
    /// `/metrics` port (0: none).
    #[serde(default)]
    pub metrics_port: u16,
    pub memory_mb: usize,
    /// Its config file.
    pub config: PathBuf,
    pub pid: u32,
    /// Its TLS port (0: none) and the certificate and key it serves there.
    #[serde(default)]
    pub tls_port: u16,
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// The text-protocol auth file it requires sign-in with (`-Y`).
    #[serde(default)]
    pub auth_file: Option<PathBuf>,
}

/// The state file's contents.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LocalState {
    /// The `zonecache` binary that runs nodes (`zonecache node …`).
    pub binary: PathBuf,
    /// In zone order.
    pub nodes: Vec<LocalNode>,
}

impl LocalState {
    fn path(dir: &Path) -> PathBuf {
        dir.join("local.json")
    }

    /// Reads the state of the local cluster whose configs are in `dir`.
    pub fn load(dir: &Path) -> Result<LocalState, String> {
        let path = Self::path(dir);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "{}: {e} (is this the --config-dir of a running `zonecache local`?)",
                path.display()
            )
        })?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Writes it (whole, by rename, so a reader never sees half).
    pub fn save(&self, dir: &Path) -> Result<(), String> {
        let path = Self::path(dir);
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self).expect("plain data");
        std::fs::write(&tmp, text).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// Starts the process of `node` (its pid is the child's); its output goes
/// to `log`, or where this process's goes.
pub fn spawn(binary: &Path, node: &LocalNode, log: Option<&Path>) -> Result<Child, String> {
    let mut command = Command::new(binary);
    command
        .args(["node", "-l", "127.0.0.1", "-p", &node.port.to_string()])
        .args(["--batch-port", &node.batch_port.to_string()])
        .args(["-m", &node.memory_mb.to_string(), "--config"])
        .arg(&node.config)
        .stdin(Stdio::null());
    if node.metrics_port != 0 {
        command.args(["--metrics-port", &node.metrics_port.to_string()]);
    }
    if let Some(auth) = &node.auth_file {
        command.arg("-Y").arg(auth);
    }
    if let (port @ 1.., Some(cert), Some(key)) = (node.tls_port, &node.tls_cert, &node.tls_key) {
        command.args(["--tls-port", &port.to_string(), "--tls-cert"]);
        command.arg(cert).arg("--tls-key").arg(key);
    }
    if let Some(path) = log {
        let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let err = file.try_clone().map_err(|e| e.to_string())?;
        command.stdout(file).stderr(err);
    }
    command
        .spawn()
        .map_err(|e| format!("starting {}: {e}", node.id))
}

/// Waits (bounded) until `node` accepts connections; false when it did not
/// in `within` or its process `child` ended.
pub fn wait_listening(node: &LocalNode, child: &mut Child, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while std::net::TcpStream::connect(("127.0.0.1", node.port)).is_err() {
        if Instant::now() > deadline || matches!(child.try_wait(), Ok(Some(_))) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Whether process `pid` still runs (an exited process its parent has not
/// reaped yet — a zombie — does not).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// Sends SIGTERM to `pid` and waits (bounded) for it to end, then SIGKILL.
/// `child`, when this process started it, is reaped.
pub fn stop(pid: u32, child: Option<&mut Child>, within: Duration) {
    // SAFETY: as above.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let deadline = Instant::now() + within;
    match child {
        Some(c) => {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        None => {
            while alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            // SAFETY: as above.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

/// A certificate authority made for one local cluster, and the certificate
/// its nodes serve on their TLS ports (for 127.0.0.1 and localhost), as PEM
/// files in `dir`: `ca.pem` (what clients trust), `node.pem`, `node.key`
/// (readable by this user only). Returns the node certificate's and key's
/// paths.
pub fn make_tls_identity(dir: &Path) -> Result<(PathBuf, PathBuf), String> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let fail = |e: rcgen::Error| format!("making the local TLS certificates: {e}");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "zonecache local CA");
    let ca_key = KeyPair::generate().map_err(fail)?;
    let ca = ca_params.self_signed(&ca_key).map_err(fail)?;
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .map_err(fail)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "zonecache local node");
    let key = KeyPair::generate().map_err(fail)?;
    let cert = params.signed_by(&key, &ca, &ca_key).map_err(fail)?;
    let (cert_path, key_path) = (dir.join("node.pem"), dir.join("node.key"));
    let write = |path: &Path, text: String, private: bool| {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(if private { 0o600 } else { 0o644 })
            .open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| format!("{}: {e}", path.display()))
    };
    write(&dir.join("ca.pem"), ca.pem(), false)?;
    write(&cert_path, cert.pem(), false)?;
    write(&key_path, key.serialize_pem(), true)?;
    Ok((cert_path, key_path))
}
