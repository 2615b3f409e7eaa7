//! Meta replies back into binary responses, as memcached 1.6.18's
//! `write_bin_response`, `write_bin_error` and `append_bin_stats` write
//! them. Quiet opcodes answer only failures (and get hits).

use bytes::{BufMut, BytesMut};

use super::{opcode, Header, Status, HEADER_LEN, RESPONSE_MAGIC};
use crate::number::parse_u64;
use crate::response::{is_shed_message, MetaCode, MetaResponse, Response, TOO_LARGE_MESSAGE};

/// Writes one response packet.
#[allow(clippy::too_many_arguments)]
pub fn push_packet(
    out: &mut BytesMut,
    opcode: u8,
    status: Status,
    extras: &[u8],
    key: &[u8],
    value: &[u8],
    opaque: [u8; 4],
    cas: u64,
) {
    out.reserve(HEADER_LEN + extras.len() + key.len() + value.len());
    out.put_u8(RESPONSE_MAGIC);
    out.put_u8(opcode);
    out.put_u16(key.len() as u16);
    out.put_u8(extras.len() as u8);
    out.put_u8(0); // datatype: raw bytes
    out.put_u16(status as u16);
    out.put_u32((extras.len() + key.len() + value.len()) as u32);
    out.put_slice(&opaque);
    out.put_u64(cas);
    out.put_slice(extras);
    out.put_slice(key);
    out.put_slice(value);
}

/// An error response to `h`: `message`, or memcached's for `status`.
pub fn push_error(out: &mut BytesMut, h: &Header, status: Status, message: Option<&[u8]>) {
    let message = message.unwrap_or(status.message().as_bytes());
    push_packet(out, h.opcode, status, &[], &[], message, h.opaque, 0);
}

/// A success response to `h` with `value` (nothing for a quiet opcode).
pub fn push_success(out: &mut BytesMut, h: &Header, value: &[u8], cas: u64) {
    if !h.quiet() {
        push_packet(
            out,
            h.opcode,
            Status::Success,
            &[],
            &[],
            value,
            h.opaque,
            cas,
        );
    }
}

/// The response to the request with header `h` and key `key` whose
/// translated command answered `response`.
pub fn encode_reply(h: &Header, key: &[u8], response: &Response, out: &mut BytesMut) {
    let loud = h.loud();
    match response {
        Response::Meta(m) => meta(h, key, m, out),
        Response::MetaNoop | Response::Ok if loud != opcode::STAT => push_success(out, h, &[], 0),
        Response::Version(v) => push_success(out, h, v, 0),
        Response::Stats(lines) => {
            for (name, value) in lines {
                push_packet(
                    out,
                    opcode::STAT,
                    Status::Success,
                    &[],
                    name,
                    value,
                    h.opaque,
                    0,
                );
            }
            push_stats_end(out, h);
        }
        // `stats detail dump`: one stat holding memcached's text dump.
        Response::Lines(text) if loud == opcode::STAT => {
            push_packet(
                out,
                opcode::STAT,
                Status::Success,
                &[],
                b"detailed",
                text,
                h.opaque,
                0,
            );
            push_stats_end(out, h);
        }
        Response::Reset | Response::Ok => push_stats_end(out, h),
        Response::Error if loud == opcode::STAT => push_error(out, h, Status::KeyNotFound, None),
        Response::Error => push_error(out, h, Status::UnknownCommand, None),
        Response::ClientError(m) if m.starts_with(b"cannot increment") => {
            push_error(out, h, Status::NonNumeric, None)
        }
        Response::ClientError(m) => push_error(out, h, Status::InvalidArguments, Some(m)),
        Response::ServerError(m) if m.starts_with(TOO_LARGE_MESSAGE.as_bytes()) => {
            push_error(out, h, Status::TooLarge, None)
        }
        Response::ServerError(m) if m.starts_with(b"out of memory") => {
            let said: &[u8] = match loud {
                opcode::INCREMENT | opcode::DECREMENT => b"Out of memory incrementing value",
                _ => b"Out of memory allocating item",
            };
            push_error(out, h, Status::OutOfMemory, Some(said))
        }
        Response::ServerError(m) if is_shed_message(m) => push_error(out, h, Status::Busy, Some(m)),
        Response::ServerError(m) => push_error(out, h, Status::InternalError, Some(m)),
        // No binary request is translated into a command answered so.
        other => {
            let message = format!("unexpected reply {other:?}");
            push_error(out, h, Status::InternalError, Some(message.as_bytes()))
        }
    }
}

/// The empty packet that ends a `STAT` reply.
fn push_stats_end(out: &mut BytesMut, h: &Header) {
    push_packet(
        out,
        opcode::STAT,
        Status::Success,
        &[],
        &[],
        &[],
        h.opaque,
        0,
    );
}

fn meta(h: &Header, key: &[u8], m: &MetaResponse, out: &mut BytesMut) {
    let loud = h.loud();
    let cas = m.flag(b'c').and_then(|c| parse_u64(c)).unwrap_or(0);
    match (loud, m.code) {
        (
            opcode::GET | opcode::GETK | opcode::TOUCH | opcode::GAT | opcode::GATK,
            MetaCode::Value | MetaCode::Header,
        ) => {
            // Hits are answered even by the quiet gets.
            let flags = m.flag(b'f').and_then(|f| parse_u64(f)).unwrap_or(0) as u32;
            let key: &[u8] = if matches!(loud, opcode::GETK | opcode::GATK) {
                key
            } else {
                &[]
            };
            let value = m.value.as_deref().unwrap_or(&[]);
            push_packet(
                out,
                h.opcode,
                Status::Success,
                &flags.to_be_bytes(),
                key,
                value,
                h.opaque,
                cas,
            );
        }
        (_, MetaCode::Miss) if h.quiet() => {}
        (opcode::GETK | opcode::GATK, MetaCode::Miss) => push_packet(
            out,
            h.opcode,
            Status::KeyNotFound,
            &[],
            key,
            &[],
            h.opaque,
            0,
        ),
        (_, MetaCode::Miss | MetaCode::NotFound) => push_error(out, h, Status::KeyNotFound, None),
        (_, MetaCode::Exists) => push_error(out, h, Status::KeyExists, None),
        (opcode::ADD, MetaCode::NotStored) => push_error(out, h, Status::KeyExists, None),
        (opcode::REPLACE, MetaCode::NotStored) => push_error(out, h, Status::KeyNotFound, None),
        (_, MetaCode::NotStored) => push_error(out, h, Status::NotStored, None),
        (opcode::INCREMENT | opcode::DECREMENT, MetaCode::Value) => {
            let n = m.value.as_deref().and_then(parse_u64).unwrap_or(0);
            push_success(out, h, &n.to_be_bytes(), cas)
        }
        // A delete's reply carries no CAS.
        (opcode::DELETE, _) => push_success(out, h, &[], 0),
        _ => push_success(out, h, &[], cas),
    }
}
