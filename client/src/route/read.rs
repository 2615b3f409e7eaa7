//! Reads across zones: the key's owner in the home zone first, then the
//! other zones in fallback order on a miss, error or deadline. A multi-key
//! read sends one request per owner and only the keys still missing go on
//! to the next zone. A hit found in another zone is copied home in the
//! background (read repair, realtime lane only).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use zonecache_proto::{Command, Meta, MetaCode, MetaFlags, MetaResponse, Response, Value};

use super::hedge::GroupReply;
use super::write::set_as_meta;
use super::{Kind, Router, Transport, ZoneStats};
use crate::error::Error;
use crate::lane::Lane;
use crate::topology::NodeConfig;

/// The result of a multi-key read.
#[derive(Debug, Default)]
pub struct Found {
    /// Hits, by key.
    pub values: HashMap<Bytes, Value>,
    /// Keys no zone answered for (every zone tried failed), with the last
    /// zone's error: their miss is not a real miss.
    pub unanswered: HashMap<Bytes, Error>,
    /// Keys a zone knows were deleted (a tombstone ended their search).
    pub deleted: HashSet<Bytes>,
    /// Zones asked, in order (for spans).
    pub zones_tried: usize,
}

/// A multi-key read's progress across zones.
pub(super) struct Search {
    found: Found,
    /// Keys neither found nor known deleted yet.
    missing: Vec<Bytes>,
    /// Keys some zone answered for (a miss there is a real miss).
    answered: HashSet<Bytes>,
    /// The last error for each key a zone failed to answer.
    errors: HashMap<Bytes, Error>,
    /// Keys whose search is over though not found: a hedge already asked
    /// the later zones for them.
    settled: HashSet<Bytes>,
}

impl Search {
    pub(super) fn new(keys: &[Bytes]) -> Search {
        let mut missing = keys.to_vec();
        missing.sort();
        missing.dedup();
        Search {
            found: Found::default(),
            missing,
            answered: HashSet::new(),
            errors: HashMap::new(),
            settled: HashSet::new(),
        }
    }

    /// Whether `key` is found or known deleted.
    pub(super) fn decided(&self, key: &Bytes) -> bool {
        self.found.values.contains_key(key) || self.found.deleted.contains(key)
    }

    /// Takes in a hedge's search of the later zones for `group`: what it
    /// found stands (it answered first), and none of `group` goes on to
    /// those zones again.
    fn absorb(&mut self, group: &[Bytes], hedge: Search) {
        for (k, v) in hedge.found.values {
            if !self.decided(&k) {
                self.found.values.insert(k, v);
            }
        }
        for k in hedge.found.deleted {
            if !self.decided(&k) {
                self.found.deleted.insert(k);
            }
        }
        self.found.zones_tried += hedge.found.zones_tried;
        self.answered.extend(hedge.answered);
        self.errors.extend(hedge.errors);
        self.settled.extend(group.iter().cloned());
    }

    /// The result: keys nobody answered for carry their last error.
    fn finish(self) -> Found {
        let Search {
            mut found,
            answered,
            errors,
            ..
        } = self;
        found.unanswered = errors
            .into_iter()
            .filter(|(k, _)| {
                !found.values.contains_key(k) && !found.deleted.contains(k) && !answered.contains(k)
            })
            .collect();
        found
    }
}

/// What a search of the zones for an `mg`'s key found.
#[derive(Default)]
pub(super) struct MetaSearch {
    /// The reply of the zone holding the key.
    pub(super) hit: Option<Result<Response, Error>>,
    /// A zone knows the key was deleted.
    pub(super) deleted: bool,
    /// Some zone answered.
    pub(super) answered: bool,
    /// The last error of a zone that did not.
    pub(super) error: Option<Error>,
}

pub(super) type Boxed<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

impl Router {
    /// Multi-key read: keys grouped by owner, one request per owner; only
    /// the keys still missing go to the next zone, again grouped. A zone's
    /// drained share of the keys (`drain.rs`) skips it, and is asked there
    /// last only for keys no other zone answered for. A realtime read the
    /// home owner is slow to answer is hedged (`hedge.rs`).
    pub async fn multi_get<T: Transport>(
        &self,
        t: &T,
        keys: &[Bytes],
        touch: Option<i32>,
        lane: Lane,
    ) -> Found {
        let mut search = Search::new(keys);
        self.search_from(t, 0, touch, lane, &mut search).await;
        search.finish()
    }

    /// Searches zones `first..` for `search`'s missing keys, in order, the
    /// drained zones' shares last. (Boxed: a hedge searches too, so the
    /// future would contain itself.)
    pub(super) fn search_from<'a, T: Transport>(
        &'a self,
        t: &'a T,
        first: usize,
        touch: Option<i32>,
        lane: Lane,
        search: &'a mut Search,
    ) -> Boxed<'a, ()> {
        Box::pin(async move {
            let mut drained: Vec<(usize, Vec<Bytes>)> = Vec::new();
            for (zi, zone) in self.topology.zones.iter().enumerate().skip(first) {
                if search.missing.is_empty() {
                    break;
                }
                let (skip, ask): (Vec<Bytes>, Vec<Bytes>) = search
                    .missing
                    .iter()
                    .cloned()
                    .partition(|k| self.drains.skips(&zone.name, k));
                if !skip.is_empty() {
                    drained.push((zi, skip));
                }
                self.search_zone(t, zi, ask, touch, lane, search).await;
            }
            // Last resort: the drained zones, for keys nobody answered for.
            for (zi, keys) in drained {
                let keys: Vec<Bytes> = keys
                    .into_iter()
                    .filter(|k| search.missing.contains(k) && !search.answered.contains(k))
                    .collect();
                self.search_zone(t, zi, keys, touch, lane, search).await;
            }
        })
    }

    /// Asks zone `zi` for `keys` (one request per owner) and records what
    /// it answered in `search`.
    async fn search_zone<T: Transport>(
        &self,
        t: &T,
        zi: usize,
        keys: Vec<Bytes>,
        touch: Option<i32>,
        lane: Lane,
        search: &mut Search,
    ) {
        if keys.is_empty() {
            return;
        }
        let versioned = self.topology.zones.len() > 1;
        let zone = &self.topology.zones[zi];
        search.found.zones_tried += 1;
        let mut groups: HashMap<&str, (&NodeConfig, Vec<Bytes>)> = HashMap::new();
        for k in keys {
            let owner = zone.owner(&k);
            groups
                .entry(owner.id.as_str())
                .or_insert_with(|| (owner, Vec::new()))
                .1
                .push(k);
        }
        let calls = groups.into_values().map(|(node, group)| {
            let cmd = read_command(group.clone(), touch, versioned);
            async move {
                let reply = match self.hedges_reads_of(zi, node, lane) {
                    true => self.hedged_call(t, node, cmd, &group, touch).await,
                    false => GroupReply {
                        owner: Some(self.read_call(t, node, &cmd, lane).await),
                        hedge: None,
                    },
                };
                (group, reply)
            }
        });
        for (group, reply) in join_all(calls).await {
            let hedged = reply.hedge.is_some();
            if let Some(hedge) = reply.hedge {
                search.absorb(&group, hedge);
            }
            let (values, deleted) = match reply.owner {
                Some(Ok(r)) => versioned_parts(r),
                Some(Err(e)) if !hedged => {
                    search
                        .errors
                        .extend(group.into_iter().map(|k| (k, e.clone())));
                    continue;
                }
                // A hedge searched the later zones for these keys: what it
                // found, or failed to reach, stands.
                Some(Err(_)) | None => continue,
            };
            search.answered.extend(group);
            for v in values {
                if search.decided(&v.key) {
                    continue; // a hedge answered it first
                }
                if zi > 0 {
                    self.fallback_hit(t, zi, &v.key, lane);
                }
                search.found.values.insert(v.key.clone(), v);
            }
            // A zone that knows the key was deleted ends its search: any
            // copy further on is older or, at best, a miss is honest.
            for (key, _) in deleted {
                if !search.decided(&key) {
                    search.found.deleted.insert(key);
                }
            }
        }
        let Search {
            found,
            missing,
            settled,
            ..
        } = search;
        missing.retain(|k| {
            !found.values.contains_key(k) && !found.deleted.contains(k) && !settled.contains(k)
        });
    }

    /// A single-key meta read (`mg`): the home owner first; on a miss the
    /// zones are searched as a multi-key read searches them, and the
    /// request goes to the zone holding the newest copy. A realtime read
    /// the home owner is slow to answer is hedged (`hedge.rs`).
    pub async fn meta_read<T: Transport>(
        &self,
        t: &T,
        key: &Bytes,
        cmd: &Command,
        lane: Lane,
    ) -> Result<Response, Error> {
        let zones = &self.topology.zones;
        let home = zones[0].owner(key);
        // A zone whose share of reads holds this key is skipped (`drain.rs`);
        // the home zone is still asked last when no other zone answered.
        let drained = zones.len() > 1 && self.drains.skips(&zones[0].name, key);
        let first = match drained {
            true => Err(Error::Connection(format!(
                "zone {} is drained",
                zones[0].name
            ))),
            false if self.hedges_reads_of(0, home, lane) => {
                match self.hedged_meta_read(t, home, key, cmd).await {
                    Ok(settled) => return settled,
                    Err(first) => first,
                }
            }
            false => self.read_call(t, home, cmd, lane).await,
        };
        let hit = matches!(&first, Ok(Response::Meta(m)) if m.code != MetaCode::Miss);
        if hit || self.topology.zones.len() < 2 {
            return first;
        }
        // Which zone has it, unless a zone that knows of a delete ends the
        // search first (home's own answer included: `mg` hides tombstones).
        let search = self.meta_search(t, key, cmd, lane, 0).await;
        if let Some(reply) = search.hit {
            return reply;
        }
        match (first, search.answered) {
            (Ok(home_miss), _) => Ok(home_miss),
            (Err(_), true) => Ok(miss_reply(cmd)),
            (Err(_), false) if drained => self.read_call(t, home, cmd, lane).await,
            (Err(e), false) => Err(search.error.unwrap_or(e)),
        }
    }

    /// Searches zones `from..` for the zone holding `key` and runs `cmd`
    /// there; a zone that knows of a delete ends the search.
    pub(super) async fn meta_search<T: Transport>(
        &self,
        t: &T,
        key: &Bytes,
        cmd: &Command,
        lane: Lane,
        from: usize,
    ) -> MetaSearch {
        let deadline = self.deadline(lane, Kind::Read);
        let zones = &self.topology.zones;
        let mut search = MetaSearch::default();
        for (zi, zone) in zones.iter().enumerate().skip(from) {
            let node = zone.owner(key);
            if self.hints.is_behind(node) || self.drains.skips(&zone.name, key) {
                continue;
            }
            let probe = read_command(vec![key.clone()], None, true);
            let (values, deleted) = match t.call(node, &probe, lane, deadline).await {
                Ok(r) => versioned_parts(r),
                Err(e) => {
                    search.error = Some(e);
                    continue;
                }
            };
            search.answered = true;
            if !deleted.is_empty() {
                search.deleted = true;
                break;
            }
            if values.is_empty() {
                continue;
            }
            let reply = t.call(node, cmd, lane, deadline).await;
            if matches!(&reply, Ok(Response::Meta(m)) if m.code != MetaCode::Miss) {
                if zi > 0 {
                    self.fallback_hit(t, zi, key, lane);
                }
                search.hit = Some(reply);
            }
            break;
        }
        search
    }

    /// A read call to `node`, unless the node missed this router's writes:
    /// it serves none of its reads until it has them.
    async fn read_call<T: Transport>(
        &self,
        t: &T,
        node: &NodeConfig,
        cmd: &Command,
        lane: Lane,
    ) -> Result<Response, Error> {
        if self.hints.is_behind(node) {
            let why = format!("{} is catching up on missed writes", node.id);
            return Err(Error::Connection(why));
        }
        t.call(node, cmd, lane, self.deadline(lane, Kind::Read))
            .await
    }

    /// A read missed at home and hit in zone `zone`: count it, and (read
    /// repair, realtime lane only) copy the item back to its home owner in
    /// the background, with flags, remaining TTL and CAS. The copy uses `add`
    /// semantics, so it never overwrites a newer home copy; when the
    /// background queue is full it is dropped and counted.
    fn fallback_hit<T: Transport>(&self, t: &T, zone: usize, key: &Bytes, lane: Lane) {
        self.zone_stats[zone]
            .fallback_hits
            .fetch_add(1, Ordering::Relaxed);
        if !self.topology.read_repair || lane == Lane::Batch {
            return;
        }
        let skipped =
            |stats: &ZoneStats| stats.read_repairs_skipped.fetch_add(1, Ordering::Relaxed);
        let home = self.topology.zones[0].owner(key).clone();
        if self.hints.is_behind(&home) {
            skipped(&self.zone_stats[zone]);
            return;
        }
        let Ok(permit) = self.background.clone().try_acquire_owned() else {
            skipped(&self.zone_stats[zone]);
            return;
        };
        let source = self.topology.zones[zone].owner(key).clone();
        let deadline = self.deadline(lane, Kind::Write);
        let (t, key, stats) = (t.clone(), key.clone(), self.zone_stats.clone());
        tokio::spawn(async move {
            // The copy carries the source's version as an `add`: the home
            // node refuses it over anything newer, tombstones included.
            let copy = match read_item(&t, &source, &key, deadline).await {
                Some(Command::MetaSet { mut meta, data }) => {
                    meta.flags
                        .set(b'M', Bytes::from_static(b"E"))
                        .expect("E is a mode");
                    Command::MetaSet { meta, data }
                }
                _ => {
                    skipped(&stats[zone]);
                    return;
                }
            };
            match t.call(&home, &copy, Lane::Realtime, deadline).await {
                Ok(Response::Meta(m)) if m.code == MetaCode::Header => {
                    stats[zone].read_repairs.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(_) => {
                    skipped(&stats[zone]);
                }
            }
            drop(permit);
        });
    }
}

/// The item on `node` as an `ms` that recreates it elsewhere (same flags,
/// remaining TTL and CAS).
pub(super) async fn read_item<T: Transport>(
    t: &T,
    node: &NodeConfig,
    key: &Bytes,
    deadline: Duration,
) -> Option<Command> {
    let mut flags = MetaFlags::default();
    for f in [b'v', b'f', b't', b'c'] {
        flags
            .set(f, Bytes::new())
            .expect("return flags take no argument");
    }
    let cmd = Command::MetaGet(Meta {
        key: key.clone(),
        flags,
    });
    let Ok(Response::Meta(m)) = t.call(node, &cmd, Lane::Realtime, deadline).await else {
        return None;
    };
    let value = m.value.clone()?;
    let num = |f: u8| {
        m.flag(f)
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.parse::<i64>().ok())
    };
    let ttl = num(b't').filter(|t| *t > 0).unwrap_or(0) as i32;
    Some(set_as_meta(
        key,
        value,
        num(b'f').unwrap_or(0) as u32,
        ttl,
        num(b'c').unwrap_or(0) as u64,
    ))
}

/// The read of `keys` (with flags and CAS): `gets`, or `gats` when it
/// also sets a new expiry; `versioned`: `zc_gets`/`zc_gats`, which also
/// report tombstones (nodes of a multi-zone cluster).
pub fn read_command(keys: Vec<Bytes>, touch: Option<i32>, versioned: bool) -> Command {
    if versioned {
        return Command::VersionedGet { keys, touch };
    }
    match touch {
        Some(exptime) => Command::Gat {
            exptime,
            keys,
            cas: true,
        },
        None => Command::Get { keys, cas: true },
    }
}

/// The hits and the tombstones of a read's reply (`gets` or `zc_gets`).
fn versioned_parts(reply: Response) -> (Vec<Value>, Vec<(Bytes, u64)>) {
    match reply {
        Response::Values(values) => (values, Vec::new()),
        Response::Versioned { values, deleted } => (values, deleted),
        _ => (Vec::new(), Vec::new()),
    }
}

/// What a miss of `mg` looks like to the client that sent it.
pub(super) fn miss_reply(cmd: &Command) -> Response {
    let Command::MetaGet(meta) = cmd else {
        return Response::Values(Vec::new());
    };
    let mut flags = Vec::new();
    for t in &meta.flags.tokens {
        if matches!(t.flag, b'O' | b'k') {
            flags.push(t.clone());
        }
    }
    Response::Meta(MetaResponse {
        code: MetaCode::Miss,
        flags,
        value: None,
    })
}
