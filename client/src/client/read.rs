//! The client's reads: single-flight (a key read by many callers at once is
//! fetched once), then one routed read per batch of keys, in a span.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::future::{join_all, BoxFuture, FutureExt, Shared};
use tracing::Instrument;
use zonecache_proto::Response;

use super::{checked_key, Client, Item, Mode, SINGLE_FLIGHT_BOUND};
use crate::error::Error;
use crate::route::{read_command, Kind};

/// A read in flight, shared by every caller that asks for one of its keys.
pub(crate) type Fetch = Shared<BoxFuture<'static, Result<Arc<HashMap<Bytes, Item>>, Error>>>;

impl Client {
    /// The value of `key`, or `None` when no zone has it.
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Bytes>, Error> {
        Ok(self.gets(key).await?.map(|i| i.value))
    }

    /// The item at `key` with its flags and CAS token.
    pub async fn gets(&self, key: impl AsRef<[u8]>) -> Result<Option<Item>, Error> {
        let key = checked_key(key)?;
        let mut found = self.fetch(vec![key.clone()]).await?;
        Ok(found.remove(&key))
    }

    /// The items of those `keys` that some zone has (asked for once each,
    /// one request per owner node).
    pub async fn get_many<K: AsRef<[u8]>>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<HashMap<Bytes, Item>, Error> {
        let keys = keys
            .into_iter()
            .map(checked_key)
            .collect::<Result<Vec<Bytes>, Error>>()?;
        self.fetch(keys).await
    }

    /// Reads `keys`, sharing requests already in flight for any of them
    /// (single-flight) and registering its own for others to share.
    pub(crate) async fn fetch(&self, mut keys: Vec<Bytes>) -> Result<HashMap<Bytes, Item>, Error> {
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
                let f: Fetch = async move { client.read(keys, None).await.map(Arc::new) }
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
            let found = f.clone().await?;
            for k in &mine {
                if let Some(item) = found.get(k) {
                    out.insert(k.clone(), item.clone());
                }
            }
        }
        for (k, f) in joined {
            if let Some(item) = f.await?.get(&k) {
                out.insert(k, item.clone());
            }
        }
        Ok(out)
    }

    /// One read of distinct keys, routed per the mode, in a span.
    async fn read(
        &self,
        keys: Vec<Bytes>,
        touch: Option<i32>,
    ) -> Result<HashMap<Bytes, Item>, Error> {
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
        async move {
            let result = match inner.mode {
                Mode::Direct => {
                    let found = inner
                        .router
                        .multi_get(&inner.nodes, &keys, touch, lane)
                        .await;
                    let span = tracing::Span::current();
                    span.record("zones_tried", found.zones_tried);
                    span.record("fallback", found.zones_tried > 1);
                    inner
                        .stats
                        .read_batches
                        .fetch_add(found.zones_tried as u64, Ordering::Relaxed);
                    match found.unanswered {
                        Some(e) => Err(e),
                        None => Ok(found.values),
                    }
                }
                Mode::Front => self.read_through_fronts(&keys, touch).await,
            };
            let result = result.map(|values| {
                values
                    .into_iter()
                    .map(|(k, v)| {
                        let item = Item {
                            value: v.data,
                            flags: v.flags,
                            cas: v.cas.unwrap_or(0),
                        };
                        (k, item)
                    })
                    .collect::<HashMap<Bytes, Item>>()
            });
            match &result {
                Ok(found) => {
                    let s = &inner.stats;
                    s.hits.fetch_add(found.len() as u64, Ordering::Relaxed);
                    s.misses
                        .fetch_add((keys.len() - found.len()) as u64, Ordering::Relaxed);
                    tracing::Span::current().record("outcome", "ok");
                }
                Err(e) => {
                    self.count_error(e);
                    tracing::Span::current().record("outcome", tracing::field::display(e));
                }
            }
            result
        }
        .instrument(span)
        .await
    }

    /// Front mode: one `gets` per home-zone front; the fronts fall back
    /// across zones themselves.
    async fn read_through_fronts(
        &self,
        keys: &[Bytes],
        touch: Option<i32>,
    ) -> Result<HashMap<Bytes, zonecache_proto::Value>, Error> {
        let home = &self.inner.router.topology.zones[0];
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
            self.through_front(&group[0], &cmd, Kind::Read).await
        });
        let mut out = HashMap::new();
        for reply in join_all(calls).await {
            match reply? {
                Response::Values(values) => {
                    out.extend(values.into_iter().map(|v| (v.key.clone(), v)));
                }
                other => return Err(Error::Protocol(format!("unexpected reply {other:?}"))),
            }
        }
        Ok(out)
    }

    /// Reads `key` and sets its expiry (get-and-touch).
    pub async fn gat(&self, key: impl AsRef<[u8]>, ttl: u32) -> Result<Option<Bytes>, Error> {
        let key = checked_key(key)?;
        let mut found = self.read(vec![key.clone()], Some(ttl as i32)).await?;
        Ok(found.remove(&key).map(|i| i.value))
    }
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
