//! The meta commands (`mg`, `ms`, `md`, `ma`, `me`) as memcached 1.6 answers
//! them. Every reply echoes the return flags the client asked for, in
//! request order; [`echo`] is the one place that does it.

use bytes::{Bytes, BytesMut};
use zonecache_proto::{push_key, Meta, MetaCode, MetaResponse, MetaToken, Response};

use super::{non_numeric, out_of_memory, out_of_memory_storing, Executor, Reply};
use crate::stats::ConnCounters;
use crate::store::{
    ArithOutcome, ArithRequest, DeleteOutcome, DeleteRequest, ItemView, ReadOptions, StoreKind,
    StoreRequest, StoreStatus,
};

/// What a reply can tell about the item; return flags asking for anything
/// left `None` are not echoed.
#[derive(Default)]
struct Known<'a> {
    /// The key as stored, and whether it travels base64-encoded (`k`, `b`).
    key: &'a [u8],
    key_binary: bool,
    /// `s`: value size.
    size: Option<usize>,
    /// `t`: remaining TTL as each `T` and `N` among the flags leaves it.
    ttl: Option<TtlSteps>,
    /// `c`: CAS.
    cas: Option<u64>,
    /// `f`: client flags.
    flags: Option<u32>,
    /// `l`: seconds since last access.
    last_access: Option<u32>,
    /// `h`: fetched before.
    fetched: Option<bool>,
}

/// The remaining TTLs a `t` flag can show: memcached applies `T` (and `N`
/// on an item it just created) in the order they were written, and `t`
/// shows the TTL as of its own position.
#[derive(Clone, Copy)]
struct TtlSteps {
    /// Before any `T` or `N`.
    before: i64,
    /// After a `T`.
    touched: Option<i64>,
    /// After an `N`, when the item was vivified.
    vivified: Option<i64>,
}

impl TtlSteps {
    /// The steps of a command with flags `meta` on an item whose TTL was
    /// `before` and which it did (or did not) vivify.
    fn of(exec: &Executor, meta: &Meta, before: i64, vivified: bool) -> TtlSteps {
        let clock = exec.storage.clock();
        let f = &meta.flags;
        TtlSteps {
            before,
            touched: f.ttl.map(|t| clock.remaining(t)),
            vivified: f.vivify.filter(|_| vivified).map(|n| clock.remaining(n)),
        }
    }
}

/// The return flags `meta` asked for, in request order. `O` and `k` are
/// always echoed; the rest when `known` has them.
fn echo(meta: &Meta, known: &Known<'_>) -> Vec<MetaToken> {
    let mut out = Vec::new();
    let number = |flag: u8, n: String| MetaToken {
        flag,
        arg: Bytes::from(n),
    };
    let mut ttl = known.ttl.map(|steps| steps.before);
    for t in &meta.flags.tokens {
        match t.flag {
            b'T' => ttl = known.ttl.and_then(|s| s.touched).or(ttl),
            b'N' => ttl = known.ttl.and_then(|s| s.vivified).or(ttl),
            b'O' => out.push(t.clone()),
            b'k' => {
                let mut key = BytesMut::new();
                push_key(&mut key, known.key, known.key_binary);
                out.push(MetaToken {
                    flag: b'k',
                    arg: key.freeze(),
                });
                if known.key_binary {
                    out.push(MetaToken {
                        flag: b'b',
                        arg: Bytes::new(),
                    });
                }
            }
            b's' => out.extend(known.size.map(|s| number(b's', s.to_string()))),
            // A past expiry (an item vivified with a negative TTL) prints
            // as memcached's unsigned remaining seconds; -1 means none.
            b't' => out.extend(ttl.map(|t| match t {
                ..-1 => number(b't', (t as i32 as u32).to_string()),
                t => number(b't', t.to_string()),
            })),
            b'c' => out.extend(known.cas.map(|c| number(b'c', c.to_string()))),
            b'f' => out.extend(known.flags.map(|f| number(b'f', f.to_string()))),
            b'l' => out.extend(known.last_access.map(|l| number(b'l', l.to_string()))),
            b'h' => out.extend(known.fetched.map(|h| number(b'h', u8::from(h).to_string()))),
            _ => {}
        }
    }
    out
}

/// A meta reply with `code`, the echoed flags and no value.
fn reply(code: MetaCode, flags: Vec<MetaToken>) -> Reply {
    Reply::Send(Response::Meta(MetaResponse {
        code,
        flags,
        value: None,
    }))
}

/// The key as the request gave it (for replies that have no item).
fn request_key(meta: &Meta) -> Known<'_> {
    Known {
        key: &meta.key,
        key_binary: meta.flags.base64,
        ..Known::default()
    }
}

/// A flag with no argument.
fn bare(flag: u8) -> MetaToken {
    MetaToken {
        flag,
        arg: Bytes::new(),
    }
}

/// `mg`.
pub(super) fn get(exec: &Executor, meta: &Meta) -> Reply {
    let f = &meta.flags;
    let opts = ReadOptions {
        touch: f.ttl,
        no_update: f.no_update,
        vivify: f.vivified_ttl(),
        recache: f.recache,
        recache_sees_touch: f.written_before(b'T', b'R'),
        key_binary: f.base64,
        tombstones: false,
        win_tokens: true,
    };
    let mut result = Reply::Silent;
    exec.storage.read(&meta.key, opts, &mut |item| {
        result = match item {
            Some(item) => hit(
                meta,
                item,
                TtlSteps::of(exec, meta, item.ttl_before, item.vivified),
            ),
            None if f.quiet => Reply::Silent,
            None => reply(MetaCode::Miss, echo(meta, &request_key(meta))),
        }
    });
    result
}

fn hit(meta: &Meta, item: &ItemView<'_>, ttl: TtlSteps) -> Reply {
    let known = Known {
        key: item.key,
        key_binary: item.key_binary,
        size: Some(item.value.len()),
        ttl: Some(ttl),
        cas: Some(item.cas),
        flags: Some(item.flags),
        last_access: Some(item.last_access),
        fetched: Some(item.fetched_before),
    };
    let mut flags = echo(meta, &known);
    if item.token_sent {
        flags.push(bare(b'Z'));
    }
    if item.stale {
        flags.push(bare(b'X'));
    }
    if item.won {
        flags.push(bare(b'W'));
    }
    let (code, value) = if meta.flags.value {
        (MetaCode::Value, Some(Bytes::copy_from_slice(item.value)))
    } else {
        (MetaCode::Header, None)
    };
    Reply::Send(Response::Meta(MetaResponse { code, flags, value }))
}

/// `ms`.
pub(super) fn set(exec: &Executor, meta: &Meta, data: &[u8], counters: &mut ConnCounters) -> Reply {
    let f = &meta.flags;
    let kind = match f.mode {
        Some(b'E') => StoreKind::Add,
        Some(b'A') => StoreKind::Append,
        Some(b'P') => StoreKind::Prepend,
        Some(b'R') => StoreKind::Replace,
        _ => StoreKind::Set,
    };
    let req = StoreRequest {
        key: &meta.key,
        value: data,
        flags: f.client_flags.unwrap_or(0),
        exptime: f.ttl.unwrap_or(0),
        kind,
        compare_cas: f.compare_cas,
        invalidate: f.invalidate,
        version: exec.version(f.new_cas),
        vivify: f.vivify,
        key_binary: f.base64,
    };
    let outcome = exec.storage.store(&req);
    let code = match outcome.status {
        StoreStatus::Stored if f.quiet => return Reply::Silent,
        StoreStatus::Stored => MetaCode::Header,
        StoreStatus::NotStored => MetaCode::NotStored,
        StoreStatus::Exists => MetaCode::Exists,
        StoreStatus::NotFound => MetaCode::NotFound,
        StoreStatus::OutOfMemory => {
            counters.store_no_memory += 1;
            return Reply::Send(out_of_memory_storing());
        }
    };
    let known = Known {
        cas: Some(outcome.cas),
        ..request_key(meta)
    };
    reply(code, echo(meta, &known))
}

/// `md`.
pub(super) fn delete(exec: &Executor, meta: &Meta) -> Reply {
    let f = &meta.flags;
    let req = DeleteRequest {
        compare_cas: f.compare_cas,
        invalidate: f.invalidate,
        ttl: f.ttl,
        remove_value: f.remove_value,
        version: exec.version(f.new_cas),
    };
    let code = match exec.storage.delete(&meta.key, &req) {
        DeleteOutcome::Deleted if f.quiet => return Reply::Silent,
        DeleteOutcome::Deleted => MetaCode::Header,
        DeleteOutcome::NotFound => MetaCode::NotFound,
        DeleteOutcome::Exists => MetaCode::Exists,
    };
    reply(code, echo(meta, &request_key(meta)))
}

/// `ma`.
pub(super) fn arith(exec: &Executor, meta: &Meta) -> Reply {
    let f = &meta.flags;
    let req = ArithRequest {
        key: &meta.key,
        incr: !matches!(f.mode, Some(b'D' | b'-')),
        delta: f.delta.unwrap_or(1),
        compare_cas: f.compare_cas,
        version: exec.version(f.new_cas),
        vivify: f.vivified_ttl().map(|ttl| (ttl, f.initial.unwrap_or(0))),
        touch: f.ttl,
        key_binary: f.base64,
    };
    match exec.storage.arith(&req) {
        // memcached answers a quiet `ma` that created its item.
        ArithOutcome::Done {
            vivified: false, ..
        } if f.quiet => Reply::Silent,
        ArithOutcome::Done {
            value,
            cas,
            ttl_before,
            vivified,
            ..
        } => {
            let known = Known {
                cas: Some(cas),
                ttl: Some(TtlSteps::of(exec, meta, ttl_before, vivified)),
                ..request_key(meta)
            };
            let flags = echo(meta, &known);
            let (code, value) = if f.value {
                (MetaCode::Value, Some(Bytes::from(value.to_string())))
            } else {
                (MetaCode::Header, None)
            };
            Reply::Send(Response::Meta(MetaResponse { code, flags, value }))
        }
        ArithOutcome::NotFound => reply(MetaCode::NotFound, echo(meta, &request_key(meta))),
        ArithOutcome::Exists => reply(MetaCode::Exists, echo(meta, &request_key(meta))),
        ArithOutcome::NonNumeric => Reply::Send(non_numeric()),
        ArithOutcome::OutOfMemory => Reply::Send(out_of_memory()),
    }
}

/// `me`: memcached's debug line, with its fields computed the same way.
pub(super) fn debug(exec: &Executor, key: &[u8]) -> Response {
    let opts = ReadOptions {
        no_update: true,
        ..ReadOptions::default()
    };
    let mut response = Response::Meta(MetaResponse {
        code: MetaCode::Miss,
        flags: Vec::new(),
        value: None,
    });
    exec.storage.read(key, opts, &mut |item| {
        if let Some(item) = item {
            let mut line = BytesMut::new();
            push_key(&mut line, item.key, item.key_binary);
            let exp = if item.ttl < 0 { -1 } else { -item.ttl };
            let fields = format!(
                " exp={} la={} cas={} fetch={} cls={} size={}",
                exp,
                item.last_access,
                item.cas,
                if item.fetched_before { "yes" } else { "no" },
                memcached_slab_class(item.memcached_size),
                item.memcached_size
            );
            line.extend_from_slice(fields.as_bytes());
            response = Response::MetaDebug(line.freeze());
        }
    });
    response
}

/// The slab class memcached's default classes (96 bytes, factor 1.25,
/// 8-byte aligned) would put an item of `size` bytes in.
fn memcached_slab_class(size: usize) -> usize {
    let mut chunk = 96usize;
    let mut class = 1;
    while chunk < size && class < 63 {
        chunk = ((chunk as f64 * 1.25) as usize).next_multiple_of(8);
        class += 1;
    }
    class
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slab_classes_like_memcached() {
        assert_eq!(memcached_slab_class(61), 1);
        assert_eq!(memcached_slab_class(96), 1);
        assert_eq!(memcached_slab_class(97), 2);
        assert_eq!(memcached_slab_class(120), 2);
        assert_eq!(memcached_slab_class(121), 3);
    }

    fn meta(tokens: &[&str]) -> Meta {
        let mut m = Meta {
            key: Bytes::from_static(b"k"),
            flags: Default::default(),
        };
        for t in tokens {
            let (flag, arg) = t.as_bytes().split_first().unwrap();
            m.flags.set(*flag, Bytes::copy_from_slice(arg)).unwrap();
        }
        m
    }

    fn wire(tokens: &[MetaToken]) -> String {
        tokens
            .iter()
            .map(|t| format!("{}{}", t.flag as char, String::from_utf8_lossy(&t.arg)))
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn echo_keeps_request_order_and_skips_what_is_unknown() {
        let m = meta(&["c", "Oab", "s", "k"]);
        let known = Known {
            cas: Some(7),
            ..request_key(&m)
        };
        assert_eq!(wire(&echo(&m, &known)), "c7 Oab kk");
    }

    #[test]
    fn ttl_is_reported_as_of_its_position() {
        let m = meta(&["t", "T30", "v"]);
        let mut m2 = m.clone();
        m2.flags.tokens.push(MetaToken {
            flag: b't',
            arg: Bytes::new(),
        });
        let known = Known {
            ttl: Some(TtlSteps {
                before: -1,
                touched: Some(30),
                vivified: None,
            }),
            ..request_key(&m2)
        };
        // `t` before `T` sees the old TTL, after it the new one.
        assert_eq!(wire(&echo(&m2, &known)), "t-1 t30");
    }

    #[test]
    fn binary_keys_are_echoed_encoded_with_b() {
        let m = meta(&["k"]);
        let known = Known {
            key: b"\x00\x01",
            key_binary: true,
            ..Known::default()
        };
        assert_eq!(wire(&echo(&m, &known)), "kAAE= b");
    }
}
