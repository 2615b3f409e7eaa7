//! The client: a builder, the operations, the two routing modes, lanes,
//! single-flight reads and the client's counters.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::{join_all, BoxFuture, FutureExt, Shared};
use tracing::Instrument;
use zonecache_proto::{Command, Response, Store, StoreMode, KEY_MAX_LENGTH};

use crate::error::Error;
use crate::node::{Lane, Node, NodeOptions};
use crate::route::{read_command, set_as_meta, CasClock, Kind, Router, Transport};
use crate::scope::Scope;
use crate::topology::{ClusterConfig, NodeConfig, Overrides, Topology, WritePolicy};

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

/// Where the topology comes from.
#[derive(Debug, Clone)]
enum Source {
    Config(ClusterConfig),
    File(std::path::PathBuf),
    Seeds(Vec<SocketAddr>),
}

/// Builds a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    source: Source,
    home_zone: Option<String>,
    mode: Mode,
    overrides: Overrides,
    options: NodeOptions,
}

impl ClientBuilder {
    /// A cluster described by the same TOML file the nodes read.
    pub fn config_file(path: impl AsRef<Path>) -> ClientBuilder {
        ClientBuilder::from_source(Source::File(path.as_ref().to_path_buf()))
    }

    /// A cluster described by a parsed config.
    pub fn config(config: ClusterConfig) -> ClientBuilder {
        ClientBuilder::from_source(Source::Config(config))
    }

    /// One zone of these servers (zonecached nodes or stock memcached).
    pub fn seeds(addrs: &[SocketAddr]) -> ClientBuilder {
        ClientBuilder::from_source(Source::Seeds(addrs.to_vec()))
    }

    fn from_source(source: Source) -> ClientBuilder {
        ClientBuilder {
            source,
            home_zone: None,
            mode: Mode::Direct,
            overrides: Overrides::default(),
            options: NodeOptions::default(),
        }
    }

    /// The zone this client runs in (default: the config's `node`'s zone,
    /// else the first zone).
    pub fn home_zone(mut self, zone: &str) -> ClientBuilder {
        self.home_zone = Some(zone.to_string());
        self
    }

    /// Direct (default) or front routing.
    pub fn mode(mut self, mode: Mode) -> ClientBuilder {
        self.mode = mode;
        self
    }

    /// Overrides the config's write policy.
    pub fn write_policy(mut self, policy: WritePolicy) -> ClientBuilder {
        self.overrides.write_policy = Some(policy);
        self
    }

    /// Realtime deadlines per node call (default: the config's, 20 ms / 50 ms).
    pub fn realtime_deadlines(mut self, read: Duration, write: Duration) -> ClientBuilder {
        self.overrides.read_deadline = Some(read);
        self.overrides.write_deadline = Some(write);
        self
    }

    /// Batch deadline per node call (default: the config's, 500 ms).
    pub fn batch_deadline(mut self, deadline: Duration) -> ClientBuilder {
        self.overrides.batch_deadline = Some(deadline);
        self
    }

    /// Copy hits found in another zone back home (direct mode; default: the config's).
    pub fn read_repair(mut self, on: bool) -> ClientBuilder {
        self.overrides.read_repair = Some(on);
        self
    }

    /// Connections per node and lane (default 2).
    pub fn connections_per_node(mut self, n: usize) -> ClientBuilder {
        self.options.connections = n.max(1);
        self
    }

    /// Requests in flight per node: realtime and batch budgets (default
    /// 2048 and 256); beyond them calls fail at once with [`Error::Busy`].
    pub fn in_flight(mut self, realtime: usize, batch: usize) -> ClientBuilder {
        self.options.max_in_flight = [realtime.max(1), batch.max(1)];
        self
    }

    /// `false` sends batch calls on the realtime connections and budget —
    /// only for measuring what lanes are worth.
    pub fn separate_lanes(mut self, on: bool) -> ClientBuilder {
        self.options.separate_lanes = on;
        self
    }

    /// Checks the topology and makes the client; connections open on first use.
    pub fn build(self) -> Result<Client, Error> {
        let config = match self.source {
            Source::Config(c) => c,
            Source::File(path) => ClusterConfig::load(&path).map_err(Error::Config)?,
            Source::Seeds(addrs) if addrs.is_empty() => {
                return Err(Error::Config("no seed addresses".into()))
            }
            Source::Seeds(addrs) => ClusterConfig::single_zone(&addrs),
        };
        let mut topology =
            Topology::from_config(config, self.home_zone.as_deref()).map_err(Error::Config)?;
        self.overrides.apply(&mut topology);
        let mut options = self.options;
        // Direct mode writes each zone's copy itself: the node must apply
        // it, not route it again.
        options.hello = (self.mode == Mode::Direct).then_some(Command::PeerHello);
        let nodes: HashMap<String, Arc<Node>> = topology
            .nodes()
            .map(|n| (n.id.clone(), Arc::new(Node::new(n.clone(), &options))))
            .collect();
        Ok(Client {
            inner: Arc::new(Inner {
                pools: Pools(Arc::new(nodes)),
                router: Router::new(topology, None),
                mode: self.mode,
                cas: CasClock::new(rand::random()),
                stats: Counters::default(),
                in_flight: [Mutex::default(), Mutex::default()],
            }),
            lane: Lane::Realtime,
        })
    }
}

/// Nodes by id, as a router's transport: each call goes to the node's pool.
#[derive(Clone)]
pub struct Pools(pub Arc<HashMap<String, Arc<Node>>>);

impl Transport for Pools {
    async fn call(
        &self,
        node: &NodeConfig,
        cmd: &Command,
        lane: Lane,
        deadline: Duration,
    ) -> Result<Response, Error> {
        match self.0.get(&node.id) {
            Some(n) => n.call(cmd, lane, deadline).await,
            None => Err(Error::Connection(format!("unknown node {}", node.id))),
        }
    }
}

/// A read in flight, shared by every caller that asks for one of its keys.
pub(crate) type Fetch = Shared<BoxFuture<'static, Result<Arc<HashMap<Bytes, Item>>, Error>>>;

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
}

struct Inner {
    pools: Pools,
    router: Router,
    mode: Mode,
    cas: CasClock,
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

    /// The topology the client routes by.
    pub fn topology(&self) -> &Topology {
        &self.inner.router.topology
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
        ClientStats {
            hits: ld(&s.hits),
            misses: ld(&s.misses),
            fallbacks: self
                .inner
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
        }
    }

    pub(crate) fn count_coalesced(&self, n: u64) {
        if n > 0 {
            self.inner.stats.coalesced.fetch_add(n, Ordering::Relaxed);
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
                        .multi_get(&inner.pools, &keys, touch, lane)
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
            let cmd = read_command(group.clone(), touch);
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

    /// Sends `cmd` to the key's home owner as a front; when it does not
    /// answer, to the next nodes of the home zone.
    async fn through_front(
        &self,
        key: &[u8],
        cmd: &Command,
        kind: Kind,
    ) -> Result<Response, Error> {
        let router = &self.inner.router;
        let home = &router.topology.zones[0];
        // The front tries each zone within its own deadline.
        let deadline = router.deadline(self.lane, kind) * (router.topology.zones.len() as u32 + 1);
        let first = home.ring.owner(key).unwrap_or(0);
        let mut last = Err(Error::Connection("no front reachable".into()));
        for i in 0..home.nodes.len().min(3) {
            let node = &home.nodes[(first + i) % home.nodes.len()];
            last = self.inner.pools.call(node, cmd, self.lane, deadline).await;
            match &last {
                Err(e) if e.is_unanswered() => continue,
                _ => break,
            }
        }
        last
    }

    /// Runs a single-key write in a span, counting its failure.
    async fn write(
        &self,
        op: &'static str,
        key: &Bytes,
        route: Write,
        cmd: Command,
    ) -> Result<Response, Error> {
        let span = tracing::debug_span!(
            "zonecache.write",
            op,
            lane = self.lane.name(),
            outcome = tracing::field::Empty,
        );
        let inner = &self.inner;
        let lane = self.lane;
        async move {
            let result = match (inner.mode, route) {
                (Mode::Front, _) => self.through_front(key, &cmd, Kind::Write).await,
                (Mode::Direct, Write::FanOut) => {
                    inner.router.fan_out(&inner.pools, key, cmd, lane).await
                }
                (Mode::Direct, Write::Arbitrate { is_delete }) => {
                    inner
                        .router
                        .arbitrate(&inner.pools, key, cmd, is_delete, lane)
                        .await
                }
            };
            match &result {
                Ok(_) => tracing::Span::current().record("outcome", "ok"),
                Err(e) => {
                    self.count_error(e);
                    tracing::Span::current().record("outcome", tracing::field::display(e))
                }
            };
            result
        }
        .instrument(span)
        .await
    }

    fn store_cmd(
        &self,
        mode: StoreMode,
        key: Bytes,
        value: Bytes,
        opts: StoreOptions,
        cas: u64,
    ) -> Command {
        Command::Store(Store {
            mode,
            key,
            flags: opts.flags,
            exptime: opts.ttl as i32,
            data: value,
            cas_unique: cas,
            noreply: false,
        })
    }

    /// Stores `value` at `key` in every zone (acknowledged per the write
    /// policy). In direct mode across zones every copy gets the same CAS.
    pub async fn set(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<Bytes>,
        opts: StoreOptions,
    ) -> Result<(), Error> {
        let key = checked_key(key)?;
        let value = value.into();
        let cmd = if self.inner.mode == Mode::Direct && self.topology().zones.len() > 1 {
            set_as_meta(
                &key,
                value,
                opts.flags,
                opts.ttl as i32,
                self.inner.cas.next(),
            )
        } else {
            self.store_cmd(StoreMode::Set, key.clone(), value, opts, 0)
        };
        stored(self.write("set", &key, Write::FanOut, cmd).await)
    }

    async fn conditional_store(
        &self,
        mode: StoreMode,
        key: impl AsRef<[u8]>,
        value: Bytes,
        opts: StoreOptions,
        cas: u64,
    ) -> Result<(), Error> {
        let key = checked_key(key)?;
        let cmd = self.store_cmd(mode, key.clone(), value, opts, cas);
        stored(
            self.write(
                mode.name(),
                &key,
                Write::Arbitrate { is_delete: false },
                cmd,
            )
            .await,
        )
    }

    /// Stores only if `key` is absent ([`Error::NotStored`] otherwise).
    pub async fn add(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<Bytes>,
        opts: StoreOptions,
    ) -> Result<(), Error> {
        self.conditional_store(StoreMode::Add, key, value.into(), opts, 0)
            .await
    }

    /// Stores only if `key` is present ([`Error::NotStored`] otherwise).
    pub async fn replace(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<Bytes>,
        opts: StoreOptions,
    ) -> Result<(), Error> {
        self.conditional_store(StoreMode::Replace, key, value.into(), opts, 0)
            .await
    }

    /// Adds `value` after the existing one ([`Error::NotStored`] if absent).
    pub async fn append(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<Bytes>,
    ) -> Result<(), Error> {
        self.conditional_store(
            StoreMode::Append,
            key,
            value.into(),
            StoreOptions::default(),
            0,
        )
        .await
    }

    /// Adds `value` before the existing one ([`Error::NotStored`] if absent).
    pub async fn prepend(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<Bytes>,
    ) -> Result<(), Error> {
        self.conditional_store(
            StoreMode::Prepend,
            key,
            value.into(),
            StoreOptions::default(),
            0,
        )
        .await
    }

    /// Stores only if the item's CAS is still `cas` (from [`Client::gets`]):
    /// [`Error::Exists`] if it changed, [`Error::NotFound`] if it is gone.
    pub async fn cas(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<Bytes>,
        opts: StoreOptions,
        cas: u64,
    ) -> Result<(), Error> {
        self.conditional_store(StoreMode::Cas, key, value.into(), opts, cas)
            .await
    }

    /// Deletes `key` in every zone ([`Error::NotFound`] if the answering
    /// zone did not have it).
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<(), Error> {
        let key = checked_key(key)?;
        let cmd = Command::Delete {
            key: key.clone(),
            noreply: false,
        };
        stored(self.write("delete", &key, Write::FanOut, cmd).await)
    }

    /// Sets a new expiry on `key` in every zone.
    pub async fn touch(&self, key: impl AsRef<[u8]>, ttl: u32) -> Result<(), Error> {
        let key = checked_key(key)?;
        let cmd = Command::Touch {
            key: key.clone(),
            exptime: ttl as i32,
            noreply: false,
        };
        stored(self.write("touch", &key, Write::FanOut, cmd).await)
    }

    /// Reads `key` and sets its expiry (get-and-touch).
    pub async fn gat(&self, key: impl AsRef<[u8]>, ttl: u32) -> Result<Option<Bytes>, Error> {
        let key = checked_key(key)?;
        let mut found = self.read(vec![key.clone()], Some(ttl as i32)).await?;
        Ok(found.remove(&key).map(|i| i.value))
    }

    async fn arith(&self, key: impl AsRef<[u8]>, delta: u64, incr: bool) -> Result<u64, Error> {
        let key = checked_key(key)?;
        let cmd = Command::Arith {
            key: key.clone(),
            delta,
            incr,
            noreply: false,
        };
        let op = if incr { "incr" } else { "decr" };
        match self
            .write(op, &key, Write::Arbitrate { is_delete: false }, cmd)
            .await?
        {
            Response::Number(n) => Ok(n),
            Response::NotFound => Err(Error::NotFound),
            other => Err(Error::Protocol(format!("unexpected reply {other:?}"))),
        }
    }

    /// Adds `delta` to the decimal number at `key` (wrapping at 2^64).
    pub async fn incr(&self, key: impl AsRef<[u8]>, delta: u64) -> Result<u64, Error> {
        self.arith(key, delta, true).await
    }

    /// Subtracts `delta` from the decimal number at `key` (stopping at 0).
    pub async fn decr(&self, key: impl AsRef<[u8]>, delta: u64) -> Result<u64, Error> {
        self.arith(key, delta, false).await
    }
}

/// How a direct-mode write is routed.
#[derive(Clone, Copy)]
enum Write {
    /// To every zone's owner at once.
    FanOut,
    /// Decided by one arbiter, then copied.
    Arbitrate { is_delete: bool },
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
