//! Writes across zones. Plain writes fan out to the key's owner in every
//! zone at once and are acknowledged per the write policy, the other copies
//! finishing in the background. Conditional writes are decided by one
//! arbiter (the owner in the first config zone that answers) and the result
//! is copied to the other zones, so writers in different zones meet at the
//! same copy. `flush_all` reaches every node.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::join_all;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;
use zonecache_proto::{Command, Meta, MetaCode, MetaFlags, Response};

use super::read::read_item;
use super::{Fence, Kind, Router, Transport, FENCE_WAIT, SILENT};
use crate::error::Error;
use crate::lane::Lane;
use crate::topology::NodeConfig;

/// How often a fence checks whether a node that missed a write refuses
/// connections (it died, or is stopping) while it waits.
const KNOCK_EVERY: Duration = Duration::from_millis(20);

impl Router {
    /// Sends `cmd` to the key's owner in every zone and answers (with the
    /// home zone's reply when it has one) once every zone has acknowledged
    /// or failed, when the write policy is met and every zone that failed is
    /// fenced (`fence.rs`): none may serve the older value afterwards.
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
                        async move {
                            let reply = t.call(&node, &cmd, lane, deadline).await;
                            (zi, node, reply)
                        }
                    })
                    .collect();
                let stats = self.zone_stats.clone();
                let (hints, t) = (self.hints.clone(), t.clone());
                let hinted = zones > 1;
                tokio::spawn(async move {
                    while let Some((zi, node, reply)) = copies.next().await {
                        // Counted here: the caller may have had its answer already.
                        if matches!(&reply, Err(e) if !e.is_refusal()) {
                            stats[zi]
                                .replication_failures
                                .fetch_add(1, Ordering::Relaxed);
                            if hinted {
                                hints.push(&t, &node, cmd.clone());
                            }
                        }
                        let _ = tx.try_send((zi, node, reply));
                    }
                    drop(permit);
                });
            }
            Err(_) => {
                for (zi, stats) in self.zone_stats.iter().enumerate() {
                    stats.replication_failures.fetch_add(1, Ordering::Relaxed);
                    let node = self.topology.zones[zi].owner(key).clone();
                    let _ = tx.try_send((zi, node, Err(Error::Busy)));
                }
                drop(tx);
            }
        }
        let (mut acks, mut unknown, mut first_ack) = (0, 0, None);
        let mut failed = Vec::new();
        // Every zone is heard (each call has its deadline): an error counts
        // truly, and a zone still on its way cannot serve the older value
        // after the acknowledgement.
        while let Some((zi, node, reply)) = rx.recv().await {
            match reply {
                // A node that answered (even NOT_FOUND, or a client error)
                // acknowledged; only silence and server errors do not.
                Err(e) if !e.is_refusal() => {
                    tracing::debug!(zone = %self.topology.zones[zi].name, error = %e, "copy failed");
                    if e.may_have_applied() {
                        unknown += 1;
                    }
                    failed.push((node, e));
                }
                _ => {
                    acks += 1;
                    if first_ack.is_none() || zi == 0 {
                        first_ack = Some(reply);
                    }
                }
            }
        }
        match first_ack {
            Some(r) if acks >= needed => {
                self.fence(t, &failed, acks).await?;
                r
            }
            _ => Err(Error::WritePolicy {
                policy: self.topology.write_policy.name(),
                acked: acks,
                unknown,
                zones,
            }),
        }
    }

    /// Makes sure no node in `failed` (copies that failed with these
    /// errors, kept as hints) serves the older value once the write is
    /// acknowledged: each is dead, or has been given the write since, or is
    /// fenced (`fence.rs`) — waited for up to [`FENCE_WAIT`]. Otherwise the
    /// outcome is unknown (`acked` zones have the write).
    async fn fence<T: Transport>(
        &self,
        t: &T,
        failed: &[(NodeConfig, Error)],
        acked: usize,
    ) -> Result<(), Error> {
        let until = Instant::now() + FENCE_WAIT;
        let fenced = join_all(failed.iter().map(|(node, e)| async move {
            if e.is_refused() {
                return true;
            }
            let mut others_asked = false;
            let mut next_knock = Instant::now();
            loop {
                if !self.hints.is_behind(node) {
                    return true;
                }
                // A node that stopped (or is stopping: its listener closes
                // with its connections) refuses connections. One whose
                // connection failed and that accepts again may be a new
                // process (restarted): give it the write now, which it can
                // only serve from then on. (A hung node's copy timed out
                // instead; the grants below decide for it.)
                if Instant::now() >= next_knock {
                    if t.refuses(node).await {
                        return true;
                    }
                    if matches!(e, Error::Connection(_)) {
                        t.revive(node, KNOCK_EVERY).await;
                        if self.hints.replay(t, &node.id, KNOCK_EVERY).await {
                            return true;
                        }
                    }
                    next_knock = Instant::now() + KNOCK_EVERY;
                }
                match self.grants.fenced(&node.id) {
                    Fence::Said => return true,
                    Fence::Silent if !others_asked => {
                        if self.nobody_else_hears(t, node, until).await {
                            return true;
                        }
                        others_asked = true;
                    }
                    _ => {}
                }
                if Instant::now() >= until {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }))
        .await;
        match failed.iter().zip(fenced).find(|(_, f)| !f) {
            None => Ok(()),
            Some(((node, e), _)) => Err(Error::Unfenced(format!(
                "{acked} zones have it, but {} may still serve the older value ({e})",
                node.id
            ))),
        }
    }

    /// Whether the other nodes (not `node`, not this one) that answer say
    /// `node` has asked them nothing for [`SILENT`], and at least one
    /// answers: then `node`, silent here too, is stopped rather than cut
    /// off from this node alone. A node that does not answer may be
    /// stopped itself (a whole zone stops together).
    async fn nobody_else_hears<T: Transport>(
        &self,
        t: &T,
        node: &NodeConfig,
        until: Instant,
    ) -> bool {
        let me = self.me.as_deref();
        let ask = Command::PeerAsked {
            node: Bytes::from(node.id.clone()),
        };
        let deadline = until
            .saturating_duration_since(Instant::now())
            .min(SILENT)
            .max(Duration::from_millis(1));
        let others = self
            .topology
            .nodes()
            .filter(|n| n.id != node.id && Some(n.id.as_str()) != me);
        let answers = join_all(others.map(|n| t.call(n, &ask, Lane::Realtime, deadline))).await;
        let (mut asked, mut confirmed) = (0, 0);
        for answer in &answers {
            match answer {
                Ok(Response::Number(ms)) if *ms >= SILENT.as_millis() as u64 => confirmed += 1,
                Ok(Response::Number(_)) => asked += 1,
                _ => {}
            }
        }
        asked == 0 && (confirmed > 0 || answers.is_empty())
    }

    /// A delete in every zone: with `versioned`, as `md … E<version>` so
    /// each zone keeps a tombstone; answered as the text `delete` is.
    pub async fn delete_everywhere<T: Transport>(
        &self,
        t: &T,
        key: &Bytes,
        versioned: bool,
        lane: Lane,
    ) -> Result<Response, Error> {
        if !versioned {
            let delete = Command::Delete {
                key: key.clone(),
                noreply: false,
            };
            return self.fan_out(t, key, delete, lane).await;
        }
        let reply = self
            .fan_out(t, key, self.versioned_delete(key), lane)
            .await?;
        Ok(match reply {
            Response::Meta(m) if m.code == MetaCode::Header => Response::Deleted,
            Response::Meta(m) if m.code == MetaCode::NotFound => Response::NotFound,
            other => other,
        })
    }

    /// `md <key> E<next version>`.
    fn versioned_delete(&self, key: &Bytes) -> Command {
        let mut flags = MetaFlags::default();
        self.stamp(&mut flags);
        Command::MetaDelete(Meta {
            key: key.clone(),
            flags,
        })
    }

    /// A conditional write: decided by the key's arbiter (its owner in the
    /// first config zone), then copied to the other zones. There is no
    /// second arbiter: one that took over while the first is unreachable
    /// could decide from an older value, and a later reply would contradict
    /// an earlier one. So while the arbiter is unreachable — or has not yet
    /// been given the writes it missed — conditional writes of its keys fail
    /// with [`Error::Undecided`], saying whether they may have applied.
    pub async fn arbitrate<T: Transport>(
        &self,
        t: &T,
        key: &Bytes,
        cmd: Command,
        is_delete: bool,
        lane: Lane,
    ) -> Result<Response, Error> {
        let deadline = self.deadline(lane, Kind::Write);
        let zi = self.topology.arbiter_order[0];
        let arbiter = self.topology.zones[zi].owner(key).clone();
        if self.hints.is_behind(&arbiter) && !self.hints.replay(t, &arbiter.id, deadline).await {
            return Err(Error::Undecided {
                unknown: false,
                why: format!("{} has not caught up with the writes it missed", arbiter.id),
            });
        }
        let reply = match t.call(&arbiter, &cmd, lane, deadline).await {
            Err(e) if e.is_unanswered() => {
                return Err(Error::Undecided {
                    unknown: e.may_have_applied(),
                    why: format!("{}: {e}", arbiter.id),
                })
            }
            other => other,
        };
        if matches!(&reply, Ok(r) if changed(r)) && self.topology.zones.len() > 1 {
            let copy = if is_delete {
                Some(self.versioned_delete(key))
            } else {
                read_item(t, &arbiter, key, deadline).await
            };
            let Some(copy) = copy else {
                // Applied at the arbiter, but the other zones cannot be told.
                return Err(Error::Undecided {
                    unknown: true,
                    why: format!(
                        "{} decided, but its result could not be read back",
                        arbiter.id
                    ),
                });
            };
            self.copy_to_others(t, key, zi, copy, lane).await?;
        }
        reply
    }

    /// Copies the arbiter's result to the other zones; an error when a zone
    /// that missed it cannot be fenced (the outcome is then unknown).
    async fn copy_to_others<T: Transport>(
        &self,
        t: &T,
        key: &[u8],
        done_zone: usize,
        copy: Command,
        lane: Lane,
    ) -> Result<(), Error> {
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
                    match t.call(node, copy, lane, deadline).await {
                        Err(e) if !e.is_refusal() => {
                            self.zone_stats[zi]
                                .replication_failures
                                .fetch_add(1, Ordering::Relaxed);
                            self.hints.push(t, node, copy.clone());
                            Some((node.clone(), e))
                        }
                        _ => None,
                    }
                }
            });
        let failed: Vec<_> = join_all(calls).await.into_iter().flatten().collect();
        let acked = self.topology.zones.len() - failed.len();
        self.fence(t, &failed, acked).await
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
