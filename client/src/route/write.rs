//! Writes across zones. Plain writes fan out to the key's owner in every
//! zone at once and are acknowledged per the write policy, the other copies
//! finishing in the background. Conditional writes are decided by one
//! arbiter (the owner in the first config zone that answers) and the result
//! is copied to the other zones, so writers in different zones meet at the
//! same copy. `flush_all` reaches every node.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures::future::join_all;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;
use zonecache_proto::{Command, Meta, MetaCode, MetaFlags, Response};

use super::read::read_item;
use super::{Kind, Router, Transport};
use crate::error::Error;
use crate::lane::Lane;
use crate::topology::NodeConfig;

impl Router {
    /// Sends `cmd` to the key's owner in every zone; answers once the write
    /// policy is met (with the home zone's reply when it has one), the rest
    /// finishing in the background.
    pub async fn fan_out<T: Transport>(
        &self,
        t: &T,
        key: &[u8],
        cmd: Command,
        lane: Lane,
    ) -> Result<Response, Error> {
        let zones = self.topology.zones.len();
        let needed = self.topology.write_policy.needed(zones);
        let deadline = self.deadline(lane, Kind::Write);
        let (tx, mut rx) = mpsc::channel(zones);
        match self.background.clone().try_acquire_owned() {
            // One task sends every copy and reports each reply, so the copies
            // the caller does not wait for still finish if it goes away.
            Ok(permit) => {
                let mut copies: FuturesUnordered<_> = self
                    .topology
                    .zones
                    .iter()
                    .enumerate()
                    .map(|(zi, zone)| {
                        let (t, node, cmd) = (t.clone(), zone.owner(key).clone(), cmd.clone());
                        async move { (zi, t.call(&node, &cmd, lane, deadline).await) }
                    })
                    .collect();
                let stats = self.zone_stats.clone();
                tokio::spawn(async move {
                    while let Some((zi, reply)) = copies.next().await {
                        // Counted here: the caller may have had its answer already.
                        if matches!(&reply, Err(e) if !e.is_refusal()) {
                            stats[zi]
                                .replication_failures
                                .fetch_add(1, Ordering::Relaxed);
                        }
                        let _ = tx.try_send((zi, reply));
                    }
                    drop(permit);
                });
            }
            Err(_) => {
                for (zi, stats) in self.zone_stats.iter().enumerate() {
                    stats.replication_failures.fetch_add(1, Ordering::Relaxed);
                    let _ = tx.try_send((zi, Err(Error::Busy)));
                }
                drop(tx);
            }
        }
        let (mut acks, mut first_ack) = (0, None);
        while let Some((zi, reply)) = rx.recv().await {
            match reply {
                // A node that answered (even NOT_FOUND, or a client error)
                // acknowledged; only silence and server errors do not.
                Err(ref e) if !e.is_refusal() => {
                    tracing::debug!(zone = %self.topology.zones[zi].name, error = %e, "copy failed");
                }
                _ => {
                    acks += 1;
                    if first_ack.is_none() || zi == 0 {
                        first_ack = Some(reply);
                    }
                }
            }
            // A write that cannot meet its policy still hears every zone
            // (each call has its deadline), so the error counts truly.
            if acks >= needed {
                break;
            }
        }
        match first_ack {
            Some(r) if acks >= needed => r,
            _ => Err(Error::WritePolicy {
                policy: self.topology.write_policy.name(),
                acked: acks,
                zones,
            }),
        }
    }

    /// A conditional write: decided by the arbiter, then copied to the other zones.
    pub async fn arbitrate<T: Transport>(
        &self,
        t: &T,
        key: &Bytes,
        cmd: Command,
        is_delete: bool,
        lane: Lane,
    ) -> Result<Response, Error> {
        let deadline = self.deadline(lane, Kind::Write);
        let mut last = Err(Error::Connection("no zone reachable".into()));
        for &zi in &self.topology.arbiter_order {
            let arbiter = self.topology.zones[zi].owner(key).clone();
            let reply = t.call(&arbiter, &cmd, lane, deadline).await;
            match reply {
                Err(ref e) if e.is_unanswered() => {
                    last = reply;
                    continue;
                }
                Ok(ref r) if changed(r) && self.topology.zones.len() > 1 => {
                    let copy = if is_delete {
                        Some(Command::Delete {
                            key: key.clone(),
                            noreply: false,
                        })
                    } else {
                        read_item(t, &arbiter, key, deadline).await
                    };
                    if let Some(copy) = copy {
                        self.copy_to_others(t, key, zi, copy, lane).await;
                    }
                    return reply;
                }
                other => return other,
            }
        }
        last
    }

    async fn copy_to_others<T: Transport>(
        &self,
        t: &T,
        key: &[u8],
        done_zone: usize,
        copy: Command,
        lane: Lane,
    ) {
        let deadline = self.deadline(lane, Kind::Write);
        let calls = self
            .topology
            .zones
            .iter()
            .enumerate()
            .filter(|(zi, _)| *zi != done_zone)
            .map(|(zi, zone)| {
                let node = zone.owner(key);
                let copy = &copy;
                async move {
                    if t.call(node, copy, lane, deadline).await.is_err() {
                        self.zone_stats[zi]
                            .replication_failures
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        join_all(calls).await;
    }

    /// `flush_all` on every node of every zone.
    pub async fn flush_everywhere<T: Transport>(&self, t: &T, delay: i32) -> Result<(), Error> {
        let cmd = Command::FlushAll {
            delay,
            noreply: false,
        };
        let deadline = self.deadline(Lane::Realtime, Kind::Write);
        let nodes: Vec<&NodeConfig> = self.topology.nodes().collect();
        let replies = join_all(
            nodes
                .iter()
                .map(|n| t.call(n, &cmd, Lane::Realtime, deadline)),
        )
        .await;
        let failed = replies.iter().filter(|r| r.is_err()).count();
        if failed == 0 {
            Ok(())
        } else {
            Err(Error::Server(format!(
                "flush_all reached {} of {} nodes",
                nodes.len() - failed,
                nodes.len()
            )))
        }
    }
}

/// Whether a reply means the item changed (so other zones need the result).
fn changed(r: &Response) -> bool {
    match r {
        Response::Stored | Response::Deleted | Response::Touched | Response::Number(_) => true,
        Response::Meta(m) => matches!(m.code, MetaCode::Header | MetaCode::Value),
        _ => false,
    }
}

/// An `ms` that stores `value` with these flags, TTL and CAS.
pub fn set_as_meta(key: &[u8], value: Bytes, flags: u32, exptime: i32, cas: u64) -> Command {
    let mut f = MetaFlags::default();
    for (flag, n) in [
        (b'F', flags.to_string()),
        (b'T', exptime.to_string()),
        (b'E', cas.to_string()),
    ] {
        f.set(flag, n).expect("numbers are valid flag arguments");
    }
    Command::MetaSet {
        meta: Meta {
            key: Bytes::copy_from_slice(key),
            flags: f,
        },
        data: value,
    }
}
