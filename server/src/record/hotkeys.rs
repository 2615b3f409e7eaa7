//! The node's hottest keys, found in bounded memory: a count-min sketch
//! (conservative update) estimates every key's requests and a short list
//! keeps the keys whose estimate is among the largest — the heavy hitters
//! a cache operator looks for when one node runs hot. Memory is fixed
//! (64 KiB of counters and [`TOP`] keys per thread) however many keys pass.
//!
//! Counts decay: every half-life (`--hot-key-half-life`, 10 s by default)
//! they are halved, so the list is about the last one to two half-lives,
//! and a key that was hot an hour ago fades.
//! Each worker thread counts into a sketch of its own (an uncontended lock
//! on the request path); a reader merges them.

use std::cell::OnceCell;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// Counters per row of the sketch (a power of two).
const WIDTH: usize = 4096;
/// Rows, each indexed by its own 16 bits of the key's hash.
const DEPTH: usize = 4;
/// Keys each thread keeps as candidates.
pub const TOP: usize = 32;
/// Counts are halved this often (seconds) unless the node says otherwise.
pub const HALF_LIFE_SECS: u32 = 10;

/// The node's half-life (one node per process).
static HALF_LIFE: AtomicU32 = AtomicU32::new(HALF_LIFE_SECS);

/// Sets how often counts are halved (seconds, at least 1); called once
/// at start.
pub fn set_half_life(secs: u32) {
    HALF_LIFE.store(secs.max(1), Ordering::Relaxed);
}

/// Whether and how hot keys are counted and shown (`--hot-keys`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum HotKeyMode {
    /// Counted, shown by name.
    #[default]
    Names,
    /// Counted, shown as a hash of the key (for keys that are personal data).
    Hashed,
    /// Not counted at all.
    Off,
}

/// A key seen often, with its decayed request count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HotKey {
    pub key: Vec<u8>,
    pub hash: u64,
    pub requests: u64,
}

impl HotKey {
    /// How the key is shown: its text, `0x…` hex for a key that is not
    /// printable text, or `#…` (its hash) when names are hidden.
    pub fn shown(&self, mode: HotKeyMode) -> String {
        match std::str::from_utf8(&self.key) {
            _ if mode != HotKeyMode::Names => format!("#{:016x}", self.hash),
            Ok(text) if text.bytes().all(|b| b.is_ascii_graphic()) => text.to_string(),
            _ => {
                let hex: String = self.key.iter().map(|b| format!("{b:02x}")).collect();
                format!("0x{hex}")
            }
        }
    }
}

struct Candidate {
    hash: u64,
    key: Box<[u8]>,
    count: u32,
}

/// One thread's sketch.
pub struct Sketch {
    rows: Box<[u32]>,
    top: Vec<Candidate>,
    /// The smallest candidate count once the list is full (else 0): a key
    /// whose estimate is not above it cannot get in.
    floor: u32,
    /// Requests counted, decayed like the counts.
    total: u64,
    /// When the counts were last halved (the store clock's seconds).
    halved_at: u32,
    half_life: u32,
}

fn hasher() -> ahash::RandomState {
    // Fixed seeds: a key hashes alike on every thread, so sketches merge.
    ahash::RandomState::with_seeds(0x5eed, 0x407, 0x6b65, 0x7973)
}

impl Sketch {
    /// An empty sketch whose counts halve every `half_life` seconds.
    pub fn new(now: u32, half_life: u32) -> Sketch {
        Sketch {
            half_life: half_life.max(1),
            rows: vec![0; WIDTH * DEPTH].into_boxed_slice(),
            top: Vec::with_capacity(TOP),
            floor: 0,
            total: 0,
            halved_at: now,
        }
    }

    /// Counts one request for `key` at `now` (seconds).
    pub fn add(&mut self, key: &[u8], hash: u64, now: u32) {
        self.decay(now);
        self.total += 1;
        let slots: [usize; DEPTH] =
            std::array::from_fn(|row| row * WIDTH + ((hash >> (16 * row)) as usize & (WIDTH - 1)));
        let least = slots.iter().map(|&s| self.rows[s]).min().unwrap_or(0);
        let estimate = least.saturating_add(1);
        // Conservative update: only the counters at the minimum grow, which
        // keeps the over-count of colliding keys small.
        for &s in &slots {
            if self.rows[s] == least {
                self.rows[s] = estimate;
            }
        }
        if self.top.len() == TOP && estimate <= self.floor {
            return;
        }
        if let Some(c) = self
            .top
            .iter_mut()
            .find(|c| c.hash == hash && *c.key == *key)
        {
            c.count = estimate;
        } else {
            let candidate = Candidate {
                hash,
                key: key.into(),
                count: estimate,
            };
            if self.top.len() < TOP {
                self.top.push(candidate);
            } else if let Some(coldest) = self.top.iter_mut().min_by_key(|c| c.count) {
                *coldest = candidate;
            }
        }
        self.refloor();
    }

    /// Halves everything once per half-life gone by since the last time.
    fn decay(&mut self, now: u32) {
        let periods = now.saturating_sub(self.halved_at) / self.half_life;
        if periods == 0 {
            return;
        }
        self.halved_at += periods * self.half_life;
        let shift = periods.min(31);
        for c in self.rows.iter_mut() {
            *c >>= shift;
        }
        for c in self.top.iter_mut() {
            c.count >>= shift;
        }
        self.top.retain(|c| c.count > 0);
        self.total >>= shift;
        self.refloor();
    }

    fn refloor(&mut self) {
        self.floor = match self.top.len() {
            TOP => self.top.iter().map(|c| c.count).min().unwrap_or(0),
            _ => 0,
        };
    }
}

/// Every thread's sketch (kept after a thread ends).
static SKETCHES: Mutex<Vec<Arc<Mutex<Sketch>>>> = Mutex::new(Vec::new());

thread_local! {
    static MINE: OnceCell<Arc<Mutex<Sketch>>> = const { OnceCell::new() };
}

/// Counts one request for each of `keys` at `now` (seconds).
pub fn record(keys: &[Bytes], now: u32) {
    if keys.is_empty() {
        return;
    }
    let hasher = hasher();
    MINE.with(|mine| {
        let sketch = mine.get_or_init(|| {
            let half_life = HALF_LIFE.load(Ordering::Relaxed);
            let sketch = Arc::new(Mutex::new(Sketch::new(now, half_life)));
            SKETCHES
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(sketch.clone());
            sketch
        });
        let mut sketch = sketch.lock().unwrap_or_else(|e| e.into_inner());
        for key in keys {
            sketch.add(key, hasher.hash_one(&key[..]), now);
        }
    });
}

/// The `n` hottest keys of `sketches` at `now`, hottest first, and the
/// (decayed) number of requests counted.
pub fn merge<'a>(
    sketches: impl IntoIterator<Item = &'a mut Sketch>,
    n: usize,
    now: u32,
) -> (Vec<HotKey>, u64) {
    let mut keys: Vec<HotKey> = Vec::new();
    let mut total = 0;
    for sketch in sketches {
        // A thread that went quiet has not halved its counts itself.
        sketch.decay(now);
        total += sketch.total;
        for c in &sketch.top {
            match keys
                .iter_mut()
                .find(|k| k.hash == c.hash && *k.key == *c.key)
            {
                Some(k) => k.requests += u64::from(c.count),
                None => keys.push(HotKey {
                    key: c.key.to_vec(),
                    hash: c.hash,
                    requests: u64::from(c.count),
                }),
            }
        }
    }
    keys.sort_by(|a, b| b.requests.cmp(&a.requests).then(a.key.cmp(&b.key)));
    keys.truncate(n);
    (keys, total)
}

/// This node's `n` hottest keys at `now` and its requests counted.
pub fn hottest(n: usize, now: u32) -> (Vec<HotKey>, u64) {
    let sketches: Vec<_> = SKETCHES.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut guards: Vec<_> = sketches
        .iter()
        .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()))
        .collect();
    merge(guards.iter_mut().map(|g| &mut **g), n, now)
}

/// The lines of `stats hotkeys`: settings, then `hotkey:<rank> <key>
/// <requests>` hottest first.
pub fn stats_lines(mode: HotKeyMode, now: u32) -> Vec<(String, String)> {
    let mode_name = match mode {
        HotKeyMode::Names => "names",
        HotKeyMode::Hashed => "hashed",
        HotKeyMode::Off => "off",
    };
    let mut out = vec![
        ("hotkeys_mode".to_string(), mode_name.to_string()),
        (
            "hotkeys_half_life_seconds".to_string(),
            HALF_LIFE.load(Ordering::Relaxed).to_string(),
        ),
    ];
    if mode == HotKeyMode::Off {
        return out;
    }
    let (keys, total) = hottest(TOP, now);
    out.push(("hotkeys_requests".to_string(), total.to_string()));
    for (rank, k) in keys.iter().enumerate() {
        out.push((
            format!("hotkey:{}", rank + 1),
            format!("{} {}", k.shown(mode), k.requests),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::distributions::Distribution;
    use rand::SeedableRng;

    fn add(s: &mut Sketch, key: &[u8], now: u32) {
        s.add(key, hasher().hash_one(key), now);
    }

    #[test]
    fn a_zipf_stream_of_a_million_keys_yields_its_true_top_ten() {
        let zipf = rand_distr::Zipf::new(1_000_000, 1.1).unwrap();
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let mut sketch = Sketch::new(0, HALF_LIFE_SECS);
        let mut exact = std::collections::HashMap::<u64, u64>::new();
        for _ in 0..300_000 {
            let k = zipf.sample(&mut rng) as u64;
            *exact.entry(k).or_default() += 1;
            add(&mut sketch, format!("key:{k}").as_bytes(), 0);
        }
        let mut truth: Vec<_> = exact.into_iter().collect();
        truth.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let want: Vec<Vec<u8>> = truth[..10]
            .iter()
            .map(|(k, _)| format!("key:{k}").into_bytes())
            .collect();
        let (found, total) = merge([&mut sketch], 10, 0);
        let got: Vec<Vec<u8>> = found.iter().map(|k| k.key.clone()).collect();
        assert_eq!(got, want);
        assert_eq!(total, 300_000);
        // Estimates never under-count, and the top one is close.
        assert!(found[0].requests >= truth[0].1);
        assert!(found[0].requests <= truth[0].1 + truth[0].1 / 100);
    }

    #[test]
    fn counts_halve_every_half_life_and_cold_keys_fall_out() {
        let mut s = Sketch::new(100, HALF_LIFE_SECS);
        for _ in 0..8 {
            add(&mut s, b"warm", 100);
        }
        add(&mut s, b"once", 100);
        let (keys, total) = merge([&mut s], 10, 100 + HALF_LIFE_SECS);
        assert_eq!(total, 4);
        assert_eq!(keys[0].requests, 4);
        assert_eq!(keys.len(), 1, "a count halved to 0 leaves the list");
        let (keys, _) = merge([&mut s], 10, 100 + 4 * HALF_LIFE_SECS);
        assert!(keys.is_empty());
    }

    #[test]
    fn threads_merge_by_key_and_names_can_be_hidden() {
        let mut a = Sketch::new(0, HALF_LIFE_SECS);
        let mut b = Sketch::new(0, HALF_LIFE_SECS);
        for _ in 0..3 {
            add(&mut a, b"k", 0);
            add(&mut b, b"k", 0);
        }
        add(&mut b, b"\x01bin", 0);
        let (keys, total) = merge([&mut a, &mut b], 10, 0);
        assert_eq!(
            (keys[0].key.as_slice(), keys[0].requests, total),
            (&b"k"[..], 6, 7)
        );
        assert_eq!(keys[0].shown(HotKeyMode::Names), "k");
        assert_eq!(keys[1].shown(HotKeyMode::Names), "0x0162696e");
        assert_eq!(
            keys[0].shown(HotKeyMode::Hashed),
            format!("#{:016x}", hasher().hash_one(&b"k"[..]))
        );
    }

    #[test]
    fn memory_stays_bounded_however_many_keys_pass() {
        let mut s = Sketch::new(0, HALF_LIFE_SECS);
        for i in 0..100_000u32 {
            add(&mut s, &i.to_le_bytes(), 0);
        }
        assert_eq!(s.top.len(), TOP);
        assert_eq!(s.rows.len(), WIDTH * DEPTH);
    }
}
