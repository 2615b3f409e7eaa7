//! Latency histograms with fixed bounds fine enough to read p50/p99/p99.9
//! below a millisecond, cheap to record (a bucket search and two atomic
//! adds) and merged by adding counts: the node's service times, its calls
//! to peers and the client's calls are all kept this way and exported as
//! Prometheus histograms.

use std::time::Duration;

#[cfg(loom)]
use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(loom))]
use std::sync::atomic::{AtomicU64, Ordering};

/// Bucket upper bounds in microseconds (`+Inf` is implied).
pub const BOUNDS_US: [u64; 25] = [
    10, 25, 50, 75, 100, 150, 200, 300, 400, 500, 750, 1_000, 1_500, 2_000, 3_000, 5_000, 7_500,
    10_000, 20_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
];

const BUCKETS: usize = BOUNDS_US.len() + 1;

/// Counts per bucket (not cumulative) and the sum of what was recorded.
#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    sum_ns: AtomicU64,
}

/// A histogram read out: cumulative counts per bound of [`BOUNDS_US`], the
/// count and the sum — what the Prometheus text format wants.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub cumulative: [u64; BOUNDS_US.len()],
    pub count: u64,
    pub sum_seconds: f64,
}

fn bucket(us: u64) -> usize {
    BOUNDS_US.partition_point(|&b| b < us)
}

fn nanos(took: Duration) -> u64 {
    took.as_nanos().min(u128::from(u64::MAX)) as u64
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.snapshot();
        write!(
            f,
            "Histogram {{ count: {}, sum: {}s }}",
            s.count, s.sum_seconds
        )
    }
}

impl Histogram {
    /// Counts one event that took `took`; any thread may call it.
    pub fn record(&self, took: Duration) {
        let ns = nanos(took);
        self.buckets[bucket(ns / 1000)].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// [`Histogram::record`] for a histogram only one thread writes: a
    /// load and a store, no locked instruction. Readers see each count
    /// whole (a count may lag, never tear).
    pub fn record_single_writer(&self, took: Duration) {
        let ns = nanos(took);
        let bump = |a: &AtomicU64, by: u64| {
            a.store(
                a.load(Ordering::Relaxed).wrapping_add(by),
                Ordering::Relaxed,
            )
        };
        bump(&self.buckets[bucket(ns / 1000)], 1);
        bump(&self.sum_ns, ns);
    }

    /// Adds this histogram's counts to `into`.
    pub fn add_to(&self, into: &mut Snapshot) {
        let mut running = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            let n = b.load(Ordering::Relaxed);
            running += n;
            if let Some(c) = into.cumulative.get_mut(i) {
                *c += running;
            }
            into.count += n;
        }
        into.sum_seconds += self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
    }

    /// This histogram read out.
    pub fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot::default();
        self.add_to(&mut s);
        s
    }
}

impl Snapshot {
    /// The bucket pairs (upper bound in seconds, cumulative count).
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        BOUNDS_US
            .iter()
            .zip(self.cumulative)
            .map(|(us, n)| (*us as f64 / 1e6, n))
            .collect()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_inclusive_upper_limits() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(10), 0);
        assert_eq!(bucket(11), 1);
        assert_eq!(bucket(2_500_000), BOUNDS_US.len() - 1);
        assert_eq!(bucket(2_500_001), BOUNDS_US.len());
    }

    #[test]
    fn snapshots_are_cumulative_and_add_up() {
        let h = Histogram::default();
        h.record(Duration::from_micros(120));
        h.record(Duration::from_micros(120));
        h.record_single_writer(Duration::from_micros(9));
        h.record(Duration::from_secs(10));
        let s = h.snapshot();
        let at = |us: u64| s.cumulative[BOUNDS_US.iter().position(|b| *b == us).unwrap()];
        assert_eq!((at(10), at(100), at(150), at(2_500_000)), (1, 1, 3, 3));
        assert_eq!(s.count, 4);
        assert!((s.sum_seconds - 10.000249).abs() < 1e-9);
        let mut twice = s.clone();
        h.add_to(&mut twice);
        assert_eq!(twice.count, 8);
        assert_eq!(twice.buckets()[5], (0.00015, 6));
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    // The writers run on the model's main thread: loom explores nothing
    // when a spawned thread starts with a load and then stores
    // (tokio-rs/loom#392), which is what a record does.

    /// The node's per-thread shards: one thread records with plain load
    /// and store while a scrape reads. A reader never sees a count torn
    /// or going back, and once the writer is done it sees every event.
    #[test]
    fn loom_a_single_writer_and_a_reader() {
        loom::model(|| {
            let h = Arc::new(Histogram::default());
            let reader = h.clone();
            let t = loom::thread::spawn(move || {
                let first = reader.snapshot();
                let second = reader.snapshot();
                assert!(first.count <= second.count && second.count <= 2);
                assert!(first.sum_seconds <= second.sum_seconds);
                // Cumulative counts add up to the count seen.
                assert!(second.cumulative[BOUNDS_US.len() - 1] <= second.count);
            });
            h.record_single_writer(Duration::from_micros(120));
            h.record_single_writer(Duration::from_micros(120));
            t.join().unwrap();
            let done = h.snapshot();
            assert_eq!(done.count, 2);
            assert_eq!(done.buckets()[5], (0.00015, 2));
        });
    }

    /// Shared histograms (a peer's call latency) are recorded from many
    /// threads: no event is lost.
    #[test]
    fn loom_writers_that_share_lose_nothing() {
        loom::model(|| {
            let h = Arc::new(Histogram::default());
            let other = h.clone();
            let t = loom::thread::spawn(move || {
                loom::thread::yield_now();
                other.record(Duration::from_micros(5))
            });
            h.record(Duration::from_micros(5));
            t.join().unwrap();
            let s = h.snapshot();
            assert_eq!((s.count, s.cumulative[0]), (2, 2));
        });
    }
}
