//! The engine-wide memory budget that every shard allocates from.
//!
//! Shards reserve bytes before allocating (a compare-and-swap loop, so two
//! shards can never both take the last room), and give bytes back when they
//! free a segment. Evicting may move live items before the evicted segment
//! is released; those moves are forced past the limit, by at most two
//! segments per shard, and only until the eviction finishes.

#[cfg(loom)]
use loom::sync::atomic::{AtomicUsize, Ordering};
#[cfg(not(loom))]
use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes held by all shards against the `-m` limit.
#[derive(Debug)]
pub struct Pool {
    allocated: AtomicUsize,
    /// The budget; `cache_memlimit` changes it at run time.
    limit: AtomicUsize,
}

impl Pool {
    /// A pool of `limit` bytes.
    pub fn new(limit: usize) -> Pool {
        Pool {
            allocated: AtomicUsize::new(0),
            limit: AtomicUsize::new(limit),
        }
    }

    /// Bytes held now.
    pub fn allocated(&self) -> usize {
        self.allocated.load(Ordering::Relaxed)
    }

    /// The budget.
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// A new budget. Reservations from then on fit under it; what is
    /// already held above it is for the caller to evict.
    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Release);
    }

    /// Takes `n` bytes if they fit under the limit.
    pub fn try_reserve(&self, n: usize) -> bool {
        let limit = self.limit.load(Ordering::Acquire);
        let mut current = self.allocated.load(Ordering::Relaxed);
        loop {
            let Some(next) = current.checked_add(n).filter(|&next| next <= limit) else {
                return false;
            };
            match self.allocated.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    /// Takes `n` bytes regardless of the limit (moves during eviction).
    pub fn force(&self, n: usize) {
        self.allocated.fetch_add(n, Ordering::AcqRel);
    }

    /// Gives `n` bytes back.
    pub fn release(&self, n: usize) {
        self.allocated.fetch_sub(n, Ordering::AcqRel);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::Pool;
    use loom::sync::Arc;
    use loom::thread;

    /// Concurrent reservations never take more than the limit, and every
    /// byte taken and given back is accounted.
    #[test]
    fn reservations_never_exceed_the_limit() {
        loom::model(|| {
            let pool = Arc::new(Pool::new(100));
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    let pool = pool.clone();
                    thread::spawn(move || {
                        let mut held = 0;
                        for _ in 0..2 {
                            if pool.try_reserve(40) {
                                held += 40;
                                assert!(pool.allocated() <= 100);
                            }
                        }
                        held
                    })
                })
                .collect();
            let held: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
            assert_eq!(pool.allocated(), held);
            assert!(held <= 100);
            assert_eq!(
                held, 80,
                "two 40-byte reservations always fit in 100, a third never does"
            );
            pool.release(held);
            assert_eq!(pool.allocated(), 0);
        });
    }

    /// A shrink racing with a writer: a reservation made after the new
    /// limit is seen fits under it, and the count stays exact.
    #[test]
    fn a_lowered_limit_holds_from_then_on() {
        loom::model(|| {
            let pool = Arc::new(Pool::new(100));
            let shrinker = {
                let pool = pool.clone();
                thread::spawn(move || pool.set_limit(30))
            };
            let writer = {
                let pool = pool.clone();
                thread::spawn(move || pool.try_reserve(40))
            };
            shrinker.join().unwrap();
            let early = writer.join().unwrap();
            // Whether the writer saw 100 or 30 depends on the interleaving;
            // after both, only what fits under 30 is taken.
            let late = pool.try_reserve(40);
            assert!(!late, "40 bytes never fit under 30");
            assert_eq!(pool.allocated(), if early { 40 } else { 0 });
            assert!(
                pool.try_reserve(30) != early,
                "30 fit only into an empty pool"
            );
        });
    }

    /// A forced take (an eviction move) and a release racing with
    /// reservations leave the count exact.
    #[test]
    fn forced_moves_and_releases_stay_exact() {
        loom::model(|| {
            let pool = Arc::new(Pool::new(64));
            assert!(pool.try_reserve(64));
            let mover = {
                let pool = pool.clone();
                thread::spawn(move || {
                    pool.force(16); // move live items first
                    pool.release(64); // then free the evicted segment
                })
            };
            let writer = {
                let pool = pool.clone();
                thread::spawn(move || pool.try_reserve(32))
            };
            mover.join().unwrap();
            let took = writer.join().unwrap();
            assert_eq!(pool.allocated(), 16 + if took { 32 } else { 0 });
        });
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::Pool;

    #[test]
    fn reserve_force_release() {
        let pool = Pool::new(100);
        assert!(pool.try_reserve(60));
        assert!(!pool.try_reserve(41));
        assert!(pool.try_reserve(40));
        pool.force(10);
        assert_eq!(pool.allocated(), 110);
        pool.release(110);
        assert_eq!(pool.allocated(), 0);
        assert!(!pool.try_reserve(usize::MAX));
    }
}
