//! # zonecache-client
//!
//! The Rust client crate for zonecache. It will own: connection pools per
//! node (multiplexed, pipelined), zone-aware routing with fallback across
//! zones, the realtime and batch lanes, request-scoped lookup coalescing, and
//! the consistent-hash ring shared with the server (see `../shared/DESIGN.md`).
//!
//! Today it holds the pieces both sides already need: the ketama-style ring.

pub mod ring;
