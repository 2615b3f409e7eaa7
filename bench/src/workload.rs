//! Workloads: which keys, which values, which operations, reproducibly.

use bytes::{Bytes, BytesMut};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use serde::Serialize;
use zonecache_proto::{Command, Meta, MetaFlags, MetaToken, Store, StoreMode};

/// How keys are drawn from the key space.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum KeyDist {
    /// Every key equally likely.
    Uniform,
    /// Zipf with this skew (0.99 is the classic cache trace).
    Zipf(f64),
}

/// How large values are.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum ValueSize {
    /// Always this many bytes.
    Fixed(usize),
    /// Uniform between the two bounds, inclusive.
    Uniform(usize, usize),
}

/// Which wire protocol the load speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Protocol {
    /// `get`/`set`/`delete`.
    Text,
    /// `mg`/`ms`/`md`.
    Meta,
}

/// Everything that decides what requests a run sends.
#[derive(Debug, Clone, Serialize)]
pub struct Workload {
    /// Number of distinct keys.
    pub keys: u64,
    /// Key length in bytes (keys are `k` + zero-padded index).
    pub key_size: usize,
    /// Key popularity.
    pub dist: KeyDist,
    /// Value sizes for sets.
    pub value: ValueSize,
    /// Share of single-key gets.
    pub get: f64,
    /// Share of sets.
    pub set: f64,
    /// Share of deletes.
    pub delete: f64,
    /// Share of multi-gets.
    pub multiget: f64,
    /// Keys per multi-get.
    pub multiget_size: usize,
    /// TTL for sets (0 = none).
    pub ttl: i32,
    /// Wire protocol.
    pub protocol: Protocol,
    /// Seed: the same seed gives the same request sequence.
    pub seed: u64,
    /// Use these keys (by index) instead of generated names, e.g. keys that
    /// one node owns; `keys` should equal its length.
    #[serde(skip)]
    pub key_list: Option<std::sync::Arc<Vec<Bytes>>>,
}

impl Workload {
    /// The key with index `i`.
    pub fn key_at(&self, i: u64) -> Bytes {
        match &self.key_list {
            Some(list) => list[i as usize % list.len()].clone(),
            None => key_name(i, self.key_size),
        }
    }
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            keys: 100_000,
            key_size: 16,
            dist: KeyDist::Uniform,
            value: ValueSize::Fixed(100),
            get: 0.9,
            set: 0.1,
            delete: 0.0,
            multiget: 0.0,
            multiget_size: 10,
            ttl: 0,
            protocol: Protocol::Text,
            seed: 1,
            key_list: None,
        }
    }
}

/// The kind of one generated request, for hit/miss accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Get,
    MultiGet(usize),
    Set,
    Delete,
}

/// Draws keys by index.
#[derive(Debug, Clone)]
pub enum KeySampler {
    Uniform(u64),
    Zipf(Zipf<f64>),
}

impl KeySampler {
    /// A sampler for `keys` keys under `dist`.
    pub fn new(keys: u64, dist: KeyDist) -> KeySampler {
        match dist {
            KeyDist::Uniform => KeySampler::Uniform(keys.max(1)),
            KeyDist::Zipf(s) => {
                KeySampler::Zipf(Zipf::new(keys.max(1), s).expect("zipf parameters"))
            }
        }
    }

    /// A key index in `0..keys` (rank 0 is the most popular under Zipf).
    pub fn sample(&self, rng: &mut SmallRng) -> u64 {
        match self {
            KeySampler::Uniform(n) => rng.gen_range(0..*n),
            KeySampler::Zipf(z) => z.sample(rng) as u64 - 1,
        }
    }
}

/// The key for an index, padded to `size` bytes.
pub fn key_name(index: u64, size: usize) -> Bytes {
    let digits = index.to_string();
    let mut key = String::with_capacity(size.max(digits.len() + 1));
    key.push('k');
    for _ in 0..size.saturating_sub(digits.len() + 1) {
        key.push('0');
    }
    key.push_str(&digits);
    Bytes::from(key)
}

/// Generates requests for one connection.
pub struct OpGen {
    workload: Workload,
    keys: KeySampler,
    rng: SmallRng,
    /// One value buffer sliced for every set (content doesn't matter).
    value: Bytes,
}

impl OpGen {
    /// A generator for connection `stream` (streams of one seed differ).
    pub fn new(workload: &Workload, stream: u64) -> OpGen {
        let max_value = match workload.value {
            ValueSize::Fixed(n) => n,
            ValueSize::Uniform(_, hi) => hi,
        };
        OpGen {
            keys: KeySampler::new(workload.keys, workload.dist),
            rng: SmallRng::seed_from_u64(
                workload.seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            ),
            value: Bytes::from(vec![b'v'; max_value]),
            workload: workload.clone(),
        }
    }

    fn value_len(&mut self) -> usize {
        match self.workload.value {
            ValueSize::Fixed(n) => n,
            ValueSize::Uniform(lo, hi) => self.rng.gen_range(lo..=hi),
        }
    }

    fn key(&mut self) -> Bytes {
        let i = self.keys.sample(&mut self.rng);
        self.workload.key_at(i)
    }

    /// Appends the next request to `out` and says what it was.
    pub fn next(&mut self, out: &mut BytesMut) -> OpKind {
        let w = &self.workload;
        let (get, set, delete, multiget) = (w.get, w.set, w.delete, w.multiget);
        let (protocol, multiget_size) = (w.protocol, w.multiget_size);
        let total = get + set + delete + multiget;
        let pick = self.rng.gen::<f64>() * total;
        let (kind, cmd) = if pick < get {
            let key = self.key();
            (OpKind::Get, self.get_command(vec![key]))
        } else if pick < get + set {
            let key = self.key();
            let len = self.value_len();
            (OpKind::Set, self.set_command(key, len))
        } else if pick < get + set + delete {
            let key = self.key();
            let cmd = match protocol {
                Protocol::Text => Command::Delete {
                    key,
                    noreply: false,
                },
                Protocol::Meta => Command::MetaDelete(meta(key, &[])),
            };
            (OpKind::Delete, cmd)
        } else {
            let n = multiget_size.max(1);
            let keys = (0..n).map(|_| self.key()).collect();
            (OpKind::MultiGet(n), Command::Get { keys, cas: false })
        };
        cmd.encode(out);
        kind
    }

    fn get_command(&self, mut keys: Vec<Bytes>) -> Command {
        match self.workload.protocol {
            Protocol::Text => Command::Get { keys, cas: false },
            Protocol::Meta => Command::MetaGet(meta(keys.remove(0), b"v")),
        }
    }

    fn set_command(&self, key: Bytes, len: usize) -> Command {
        let data = self.value.slice(..len);
        match self.workload.protocol {
            Protocol::Text => Command::Store(Store {
                mode: StoreMode::Set,
                key,
                flags: 0,
                exptime: self.workload.ttl,
                data,
                cas_unique: 0,
                noreply: false,
            }),
            Protocol::Meta => {
                let mut m = meta(key, &[]);
                if self.workload.ttl != 0 {
                    m.flags.ttl = Some(self.workload.ttl);
                    m.flags.tokens.push(MetaToken {
                        flag: b'T',
                        arg: Bytes::from(self.workload.ttl.to_string()),
                    });
                }
                Command::MetaSet { meta: m, data }
            }
        }
    }
}

fn meta(key: Bytes, flags: &[u8]) -> Meta {
    Meta {
        key,
        flags: MetaFlags {
            tokens: flags
                .iter()
                .map(|&flag| MetaToken {
                    flag,
                    arg: Bytes::new(),
                })
                .collect(),
            value: flags.contains(&b'v'),
            ..MetaFlags::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_requests() {
        let w = Workload {
            dist: KeyDist::Zipf(0.99),
            ..Workload::default()
        };
        let (mut a, mut b) = (OpGen::new(&w, 3), OpGen::new(&w, 3));
        let (mut x, mut y) = (BytesMut::new(), BytesMut::new());
        for _ in 0..1000 {
            assert_eq!(a.next(&mut x), b.next(&mut y));
        }
        assert_eq!(x, y);
        let mut c = OpGen::new(&w, 4);
        let mut z = BytesMut::new();
        for _ in 0..1000 {
            c.next(&mut z);
        }
        assert_ne!(x, z, "different streams differ");
    }

    #[test]
    fn zipf_is_skewed_and_uniform_is_flat() {
        let mut rng = SmallRng::seed_from_u64(7);
        let n = 1000;
        let zipf = KeySampler::new(n, KeyDist::Zipf(0.99));
        let uniform = KeySampler::new(n, KeyDist::Uniform);
        let draws = 100_000;
        let mut zc = vec![0u32; n as usize];
        let mut uc = vec![0u32; n as usize];
        for _ in 0..draws {
            zc[zipf.sample(&mut rng) as usize] += 1;
            uc[uniform.sample(&mut rng) as usize] += 1;
        }
        // Zipf(0.99) over 1000 keys: rank 0 gets ~13 % of draws, the top 10 % of keys ~ 2/3.
        let top: u32 = zc[..100].iter().sum();
        assert!(zc[0] as f64 / draws as f64 > 0.10, "rank 0 share {}", zc[0]);
        assert!(top as f64 / draws as f64 > 0.6, "top-100 share {top}");
        assert!(zc[0] > zc[1] && zc[1] > zc[10] && zc[10] > zc[500]);
        // Uniform: every key near draws / n = 100.
        assert!(uc.iter().all(|&c| (50..170).contains(&c)), "uniform spread");
    }

    #[test]
    fn mix_follows_the_shares() {
        let w = Workload {
            get: 0.5,
            set: 0.3,
            delete: 0.1,
            multiget: 0.1,
            ..Workload::default()
        };
        let mut g = OpGen::new(&w, 0);
        let mut buf = BytesMut::new();
        let mut counts = [0u32; 4];
        for _ in 0..20_000 {
            counts[match g.next(&mut buf) {
                OpKind::Get => 0,
                OpKind::Set => 1,
                OpKind::Delete => 2,
                OpKind::MultiGet(_) => 3,
            }] += 1;
        }
        let share = |c: u32| f64::from(c) / 20_000.0;
        assert!((share(counts[0]) - 0.5).abs() < 0.02);
        assert!((share(counts[1]) - 0.3).abs() < 0.02);
        assert!((share(counts[2]) - 0.1).abs() < 0.02);
        assert!((share(counts[3]) - 0.1).abs() < 0.02);
    }

    #[test]
    fn keys_have_the_requested_size() {
        assert_eq!(key_name(42, 16).len(), 16);
        assert_eq!(&key_name(42, 16)[..], b"k000000000000042");
        assert_eq!(key_name(123_456, 4), Bytes::from("k123456"));
    }
}
