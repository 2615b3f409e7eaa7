//! The client: the handle and its counters (`mod.rs`), the builder
//! (`builder.rs`), reads with single-flight (`read.rs`) and writes
//! (`write.rs`). Routing itself is the shared router's (`crate::route`).

mod builder;
mod exported;
mod follow;
mod read;
mod view;
mod write;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use zonecache_proto::{Response, KEY_MAX_LENGTH};

use crate::error::Error;
use crate::lane::Lane;
use crate::scope::Scope;
use crate::topology::Topology;

pub use builder::ClientBuilder;
pub use read::Lookup;
pub(crate) use read::{Fetch, Lookups};

/// Keys in flight at once in the single-flight table, per lane; beyond it
/// reads still work but are not shared, so one slow key cannot pin memory.
const SINGLE_FLIGHT_BOUND: usize = 10_000;

/// How the client reaches the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Hash each key with the cluster's ring and talk to its owner in the
    /// home zone, falling back across zones; fan writes out under the write
    /// policy. No front hop. Works against stock memcached (one zone).
    Direct,
    /// Send each request to a node of the home zone (the key's home owner,
    /// so its hop is local) and let the node route.
    Front,
}

/// An item as read with its flags and CAS token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub value: Bytes,
    /// The client flags stored with the value.
    pub flags: u32,
    /// The CAS token for [`Client::cas`].
    pub cas: u64,
}

/// Flags and expiry for a store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreOptions {
    /// Seconds to live (0 = no expiry; memcached's rules for large values).
    pub ttl: u32,
    /// Opaque flags stored with the value.
    pub flags: u32,
}

impl StoreOptions {
    /// Expire after `secs` seconds.
    pub fn ttl(secs: u32) -> StoreOptions {
        StoreOptions {
            ttl: secs,
            flags: 0,
        }
    }
}

/// The client's counters, as atomics.
#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    timeouts: AtomicU64,
    coalesced: AtomicU64,
    shed: AtomicU64,
    errors: AtomicU64,
    read_batches: AtomicU64,
}

/// What the client has done so far ([`Client::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Keys read and found.
    pub hits: u64,
    /// Keys read and not found in any zone.
    pub misses: u64,
    /// Reads answered by a zone other than the home zone.
    pub fallbacks: u64,
    /// Calls that ran out of time.
    pub timeouts: u64,
    /// Lookups answered without a request of their own (a scope's memo or
    /// another caller's request in flight).
    pub coalesced: u64,
    /// Calls refused for load: our in-flight budget, or the node's
    /// `SERVER_ERROR busy`.
    pub shed: u64,
    /// Other failed calls.
    pub errors: u64,
    /// Read requests sent (one per owner node asked, per zone).
    pub read_batches: u64,
    /// Reads also sent to the next zone because the home owner was slow.
    pub hedged: u64,
    /// Hedged reads the next zone answered first.
    pub hedge_wins: u64,
}

struct Inner {
    /// The router and pools of the current topology.
    views: view::Views,
    mode: Mode,
    stats: Counters,
    /// Single-flight tables, per lane (realtime, batch): a realtime read
    /// never waits on a batch request.
    in_flight: [Mutex<HashMap<Bytes, Fetch>>; 2],
}

/// A zonecache client. Cheap to clone; clones share connections.
///
/// ```no_run
/// # async fn demo() -> Result<(), zonecache_client::Error> {
/// use zonecache_client::{Client, StoreOptions};
/// let client = Client::builder_file("cluster.toml").home_zone("a").build()?;
/// client.set("user:1", "Ada", StoreOptions::ttl(300)).await?;
/// assert_eq!(client.get("user:1").await?.as_deref(), Some(&b"Ada"[..]));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    /// The lane this handle's calls use.
    lane: Lane,
}

/// The key as `Bytes`, checked against memcached's key rules.
pub(crate) fn checked_key(key: impl AsRef<[u8]>) -> Result<Bytes, Error> {
    let key = key.as_ref();
    if key.is_empty() {
        return Err(Error::InvalidKey("empty".into()));
    }
    if key.len() > KEY_MAX_LENGTH {
        return Err(Error::InvalidKey(format!(
            "{} bytes, the limit is {KEY_MAX_LENGTH}",
            key.len()
        )));
    }
    if let Some(b) = key.iter().find(|b| **b <= b' ' || **b == 0x7f) {
        return Err(Error::InvalidKey(format!(
            "byte {b:#04x}: keys cannot hold spaces or control characters"
        )));
    }
    Ok(Bytes::copy_from_slice(key))
}

/// The reply of a store as a result.
fn stored(reply: Result<Response, Error>) -> Result<(), Error> {
    match reply? {
        Response::Stored | Response::Deleted | Response::Touched | Response::Ok => Ok(()),
        Response::Meta(m) if m.code == zonecache_proto::MetaCode::Header => Ok(()),
        Response::NotStored => Err(Error::NotStored),
        Response::Exists => Err(Error::Exists),
        Response::NotFound => Err(Error::NotFound),
        other => Err(Error::Protocol(format!("unexpected reply {other:?}"))),
    }
}

impl Client {
    /// A builder for a cluster described by the nodes' TOML config file.
    pub fn builder_file(path: impl AsRef<Path>) -> ClientBuilder {
        ClientBuilder::config_file(path)
    }

    /// A builder for one zone of these servers (zonecached or memcached).
    pub fn builder_seeds(addrs: &[SocketAddr]) -> ClientBuilder {
        ClientBuilder::seeds(addrs)
    }

    /// The same client on the batch lane: its own connections and in-flight
    /// budget per node, the batch deadline, the nodes' batch ports, no read
    /// repair, shed first.
    pub fn batch(&self) -> Client {
        self.on(Lane::Batch)
    }

    /// The same client on `lane`.
    pub fn on(&self, lane: Lane) -> Client {
        Client {
            inner: self.inner.clone(),
            lane,
        }
    }

    /// This handle's lane.
    pub fn lane(&self) -> Lane {
        self.lane
    }

    /// The topology the client routes by now (a direct-mode client follows
    /// the nodes' membership, so a later call may see another).
    pub fn topology(&self) -> Topology {
        self.inner.views.current().router.topology.clone()
    }

    /// A request scope: lookups made through it are deduplicated and
    /// batched per node (see [`Scope`]).
    pub fn scope(&self) -> Scope {
        Scope::new(self.clone())
    }

    /// The client's counters so far.
    pub fn stats(&self) -> ClientStats {
        let s = &self.inner.stats;
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let view = self.inner.views.current();
        let hedges = &view.router.hedges.stats;
        ClientStats {
            hits: ld(&s.hits),
            misses: ld(&s.misses),
            fallbacks: view
                .router
                .zone_stats
                .iter()
                .map(|z| ld(&z.fallback_hits))
                .sum(),
            timeouts: ld(&s.timeouts),
            coalesced: ld(&s.coalesced),
            shed: ld(&s.shed),
            errors: ld(&s.errors),
            read_batches: ld(&s.read_batches),
            hedged: ld(&hedges.sent),
            hedge_wins: ld(&hedges.won),
        }
    }

    pub(crate) fn count_coalesced(&self, n: u64) {
        if n > 0 {
            self.inner.stats.coalesced.fetch_add(n, Ordering::Relaxed);
            exported::coalesced(self.lane, n);
        }
    }

    fn count_error(&self, e: &Error) {
        let s = &self.inner.stats;
        let counter = match e {
            Error::Timeout => &s.timeouts,
            e if e.is_shed() => &s.shed,
            Error::NotStored | Error::Exists | Error::NotFound => return,
            _ => &s.errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_memcached_rules() {
        assert!(checked_key("user:1").is_ok());
        assert!(checked_key("a".repeat(250)).is_ok());
        assert!(matches!(
            checked_key("a".repeat(251)),
            Err(Error::InvalidKey(_))
        ));
        assert!(matches!(checked_key(""), Err(Error::InvalidKey(_))));
        assert!(matches!(checked_key("a b"), Err(Error::InvalidKey(_))));
        assert!(matches!(
            checked_key("a\r\nget x"),
            Err(Error::InvalidKey(_))
        ));
    }
}
