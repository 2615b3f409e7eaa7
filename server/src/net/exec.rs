//! Executes one parsed command against the storage and writes its reply,
//! byte for byte as memcached 1.6 would.

use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use zonecache_proto::number::{push_i64, push_u64};
use zonecache_proto::{push_key, push_value, Command, Meta, StoreMode};

use crate::stats::{self, ConnCounters, StatsContext};
use crate::store::{
    ArithOutcome, ArithRequest, DeleteOutcome, DeleteRequest, ItemView, ReadOptions, StoreKind,
    StoreRequest, StoreStatus,
};

use super::Shared;

/// What the connection does after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep going.
    Continue,
    /// Send what is buffered, then close (`quit`).
    Close,
    /// Close at once without a word (memcached's answer to HTTP).
    Drop,
}

/// Writes `VALUE …` for one key of a get/gets/gat/gats.
pub fn get_one(shared: &Shared, key: &[u8], touch: Option<i32>, cas: bool, out: &mut BytesMut) {
    let opts = ReadOptions {
        touch,
        ..ReadOptions::default()
    };
    shared.storage.read(key, opts, &mut |item| {
        if let Some(item) = item {
            push_value(
                out,
                item.key,
                item.flags,
                item.value,
                cas.then_some(item.cas),
            );
        }
    });
}

/// Replies above this size are sent before more is added, so a huge
/// multi-get (or a slow reader) cannot make the node buffer without bound.
pub const HIGH_WATER: usize = 256 * 1024;

/// Runs `cmd`, appending its reply to `out`; multi-key reads flush `out` to
/// `writer` whenever it passes [`HIGH_WATER`].
pub async fn run<W: AsyncWrite + Unpin>(
    shared: &Shared,
    cmd: Command,
    out: &mut BytesMut,
    counters: &mut ConnCounters,
    writer: &mut W,
) -> std::io::Result<Flow> {
    let Some((keys, touch, cas)) = multi_read(&cmd, counters) else {
        return Ok(execute_local(shared, cmd, out, counters));
    };
    for key in keys {
        get_one(shared, key, touch, cas, out);
        if out.len() >= HIGH_WATER {
            writer.write_all(out).await?;
            counters.bytes_written += out.len() as u64;
            out.clear();
        }
    }
    out.extend_from_slice(b"END\r\n");
    Ok(Flow::Continue)
}

/// A multi-key read (`get`/`gets`/`gat`/`gats`) as (keys, touch, cas),
/// counted as memcached counts it; `None` for any other command.
fn multi_read<'a>(
    cmd: &'a Command,
    counters: &mut ConnCounters,
) -> Option<(&'a [Bytes], Option<i32>, bool)> {
    match cmd {
        Command::Get { keys, cas } => {
            counters.read_requests += 1;
            counters.cmd_get += keys.len() as u64;
            Some((keys, None, *cas))
        }
        Command::Gat { exptime, keys, cas } => {
            counters.read_requests += 1;
            counters.cmd_touch += keys.len() as u64;
            Some((keys, Some(*exptime), *cas))
        }
        _ => None,
    }
}

/// Runs a command against this node's storage, the whole reply into `out`
/// (connections use [`run`], which streams multi-key reads).
pub fn execute_local(
    shared: &Shared,
    cmd: Command,
    out: &mut BytesMut,
    counters: &mut ConnCounters,
) -> Flow {
    match cmd {
        read @ (Command::Get { .. } | Command::Gat { .. }) => {
            if let Some((keys, touch, cas)) = multi_read(&read, counters) {
                for key in keys {
                    get_one(shared, key, touch, cas, out);
                }
            }
            out.extend_from_slice(b"END\r\n");
        }
        Command::PeerHello => out.extend_from_slice(b"OK\r\n"),
        Command::Store(s) => {
            counters.cmd_set += 1;
            let kind = match s.mode {
                StoreMode::Set | StoreMode::Cas => StoreKind::Set,
                StoreMode::Add => StoreKind::Add,
                StoreMode::Replace => StoreKind::Replace,
                StoreMode::Append => StoreKind::Append,
                StoreMode::Prepend => StoreKind::Prepend,
            };
            let mut req = StoreRequest::new(kind, &s.key, &s.data, s.flags, s.exptime);
            if s.mode == StoreMode::Cas {
                req.compare_cas = Some(s.cas_unique);
            }
            let outcome = shared.storage.store(&req);
            if outcome.status == StoreStatus::OutOfMemory {
                counters.store_no_memory += 1;
            }
            if !s.noreply {
                out.extend_from_slice(match outcome.status {
                    StoreStatus::Stored => b"STORED\r\n",
                    StoreStatus::NotStored => b"NOT_STORED\r\n",
                    StoreStatus::Exists => b"EXISTS\r\n",
                    StoreStatus::NotFound => b"NOT_FOUND\r\n",
                    StoreStatus::OutOfMemory => b"SERVER_ERROR out of memory storing object\r\n",
                });
            }
        }
        Command::Arith {
            key,
            delta,
            incr,
            noreply,
        } => {
            let req = ArithRequest {
                key: &key,
                incr,
                delta,
                compare_cas: None,
                new_cas: None,
                vivify: None,
                touch: None,
                key_binary: false,
            };
            let outcome = shared.storage.arith(&req);
            if !noreply {
                match outcome {
                    ArithOutcome::Done { value, .. } => {
                        push_u64(out, value);
                        out.extend_from_slice(b"\r\n");
                    }
                    ArithOutcome::NotFound | ArithOutcome::Exists => {
                        out.extend_from_slice(b"NOT_FOUND\r\n")
                    }
                    ArithOutcome::NonNumeric => out.extend_from_slice(
                        b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
                    ),
                    ArithOutcome::OutOfMemory => {
                        out.extend_from_slice(b"SERVER_ERROR out of memory\r\n")
                    }
                }
            }
        }
        Command::Touch {
            key,
            exptime,
            noreply,
        } => {
            counters.cmd_touch += 1;
            let found = shared.storage.touch(&key, exptime);
            if !noreply {
                out.extend_from_slice(if found {
                    b"TOUCHED\r\n"
                } else {
                    b"NOT_FOUND\r\n"
                });
            }
        }
        Command::Delete { key, noreply } => {
            let outcome = shared.storage.delete(&key, &DeleteRequest::default());
            if !noreply {
                out.extend_from_slice(if outcome == DeleteOutcome::Deleted {
                    b"DELETED\r\n"
                } else {
                    b"NOT_FOUND\r\n"
                });
            }
        }
        Command::FlushAll { delay, noreply } => {
            counters.cmd_flush += 1;
            shared.storage.flush_all(delay);
            if !noreply {
                out.extend_from_slice(b"OK\r\n");
            }
        }
        Command::Version => {
            out.extend_from_slice(b"VERSION ");
            out.extend_from_slice(stats::VERSION.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Command::Verbosity { level, noreply } => {
            shared
                .stats
                .verbosity
                .store(level.min(2), Ordering::Relaxed);
            if !noreply {
                out.extend_from_slice(b"OK\r\n");
            }
        }
        Command::Stats { args } => stats_command(shared, &args, out),
        Command::Quit => return Flow::Close,
        Command::Close => return Flow::Drop,
        Command::MetaNoop => out.extend_from_slice(b"MN\r\n"),
        Command::MetaDebug { key, .. } => meta_debug(shared, &key, out),
        Command::MetaGet(meta) => {
            counters.read_requests += 1;
            counters.cmd_meta += 1;
            meta_get(shared, &meta, out);
        }
        Command::MetaSet { meta, data } => {
            counters.cmd_meta += 1;
            counters.cmd_set += 1;
            meta_set(shared, &meta, &data, out, counters);
        }
        Command::MetaDelete(meta) => {
            counters.cmd_meta += 1;
            meta_delete(shared, &meta, out);
        }
        Command::MetaArith(meta) => {
            counters.cmd_meta += 1;
            meta_arith(shared, &meta, out);
        }
        Command::TooLarge {
            key,
            remove_existing,
            noreply,
        } => {
            counters.store_too_large += 1;
            // memcached drops the old value so a failed set cannot leave stale data.
            if remove_existing {
                shared.storage.delete(&key, &DeleteRequest::default());
            }
            if !noreply {
                out.extend_from_slice(b"SERVER_ERROR object too large for cache\r\n");
            }
        }
        Command::Invalid(e) => {
            if !e.noreply {
                e.encode(out);
            }
        }
    }
    Flow::Continue
}

fn stats_command(shared: &Shared, args: &[Bytes], out: &mut BytesMut) {
    if args.first().map(|a| &a[..]) == Some(b"reset") {
        shared.stats.reset();
        shared.storage.reset_stats();
        out.extend_from_slice(b"RESET\r\n");
        return;
    }
    if args.first().map(|a| &a[..]) == Some(b"detail") {
        out.extend_from_slice(b"CLIENT_ERROR usage: stats detail on|off|dump\r\n");
        return;
    }
    let cluster = shared.cluster.as_ref().map(|c| c.get());
    let ctx = StatsContext {
        server: &shared.stats,
        storage: shared.storage.as_ref(),
        settings: &shared.settings,
        conns: &shared.conns,
        cluster: cluster.as_deref(),
    };
    match stats::group(&ctx, args) {
        Some(lines) => {
            for (k, v) in lines {
                out.extend_from_slice(b"STAT ");
                out.extend_from_slice(k.as_bytes());
                out.extend_from_slice(b" ");
                out.extend_from_slice(v.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"END\r\n");
        }
        None => out.extend_from_slice(b"ERROR\r\n"),
    }
}

/// ` k<key>` (base64 plus ` b` for binary keys), as memcached's META_KEY.
fn push_meta_key(out: &mut BytesMut, key: &[u8], binary: bool) {
    out.extend_from_slice(b" k");
    push_key(out, key, binary);
    if binary {
        out.extend_from_slice(b" b");
    }
}

/// Echoes the `O` and `k` flags, in request order.
fn push_opaque_and_key(out: &mut BytesMut, meta: &Meta) {
    for t in &meta.flags.tokens {
        match t.flag {
            b'O' => {
                out.extend_from_slice(b" O");
                out.extend_from_slice(&t.arg);
            }
            b'k' => push_meta_key(out, &meta.key, meta.flags.base64),
            _ => {}
        }
    }
}

fn meta_get(shared: &Shared, meta: &Meta, out: &mut BytesMut) {
    let f = &meta.flags;
    let opts = ReadOptions {
        touch: f.ttl,
        no_update: f.no_update,
        vivify: f.vivify,
        recache: f.recache,
        key_binary: f.base64,
    };
    shared
        .storage
        .read(&meta.key, opts, &mut |item| match item {
            Some(item) => meta_hit(meta, item, out),
            None => {
                if !f.quiet {
                    out.extend_from_slice(b"EN");
                    push_opaque_and_key(out, meta);
                    out.extend_from_slice(b"\r\n");
                }
            }
        });
}

fn meta_hit(meta: &Meta, item: &ItemView<'_>, out: &mut BytesMut) {
    let f = &meta.flags;
    if f.value {
        out.extend_from_slice(b"VA ");
        push_u64(out, item.value.len() as u64);
    } else {
        out.extend_from_slice(b"HD");
    }
    // `t` reports the TTL as of its position among the flags: memcached
    // applies `T` (and `N` on a vivified item) in request order.
    let mut ttl = item.ttl_before;
    for t in &f.tokens {
        match t.flag {
            b'T' | b'N' if t.flag == b'T' || item.vivified => ttl = item.ttl,
            b's' => {
                out.extend_from_slice(b" s");
                push_u64(out, item.value.len() as u64);
            }
            b't' => {
                out.extend_from_slice(b" t");
                push_i64(out, ttl);
            }
            b'c' => {
                out.extend_from_slice(b" c");
                push_u64(out, item.cas);
            }
            b'f' => {
                out.extend_from_slice(b" f");
                push_u64(out, u64::from(item.flags));
            }
            b'l' => {
                out.extend_from_slice(b" l");
                push_u64(out, u64::from(item.last_access));
            }
            b'h' => out.extend_from_slice(if item.fetched_before { b" h1" } else { b" h0" }),
            b'O' => {
                out.extend_from_slice(b" O");
                out.extend_from_slice(&t.arg);
            }
            b'k' => push_meta_key(out, item.key, item.key_binary),
            _ => {}
        }
    }
    if item.token_sent {
        out.extend_from_slice(b" Z");
    }
    if item.stale {
        out.extend_from_slice(b" X");
    }
    if item.won {
        out.extend_from_slice(b" W");
    }
    out.extend_from_slice(b"\r\n");
    if f.value {
        out.extend_from_slice(item.value);
        out.extend_from_slice(b"\r\n");
    }
}

fn meta_set(
    shared: &Shared,
    meta: &Meta,
    data: &[u8],
    out: &mut BytesMut,
    counters: &mut ConnCounters,
) {
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
        new_cas: f.new_cas,
        vivify: f.vivify,
        key_binary: f.base64,
    };
    let outcome = shared.storage.store(&req);
    let code: &[u8] = match outcome.status {
        StoreStatus::Stored if f.quiet => return,
        StoreStatus::Stored => b"HD",
        StoreStatus::NotStored => b"NS",
        StoreStatus::Exists => b"EX",
        StoreStatus::NotFound => b"NF",
        StoreStatus::OutOfMemory => {
            counters.store_no_memory += 1;
            out.extend_from_slice(b"SERVER_ERROR out of memory storing object\r\n");
            return;
        }
    };
    out.extend_from_slice(code);
    for t in &f.tokens {
        match t.flag {
            b'O' => {
                out.extend_from_slice(b" O");
                out.extend_from_slice(&t.arg);
            }
            b'k' => push_meta_key(out, &meta.key, f.base64),
            b'c' => {
                out.extend_from_slice(b" c");
                push_u64(out, outcome.cas);
            }
            _ => {}
        }
    }
    out.extend_from_slice(b"\r\n");
}

fn meta_delete(shared: &Shared, meta: &Meta, out: &mut BytesMut) {
    let f = &meta.flags;
    let req = DeleteRequest {
        compare_cas: f.compare_cas,
        invalidate: f.invalidate,
        ttl: f.ttl,
        remove_value: f.remove_value,
        new_cas: f.new_cas,
    };
    let code: &[u8] = match shared.storage.delete(&meta.key, &req) {
        DeleteOutcome::Deleted if f.quiet => return,
        DeleteOutcome::Deleted => b"HD",
        DeleteOutcome::NotFound => b"NF",
        DeleteOutcome::Exists => b"EX",
    };
    out.extend_from_slice(code);
    push_opaque_and_key(out, meta);
    out.extend_from_slice(b"\r\n");
}

fn meta_arith(shared: &Shared, meta: &Meta, out: &mut BytesMut) {
    let f = &meta.flags;
    let req = ArithRequest {
        key: &meta.key,
        incr: !matches!(f.mode, Some(b'D' | b'-')),
        delta: f.delta.unwrap_or(1),
        compare_cas: f.compare_cas,
        new_cas: f.new_cas,
        vivify: f.vivify.map(|ttl| (ttl, f.initial.unwrap_or(0))),
        touch: f.ttl,
        key_binary: f.base64,
    };
    match shared.storage.arith(&req) {
        ArithOutcome::Done { value, cas, ttl } => {
            if f.quiet {
                return;
            }
            let digits = value.to_string();
            if f.value {
                out.extend_from_slice(b"VA ");
                push_u64(out, digits.len() as u64);
            } else {
                out.extend_from_slice(b"HD");
            }
            for t in &f.tokens {
                match t.flag {
                    b'c' => {
                        out.extend_from_slice(b" c");
                        push_u64(out, cas);
                    }
                    b't' => {
                        out.extend_from_slice(b" t");
                        push_i64(out, ttl);
                    }
                    b'O' => {
                        out.extend_from_slice(b" O");
                        out.extend_from_slice(&t.arg);
                    }
                    b'k' => push_meta_key(out, &meta.key, f.base64),
                    _ => {}
                }
            }
            out.extend_from_slice(b"\r\n");
            if f.value {
                out.extend_from_slice(digits.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
        outcome @ (ArithOutcome::NotFound | ArithOutcome::Exists) => {
            let exists = outcome == ArithOutcome::Exists;
            out.extend_from_slice(if exists { b"EX" } else { b"NF" });
            push_opaque_and_key(out, meta);
            out.extend_from_slice(b"\r\n");
        }
        ArithOutcome::NonNumeric => out
            .extend_from_slice(b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"),
        ArithOutcome::OutOfMemory => out.extend_from_slice(b"SERVER_ERROR out of memory\r\n"),
    }
}

/// `me`: memcached's debug line, with its fields computed the same way.
fn meta_debug(shared: &Shared, key: &[u8], out: &mut BytesMut) {
    let opts = ReadOptions {
        no_update: true,
        ..ReadOptions::default()
    };
    shared.storage.read(key, opts, &mut |item| match item {
        Some(item) => {
            out.extend_from_slice(b"ME ");
            push_key(out, item.key, item.key_binary);
            let exp = if item.ttl < 0 { -1 } else { -item.ttl };
            let line = format!(
                " exp={} la={} cas={} fetch={} cls={} size={}\r\n",
                exp,
                item.last_access,
                item.cas,
                if item.fetched_before { "yes" } else { "no" },
                memcached_slab_class(item.memcached_size),
                item.memcached_size
            );
            out.extend_from_slice(line.as_bytes());
        }
        None => out.extend_from_slice(b"EN\r\n"),
    });
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
    use super::memcached_slab_class;

    #[test]
    fn slab_classes_like_memcached() {
        assert_eq!(memcached_slab_class(61), 1);
        assert_eq!(memcached_slab_class(96), 1);
        assert_eq!(memcached_slab_class(97), 2);
        assert_eq!(memcached_slab_class(120), 2);
        assert_eq!(memcached_slab_class(121), 3);
    }
}
