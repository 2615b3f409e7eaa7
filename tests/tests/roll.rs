//! `zonecache roll` on a real `zonecache local` cluster under steady load
//! from a Rust client in direct mode: every node is restarted empty in
//! turn and warmed before the next, the load sees no error and keeps
//! finding its keys, and stopping `local` afterwards stops the restarted
//! processes too (none left behind).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use zonecache_client::{ClientBuilder, ClusterConfig, StoreOptions};
use zonecache_server::local::alive;
use zonecache_tests::{free_port_range, server_binary};

const KEYS: u64 = 3000;

/// A running `zonecache local`, stopped (SIGTERM) on drop.
struct Local {
    child: Child,
    dir: PathBuf,
}

impl Local {
    fn start(zones: usize) -> Local {
        let base = free_port_range(3 * zones as u16).expect("ports");
        let dir = std::env::temp_dir().join(format!("zc-roll-{}-{base}", std::process::id()));
        let mut child = Command::new(server_binary("zonecache").unwrap())
            .args(["local", "--zones", &zones.to_string(), "--nodes", "1"])
            .args(["--base-port", &base.to_string(), "--memory", "16"])
            .arg("--config-dir")
            .arg(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("zonecache local");
        let out = BufReader::new(child.stdout.take().unwrap());
        for line in out.lines() {
            if line.expect("stdout").starts_with("configs in") {
                break;
            }
        }
        Local { child, dir }
    }

    fn pids(&self) -> Vec<u32> {
        let text = std::fs::read_to_string(self.dir.join("local.json")).unwrap();
        let state: serde_json::Value = serde_json::from_str(&text).unwrap();
        state["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["pid"].as_u64().unwrap() as u32)
            .collect()
    }

    fn stop(&mut self) {
        // SAFETY: kill has no memory preconditions.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        self.stop();
        for pid in self.pids() {
            // SAFETY: as above.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Steady load from a direct-mode client: (requests, errors, hits, misses).
fn load(config: &Path, stop: Arc<AtomicBool>, counts: Arc<[AtomicU64; 4]>) {
    let config = ClusterConfig::load(config).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        // Deadlines for unoptimised nodes sharing 2 cores with the test.
        let client = ClientBuilder::config(config)
            .realtime_deadlines(Duration::from_millis(200), Duration::from_millis(500))
            .build()
            .unwrap();
        let mut i = 0u64;
        let started = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            i = i.wrapping_add(7919);
            let key = format!("k{}", i % KEYS);
            let result = if i.is_multiple_of(10) {
                client
                    .set(&key, "v", StoreOptions::default())
                    .await
                    .map(|_| true)
            } else {
                client.get(&key).await.map(|v| v.is_some())
            };
            counts[0].fetch_add(1, Ordering::Relaxed);
            match result {
                Err(e) => {
                    eprintln!("load error on {key} at {:?}: {e}", started.elapsed());
                    counts[1].fetch_add(1, Ordering::Relaxed);
                }
                Ok(true) => {
                    counts[2].fetch_add(1, Ordering::Relaxed);
                }
                Ok(false) => {
                    counts[3].fetch_add(1, Ordering::Relaxed);
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
}

#[test]
fn a_rolling_restart_under_load_has_no_client_errors_and_leaves_nothing_behind() {
    let mut local = Local::start(3);
    let config = local.dir.join("a1.toml");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = ClientBuilder::config(ClusterConfig::load(&config).unwrap())
            .build()
            .unwrap();
        for i in 0..KEYS {
            client
                .set(format!("k{i}"), "v", StoreOptions::default())
                .await
                .unwrap();
        }
    });
    let before = local.pids();
    let stop = Arc::new(AtomicBool::new(false));
    let counts: Arc<[AtomicU64; 4]> = Arc::new(Default::default());
    let loader = {
        let (config, stop, counts) = (config.clone(), stop.clone(), counts.clone());
        std::thread::spawn(move || load(&config, stop, counts))
    };
    let out = Command::new(server_binary("zonecache").unwrap())
        // The probe keeps the config's deadlines (20/50 ms), tight for
        // unoptimised nodes on a loaded machine: a few of its requests
        // may time out; the load above must see none.
        .args(["roll", "--grace-ms", "300", "--probe-rate", "100"])
        .args(["--max-errors", "5", "--max-p99-ms", "2000"])
        .args(["--ready-timeout-s", "60", "--config-dir"])
        .arg(&local.dir)
        .output()
        .expect("zonecache roll");
    stop.store(true, Ordering::Relaxed);
    loader.join().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    eprintln!("{text}");
    assert!(out.status.success(), "{text}");
    assert!(text.contains("rolled 3 nodes"), "{text}");
    // Each node was copied its keys by the warm-up.
    assert_eq!(text.matches("keys copied").count(), 3, "{text}");
    let after = local.pids();
    for (old, new) in before.iter().zip(&after) {
        assert_ne!(old, new, "every node was restarted");
        assert!(!alive(*old), "the old process {old} ended");
        assert!(alive(*new));
    }
    let [requests, errors, hits, misses] = counts
        .as_ref()
        .each_ref()
        .map(|c| c.load(Ordering::Relaxed));
    assert!(requests > 200, "{requests} requests");
    assert_eq!(errors, 0, "client errors during the roll\n{text}");
    let gets = hits + misses;
    assert!(
        hits as f64 >= 0.99 * gets as f64,
        "{hits} of {gets} gets hit"
    );
    local.stop();
    let deadline = Instant::now() + Duration::from_secs(10);
    while after.iter().any(|p| alive(*p)) {
        assert!(Instant::now() < deadline, "nodes left running: {after:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
