//! A Jepsen-style check of the cluster's promise. Clients through fronts in
//! every zone (the text protocol) and the Rust client in direct mode run
//! sets, cas, deletes, incrs and gets on a few keys while a seeded schedule
//! stops (SIGSTOP/SIGCONT), kills-and-restarts (empty) nodes and puts the
//! proxy in front of a node into delay, drop, reset, blackhole or a one-way
//! partition. Every operation is recorded with its start, end and reply;
//! after the faults heal and a settle time, the history is checked:
//! - no read returns a value older than an acknowledged write (or delete)
//!   that ended before the read started, nor a value whose cas was refused;
//! - counters: acknowledged increments that did not overlap answer in
//!   order, and no read shows a counter below an increment acknowledged
//!   before it;
//! - every zone holding a key holds the same value.
//!
//! `CHAOS_SEEDS` (default 10) and `CHAOS_SECONDS` (default 5) set how many
//! schedules run and how long each injects faults; `CHAOS_SEED=n` replays
//! schedule n alone. A failure prints the offending operations with the
//! key's history and the faults around them.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zonecache_tests::{Fault, TestCluster};

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
    /// A write refused for sure (`EXISTS`/`NOT_FOUND` to a cas, or a cas of
    /// a key that was not there): its value must never be read.
    Rejected(String),
    /// A value read.
    Value(String),
    /// A miss.
    Miss,
    /// An incr's answer.
    Number(u64),
    /// Anything else (errors, timeouts, NOT_FOUND to an incr): no promise.
    Failed(String),
}

/// What a client asks.
#[derive(Debug, Clone)]
enum Action {
    Get,
    Set(String),
    /// `gets`, then `cas` with the token read.
    Cas(String),
    Delete,
    Incr,
}

impl Action {
    /// How the history shows it: `get`, `set <v>`, `cas <v>`, `delete`,
    /// `incr`.
    fn what(&self) -> String {
        match self {
            Action::Get => "get".into(),
            Action::Set(v) => format!("set {v}"),
            Action::Cas(v) => format!("cas {v}"),
            Action::Delete => "delete".into(),
            Action::Incr => "incr".into(),
        }
    }
}

#[derive(Debug, Clone)]
struct Op {
    client: usize,
    /// Which front (or `rust` for the Rust client in direct mode).
    via: &'static str,
    key: String,
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
            self.via,
            self.what,
            self.key,
            self.outcome
        )
    }

    /// The value this operation tried to write, if it writes one.
    fn value_written(&self) -> Option<&str> {
        self.what
            .strip_prefix("set ")
            .or_else(|| self.what.strip_prefix("cas "))
    }
}

/// A fault the schedule injected, for the report.
#[derive(Debug, Clone)]
struct Injected {
    at: Instant,
    what: String,
}

/// A way into the cluster that runs a client's actions.
trait Front {
    fn run(&mut self, key: &str, action: &Action) -> Outcome;
}

/// The memcached text protocol to one node, reconnecting after errors.
struct TextFront {
    addr: SocketAddr,
    conn: Option<(TcpStream, BufReader<TcpStream>)>,
}

impl TextFront {
    fn call(&mut self, request: &str, value_reply: bool) -> Result<Vec<String>, String> {
        if self.conn.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, Duration::from_millis(500)).map_err(
                |e| {
                    // A restarting node: no hot loop of refused connects.
                    std::thread::sleep(Duration::from_millis(10));
                    e.to_string()
                },
            )?;
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

impl Front for TextFront {
    fn run(&mut self, key: &str, action: &Action) -> Outcome {
        let store = |verb: &str, v: &str, token: &str| {
            format!("{verb} {key} 0 0 {}{token}\r\n{v}\r\n", v.len())
        };
        let (request, value_reply) = match action {
            Action::Get => (format!("get {key}\r\n"), true),
            Action::Set(v) => (store("set", v, ""), false),
            Action::Delete => (format!("delete {key}\r\n"), false),
            Action::Incr => (format!("incr {key} 1\r\n"), false),
            Action::Cas(v) => {
                let lines = match self.call(&format!("gets {key}\r\n"), true) {
                    Ok(lines) => lines,
                    Err(e) => return Outcome::Failed(e),
                };
                let token = match lines[0].strip_prefix("VALUE ") {
                    Some(head) => head.rsplit(' ').next().unwrap_or("").to_string(),
                    None if lines[0] == "END" => return Outcome::Rejected("miss".into()),
                    None => return Outcome::Failed(lines[0].clone()),
                };
                (store("cas", v, &format!(" {token}")), false)
            }
        };
        let lines = match self.call(&request, value_reply) {
            Ok(lines) => lines,
            Err(e) => return Outcome::Failed(e),
        };
        let first = lines[0].as_str();
        match (action, first) {
            (Action::Get, "END") => Outcome::Miss,
            (Action::Get, l) if l.starts_with("VALUE ") => Outcome::Value(lines[1].clone()),
            (Action::Incr, l) if l.parse::<u64>().is_ok() => {
                Outcome::Number(l.parse().expect("number"))
            }
            (Action::Set(_) | Action::Cas(_), "STORED") => Outcome::Acked,
            (Action::Cas(_), "EXISTS" | "NOT_FOUND") => Outcome::Rejected(first.into()),
            (Action::Delete, "DELETED" | "NOT_FOUND") => Outcome::Acked,
            _ => Outcome::Failed(first.to_string()),
        }
    }
}

/// The Rust client in direct mode (home zone a): it routes itself, through
/// the nodes' proxies.
struct RustFront {
    runtime: tokio::runtime::Runtime,
    client: zonecache_client::Client,
}

impl Front for RustFront {
    fn run(&mut self, key: &str, action: &Action) -> Outcome {
        use zonecache_client::{Error, StoreOptions};
        let c = &self.client;
        let failed = |e: Error| Outcome::Failed(e.to_string());
        self.runtime.block_on(async {
            match action {
                Action::Get => match c.get(key).await {
                    Ok(Some(v)) => Outcome::Value(String::from_utf8_lossy(&v).into_owned()),
                    Ok(None) => Outcome::Miss,
                    Err(e) => failed(e),
                },
                Action::Set(v) => match c.set(key, v.clone(), StoreOptions::default()).await {
                    Ok(()) => Outcome::Acked,
                    Err(e) => failed(e),
                },
                Action::Delete => match c.delete(key).await {
                    Ok(()) | Err(Error::NotFound) => Outcome::Acked,
                    Err(e) => failed(e),
                },
                Action::Incr => match c.incr(key, 1).await {
                    Ok(n) => Outcome::Number(n),
                    Err(e) => failed(e),
                },
                Action::Cas(v) => {
                    let item = match c.gets(key).await {
                        Ok(Some(item)) => item,
                        Ok(None) => return Outcome::Rejected("miss".into()),
                        Err(e) => return failed(e),
                    };
                    match c
                        .cas(key, v.clone(), StoreOptions::default(), item.cas)
                        .await
                    {
                        Ok(()) => Outcome::Acked,
                        Err(e @ (Error::Exists | Error::NotFound)) => {
                            Outcome::Rejected(e.to_string())
                        }
                        Err(e) => failed(e),
                    }
                }
            }
        })
    }
}

/// The next action of client `id` (its `seq`-th write names the value).
fn next_action(rng: &mut Rng, id: usize, seq: &mut u64) -> (String, Action) {
    if rng.below(3) == 0 {
        let key = COUNTERS[rng.below(COUNTERS.len() as u64) as usize];
        let action = if rng.below(2) == 0 {
            Action::Incr
        } else {
            Action::Get
        };
        return (key.to_string(), action);
    }
    let key = REGISTERS[rng.below(REGISTERS.len() as u64) as usize];
    let mut value = || {
        *seq += 1;
        format!("c{id}v{seq}")
    };
    let action = match rng.below(10) {
        0..=3 => Action::Get,
        4..=6 => Action::Set(value()),
        7 => Action::Cas(value()),
        _ => Action::Delete,
    };
    (key.to_string(), action)
}

/// Runs one client's operations through `front` until `stop`.
fn run_client(
    id: usize,
    via: &'static str,
    mut front: impl Front,
    seed: u64,
    stop: Arc<AtomicBool>,
    history: Arc<Mutex<Vec<Op>>>,
) {
    let mut rng = Rng(seed ^ (id as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut seq = 0;
    while !stop.load(Ordering::Relaxed) {
        let (key, action) = next_action(&mut rng, id, &mut seq);
        let start = Instant::now();
        let outcome = front.run(&key, &action);
        let end = Instant::now();
        history.lock().expect("history").push(Op {
            client: id,
            via,
            key,
            what: action.what(),
            start,
            end,
            outcome,
        });
    }
}

/// The violations in `history`, each with the operations that show it and
/// the history around them (that key's operations and the faults).
fn check(history: &[Op], faults: &[Injected], t0: Instant) -> Vec<String> {
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
                    // A fault's effects outlast it: the faults of the 2 s
                    // before are shown too.
                    .filter(|f| f.at + Duration::from_secs(2) >= from && f.at <= to)
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
            .filter_map(|o| o.value_written().map(|v| (v.to_string(), o)))
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
            if let Outcome::Rejected(why) = &wrote.outcome {
                violations.push(format!(
                    "{key}: read {v:?}, whose write was refused ({why})\n  read:  {}\n  write: {}\n{}",
                    read.line(t0),
                    wrote.line(t0),
                    around(key, wrote.start, read.end)
                ));
                continue;
            }
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
    let mut cluster = TestCluster::start_linked(3, 2, "all-minus-one", "");
    {
        // Retried: on a loaded machine a copy may time out, and the set
        // then answers "outcome unknown" rather than STORED. One line per
        // reply, no sync marker: the marker is a read, which a node still
        // waiting for its peers' leases refuses.
        let mut a1 = cluster.node("a1").server.connect();
        for key in COUNTERS {
            let set = format!("set {key} 0 0 1\r\n0\r\n");
            let until = Instant::now() + Duration::from_secs(10);
            while {
                a1.send(set.as_bytes());
                a1.read_until(b"\r\n") != b"STORED\r\n"
            } {
                assert!(Instant::now() < until, "{key} never stored");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let history = Arc::new(Mutex::new(Vec::new()));
    let t0 = Instant::now();
    let mut clients: Vec<_> = FRONTS
        .iter()
        .enumerate()
        .map(|(i, front)| {
            let addr = cluster.node(front).server.addr;
            let (stop, history) = (stop.clone(), history.clone());
            let text = TextFront { addr, conn: None };
            std::thread::spawn(move || run_client(i, front, text, seed, stop, history))
        })
        .collect();
    {
        let (stop, history) = (stop.clone(), history.clone());
        let config = cluster.config_path("a1");
        clients.push(std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let client = runtime
                .block_on(async {
                    zonecache_client::Client::builder_file(config)
                        .home_zone("a")
                        .build()
                })
                .expect("client");
            let rust = RustFront { runtime, client };
            run_client(FRONTS.len(), "rust", rust, seed, stop, history)
        }));
    }
    let mut rng = Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1);
    let mut faults = Vec::new();
    let mut injected = |what: String| {
        faults.push(Injected {
            at: Instant::now(),
            what,
        })
    };
    let until = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100 + rng.below(300)));
        let victim = FRONTS[rng.below(FRONTS.len() as u64) as usize];
        let lasts = Duration::from_millis(100 + rng.below(900));
        // Every link into `to`, or the two links between `a` and `b`.
        let into = |to: &'static str| {
            FRONTS
                .iter()
                .filter(move |f| **f != to)
                .map(move |f| (*f, to))
        };
        let between = |a: &'static str, b: &'static str| [(a, b), (b, a)].into_iter();
        match rng.below(10) {
            0 | 1 => {
                injected(format!("restart {victim} (SIGKILL, start empty)"));
                cluster.restart(victim);
            }
            2..=4 => {
                injected(format!("SIGSTOP {victim}"));
                cluster.node(victim).server.signal(libc::SIGSTOP);
                std::thread::sleep(lasts);
                cluster.node(victim).server.signal(libc::SIGCONT);
                injected(format!("SIGCONT {victim}"));
            }
            5..=7 => {
                let fault = match rng.below(6) {
                    0 => Fault::Delay(Duration::from_millis(20 + rng.below(180))),
                    1 => Fault::Drop,
                    2 => Fault::Reset,
                    3 => Fault::Blackhole,
                    4 => Fault::LoseRequests,
                    _ => Fault::LoseReplies,
                };
                injected(format!("links into {victim}: {fault:?}"));
                let links: Vec<_> = into(victim).collect();
                for (from, to) in &links {
                    cluster.link(from, to).set(fault);
                }
                std::thread::sleep(lasts);
                for (from, to) in &links {
                    cluster.link(from, to).set(Fault::Pass);
                }
                injected(format!("links into {victim}: healed"));
            }
            _ => {
                let other = FRONTS[rng.below(FRONTS.len() as u64) as usize];
                if other == victim {
                    continue;
                }
                injected(format!("partition {victim} | {other} (both ways)"));
                for (from, to) in between(victim, other) {
                    cluster.link(from, to).set(Fault::Blackhole);
                }
                std::thread::sleep(lasts);
                for (from, to) in between(victim, other) {
                    cluster.link(from, to).set(Fault::Pass);
                }
                injected(format!("partition {victim} | {other}: healed"));
            }
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
    // Failed operations by front and the start of their reply, the most
    // common first: what the promise cost, and where.
    let mut reasons: HashMap<String, usize> = HashMap::new();
    for o in &history {
        if let Outcome::Failed(why) = &o.outcome {
            let why: String = why.chars().take(50).collect();
            *reasons.entry(format!("{}: {why}", o.via)).or_default() += 1;
        }
    }
    let failed = reasons.values().sum();
    let mut common: Vec<(String, usize)> = reasons.into_iter().collect();
    common.sort_by_key(|c| std::cmp::Reverse(c.1));
    for (why, n) in common.iter().take(3) {
        eprintln!("  seed {seed}: {n} failed via {why}");
    }
    let kinds: Vec<&str> = faults
        .iter()
        .filter(|f| !f.what.starts_with("SIGCONT") && !f.what.ends_with("healed"))
        .map(|f| f.what.as_str())
        .collect();
    eprintln!("  seed {seed} faults: {}", kinds.join("; "));
    let injected = kinds.len();
    (history.len(), failed, injected, violations)
}

#[test]
fn no_acknowledged_write_is_undone_under_stops_restarts_and_proxy_faults() {
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
        let line = format!(
            "seed {seed}: {ops} operations ({failed_ops} failed), {faults} faults, {} violations",
            violations.len()
        );
        eprintln!("{line}");
        report.push(line);
        if !violations.is_empty() {
            failed.push(format!("seed {seed}:\n{}", violations.join("\n")));
        }
    }
    eprintln!("chaos:\n{}", report.join("\n"));
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}
