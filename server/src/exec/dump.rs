//! memcached's crawler key dumps, `lru_crawler metadump` and `mgdump`: a
//! line per live item, for the migration and warming tools that read them
//! (memcached's `mcdumpload`, Netflix's cachemover). The dump is written a
//! stretch at a time so the connection can send it as it goes and a large
//! cache never sits whole in a buffer.

use bytes::BytesMut;
use zonecache_proto::push_key;

use super::Executor;
use crate::store::{ScanCursor, Storage};

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
