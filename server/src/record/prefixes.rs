//! memcached's prefix statistics (`stats detail on|off|dump`): gets, hits,
//! sets and deletes per key prefix (the key up to the first delimiter,
//! `:` unless `-D` says otherwise), so an operator can see which kind of
//! key a load comes from. Off by default; while off, recording costs one
//! relaxed load. A plain mutex around a map, as memcached keeps it under
//! its stats lock: it is an operator's diagnostic, not a hot-path figure.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Prefixes tracked at most: past this, new prefixes are not counted (a
/// client with unique prefixes cannot grow the table without bound).
pub const MAX_PREFIXES: usize = 100_000;

/// What `stats detail dump` shows for one prefix.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PrefixCounts {
    pub gets: u64,
    pub hits: u64,
    pub sets: u64,
    pub deletes: u64,
}

/// The prefix table and whether it records.
#[derive(Debug, Default)]
pub struct PrefixStats {
    enabled: AtomicBool,
    table: Mutex<HashMap<Vec<u8>, PrefixCounts>>,
}

/// Which text command is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrefixEvent {
    /// A key of `get`/`gets`/`gat`/`gats`, and whether it was found.
    Get { hit: bool },
    /// A text storage command (counted as it arrives, as memcached does).
    Set,
    /// A text `delete`.
    Delete,
}

impl PrefixStats {
    /// `stats detail on|off`.
    pub fn enable(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }

    /// Whether `stats detail on` is in force (`stats settings` shows it).
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Counts `event` for `key`'s prefix, if recording is on and the key
    /// has `delimiter` in it (keys without one are not counted).
    pub fn record(&self, key: &[u8], delimiter: u8, event: PrefixEvent) {
        if !self.enabled() {
            return;
        }
        let Some(end) = key.iter().position(|&b| b == delimiter) else {
            return;
        };
        let prefix = &key[..end];
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let count = |counts: &mut PrefixCounts| match event {
            PrefixEvent::Get { hit } => {
                counts.gets += 1;
                counts.hits += u64::from(hit);
            }
            PrefixEvent::Set => counts.sets += 1,
            PrefixEvent::Delete => counts.deletes += 1,
        };
        if let Some(counts) = table.get_mut(prefix) {
            count(counts);
        } else if table.len() < MAX_PREFIXES {
            count(table.entry(prefix.to_vec()).or_default());
        }
    }

    /// `stats detail dump`: memcached's lines, then `END`.
    pub fn dump(&self) -> Vec<u8> {
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for (prefix, c) in table.iter() {
            out.extend_from_slice(b"PREFIX ");
            out.extend_from_slice(prefix);
            out.extend_from_slice(
                format!(
                    " get {} hit {} set {} del {}\r\n",
                    c.gets, c.hits, c.sets, c.deletes
                )
                .as_bytes(),
            );
        }
        out.extend_from_slice(b"END\r\n");
        out
    }

    /// `stats reset` forgets every prefix, as memcached's does.
    pub fn clear(&self) {
        self.table.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_prefix_only_while_on() {
        let p = PrefixStats::default();
        p.record(b"user:1", b':', PrefixEvent::Set);
        assert_eq!(p.dump(), b"END\r\n", "off by default");
        p.enable(true);
        p.record(b"user:1", b':', PrefixEvent::Set);
        p.record(b"user:2", b':', PrefixEvent::Get { hit: true });
        p.record(b"user:3", b':', PrefixEvent::Get { hit: false });
        p.record(b"user:3", b':', PrefixEvent::Delete);
        p.record(b"plain", b':', PrefixEvent::Set);
        assert_eq!(
            String::from_utf8(p.dump()).unwrap(),
            "PREFIX user get 2 hit 1 set 1 del 1\r\nEND\r\n"
        );
        p.clear();
        assert_eq!(p.dump(), b"END\r\n");
    }

    #[test]
    fn the_table_is_bounded() {
        let p = PrefixStats::default();
        p.enable(true);
        for i in 0..MAX_PREFIXES + 10 {
            p.record(format!("{i}:k").as_bytes(), b':', PrefixEvent::Set);
        }
        let lines = p.dump().split(|&b| b == b'\n').count() - 2;
        assert_eq!(lines, MAX_PREFIXES);
    }
}
