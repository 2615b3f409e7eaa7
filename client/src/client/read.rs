//! The client's reads: single-flight (a key read by many callers at once is
//! fetched once), then one routed read per batch of keys, in a span.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use futures::future::{join_all, BoxFuture, FutureExt, Shared};
use tracing::Instrument;
use zonecache_proto::{Response, Value};

use super::{checked_key, exported, Client, Item, Mode, SINGLE_FLIGHT_BOUND};
use crate::error::Error;
use crate::route::{read_command, Kind};

/// What a read found for one key: `Ok(Some(item))` a hit, `Ok(None)` a
/// miss some zone answered for, `Err` when no zone answered for it (a miss
/// that cannot be trusted).
pub type Lookup = Result<Option<Item>, Error>;

/// Every key of one read with what was found for it.
pub(crate) type Lookups = HashMap<Bytes, Lookup>;

/// A read in flight, shared by every caller that asks for one of its keys.
pub(crate) type Fetch = Shared<BoxFuture<'static, Arc<Lookups>>>;

impl Client {
    /// The value of `key`, or `None` when no zone has it.
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Bytes>, Error> {
        Ok(self.gets(key).await?.map(|i| i.value))
    }

    /// The item at `key` with its flags and CAS token.
    pub async fn gets(&self, key: impl AsRef<[u8]>) -> Result<Option<Item>, Error> {
        let key = checked_key(key)?;
        let mut found = self.fetch(vec![key.clone()]).await;
        found.remove(&key).unwrap_or(Ok(None))
    }

    /// What each of `keys` holds — a hit, a miss, or the error that left it
    /// unanswered — asked for once each, one request per owner node. One
    /// key without an answer does not fail the others; the call itself
    /// fails only on a key memcached would reject.
    pub async fn get_many<K: AsRef<[u8]>>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<HashMap<Bytes, Lookup>, Error> {
        let keys = keys
            .into_iter()
            .map(checked_key)
            .collect::<Result<Vec<Bytes>, Error>>()?;
        Ok(self.fetch(keys).await)
    }

    /// Reads `keys`, sharing requests already in flight for any of them
    /// (single-flight) and registering its own for others to share. Every
    /// key asked for is in the answer.
    pub(crate) async fn fetch(&self, mut keys: Vec<Bytes>) -> Lookups {
        keys.sort();
        keys.dedup();
        let table = &self.inner.in_flight[self.lane as usize];
        let mut joined: Vec<(Bytes, Fetch)> = Vec::new();
        let mut mine = Vec::new();
        let fetch;
        {
            let mut t = table.lock().unwrap_or_else(|e| e.into_inner());
            for k in keys {
                match t.get(&k) {
                    Some(f) => joined.push((k, f.clone())),
                    None => mine.push(k),
                }
            }
            fetch = (!mine.is_empty()).then(|| {
                let client = self.clone();
                let keys = mine.clone();
                let f: Fetch = async move { Arc::new(client.read(keys, None).await) }
                    .boxed()
                    .shared();
                if t.len() + mine.len() <= SINGLE_FLIGHT_BOUND {
                    for k in &mine {
                        t.insert(k.clone(), f.clone());
                    }
                }
                f
            });
        }
        self.count_coalesced(joined.len() as u64);
        let mut out = HashMap::new();
        if let Some(f) = fetch {
            let _leave = Leave {
                table,
                keys: &mine,
                fetch: &f,
            };
            let found = f.clone().await;
            for k in mine.iter() {
                out.insert(k.clone(), lookup_of(&found, k));
            }
        }
        for (k, f) in joined {
            let found = f.await;
            let lookup = lookup_of(&found, &k);
            out.insert(k, lookup);
        }
        out
    }

    /// One read of distinct keys, routed per the mode, in a span. Every key
    /// is in the answer.
    async fn read(&self, keys: Vec<Bytes>, touch: Option<i32>) -> Lookups {
        let span = tracing::debug_span!(
            "zonecache.read",
            lane = self.lane.name(),
            keys = keys.len(),
            zones_tried = tracing::field::Empty,
            fallback = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        let lane = self.lane;
        let inner = &self.inner;
        let started = Instant::now();
        let mut fell_back = false;
        async move {
            let (values, mut failed) = match inner.mode {
                Mode::Direct => {
                    let view = inner.views.current();
                    let found = view.router.multi_get(&view.nodes, &keys, touch, lane).await;
                    let span = tracing::Span::current();
                    fell_back = found.zones_tried > 1;
                    span.record("zones_tried", found.zones_tried);
                    span.record("fallback", fell_back);
                    inner
                        .stats
                        .read_batches
                        .fetch_add(found.zones_tried as u64, Ordering::Relaxed);
                    (found.values, found.unanswered)
                }
                Mode::Front => self.read_through_fronts(&keys, touch).await,
            };
            let mut values: HashMap<Bytes, Item> = values
                .into_iter()
                .map(|(k, v)| {
                    let item = Item {
                        value: v.data,
                        flags: v.flags,
                        cas: v.cas.unwrap_or(0),
                    };
                    (k, item)
                })
                .collect();
            let s = &inner.stats;
            s.hits.fetch_add(values.len() as u64, Ordering::Relaxed);
            let misses = keys.len() - values.len() - failed.len();
            s.misses.fetch_add(misses as u64, Ordering::Relaxed);
            let outcome = match failed.values().next() {
                Some(e) => {
                    self.count_error(e);
                    tracing::Span::current().record("outcome", tracing::field::display(e));
                    exported::failure(e)
                }
                None => {
                    tracing::Span::current().record("outcome", "ok");
                    "ok"
                }
            };
            let op = if touch.is_some() { "gat" } else { "get" };
            exported::call(op, lane, outcome, started.elapsed());
            exported::read_keys(
                lane,
                values.len() as u64,
                misses as u64,
                failed.len() as u64,
                fell_back,
            );
            keys.into_iter()
                .map(|k| {
                    let lookup = match failed.remove(&k) {
                        Some(e) => Err(e),
                        None => Ok(values.remove(&k)),
                    };
                    (k, lookup)
                })
                .collect()
        }
        .instrument(span)
        .await
    }

    /// Front mode: one `gets` per home-zone front; the fronts fall back
    /// across zones themselves.
    /// Keys whose front failed get that front's error.
    async fn read_through_fronts(
        &self,
        keys: &[Bytes],
        touch: Option<i32>,
    ) -> (HashMap<Bytes, Value>, HashMap<Bytes, Error>) {
        let view = self.inner.views.current();
        let home = &view.router.topology.zones[0];
        let mut groups: HashMap<usize, Vec<Bytes>> = HashMap::new();
        for k in keys {
            groups
                .entry(home.ring.owner(k).unwrap_or(0))
                .or_default()
                .push(k.clone());
        }
        self.inner
            .stats
            .read_batches
            .fetch_add(groups.len() as u64, Ordering::Relaxed);
        let calls = groups.into_values().map(|group| async move {
            let cmd = read_command(group.clone(), touch, false);
            let reply = self.through_front(&group[0], &cmd, Kind::Read).await;
            (group, reply)
        });
        let (mut values, mut failed) = (HashMap::new(), HashMap::new());
        for (group, reply) in join_all(calls).await {
            match reply {
                Ok(Response::Values(hits)) => {
                    values.extend(hits.into_iter().map(|v| (v.key.clone(), v)));
                }
                Ok(other) => {
                    let e = Error::Protocol(format!("unexpected reply {other:?}"));
                    failed.extend(group.into_iter().map(|k| (k, e.clone())));
                }
                Err(e) => failed.extend(group.into_iter().map(|k| (k, e.clone()))),
            }
        }
        (values, failed)
    }

    /// Reads `key` and sets its expiry (get-and-touch).
    pub async fn gat(&self, key: impl AsRef<[u8]>, ttl: u32) -> Result<Option<Bytes>, Error> {
        let key = checked_key(key)?;
        let mut found = self.read(vec![key.clone()], Some(ttl as i32)).await;
        let lookup = found.remove(&key).unwrap_or(Ok(None));
        Ok(lookup?.map(|i| i.value))
    }
}

/// `key`'s lookup in a shared read's answer (which holds every key it read).
fn lookup_of(found: &Lookups, key: &Bytes) -> Lookup {
    found.get(key).cloned().unwrap_or(Ok(None))
}

/// Takes a finished (or abandoned) read's keys out of the single-flight
/// table, so later reads fetch afresh.
struct Leave<'a> {
    table: &'a Mutex<HashMap<Bytes, Fetch>>,
    keys: &'a [Bytes],
    fetch: &'a Fetch,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        for k in self.keys {
            if t.get(k).is_some_and(|f| f.ptr_eq(self.fetch)) {
                t.remove(k);
            }
        }
    }
}
