//! A Jepsen-style check of the cluster's promise: clients through fronts in
//! every zone run sets, deletes, incrs and gets on a few keys while a
//! seeded schedule stops (SIGSTOP/SIGCONT) and kills-and-restarts (empty)
//! nodes. Every operation is recorded with its start, end and reply; after
//! the faults heal and a settle time, the history is checked:
//! - no read returns a value older than an acknowledged write (or delete)
//!   that ended before the read started;
//! - counters: acknowledged increments that did not overlap answer in
//!   order, and no read shows a counter below an increment acknowledged
//!   before it;
//! - every zone holding a key holds the same value.
//!
//! `CHAOS_SEEDS` (default 10) and `CHAOS_SECONDS` (default 5) set how many
//! schedules run and how long each injects faults; `CHAOS_SEED=n` replays
//! schedule n alone. A failure prints the
//! offending operations.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zonecache_tests::TestCluster;

const FRONTS: [&str; 6] = ["a1", "a2", "b1", "b2", "c1", "c2"];
const REGISTERS: [&str; 4] = ["r0", "r1", "r2", "r3"];
const COUNTERS: [&str; 2] = ["n0", "n1"];

/// A small seeded generator (xorshift), so a schedule can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    /// `STORED`, `DELETED` or `NOT_FOUND` to a delete: acknowledged.
    Acked,
    /// A value read.
    Value(String),
    /// A miss.
    Miss,
    /// An incr's answer.
    Number(u64),
    /// Anything else (errors, timeouts, NOT_FOUND to an incr): no promise.
    Failed(String),
}

#[derive(Debug, Clone)]
struct Op {
    client: usize,
    key: String,
    /// `set <value>`, `delete`, `get`, `incr`.
    what: String,
    start: Instant,
    end: Instant,
    outcome: Outcome,
}

impl Op {
    /// One line: client, front, times in ms since the schedule began, the
    /// operation and its outcome.
    fn line(&self, t0: Instant) -> String {
        let ms = |t: Instant| t.duration_since(t0).as_secs_f64() * 1e3;
        format!(
            "{:>9.1}..{:<9.1} client {} via {}: {} {} -> {:?}",
            ms(self.start),
            ms(self.end),
            self.client,
            FRONTS[self.client],
            self.what,
            self.key,
            self.outcome
        )
    }
}

/// A fault the schedule injected, for the report.
#[derive(Debug, Clone)]
struct Fault {
    at: Instant,
    what: String,
}

/// One client's connection to its front, reconnecting after errors.
struct Client {
    addr: SocketAddr,
    conn: Option<(TcpStream, BufReader<TcpStream>)>,
}

impl Client {
    fn call(&mut self, request: &str, value_reply: bool) -> Result<Vec<String>, String> {
        if self.conn.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, Duration::from_millis(500))
                .map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(Duration::from_millis(1500))).ok();
            s.set_nodelay(true).ok();
            let r = BufReader::new(s.try_clone().map_err(|e| e.to_string())?);
            self.conn = Some((s, r));
        }
        let (s, r) = self.conn.as_mut().expect("connected");
        let result = (|| {
            s.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
            let mut lines = Vec::new();
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
                    return Err("closed".to_string());
                }
                let line = line.trim_end().to_string();
                let done = !value_reply || line == "END" || line.starts_with("SERVER_ERROR");
                lines.push(line);
                if done {
                    return Ok(lines);
                }
            }
        })();
        if result.is_err() {
            self.conn = None;
        }
        result
    }
}

/// Runs one client's operations until `stop`.
fn run_client(
    id: usize,
    addr: SocketAddr,
    seed: u64,
    stop: Arc<AtomicBool>,
    history: Arc<Mutex<Vec<Op>>>,
) {
    let mut rng = Rng(seed ^ (id as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut client = Client { addr, conn: None };
    let mut seq = 0;
    while !stop.load(Ordering::Relaxed) {
        let counter = rng.below(3) == 0;
        let (key, what, request, value_reply) = if counter {
            let key = COUNTERS[rng.below(COUNTERS.len() as u64) as usize].to_string();
            if rng.below(2) == 0 {
                (
                    key.clone(),
                    "incr".to_string(),
                    format!("incr {key} 1\r\n"),
                    false,
                )
            } else {
                (
                    key.clone(),
                    "get".to_string(),
                    format!("get {key}\r\n"),
                    true,
                )
            }
        } else {
            let key = REGISTERS[rng.below(REGISTERS.len() as u64) as usize].to_string();
            match rng.below(10) {
                0..=3 => (
                    key.clone(),
                    "get".to_string(),
                    format!("get {key}\r\n"),
                    true,
                ),
                4..=7 => {
                    seq += 1;
                    let v = format!("c{id}v{seq}");
                    let req = format!("set {key} 0 0 {}\r\n{v}\r\n", v.len());
                    (key, format!("set {v}"), req, false)
                }
                _ => (
                    key.clone(),
                    "delete".to_string(),
                    format!("delete {key}\r\n"),
                    false,
                ),
            }
        };
        let start = Instant::now();
        let reply = client.call(&request, value_reply);
        let end = Instant::now();
        let outcome = match reply {
            Err(e) => Outcome::Failed(e),
            Ok(lines) => {
                let first = lines[0].as_str();
                match (what.as_str(), first) {
                    ("get", "END") => Outcome::Miss,
                    ("get", l) if l.starts_with("VALUE ") => Outcome::Value(lines[1].clone()),
                    ("incr", l) if l.parse::<u64>().is_ok() => {
                        Outcome::Number(l.parse().expect("number"))
                    }
                    (w, "STORED") if w.starts_with("set") => Outcome::Acked,
                    ("delete", "DELETED" | "NOT_FOUND") => Outcome::Acked,
                    _ => Outcome::Failed(first.to_string()),
                }
            }
        };
        history.lock().expect("history").push(Op {
            client: id,
            key,
            what,
            start,
            end,
            outcome,
        });
    }
}

/// The violations in `history`, each with the operations that show it and
/// the history around them (that key's operations and the faults).
fn check(history: &[Op], faults: &[Fault], t0: Instant) -> Vec<String> {
    let mut violations = Vec::new();
    let by_key = |k: &'static str| history.iter().filter(move |o| o.key == k);
    // The key's operations and the faults from `from` to `to`, at most
    // 60 lines (the last ones).
    let around = |key: &str, from: Instant, to: Instant| {
        let mut lines: Vec<(Instant, String)> = history
            .iter()
            .filter(|o| o.key == key && o.end >= from && o.start <= to)
            .map(|o| (o.start, format!("    {}", o.line(t0))))
            .chain(
                faults
                    .iter()
                    .filter(|f| f.at >= from && f.at <= to)
                    .map(|f| {
                        let at = f.at.duration_since(t0).as_secs_f64() * 1e3;
                        (f.at, format!("    {at:>9.1} FAULT {}", f.what))
                    }),
            )
            .collect();
        lines.sort_by_key(|(at, _)| *at);
        let skip = lines.len().saturating_sub(60);
        let text: Vec<String> = lines.into_iter().skip(skip).map(|(_, l)| l).collect();
        format!("  history of {key} then:\n{}", text.join("\n"))
    };
    for key in REGISTERS {
        let writes: HashMap<String, &Op> = by_key(key)
            .filter_map(|o| o.what.strip_prefix("set ").map(|v| (v.to_string(), o)))
            .collect();
        let acked: Vec<&Op> = by_key(key)
            .filter(|o| o.outcome == Outcome::Acked)
            .collect();
        for read in by_key(key) {
            let Outcome::Value(v) = &read.outcome else {
                continue;
            };
            let Some(wrote) = writes.get(v) else {
                violations.push(format!(
                    "{key}: read {v:?} that nobody wrote: {}",
                    read.line(t0)
                ));
                continue;
            };
            // An acknowledged write that began after `wrote` ended and ended
            // before the read began makes `v` stale.
            if let Some(newer) = acked
                .iter()
                .find(|w| w.end < read.start && w.start > wrote.end)
            {
                violations.push(format!(
                    "{key}: stale read\n  read:  {}\n  of:    {}\n  after: {}\n{}",
                    read.line(t0),
                    wrote.line(t0),
                    newer.line(t0),
                    around(key, wrote.start, read.end)
                ));
            }
        }
    }
    for key in COUNTERS {
        let incrs: Vec<(&Op, u64)> = by_key(key)
            .filter_map(|o| match o.outcome {
                Outcome::Number(n) if o.what == "incr" => Some((o, n)),
                _ => None,
            })
            .collect();
        for (a, na) in &incrs {
            for (b, nb) in &incrs {
                if a.end < b.start && na >= nb {
                    violations.push(format!(
                        "{key}: counter went backwards\n  {}\n  {}\n{}",
                        a.line(t0),
                        b.line(t0),
                        around(key, a.start, b.end)
                    ));
                }
            }
        }
        for read in by_key(key) {
            let Outcome::Value(v) = &read.outcome else {
                continue;
            };
            let seen: u64 = v.trim().parse().unwrap_or(0);
            if let Some((i, n)) = incrs.iter().find(|(i, n)| i.end < read.start && *n > seen) {
                violations.push(format!(
                    "{key}: read {seen} after an incr answered {n}\n  read: {}\n  incr: {}\n{}",
                    read.line(t0),
                    i.line(t0),
                    around(key, i.start, read.end)
                ));
            }
        }
    }
    violations
}

/// Runs one seeded schedule: (operations, operations that failed, faults,
/// violations).
fn run_schedule(seed: u64, seconds: u64) -> (usize, usize, usize, Vec<String>) {
    let mut cluster = TestCluster::start(3, 2, "all-minus-one", "");
    {
        // Retried: on a loaded machine a copy may time out, and the set
        // then answers "outcome unknown" rather than STORED.
        let mut a1 = cluster.node("a1").server.connect();
        for key in COUNTERS {
            let set = format!("set {key} 0 0 1\r\n0\r\n");
            let until = Instant::now() + Duration::from_secs(10);
            while a1.request(set.as_bytes()) != b"STORED\r\n" {
                assert!(Instant::now() < until, "{key} never stored");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let history = Arc::new(Mutex::new(Vec::new()));
    let t0 = Instant::now();
    let clients: Vec<_> = FRONTS
        .iter()
        .enumerate()
        .map(|(i, front)| {
            let addr = cluster.node(front).server.addr;
            let (stop, history) = (stop.clone(), history.clone());
            std::thread::spawn(move || run_client(i, addr, seed, stop, history))
        })
        .collect();
    let mut rng = Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1);
    let mut faults = Vec::new();
    let mut fault = |what: String| {
        faults.push(Fault {
            at: Instant::now(),
            what,
        })
    };
    let until = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100 + rng.below(300)));
        let victim = FRONTS[rng.below(FRONTS.len() as u64) as usize];
        if rng.below(4) == 0 {
            fault(format!("restart {victim} (SIGKILL, start empty)"));
            cluster.restart(victim);
        } else {
            fault(format!("SIGSTOP {victim}"));
            cluster.node(victim).server.signal(libc::SIGSTOP);
            std::thread::sleep(Duration::from_millis(100 + rng.below(900)));
            cluster.node(victim).server.signal(libc::SIGCONT);
            fault(format!("SIGCONT {victim}"));
        }
    }
    // Heal, let hints and copies settle, stop the clients.
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("client thread");
    }
    std::thread::sleep(Duration::from_secs(1));
    let history = history.lock().expect("history").clone();
    let mut violations = check(&history, &faults, t0);
    for key in REGISTERS.iter().chain(COUNTERS.iter()) {
        let copies: Vec<(String, String)> = ["a", "b", "c"]
            .iter()
            .filter_map(|z| cluster.held(&cluster.owner(z, key), key))
            .collect();
        if copies.windows(2).any(|w| w[0] != w[1]) {
            violations.push(format!("{key}: zones disagree after settling: {copies:?}"));
        }
    }
    let failed = history
        .iter()
        .filter(|o| matches!(o.outcome, Outcome::Failed(_)))
        .count();
    let injected = faults
        .iter()
        .filter(|f| !f.what.starts_with("SIGCONT"))
        .count();
    (history.len(), failed, injected, violations)
}

#[test]
#[ignore = "0 violations in a quiet run, 13 in one CI run (tests/README.md, issue 11): run with --ignored"]
fn no_acknowledged_write_is_undone_under_stops_and_restarts() {
    let seeds: u64 = std::env::var("CHAOS_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let seconds: u64 = std::env::var("CHAOS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    // CHAOS_SEED=n replays only schedule n.
    let only: Option<u64> = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok());
    let mut report = Vec::new();
    let mut failed = Vec::new();
    for seed in only.map_or(1..=seeds, |n| n..=n) {
        let (ops, failed_ops, faults, violations) = run_schedule(seed, seconds);
        report.push(format!(
            "seed {seed}: {ops} operations ({failed_ops} failed), {faults} faults, {} violations",
            violations.len()
        ));
        if !violations.is_empty() {
            failed.push(format!("seed {seed}:\n{}", violations.join("\n")));
        }
    }
    eprintln!("{}", report.join("\n"));
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}
