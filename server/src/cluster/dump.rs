//! Serving `zc_dump`: one page of the items this node holds that a given
//! node owns in its zone's ring — what a warming node copies. The page is
//! bounded in items, bytes and index slots walked, so a dump is a stream of
//! short requests on the batch lane, each resuming at the last one's cursor.

use bytes::Bytes;
use zonecache_proto::{Command, DumpItem, DumpPage, Response};

use super::topology::Topology;
use crate::store::{ScanCursor, Storage};

/// Most items in one page, whatever the request asks.
const MAX_ITEMS: usize = 1024;
/// A page stops growing past this many bytes of data.
const MAX_BYTES: usize = 1 << 20;
/// Index slots walked per page; a page of a node holding few of the wanted
/// keys still comes back soon, with its cursor further on.
const MAX_SLOTS: usize = 64 * 1024;

/// Answers a `zc_dump` from `storage`, filtering keys by `topology`'s rings.
pub fn page(storage: &dyn Storage, topology: &Topology, cmd: &Command) -> Response {
    let Command::PeerDump {
        cursor,
        count,
        owners,
    } = cmd
    else {
        return Response::Error;
    };
    let mut rings = Vec::with_capacity(owners.len());
    for (zone, node) in owners {
        match topology
            .zones
            .iter()
            .find(|z| z.name.as_bytes() == &zone[..])
        {
            Some(z) => rings.push((z, node)),
            None => {
                return Response::ClientError(Bytes::from(format!(
                    "no zone {} in this node's topology",
                    String::from_utf8_lossy(zone)
                )))
            }
        }
    }
    let wanted = (*count as usize).clamp(1, MAX_ITEMS);
    let mut items = Vec::new();
    let mut bytes = 0;
    let step = storage.scan(ScanCursor(*cursor), MAX_SLOTS, &mut |item| {
        let owned = rings
            .iter()
            .all(|(zone, node)| zone.owner(item.key).id.as_bytes() == &node[..]);
        if owned {
            bytes += item.key.len() + item.value.len();
            items.push(DumpItem {
                key: Bytes::copy_from_slice(item.key),
                key_binary: item.key_binary,
                flags: item.flags,
                data: Bytes::copy_from_slice(item.value),
                version: item.cas,
                ttl: item.ttl,
                deleted: item.deleted,
            });
        }
        items.len() < wanted && bytes < MAX_BYTES
    });
    Response::Dump(DumpPage {
        next: step.next.map(|c| c.0),
        progress_ppm: (step.progress * 1e6) as u32,
        items,
    })
}
