//! # zonecache-bench
//!
//! The load test suite (issue: `bench/`). It will own the workloads (key and
//! value distributions, operation mixes), closed- and open-loop load
//! generation, HdrHistogram latencies, and the side-by-side scenarios against
//! stock memcached (`compare`, `memory`, `hitratio`) with their JSON and plots.
