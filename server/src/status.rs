//! `zonecache status`: the cluster at a glance, for operators and scripts.
//! Every node is asked for `stats`, `stats zones` and `stats peers` twice,
//! a sample apart (rates and hit ratio are over that sample), on plain
//! connections with bounded waits, so a hung node costs one timeout and
//! shows as down. The exit code says whether all is well: 0 healthy, 1 a
//! node is down, 2 degraded (a node not serving reads from its store,
//! warming, holding writes for a peer, or seen down by a peer).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use serde::Serialize;
use zonecache_client::{ClusterConfig, ClusterSecret, NodeAddr};
use zonecache_proto::{parse_response, Response};

/// How long one node may take to answer before it counts as down.
const NODE_DEADLINE: Duration = Duration::from_millis(800);

/// One node's figures, as `--json` prints them.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    pub node: String,
    pub zone: String,
    pub addr: String,
    /// `up`, `down` (this tool cannot reach it) or `suspect` (reachable,
    /// but a peer has it marked down).
    pub state: String,
    /// Peers that see it up, of the peers that answered.
    pub seen_up_by: usize,
    pub seen_by: usize,
    pub items: u64,
    pub bytes: u64,
    pub limit_bytes: u64,
    /// Hits of the gets over the sample (`None`: no gets).
    pub hit_ratio: Option<f64>,
    pub ops_per_sec: f64,
    /// Its zone's drain weight, as it has it (percent of the zone's reads
    /// moved to other zones).
    pub drain_percent: u8,
    /// Whether it serves reads from its own store (holds every peer's
    /// read lease).
    pub serving_reads: bool,
    /// Writes it holds for peers that missed them.
    pub hints_queued: u64,
    /// Copies to other zones that failed, since it started.
    pub replication_failures: u64,
    /// Its warm-up: `off`, `warming`, `ready` (≥ 95 % copied, still
    /// copying) or `done`.
    pub warm_state: String,
    /// Percent of its keys copied (or found nowhere) by the warm-up.
    pub warm_percent: f64,
    /// Its hottest keys (`--hot`), hottest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hot_keys: Vec<HotKeyShare>,
}

/// One of a node's hottest keys, as `stats hotkeys` gives it.
#[derive(Debug, Clone, Serialize)]
pub struct HotKeyShare {
    /// The key (or `#<hash>` on a node running `--hot-keys hashed`).
    pub key: String,
    /// Its requests on the node, decayed (halved every half-life, 10 s by default).
    pub requests: u64,
    /// Its share of the node's keyed requests over the same time, 0–1.
    pub share: f64,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub nodes: Vec<NodeStatus>,
    /// 0 healthy, 1 a node down, 2 degraded.
    pub exit_code: u8,
    /// Why the exit code is not 0.
    pub problems: Vec<String>,
}

/// Where the tool learns the nodes.
pub enum Source {
    /// A cluster config file (any node's).
    Config(Box<ClusterConfig>),
    /// Reachable nodes; the others are learned from their `stats peers`.
    Seeds(Vec<SocketAddr>),
}

/// The cluster's nodes: (id, zone, address).
pub fn nodes(source: &Source) -> Result<Vec<(String, String, NodeAddr)>, String> {
    match source {
        Source::Config(c) => Ok(c
            .zones
            .iter()
            .flat_map(|z| {
                z.nodes
                    .iter()
                    .map(|n| (n.id.clone(), z.name.clone(), n.addr.clone()))
            })
            .collect()),
        Source::Seeds(seeds) => discover(seeds),
    }
}

/// Reads the cluster: the figures `sample` apart.
/// The report over a `sample`, with each node's `hot` hottest keys.
pub fn report(source: &Source, sample: Duration, hot: usize) -> Result<Report, String> {
    let nodes = nodes(source)?;
    let first: Vec<Option<Figures>> = nodes.iter().map(|(_, _, a)| Figures::read(a)).collect();
    let started = Instant::now();
    std::thread::sleep(sample);
    let second: Vec<Option<Figures>> = nodes.iter().map(|(_, _, a)| Figures::read(a)).collect();
    let secs = started.elapsed().as_secs_f64().max(1e-3);
    // Each node's view of its peers: id -> (seen up, seen at all).
    let mut seen: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for f in second.iter().flatten() {
        for (key, value) in &f.peers {
            if let Some(id) = key.strip_suffix(":state") {
                let e = seen.entry(id.to_string()).or_default();
                e.1 += 1;
                e.0 += usize::from(value == "up");
            }
        }
    }
    let mut out = Vec::new();
    let mut problems = Vec::new();
    let mut exit_code = 0;
    for ((id, zone, addr), (before, after)) in nodes.iter().zip(first.iter().zip(&second)) {
        let (seen_up_by, seen_by) = seen.get(id).copied().unwrap_or_default();
        let status = match (before, after) {
            (Some(b), Some(a)) => {
                let delta = |name: &str| a.stat(name).saturating_sub(b.stat(name));
                let (hits, misses) = (delta("get_hits"), delta("get_misses"));
                let ops: u64 = OPS.iter().map(|s| delta(s)).sum();
                let state = if seen_up_by < seen_by {
                    "suspect"
                } else {
                    "up"
                };
                let zones = |name: &str| a.zones.get(name).map(String::as_str);
                let replication_failures = a
                    .zones
                    .iter()
                    .filter(|(k, _)| k.ends_with(":replication_failures"))
                    .filter_map(|(_, v)| v.parse::<u64>().ok())
                    .sum();
                NodeStatus {
                    node: id.clone(),
                    zone: zone.clone(),
                    addr: addr.to_string(),
                    state: state.into(),
                    seen_up_by,
                    seen_by,
                    items: a.stat("curr_items"),
                    bytes: a.stat("bytes"),
                    limit_bytes: a.stat("limit_maxbytes"),
                    hit_ratio: (hits + misses > 0).then(|| hits as f64 / (hits + misses) as f64),
                    ops_per_sec: ops as f64 / secs,
                    drain_percent: zones(&format!("{zone}:drain_percent"))
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0),
                    serving_reads: zones("serving_reads") != Some("0"),
                    hints_queued: zones("hints_queued")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0),
                    replication_failures,
                    warm_state: a.stats.get("warm_state").cloned().unwrap_or("off".into()),
                    warm_percent: a
                        .stats
                        .get("warm_progress")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0.0),
                    hot_keys: match hot {
                        0 => Vec::new(),
                        n => hot_keys(addr, n),
                    },
                }
            }
            _ => NodeStatus {
                node: id.clone(),
                zone: zone.clone(),
                addr: addr.to_string(),
                state: "down".into(),
                seen_up_by,
                seen_by,
                items: 0,
                bytes: 0,
                limit_bytes: 0,
                hit_ratio: None,
                ops_per_sec: 0.0,
                drain_percent: 0,
                serving_reads: false,
                hints_queued: 0,
                replication_failures: 0,
                warm_state: "-".into(),
                warm_percent: 0.0,
                hot_keys: Vec::new(),
            },
        };
        match status.state.as_str() {
            "down" => {
                problems.push(format!("{id} ({addr}) does not answer"));
                exit_code = 1;
            }
            "suspect" => {
                problems.push(format!(
                    "{id} is marked down by {} of {seen_by} peers",
                    seen_by - seen_up_by
                ));
            }
            _ => {}
        }
        if status.state != "down" {
            if !status.serving_reads {
                problems.push(format!(
                    "{id} serves no reads from its store (lacks a peer's read lease)"
                ));
            }
            if status.warm_state == "warming" {
                problems.push(format!(
                    "{id} is warming ({:.1} % of its keys copied)",
                    status.warm_percent
                ));
            }
            if status.hints_queued > 0 {
                problems.push(format!(
                    "{id} holds {} writes for peers that missed them",
                    status.hints_queued
                ));
            }
        }
        out.push(status);
    }
    if exit_code == 0 && !problems.is_empty() {
        exit_code = 2;
    }
    Ok(Report {
        nodes: out,
        exit_code,
        problems,
    })
}

/// The counters whose sum is a node's operations.
const OPS: [&str; 10] = [
    "cmd_get",
    "cmd_set",
    "cmd_touch",
    "cmd_meta",
    "delete_hits",
    "delete_misses",
    "incr_hits",
    "incr_misses",
    "decr_hits",
    "decr_misses",
];

/// The cluster secret this operator tool holds (from `--config` or
/// `--secret-file`), if any: its reads prove it first, so they are served
/// by nodes that let no one in before sign-in (`-Y`).
static HELD_SECRET: std::sync::OnceLock<ClusterSecret> = std::sync::OnceLock::new();

/// Makes every [`exchange`] of this process prove `secret` (set once, by
/// the command line, when it has one).
pub fn hold_secret(secret: ClusterSecret) {
    let _ = HELD_SECRET.set(secret);
}

/// Sends `request` to the node at `addr` on a connection of its own and
/// reads until `complete` says the reply is whole, with bounded waits: the
/// one way the operator's commands talk to nodes.
pub(crate) fn exchange(
    addr: &NodeAddr,
    request: &[u8],
    complete: impl Fn(&str) -> bool,
) -> Result<String, String> {
    if let Some(secret) = HELD_SECRET.get() {
        return exchange_as_peer(addr, secret, request, complete);
    }
    let mut s = connect(addr)?;
    s.write_all(request).map_err(|e| e.to_string())?;
    read_until(&mut s, complete)
}

/// [`exchange`] for the commands only a peer may send (`zc_drain`,
/// `zc_leave`): proves `secret` first, as a peer link does (the client's
/// `credential.rs`), and checks the node proves it too.
pub(crate) fn exchange_as_peer(
    addr: &NodeAddr,
    secret: &ClusterSecret,
    request: &[u8],
    complete: impl Fn(&str) -> bool,
) -> Result<String, String> {
    let mut s = connect(addr)?;
    let ours = ClusterSecret::nonce();
    s.write_all(format!("zc_challenge {ours}\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let line = read_until(&mut s, |t| t.ends_with("\r\n"))?;
    let Ok(Some(Response::Challenge { nonce, proof })) =
        parse_response(&mut BytesMut::from(line.as_bytes()))
    else {
        return Err(format!(
            "answered {:?} to the peer challenge (not a node of a cluster?)",
            line.trim_end()
        ));
    };
    let Some(hello) = secret.answer(&ours, &nonce, &proof) else {
        return Err("did not prove the cluster secret: is its secret this config's?".into());
    };
    let mut hello_bytes = BytesMut::new();
    hello.encode(&mut hello_bytes);
    s.write_all(&[&hello_bytes[..], request].concat())
        .map_err(|e| e.to_string())?;
    let text = read_until(&mut s, |t| {
        t.starts_with("ERROR\r\n") || t.strip_prefix("OK\r\n").is_some_and(&complete)
    })?;
    match text.strip_prefix("OK\r\n") {
        Some(reply) => Ok(reply.to_string()),
        None => Err("refused our proof of the cluster secret: is its secret this config's?".into()),
    }
}

fn connect(addr: &NodeAddr) -> Result<TcpStream, String> {
    // Resolved each time: a node replaced under its name has a new IP.
    let addr = addr.resolve().map_err(|e| e.to_string())?;
    let s = TcpStream::connect_timeout(&addr, NODE_DEADLINE).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(NODE_DEADLINE))
        .map_err(|e| e.to_string())?;
    Ok(s)
}

fn read_until(s: &mut TcpStream, complete: impl Fn(&str) -> bool) -> Result<String, String> {
    let mut text = String::new();
    let mut buf = [0u8; 16 * 1024];
    while !complete(&text) {
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed".into());
        }
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    Ok(text)
}

/// One reading of a node's stats groups.
pub(crate) struct Figures {
    pub(crate) stats: BTreeMap<String, String>,
    pub(crate) zones: BTreeMap<String, String>,
    peers: BTreeMap<String, String>,
}

impl Figures {
    /// `None` when the node does not answer in time.
    pub(crate) fn read(addr: &NodeAddr) -> Option<Figures> {
        let request = b"stats\r\nstats zones\r\nstats peers\r\n";
        let text = exchange(addr, request, |t| t.matches("END\r\n").count() >= 3).ok()?;
        let mut groups = text.split("END\r\n").map(|group| {
            group
                .lines()
                .filter_map(|l| l.strip_prefix("STAT "))
                .filter_map(|l| l.split_once(' '))
                .map(|(k, v)| (k.to_string(), v.trim().to_string()))
                .collect::<BTreeMap<String, String>>()
        });
        Some(Figures {
            stats: groups.next()?,
            zones: groups.next()?,
            peers: groups.next()?,
        })
    }

    fn stat(&self, name: &str) -> u64 {
        self.stats
            .get(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

/// The `n` hottest keys of the node at `addr` (none if it does not answer
/// or counts none).
fn hot_keys(addr: &NodeAddr, n: usize) -> Vec<HotKeyShare> {
    let Ok(text) = exchange(addr, b"stats hotkeys\r\n", |t| t.ends_with("END\r\n")) else {
        return Vec::new();
    };
    let lines: BTreeMap<&str, &str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("STAT ")?.split_once(' '))
        .collect();
    let total: u64 = lines
        .get("hotkeys_requests")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (1..=n)
        .map_while(|rank| {
            let (key, requests) = lines
                .get(format!("hotkey:{rank}").as_str())?
                .rsplit_once(' ')?;
            let requests: u64 = requests.parse().ok()?;
            Some(HotKeyShare {
                key: key.to_string(),
                requests,
                share: requests as f64 / total.max(1) as f64,
            })
        })
        .collect()
}

/// The nodes known to the first seed that answers: itself (`stats zones`:
/// `node`, `home_zone`) and its peers (`stats peers`: `<id>:addr`,
/// `<id>:zone`).
fn discover(seeds: &[SocketAddr]) -> Result<Vec<(String, String, NodeAddr)>, String> {
    for seed in seeds {
        let seed = NodeAddr::from(*seed);
        let Some(f) = Figures::read(&seed) else {
            continue;
        };
        let (Some(me), Some(zone)) = (f.zones.get("node"), f.zones.get("home_zone")) else {
            return Err(format!(
                "{seed} is not a cluster node (no node id in `stats zones`)"
            ));
        };
        let mut nodes = vec![(me.clone(), zone.clone(), seed)];
        for (key, addr) in &f.peers {
            let Some(id) = key.strip_suffix(":addr") else {
                continue;
            };
            let zone = f
                .peers
                .get(&format!("{id}:zone"))
                .cloned()
                .unwrap_or_default();
            let addr = NodeAddr::parse(addr).map_err(|e| format!("{id}: {e}"))?;
            nodes.push((id.to_string(), zone, addr));
        }
        nodes.sort_by(|a, b| (&a.1, &a.0).cmp(&(&b.1, &b.0)));
        return Ok(nodes);
    }
    Err("no seed answered; give reachable nodes or --config".into())
}

/// The report as a table, problems last.
pub fn table(r: &Report) -> String {
    let mut out = format!(
        "{:<6} {:<8} {:<22} {:<8} {:>7} {:>10} {:>15} {:>6} {:>9} {:>7} {:>6} {:>6} {:>8} {:>13}\n",
        "zone",
        "node",
        "address",
        "state",
        "seen up",
        "items",
        "MiB used/limit",
        "hit %",
        "ops/s",
        "drain %",
        "reads",
        "hints",
        "repl err",
        "warm"
    );
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    for n in &r.nodes {
        let hit = n
            .hit_ratio
            .map_or("-".to_string(), |h| format!("{:.1}", h * 100.0));
        let (used, reads) = match n.state.as_str() {
            "down" => ("-".to_string(), "-"),
            _ => (
                format!("{:.1}/{:.0}", mib(n.bytes), mib(n.limit_bytes)),
                if n.serving_reads { "yes" } else { "no" },
            ),
        };
        out.push_str(&format!(
            "{:<6} {:<8} {:<22} {:<8} {:>7} {:>10} {:>15} {:>6} {:>9.0} {:>7} {:>6} {:>6} {:>8} {:>13}\n",
            n.zone,
            n.node,
            n.addr,
            n.state,
            format!("{}/{}", n.seen_up_by, n.seen_by),
            n.items,
            used,
            hit,
            n.ops_per_sec,
            n.drain_percent,
            reads,
            n.hints_queued,
            n.replication_failures,
            match n.warm_state.as_str() {
                "warming" => format!("warming {:.0}%", n.warm_percent),
                other => other.to_string(),
            }
        ));
    }
    if r.nodes.iter().any(|n| !n.hot_keys.is_empty()) {
        out.push_str("\nhot keys (share of the node's keyed requests, last 1-2 half-lives)\n");
        out.push_str(&format!(
            "{:<8} {:>4} {:<40} {:>7} {:>10}\n",
            "node", "rank", "key", "share", "requests"
        ));
        for n in &r.nodes {
            for (rank, k) in n.hot_keys.iter().enumerate() {
                out.push_str(&format!(
                    "{:<8} {:>4} {:<40} {:>6.1}% {:>10}\n",
                    n.node,
                    rank + 1,
                    k.key,
                    k.share * 100.0,
                    k.requests
                ));
            }
        }
        out.push('\n');
    }
    match r.problems.is_empty() {
        true => out.push_str("healthy\n"),
        false => {
            for p in &r.problems {
                out.push_str(&format!("problem: {p}\n"));
            }
        }
    }
    out
}
