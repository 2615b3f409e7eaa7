//! Time as memcached keeps it: whole seconds relative to process start, so
//! item times fit in 32 bits, and memcached's rules for turning a client's
//! exptime into such a time.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Relative times at or above this many seconds are absolute unix times.
pub const REALTIME_MAXDELTA: i64 = 60 * 60 * 24 * 30;

/// memcached's `ITEM_UPDATE_INTERVAL`: its clock starts this many seconds
/// (plus 2) before the process, so an expired item's time (1) lies that far
/// in the past and `t` shows it as memcached does.
pub const ITEM_UPDATE_INTERVAL: u32 = 60;

/// Where the clock starts: memcached's `current_time` at start.
const START: u32 = ITEM_UPDATE_INTERVAL + 2;

/// The process clock.
#[derive(Debug)]
pub struct Clock {
    /// Monotonic start, so a wall-clock jump cannot expire everything.
    start: Instant,
    /// Unix time at start, minus [`START`] as memcached does (so time 1 is
    /// always past).
    process_started: i64,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    /// A clock starting now.
    pub fn new() -> Clock {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        Clock {
            start: Instant::now(),
            process_started: unix - i64::from(START),
        }
    }

    /// Seconds since `process_started`: memcached's `current_time`.
    pub fn now(&self) -> u32 {
        (self.start.elapsed().as_secs() + u64::from(START)) as u32
    }

    /// Seconds since the process started, as `stats` reports `uptime`.
    pub fn uptime(&self) -> u32 {
        self.now() - ITEM_UPDATE_INTERVAL
    }

    /// Unix time now.
    pub fn unix_now(&self) -> i64 {
        self.process_started + i64::from(self.now())
    }

    /// Unix time at which the process started (memcached's `process_started`).
    pub fn process_started(&self) -> i64 {
        self.process_started
    }

    /// memcached's `realtime(EXPTIME_TO_POSITIVE_TIME(exptime))`: 0 never
    /// expires, up to 30 days is relative, beyond is absolute unix time, and
    /// negative is already expired (time 1).
    pub fn expiry(&self, exptime: i32) -> u32 {
        let exptime = i64::from(exptime);
        if exptime == 0 {
            return 0;
        }
        if exptime < 0 {
            return 1;
        }
        if exptime > REALTIME_MAXDELTA {
            if exptime <= self.process_started {
                return 1;
            }
            return (exptime - self.process_started).min(i64::from(u32::MAX)) as u32;
        }
        (exptime + i64::from(self.now())).min(i64::from(u32::MAX)) as u32
    }

    /// The remaining TTL an item given `exptime` now has, as memcached's
    /// `t` flag reports it: -1 for none, negative when already past.
    pub fn remaining(&self, exptime: i32) -> i64 {
        match self.expiry(exptime) {
            0 => -1,
            at => i64::from(at) - i64::from(self.now()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memcached_expiry_rules() {
        let c = Clock::new();
        let now = c.now();
        assert_eq!(c.expiry(0), 0);
        assert_eq!(c.expiry(-1), 1);
        assert_eq!(c.expiry(10), now + 10);
        assert_eq!(
            c.expiry(REALTIME_MAXDELTA as i32),
            now + REALTIME_MAXDELTA as u32
        );
        // absolute times in the past are expired; in the future are relative to start
        assert_eq!(c.expiry((REALTIME_MAXDELTA + 1) as i32), 1);
        let in_a_minute = (c.unix_now() + 60) as i32;
        assert_eq!(c.expiry(in_a_minute), now + 60);
    }
}
