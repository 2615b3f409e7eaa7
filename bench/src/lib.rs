//! # zonecache-bench
//!
//! The load test suite: workloads (key and value distributions, operation
//! mixes), closed- and open-loop load generation with HdrHistogram
//! latencies, and scenarios that run stock memcached and zonecached side by
//! side (`compare`, `memory`, `hitratio`) and write a table, a JSON file and
//! an SVG plot per run; and scenarios driven through the Rust client
//! (`lanes`, `coalesce`, `routing`).

pub mod client_scenarios;
pub mod cluster;
pub mod drain;
pub mod hotkeys;
pub mod load;
pub mod pinned;
pub mod procs;
pub mod report;
pub mod roll;
pub mod scenarios;
pub mod warm;
pub mod workload;
