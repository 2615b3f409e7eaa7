//! # zonecache-client
//!
//! The Rust client for zonecache, and the connection and routing layer the
//! nodes use to talk to each other.
//!
//! - **Routing.** [`Mode::Direct`] hashes each key with the cluster's ring
//!   and talks to its owner in the home zone, falling back to the other
//!   zones on miss, error or deadline, and fans writes out to every zone
//!   under the write policy — no front hop. [`Mode::Front`] sends requests to
//!   a home-zone node and lets it route. A list of stock memcached servers
//!   is a one-zone cluster.
//! - **Lanes.** Every call runs on a [`Lane`]: realtime (default) or batch
//!   ([`Client::batch`]). Lanes have their own connections, in-flight
//!   budgets and deadlines per node, and batch calls go to the nodes' batch
//!   ports, where they are served with what realtime leaves and shed first.
//! - **Following.** A direct-mode client built from a config reads, every
//!   second, the zones' drain weights and the membership from the nodes it
//!   talks to, so a drain moves its reads and an added node gets its keys
//!   without a restart.
//! - **Figures.** Calls, their latency, keys hit and missed, fallbacks and
//!   coalesced lookups go through the [`metrics`] facade
//!   (`zonecache_client_*`), so the application's own exporter publishes
//!   them; [`Client::stats`] has the totals too.
//! - **Coalescing.** A [`Scope`] ([`Client::scope`]) reads each key once and
//!   batches the keys of one request per owner node; concurrent reads of a
//!   key across scopes share one request (single-flight).
//!
//! Direct routing with fallback, against a three-zone cluster on loopback
//! (the example starts it; one zone's node is hung with SIGSTOP):
//!
//! ```
//! # use zonecache_tests::TestCluster;
//! use zonecache_client::{Client, StoreOptions};
//! # let cluster = TestCluster::start(3, 1, "all-minus-one", "");
//! # let config_path = cluster.config_path("a1");
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let client = Client::builder_file(&config_path).home_zone("a").build()?;
//! client.set("user:1", "Ada", StoreOptions::ttl(300)).await?;
//! # cluster.node("a1").server.signal(libc::SIGSTOP);
//! // Zone a's owner is hung: the read falls back to another zone in time.
//! assert_eq!(client.get("user:1").await?.as_deref(), Some(&b"Ada"[..]));
//! assert_eq!(client.stats().fallbacks, 1);
//! # cluster.node("a1").server.signal(libc::SIGCONT);
//! # Ok::<(), zonecache_client::Error>(())
//! # }).unwrap();
//! ```
//!
//! Lanes: a bulk job uses the batch lane of the same client.
//!
//! ```
//! # use zonecache_tests::TestCluster;
//! use zonecache_client::{Client, Lane, StoreOptions};
//! # let cluster = TestCluster::start(2, 1, "all", "");
//! # let config_path = cluster.config_path("a1");
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let client = Client::builder_file(&config_path).build()?;
//! let bulk = client.batch();
//! assert_eq!(bulk.lane(), Lane::Batch);
//! for i in 0..100 {
//!     // Nodes shed batch work first when realtime work starves it: a bulk
//!     // job comes back a little later rather than failing.
//!     let mut tries = 0;
//!     while let Err(e) = bulk.set(format!("row:{i}"), "x", StoreOptions::default()).await {
//!         tries += 1;
//!         if tries == 50 {
//!             return Err(e);
//!         }
//!         tokio::time::sleep(std::time::Duration::from_millis(20)).await;
//!     }
//! }
//! assert_eq!(client.get("row:7").await?.as_deref(), Some(&b"x"[..]));
//! # Ok::<(), zonecache_client::Error>(())
//! # }).unwrap();
//! ```
//!
//! Scopes: the lookups of one request, each key fetched once, one request
//! per owner node.
//!
//! ```
//! # use zonecache_tests::TestCluster;
//! use futures::future::join_all;
//! use zonecache_client::{Client, StoreOptions};
//! # let cluster = TestCluster::start(1, 2, "all", "");
//! # let config_path = cluster.config_path("a1");
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let client = Client::builder_file(&config_path).build()?;
//! client.set("a", "1", StoreOptions::default()).await?;
//! let scope = client.scope();
//! let keys = ["a", "b", "a", "c", "a"];
//! let values = join_all(keys.iter().map(|k| scope.get(k))).await;
//! assert_eq!(values[2].as_ref().unwrap().as_deref(), Some(&b"1"[..]));
//! assert_eq!(scope.loads(), 1); // one batch: at most one request per node
//! assert_eq!(client.stats().coalesced, 2); // "a" asked three times, fetched once
//! # Ok::<(), zonecache_client::Error>(())
//! # }).unwrap();
//! ```

// tokio has no networking under `--cfg loom` (the server's loom models).
pub mod addr;
#[cfg(not(loom))]
mod client;
#[cfg(not(loom))]
pub mod conn;
pub mod credential;
pub mod error;
pub mod health;
#[cfg(not(loom))]
pub mod lane;
pub mod latency;
#[cfg(not(loom))]
pub mod remote;
pub mod ring;
#[cfg(not(loom))]
pub mod route;
#[cfg(not(loom))]
mod scope;
pub mod tls;
pub mod topology;

pub use addr::NodeAddr;
#[cfg(not(loom))]
pub use client::{Client, ClientBuilder, ClientStats, Item, Lookup, Mode, StoreOptions};
#[cfg(not(loom))]
pub use conn::Connection;
pub use credential::ClusterSecret;
pub use error::Error;
#[cfg(not(loom))]
pub use lane::Lane;
#[cfg(not(loom))]
pub use remote::{NodeOptions, RemoteNode, RemoteNodes};
pub use ring::Ring;
#[cfg(not(loom))]
pub use scope::Scope;
pub use tls::PeerTls;
pub use topology::{ClusterConfig, NodeConfig, Topology, WritePolicy, Zone, ZoneConfig};
