//! Request scopes: the lookups one request makes, fetched once each and
//! batched per node.
//!
//! A scope remembers every key it has read (the memo), so a key asked for
//! twice is fetched once. Keys asked for are queued, not sent; the queue is
//! sent as one read — one request per owner node — at [`Scope::load`], or
//! when a caller awaits [`Scope::get`]: the first awaiting lookup yields until no
//! more keys arrive (a few rounds at most), so that every lookup started
//! alongside it (say, in one `join_all`) joins the same batch.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::FutureExt;

use crate::client::{checked_key, Client, Fetch, Item, Lookups};
use crate::error::Error;

/// Most rounds a lookup yields to let siblings join its batch.
const SIBLING_ROUNDS: usize = 16;

/// A request scope; make one per incoming request with [`Client::scope`].
pub struct Scope {
    client: Client,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Keys read so far: `None` = the cluster does not have it.
    memo: HashMap<Bytes, Option<Item>>,
    /// Keys asked for and not yet sent.
    queued: Vec<Bytes>,
    /// Keys sent and not yet answered, with the read that carries them.
    sent: HashMap<Bytes, Fetch>,
    /// Lookups asked of this scope.
    lookups: u64,
    /// Reads this scope sent (each one request per owner node).
    loads: u64,
}

impl Scope {
    pub(crate) fn new(client: Client) -> Scope {
        Scope {
            client,
            state: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `key` for the next [`Scope::load`] without waiting.
    pub fn want(&self, key: impl AsRef<[u8]>) -> Result<(), Error> {
        let key = checked_key(key)?;
        let mut s = self.state();
        s.lookups += 1;
        if s.memo.contains_key(&key) || s.sent.contains_key(&key) || s.queued.contains(&key) {
            drop(s);
            self.client.count_coalesced(1);
        } else {
            s.queued.push(key);
        }
        Ok(())
    }

    /// Sends every queued key in one read (one request per owner node) and
    /// waits for every read of this scope in flight.
    pub async fn load(&self) -> Result<(), Error> {
        self.send_queued();
        let fetches: Vec<Fetch> = {
            let s = self.state();
            let mut distinct: Vec<Fetch> = Vec::new();
            for f in s.sent.values() {
                if !distinct.iter().any(|d| d.ptr_eq(f)) {
                    distinct.push(f.clone());
                }
            }
            distinct
        };
        let mut first_error = None;
        for f in fetches {
            let found = self.settle(&f).await;
            first_error = first_error.or_else(|| found.values().find_map(|l| l.clone().err()));
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The value of `key`: from the memo, or from the next batch this scope
    /// sends (which this call sends, after letting lookups started beside it
    /// join).
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Bytes>, Error> {
        Ok(self.gets(key).await?.map(|i| i.value))
    }

    /// Like [`Scope::get`], with the item's flags and CAS.
    pub async fn gets(&self, key: impl AsRef<[u8]>) -> Result<Option<Item>, Error> {
        let key = checked_key(key)?;
        self.want(&key)?;
        if let Some(found) = self.state().memo.get(&key) {
            return Ok(found.clone());
        }
        self.let_siblings_queue().await;
        self.send_queued();
        let fetch = {
            let s = self.state();
            if let Some(found) = s.memo.get(&key) {
                return Ok(found.clone());
            }
            s.sent.get(&key).cloned()
        };
        if let Some(f) = fetch {
            if let Some(Err(e)) = self.settle(&f).await.get(&key) {
                return Err(e.clone());
            }
        }
        Ok(self.state().memo.get(&key).cloned().flatten())
    }

    /// Yields until lookups started beside this one (in the same
    /// `join_all`, say) have queued their keys: until the queue stops
    /// growing, at most a few rounds.
    async fn let_siblings_queue(&self) {
        for _ in 0..SIBLING_ROUNDS {
            let before = self.state().queued.len();
            tokio::task::yield_now().await;
            let after = self.state().queued.len();
            if after == before {
                break;
            }
        }
    }

    /// Lookups asked of this scope so far.
    pub fn lookups(&self) -> u64 {
        self.state().lookups
    }

    /// Reads this scope has sent so far.
    pub fn loads(&self) -> u64 {
        self.state().loads
    }

    /// Sends the queued keys as one read, registered under each key.
    fn send_queued(&self) {
        let mut s = self.state();
        if s.queued.is_empty() {
            return;
        }
        let keys = std::mem::take(&mut s.queued);
        let client = self.client.clone();
        let batch = keys.clone();
        let fetch: Fetch = async move { Arc::new(client.fetch(batch).await) }
            .boxed()
            .shared();
        for k in keys {
            s.sent.insert(k, fetch.clone());
        }
        s.loads += 1;
    }

    /// Waits for `fetch` and moves its answered keys into the memo; a key
    /// left unanswered is forgotten, so a later lookup asks again.
    async fn settle(&self, fetch: &Fetch) -> Arc<Lookups> {
        let found = fetch.clone().await;
        let mut s = self.state();
        let keys: Vec<Bytes> = s
            .sent
            .iter()
            .filter(|(_, f)| f.ptr_eq(fetch))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &keys {
            s.sent.remove(k);
        }
        for k in keys {
            if let Some(Ok(item)) = found.get(&k) {
                s.memo.insert(k, item.clone());
            }
        }
        drop(s);
        found
    }
}
