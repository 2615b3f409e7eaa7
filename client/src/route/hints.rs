//! Hinted hand-off: a write or delete that a zone's owner did not
//! acknowledge (down, deadline, shed, busy) is kept here for that node and
//! replayed in order, with its version, once the node answers again. Until
//! its hints are replayed the node takes no reads from this router and
//! decides no conditional writes for it. Every hint carries a cluster
//! version, so a replay that arrives after newer writes changes nothing.
//!
//! Hints are bounded per node (`hints_max_bytes`). When a node's hints
//! overflow they are dropped and the node counts as cold: it is flushed
//! when it is back, before it serves this router's reads again. Hints live
//! in memory only: a restarted node forgets what it held for others (see
//! the README's failure model for why that is safe only with the node
//! flushed, and what is left open).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use zonecache_proto::Command;

use super::Transport;
use crate::lane::Lane;
use crate::topology::NodeConfig;

/// How often the replayer looks for nodes that are back.
const REPLAY_EVERY: Duration = Duration::from_millis(20);

/// Counters of the hints a router keeps (`stats zones`, the client's stats).
#[derive(Debug, Default)]
pub struct HintStats {
    /// Hints kept now.
    pub queued: AtomicU64,
    /// Hints delivered.
    pub replayed: AtomicU64,
    /// Hints dropped because a node's queue was full.
    pub dropped: AtomicU64,
    /// Nodes flushed on their return because their hints overflowed.
    pub cold_flushes: AtomicU64,
}

/// The hints for one node.
struct NodeHints {
    node: NodeConfig,
    /// (sequence number, command, encoded size).
    queue: VecDeque<(u64, Command, usize)>,
    bytes: usize,
    next_seq: u64,
    /// Hints were dropped: flush the node before it serves again.
    overflowed: bool,
}

/// The hints a router keeps for the nodes that missed its writes.
pub struct Hints {
    nodes: Mutex<HashMap<String, NodeHints>>,
    /// Nodes with hints (or a pending flush): reads check it without the lock.
    behind: AtomicUsize,
    max_bytes: AtomicUsize,
    replaying: AtomicBool,
    pub stats: HintStats,
}

impl Hints {
    /// Hints of up to `max_bytes` per node.
    pub fn new(max_bytes: usize) -> Hints {
        Hints {
            nodes: Mutex::default(),
            behind: AtomicUsize::new(0),
            max_bytes: AtomicUsize::new(max_bytes),
            replaying: AtomicBool::new(false),
            stats: HintStats::default(),
        }
    }

    /// A reload may change the bound.
    pub fn set_max_bytes(&self, max_bytes: usize) {
        self.max_bytes.store(max_bytes, Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, NodeHints>> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `node` missed writes of this router that it has not been
    /// given yet (it must not serve reads or decide until it has).
    pub fn is_behind(&self, node: &NodeConfig) -> bool {
        self.behind.load(Ordering::Acquire) > 0 && self.lock().contains_key(&node.id)
    }

    /// Keeps `cmd` for `node`, and makes sure a replayer runs.
    pub fn push<T: Transport>(self: &Arc<Self>, t: &T, node: &NodeConfig, cmd: Command) {
        let mut bytes = BytesMut::new();
        cmd.encode(&mut bytes);
        let size = bytes.len();
        let max = self.max_bytes.load(Ordering::Relaxed);
        {
            let mut nodes = self.lock();
            let entry = nodes.entry(node.id.clone()).or_insert_with(|| {
                self.behind.fetch_add(1, Ordering::AcqRel);
                NodeHints {
                    node: node.clone(),
                    queue: VecDeque::new(),
                    bytes: 0,
                    next_seq: 0,
                    overflowed: false,
                }
            });
            if entry.overflowed || entry.bytes + size > max {
                // Too much missed: the node will be flushed instead.
                let dropped = entry.queue.len() as u64 + 1;
                self.stats.dropped.fetch_add(dropped, Ordering::Relaxed);
                self.stats
                    .queued
                    .fetch_sub(entry.queue.len() as u64, Ordering::Relaxed);
                entry.queue.clear();
                entry.bytes = 0;
                entry.overflowed = true;
            } else {
                entry.queue.push_back((entry.next_seq, cmd, size));
                entry.next_seq += 1;
                entry.bytes += size;
                self.stats.queued.fetch_add(1, Ordering::Relaxed);
            }
        }
        if !self.replaying.swap(true, Ordering::AcqRel) {
            let (hints, t) = (self.clone(), t.clone());
            tokio::spawn(async move { hints.replay_until_empty(&t).await });
        }
    }

    /// Replays every node's hints as the nodes come back; returns when none
    /// are left.
    async fn replay_until_empty<T: Transport>(&self, t: &T) {
        loop {
            let ids: Vec<String> = self.lock().keys().cloned().collect();
            for id in ids {
                self.replay(t, &id, Duration::from_millis(200)).await;
            }
            {
                let nodes = self.lock();
                if nodes.is_empty() {
                    // Under the lock: a push after this sees `false` and
                    // starts a new replayer.
                    self.replaying.store(false, Ordering::Release);
                    return;
                }
            }
            tokio::time::sleep(REPLAY_EVERY).await;
        }
    }

    /// Gives node `id` its hints in order, each within `deadline`; stops at
    /// the first that gets no answer. Returns whether the node is caught up.
    pub async fn replay<T: Transport>(&self, t: &T, id: &str, deadline: Duration) -> bool {
        loop {
            let next = {
                let nodes = self.lock();
                let Some(h) = nodes.get(id) else {
                    return true;
                };
                if h.overflowed {
                    let flush = Command::FlushAll {
                        delay: 0,
                        noreply: false,
                    };
                    (h.node.clone(), flush, None)
                } else {
                    match h.queue.front() {
                        Some((seq, cmd, _)) => (h.node.clone(), cmd.clone(), Some(*seq)),
                        None => (h.node.clone(), Command::MetaNoop, None),
                    }
                }
            };
            let (node, cmd, seq) = next;
            if !matches!(cmd, Command::MetaNoop) {
                match t.call(&node, &cmd, Lane::Realtime, deadline).await {
                    Err(e) if !e.is_refusal() => return false,
                    _ => {}
                }
            }
            let mut nodes = self.lock();
            let Some(h) = nodes.get_mut(id) else {
                return true;
            };
            match seq {
                None if matches!(cmd, Command::FlushAll { .. }) => {
                    h.overflowed = false;
                    self.stats.cold_flushes.fetch_add(1, Ordering::Relaxed);
                }
                // Another replay of this node may have delivered it already.
                Some(seq) if h.queue.front().is_some_and(|(s, _, _)| *s == seq) => {
                    let (_, _, size) = h.queue.pop_front().expect("front checked");
                    h.bytes -= size;
                    self.stats.queued.fetch_sub(1, Ordering::Relaxed);
                    self.stats.replayed.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
            if h.queue.is_empty() && !h.overflowed {
                nodes.remove(id);
                self.behind.fetch_sub(1, Ordering::AcqRel);
                return true;
            }
        }
    }
}
