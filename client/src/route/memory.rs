//! An in-memory cluster as a [`Transport`], so the router's rules have fast
//! tests without processes: each node is a map from key to item, a node can
//! be taken down (its calls fail as a dead node's would), and every call is
//! recorded so a test can check who was asked what. It answers the commands
//! the router sends, the way a node does.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use zonecache_proto::{Command, MetaCode, MetaResponse, MetaToken, Response, StoreMode, Value};

use super::Transport;
use crate::error::Error;
use crate::lane::Lane;
use crate::topology::NodeConfig;

/// One stored item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub value: Bytes,
    pub flags: u32,
    pub cas: u64,
    /// A tombstone: deleted at version `cas`.
    pub deleted: bool,
}

/// One call as the transport saw it: node id and command.
#[derive(Debug, Clone)]
pub struct Call {
    pub node: String,
    pub cmd: Command,
}

#[derive(Default)]
struct State {
    items: HashMap<String, HashMap<Bytes, Item>>,
    down: HashSet<String>,
    /// How long a node takes to answer (a call whose deadline is shorter
    /// times out, as a hung node's does).
    slow: HashMap<String, Duration>,
    calls: Vec<Call>,
    next_cas: u64,
}

/// Nodes held in memory; clones share them.
#[derive(Clone, Default)]
pub struct MemoryCluster {
    state: Arc<Mutex<State>>,
}

impl MemoryCluster {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts `value` at `key` on `node` directly (no call recorded).
    pub fn put(&self, node: &str, key: &str, value: &str) {
        let mut s = self.state();
        s.next_cas += 1;
        let item = Item {
            value: Bytes::copy_from_slice(value.as_bytes()),
            flags: 0,
            cas: s.next_cas,
            deleted: false,
        };
        s.items
            .entry(node.to_string())
            .or_default()
            .insert(Bytes::copy_from_slice(key.as_bytes()), item);
    }

    /// The item at `key` on `node`.
    pub fn item(&self, node: &str, key: &str) -> Option<Item> {
        self.state()
            .items
            .get(node)
            .and_then(|m| m.get(key.as_bytes()))
            .cloned()
    }

    /// Makes `node`'s calls fail (`true`) or work again.
    pub fn set_down(&self, node: &str, down: bool) {
        let mut s = self.state();
        if down {
            s.down.insert(node.to_string());
        } else {
            s.down.remove(node);
        }
    }

    /// Makes `node` answer only after `took` (`None`: at once again).
    pub fn set_slow(&self, node: &str, took: Option<Duration>) {
        let mut s = self.state();
        match took {
            Some(d) => s.slow.insert(node.to_string(), d),
            None => s.slow.remove(node),
        };
    }

    /// Every call so far, in order; clears the record.
    pub fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut self.state().calls)
    }

    fn run(&self, node: &str, cmd: &Command) -> Result<Response, Error> {
        let mut s = self.state();
        s.calls.push(Call {
            node: node.to_string(),
            cmd: cmd.clone(),
        });
        if s.down.contains(node) {
            return Err(Error::Connection(format!(
                "{} at {node}: it is down",
                crate::error::NOBODY_LISTENING
            )));
        }
        s.next_cas += 1;
        let next_cas = s.next_cas;
        let items = s.items.entry(node.to_string()).or_default();
        // As a node's store: a versioned write applies only over older ones.
        let superseded = |items: &HashMap<Bytes, Item>, key: &Bytes, version: Option<u64>| matches!((items.get(key), version), (Some(i), Some(v)) if i.cas >= v);
        Ok(match cmd {
            Command::VersionedGet { keys, .. } => Response::Versioned {
                values: keys
                    .iter()
                    .filter_map(|k| {
                        items.get(k).filter(|i| !i.deleted).map(|i| Value {
                            key: k.clone(),
                            flags: i.flags,
                            data: i.value.clone(),
                            cas: Some(i.cas),
                        })
                    })
                    .collect(),
                deleted: keys
                    .iter()
                    .filter_map(|k| {
                        items
                            .get(k)
                            .filter(|i| i.deleted)
                            .map(|i| (k.clone(), i.cas))
                    })
                    .collect(),
            },
            Command::Get { keys, cas } | Command::Gat { keys, cas, .. } => Response::Values(
                keys.iter()
                    .filter_map(|k| {
                        items.get(k).filter(|i| !i.deleted).map(|i| Value {
                            key: k.clone(),
                            flags: i.flags,
                            data: i.value.clone(),
                            cas: cas.then_some(i.cas),
                        })
                    })
                    .collect(),
            ),
            Command::MetaGet(m) => match items.get(&m.key).filter(|i| !i.deleted) {
                None => meta(MetaCode::Miss, Vec::new(), None),
                Some(i) => {
                    let mut flags = Vec::new();
                    for t in &m.flags.tokens {
                        let arg = match t.flag {
                            b'f' => i.flags.to_string(),
                            b'c' => i.cas.to_string(),
                            b't' => "-1".to_string(),
                            _ => continue,
                        };
                        flags.push(MetaToken {
                            flag: t.flag,
                            arg: Bytes::from(arg),
                        });
                    }
                    let code = if m.flags.value {
                        MetaCode::Value
                    } else {
                        MetaCode::Header
                    };
                    meta(code, flags, m.flags.value.then(|| i.value.clone()))
                }
            },
            Command::MetaSet { meta: m, data } => {
                let add = m.flags.mode == Some(b'E');
                let live = items.get(&m.key).is_some_and(|i| !i.deleted);
                if superseded(items, &m.key, m.flags.new_cas) || (add && live) {
                    let code = if add {
                        MetaCode::NotStored
                    } else {
                        MetaCode::Header
                    };
                    return Ok(meta(code, Vec::new(), None));
                }
                let item = Item {
                    value: data.clone(),
                    flags: m.flags.client_flags.unwrap_or(0),
                    cas: m.flags.new_cas.unwrap_or(next_cas),
                    deleted: false,
                };
                items.insert(m.key.clone(), item);
                meta(MetaCode::Header, Vec::new(), None)
            }
            Command::Store(st) => {
                let exists = items.contains_key(&st.key);
                let stores = match st.mode {
                    StoreMode::Set => true,
                    StoreMode::Add => !exists,
                    StoreMode::Replace => exists,
                    other => unimplemented!("{other:?} is not used by these tests"),
                };
                if !stores {
                    return Ok(Response::NotStored);
                }
                let item = Item {
                    value: st.data.clone(),
                    flags: st.flags,
                    cas: next_cas,
                    deleted: false,
                };
                items.insert(st.key.clone(), item);
                Response::Stored
            }
            Command::Delete { key, .. } => match items.remove(key) {
                Some(i) if !i.deleted => Response::Deleted,
                _ => Response::NotFound,
            },
            Command::MetaDelete(m) => {
                let live = items.get(&m.key).is_some_and(|i| !i.deleted);
                let code = if live {
                    MetaCode::Header
                } else {
                    MetaCode::NotFound
                };
                if !superseded(items, &m.key, m.flags.new_cas) {
                    let tombstone = Item {
                        value: Bytes::new(),
                        flags: 0,
                        cas: m.flags.new_cas.unwrap_or(next_cas),
                        deleted: true,
                    };
                    items.insert(m.key.clone(), tombstone);
                }
                meta(code, Vec::new(), None)
            }
            Command::Arith {
                key, delta, incr, ..
            } => match items.get_mut(key).filter(|i| !i.deleted) {
                None => Response::NotFound,
                Some(i) => {
                    let n: u64 = std::str::from_utf8(&i.value)
                        .ok()
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    let n = if *incr {
                        n.wrapping_add(*delta)
                    } else {
                        n.saturating_sub(*delta)
                    };
                    i.value = Bytes::from(n.to_string());
                    i.cas = next_cas;
                    Response::Number(n)
                }
            },
            Command::FlushAll { .. } => {
                items.clear();
                Response::Ok
            }
            other => unimplemented!("{other:?} is not routed by these tests"),
        })
    }
}

fn meta(code: MetaCode, flags: Vec<MetaToken>, value: Option<Bytes>) -> Response {
    Response::Meta(MetaResponse { code, flags, value })
}

impl Transport for MemoryCluster {
    async fn call(
        &self,
        node: &NodeConfig,
        cmd: &Command,
        _lane: Lane,
        deadline: Duration,
    ) -> Result<Response, Error> {
        let slow = self.state().slow.get(&node.id).copied();
        if let Some(took) = slow {
            tokio::time::sleep(took.min(deadline)).await;
            if took >= deadline {
                self.state().calls.push(Call {
                    node: node.id.clone(),
                    cmd: cmd.clone(),
                });
                return Err(Error::Timeout);
            }
        }
        self.run(&node.id, cmd)
    }
}
