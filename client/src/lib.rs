//! # zonecache-client
//!
//! The Rust client crate for zonecache. It owns the connection layer the
//! server also uses to talk to its peers, and the consistent-hash ring both
//! sides route with. It will grow connection pools per node, zone-aware
//! routing with fallback, realtime and batch lanes, and request-scoped
//! lookup coalescing (see `../shared/DESIGN.md`).

// tokio has no networking under `--cfg loom` (the server's loom models).
#[cfg(not(loom))]
pub mod conn;
pub mod error;
pub mod ring;

#[cfg(not(loom))]
pub use conn::Connection;
pub use error::Error;
pub use ring::Ring;
