//! memcached's crawler key dumps, `lru_crawler metadump` and `mgdump`: a
//! line per live item, for the migration and warming tools that read them
//! (memcached's `mcdumpload`, Netflix's cachemover). The dump is written a
//! stretch at a time so the connection can send it as it goes and a large
//! cache never sits whole in a buffer.

use bytes::{Bytes, BytesMut};
use zonecache_proto::number::parse_u32;
use zonecache_proto::{push_key, Response};

use super::Executor;
use crate::store::{ItemView, ScanCursor, Storage};

/// Index slots walked per stretch.
const STRETCH_SLOTS: usize = 16 * 1024;

impl Executor {
    /// Writes the dump's lines from `cursor` on into `out`, about
    /// `STRETCH_SLOTS` index slots' worth; returns where to go on, or
    /// `None` once the end line is written.
    pub fn push_key_dump(
        &self,
        mg: bool,
        cursor: ScanCursor,
        out: &mut BytesMut,
    ) -> Option<ScanCursor> {
        let storage: &dyn Storage = &*self.storage;
        let unix_now = storage.clock().unix_now();
        let step = storage.scan(cursor, STRETCH_SLOTS, &mut |item| {
            if item.deleted {
                return true; // tombstones are no items to memcached's tools
            }
            if mg {
                out.extend_from_slice(b"mg ");
                push_key(out, item.key, item.key_binary);
                out.extend_from_slice(if item.key_binary { b" b\r\n" } else { b"\r\n" });
                return true;
            }
            out.extend_from_slice(b"key=");
            uri_encode(item.key, out);
            let exp = if item.ttl < 0 {
                -1
            } else {
                unix_now + item.ttl
            };
            let la = unix_now - i64::from(item.last_access);
            let fetch = if item.fetched_before { "yes" } else { "no" };
            out.extend_from_slice(
                format!(
                    " exp={exp} la={la} cas={} fetch={fetch} cls=1 size={}\n",
                    item.cas, item.memcached_size
                )
                .as_bytes(),
            );
            true
        });
        if step.next.is_none() {
            out.extend_from_slice(if mg { b"EN\r\n" } else { b"END\r\n" });
        }
        step.next
    }

    /// The whole dump in one buffer (where nothing streams it).
    pub fn key_dump(&self, mg: bool, everything: bool) -> BytesMut {
        let mut out = BytesMut::new();
        if !everything {
            out.extend_from_slice(if mg { b"EN\r\n" } else { b"END\r\n" });
            return out;
        }
        let mut cursor = Some(ScanCursor::default());
        while let Some(at) = cursor {
            cursor = self.push_key_dump(mg, at, &mut out);
        }
        out
    }
}

/// memcached's slab classes: `stats cachedump` takes ids below this.
const SLAB_CLASSES: u32 = 64;
/// The most `stats cachedump` answers (memcached's buffer), in bytes.
const CACHEDUMP_MAX: usize = 2 << 20;

impl Executor {
    /// Shows `f` every live item (tombstones left out), a stretch of the
    /// index at a time, until `f` returns false.
    fn each_item(&self, f: &mut dyn FnMut(&ItemView<'_>) -> bool) {
        let mut cursor = Some(ScanCursor::default());
        let mut going = true;
        while let (Some(at), true) = (cursor, going) {
            let step = self.storage.scan(at, STRETCH_SLOTS, &mut |item| {
                going = item.deleted || f(item);
                going
            });
            cursor = step.next;
        }
    }

    /// `stats cachedump <class> <limit>`: `ITEM <key> [<bytes> b; <expiry>
    /// s]` per item, up to `limit` (0: all) and 2 MiB. The engine has no slab
    /// classes: class 1 holds every item, as in `lru_crawler metadump`;
    /// other valid classes are empty. Binary keys are left out, as
    /// memcached leaves them out.
    pub(super) fn cachedump(&self, args: &[Bytes]) -> Response {
        if args.len() < 2 {
            return Response::ClientError(Bytes::from_static(b"bad command line"));
        }
        let (Some(class), Some(limit)) = (parse_u32(&args[0]), parse_u32(&args[1])) else {
            return Response::ClientError(Bytes::from_static(b"bad command line format"));
        };
        if class >= SLAB_CLASSES {
            return Response::ClientError(Bytes::from_static(b"Illegal slab id"));
        }
        let mut out = BytesMut::new();
        let mut shown = 0u32;
        let unix_now = self.storage.clock().unix_now();
        if class == 1 {
            self.each_item(&mut |item| {
                if item.key_binary {
                    return true;
                }
                let expiry = if item.ttl < 0 { 0 } else { unix_now + item.ttl };
                let line = format!(" [{} b; {expiry} s]\r\n", item.value.len());
                if out.len() + 5 + item.key.len() + line.len() + 6 > CACHEDUMP_MAX {
                    return false;
                }
                out.extend_from_slice(b"ITEM ");
                out.extend_from_slice(item.key);
                out.extend_from_slice(line.as_bytes());
                shown += 1;
                limit == 0 || shown < limit
            });
        }
        out.extend_from_slice(b"END\r\n");
        Response::Lines(out.freeze())
    }

    /// `stats sizes`: items by total size in 32-byte buckets, as memcached
    /// counts them with `-o track_sizes` (its item size: header, key,
    /// value), walked from the store when asked.
    pub(super) fn size_histogram(&self) -> Response {
        let mut buckets: std::collections::BTreeMap<usize, u64> = Default::default();
        self.each_item(&mut |item| {
            *buckets.entry(item.memcached_size.div_ceil(32)).or_default() += 1;
            true
        });
        Response::Stats(
            buckets
                .into_iter()
                .map(|(b, n)| {
                    (
                        Bytes::from((b * 32).to_string()),
                        Bytes::from(n.to_string()),
                    )
                })
                .collect(),
        )
    }
}

/// memcached's key encoding in dumps: letters, digits and `-._~` as they
/// are, every other byte as `%XX`.
fn uri_encode(key: &[u8], out: &mut BytesMut) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in key {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.extend_from_slice(&[b]);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
}
