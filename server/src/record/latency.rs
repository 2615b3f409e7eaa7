//! Service-time histograms per command class and lane. Recording is on
//! every request's path, so each thread writes histograms of its own (one
//! writer: a load and a store, no locked instruction, no cache line shared
//! with another thread) and a scrape adds the threads' up.

use std::cell::OnceCell;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use zonecache_client::latency::{Histogram, Snapshot};
use zonecache_client::Lane;
use zonecache_proto::Command;

/// What a command is, for its histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Get,
    Set,
    Delete,
    Arith,
    Touch,
    Meta,
    Other,
}

impl Class {
    pub const ALL: [Class; 7] = [
        Class::Get,
        Class::Set,
        Class::Delete,
        Class::Arith,
        Class::Touch,
        Class::Meta,
        Class::Other,
    ];

    /// The class of `cmd`.
    pub fn of(cmd: &Command) -> Class {
        match cmd {
            Command::Get { .. } | Command::Gat { .. } | Command::VersionedGet { .. } => Class::Get,
            Command::Store(_) => Class::Set,
            Command::Delete { .. } => Class::Delete,
            Command::Arith { .. } => Class::Arith,
            Command::Touch { .. } => Class::Touch,
            Command::MetaGet(_)
            | Command::MetaSet { .. }
            | Command::MetaDelete(_)
            | Command::MetaArith(_)
            | Command::MetaNoop
            | Command::MetaDebug { .. } => Class::Meta,
            _ => Class::Other,
        }
    }

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Class::Get => "get",
            Class::Set => "set",
            Class::Delete => "delete",
            Class::Arith => "arith",
            Class::Touch => "touch",
            Class::Meta => "meta",
            Class::Other => "other",
        }
    }
}

/// One thread's histograms, per lane and class. Only that thread writes.
#[derive(Default)]
struct Shard {
    cells: [[Histogram; Class::ALL.len()]; 2],
}

/// Every thread's histograms (kept after a thread ends: counts never go back).
static SHARDS: Mutex<Vec<Arc<Shard>>> = Mutex::new(Vec::new());

thread_local! {
    static MINE: OnceCell<Arc<Shard>> = const { OnceCell::new() };
}

/// Counts one request of `class` on `lane` that took `took`.
pub fn record(class: Class, lane: Lane, took: Duration) {
    MINE.with(|mine| {
        let shard = mine.get_or_init(|| {
            let shard = Arc::new(Shard::default());
            SHARDS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(shard.clone());
            shard
        });
        shard.cells[lane.index()][class as usize].record_single_writer(took);
    });
}

/// The histogram of `class` on `lane`, every thread's added up.
pub fn snapshot(class: Class, lane: Lane) -> Snapshot {
    let shards = SHARDS.lock().unwrap_or_else(|e| e.into_inner());
    let mut s = Snapshot::default();
    for shard in shards.iter() {
        shard.cells[lane.index()][class as usize].add_to(&mut s);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_record_apart_and_a_snapshot_adds_them_up() {
        let before = snapshot(Class::Touch, Lane::Batch);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    for _ in 0..1000 {
                        record(Class::Touch, Lane::Batch, Duration::from_micros(120));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let after = snapshot(Class::Touch, Lane::Batch);
        assert_eq!(after.count - before.count, 4000);
        let b = after.buckets();
        let b0 = before.buckets();
        // 120 µs lands in the 150 µs bucket, not the 100 µs one.
        assert_eq!(b[4].0, 0.0001);
        assert_eq!(b[4].1 - b0[4].1, 0);
        assert_eq!(b[5].1 - b0[5].1, 4000);
        assert_eq!(snapshot(Class::Touch, Lane::Realtime).count, 0);
    }
}
