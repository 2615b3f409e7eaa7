//! # zonecache-tests
//!
//! End-to-end tests with real processes on loopback: `zonecached` nodes
//! (and stock `memcached` where a comparison is needed) started on free
//! ports, driven over TCP, and cleaned up when a test ends.
