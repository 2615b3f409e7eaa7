//! Responses: types, encoders (for the server) and an incremental parser (for
//! clients, including the server talking to its peers).

use bytes::{Buf, Bytes, BytesMut};

use crate::meta::MetaToken;
use crate::number::{parse_u32, parse_u64, push_u64};
use crate::request::{ErrorKind, ErrorReply};

/// memcached's `SERVER_ERROR` message for a value over the item size limit.
pub const TOO_LARGE_MESSAGE: &str = "object too large for cache";

/// The message of the `SERVER_ERROR` a zonecache node answers when it sheds
/// a batch-lane request for load.
pub const BATCH_SHED_MESSAGE: &str = "busy: batch lane shed under load, retry later";

/// Whether a `SERVER_ERROR` message says the node shed the request for load
/// (it starts with `busy`), so the caller should retry later or elsewhere.
pub fn is_shed_message(message: &[u8]) -> bool {
    message.starts_with(b"busy")
}

/// One item in a `VALUE … END` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    /// The key as stored.
    pub key: Bytes,
    /// The item's client flags.
    pub flags: u32,
    /// The data block.
    pub data: Bytes,
    /// The CAS unique, present for `gets`/`gats`.
    pub cas: Option<u64>,
}

/// One item of a key dump: what a copy needs to be the same item on
/// another node (its version and remaining TTL, or that it was deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpItem {
    /// The key as stored (raw bytes; base64 on the wire when binary).
    pub key: Bytes,
    /// The key was stored base64-encoded (meta `b`).
    pub key_binary: bool,
    /// Client flags.
    pub flags: u32,
    /// The data block (empty for a tombstone).
    pub data: Bytes,
    /// The item's version (its CAS).
    pub version: u64,
    /// Remaining TTL in seconds, -1 for none.
    pub ttl: i64,
    /// A tombstone: the key was deleted at `version`.
    pub deleted: bool,
}

/// The reply to `zc_dump`: one page of a node's items and where the next
/// page starts. On the wire: `DUMP <next|done> <progress ppm>`, then
/// `ITEM <key> <flags> <bytes> <version> <ttl> [b]` with its data block or
/// `GONE <key> <version> <ttl> [b]` lines, then `END`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpPage {
    /// The cursor of the next page; `None` when the walk is complete.
    pub next: Option<u64>,
    /// How far through the node's items the walk is, in millionths.
    pub progress_ppm: u32,
    /// The items of this page.
    pub items: Vec<DumpItem>,
}

/// The status word of a meta reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaCode {
    /// `VA`: a value follows.
    Value,
    /// `HD`: success, no value.
    Header,
    /// `EN`: miss.
    Miss,
    /// `NS`: not stored.
    NotStored,
    /// `EX`: CAS mismatch.
    Exists,
    /// `NF`: not found.
    NotFound,
}

impl MetaCode {
    /// The two-letter wire form.
    pub fn as_bytes(self) -> &'static [u8; 2] {
        match self {
            MetaCode::Value => b"VA",
            MetaCode::Header => b"HD",
            MetaCode::Miss => b"EN",
            MetaCode::NotStored => b"NS",
            MetaCode::Exists => b"EX",
            MetaCode::NotFound => b"NF",
        }
    }

    fn from_bytes(b: &[u8]) -> Option<MetaCode> {
        Some(match b {
            b"VA" => MetaCode::Value,
            b"HD" => MetaCode::Header,
            b"EN" => MetaCode::Miss,
            b"NS" => MetaCode::NotStored,
            b"EX" => MetaCode::Exists,
            b"NF" => MetaCode::NotFound,
            _ => return None,
        })
    }
}

/// A meta reply: status, return flags in order, and the value for `VA`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaResponse {
    /// The status word.
    pub code: MetaCode,
    /// Return flags (`s5`, `c42`, `O123`, `W`, …) in the order sent.
    pub flags: Vec<MetaToken>,
    /// The data block of a `VA` reply.
    pub value: Option<Bytes>,
}

impl MetaResponse {
    /// The argument of return flag `flag`, if present.
    pub fn flag(&self, flag: u8) -> Option<&Bytes> {
        self.flags.iter().find(|t| t.flag == flag).map(|t| &t.arg)
    }
}

/// Every reply a memcached server sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// `VALUE …` lines then `END` (no values = a miss).
    Values(Vec<Value>),
    /// The reply to `zc_gets`: a `TOMBSTONE <key> <version>` line for each
    /// key deleted at a known version, then `VALUE …` lines and `END`.
    /// Without tombstones it reads back as [`Response::Values`].
    Versioned {
        /// Keys found.
        values: Vec<Value>,
        /// Keys deleted, with the delete's version.
        deleted: Vec<(Bytes, u64)>,
    },
    /// One page of a key dump (`zc_dump`).
    Dump(DumpPage),
    /// `ZC_CHALLENGE <nonce> <proof>`: a cluster node's answer to
    /// `zc_challenge`: its nonce and its proof (both hex) that it holds
    /// the cluster secret.
    Challenge {
        /// The node's nonce.
        nonce: Bytes,
        /// HMAC over the caller's nonce and the node's.
        proof: Bytes,
    },
    /// `STORED`
    Stored,
    /// `NOT_STORED`
    NotStored,
    /// `EXISTS`
    Exists,
    /// `NOT_FOUND`
    NotFound,
    /// `DELETED`
    Deleted,
    /// `TOUCHED`
    Touched,
    /// `OK`
    Ok,
    /// `RESET` (after `stats reset`)
    Reset,
    /// The new value after `incr`/`decr`.
    Number(u64),
    /// `VERSION <version>`
    Version(Bytes),
    /// `STAT <name> <value>` lines then `END`.
    Stats(Vec<(Bytes, Bytes)>),
    /// A meta reply.
    Meta(MetaResponse),
    /// `MN`
    MetaNoop,
    /// `ME <key> <debug fields>`: the text after `ME `.
    MetaDebug(Bytes),
    /// `ERROR`
    Error,
    /// `CLIENT_ERROR <message>`
    ClientError(Bytes),
    /// `SERVER_ERROR <message>`
    ServerError(Bytes),
    /// A reply already in wire form, written as it is (a crawler key dump,
    /// whose lines end in `\n` and whose end line depends on the command).
    Lines(Bytes),
    /// A whole line of memcached's that fits no other shape
    /// (`ERROR: shutdown not enabled`), without its `\r\n`.
    Raw(Bytes),
}

impl From<ErrorReply> for Response {
    fn from(e: ErrorReply) -> Response {
        let message = Bytes::from_static(e.message.as_bytes());
        match e.kind {
            ErrorKind::Error => Response::Error,
            ErrorKind::Client => Response::ClientError(message),
            ErrorKind::Server => Response::ServerError(message),
            ErrorKind::Raw => Response::Raw(message),
        }
    }
}

/// Writes `VALUE <key> <flags> <bytes> [<cas>]\r\n<data>\r\n`.
pub fn push_value(out: &mut BytesMut, key: &[u8], flags: u32, data: &[u8], cas: Option<u64>) {
    out.extend_from_slice(b"VALUE ");
    out.extend_from_slice(key);
    out.extend_from_slice(b" ");
    push_u64(out, u64::from(flags));
    out.extend_from_slice(b" ");
    push_u64(out, data.len() as u64);
    if let Some(cas) = cas {
        out.extend_from_slice(b" ");
        push_u64(out, cas);
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

fn line(out: &mut BytesMut, word: &[u8], rest: &[u8]) {
    out.extend_from_slice(word);
    if !rest.is_empty() {
        out.extend_from_slice(b" ");
        out.extend_from_slice(rest);
    }
    out.extend_from_slice(b"\r\n");
}

impl Response {
    /// Writes the reply in memcached's wire format.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Response::Values(values) => {
                for v in values {
                    push_value(out, &v.key, v.flags, &v.data, v.cas);
                }
                out.extend_from_slice(b"END\r\n");
            }
            Response::Versioned { values, deleted } => {
                for (key, version) in deleted {
                    out.extend_from_slice(b"TOMBSTONE ");
                    out.extend_from_slice(key);
                    out.extend_from_slice(b" ");
                    push_u64(out, *version);
                    out.extend_from_slice(b"\r\n");
                }
                Response::Values(values.clone()).encode(out);
            }
            Response::Dump(page) => page.encode(out),
            Response::Stored => out.extend_from_slice(b"STORED\r\n"),
            Response::NotStored => out.extend_from_slice(b"NOT_STORED\r\n"),
            Response::Exists => out.extend_from_slice(b"EXISTS\r\n"),
            Response::NotFound => out.extend_from_slice(b"NOT_FOUND\r\n"),
            Response::Deleted => out.extend_from_slice(b"DELETED\r\n"),
            Response::Touched => out.extend_from_slice(b"TOUCHED\r\n"),
            Response::Ok => out.extend_from_slice(b"OK\r\n"),
            Response::Challenge { nonce, proof } => {
                out.extend_from_slice(b"ZC_CHALLENGE ");
                out.extend_from_slice(nonce);
                out.extend_from_slice(b" ");
                out.extend_from_slice(proof);
                out.extend_from_slice(b"\r\n");
            }
            Response::Reset => out.extend_from_slice(b"RESET\r\n"),
            Response::Number(n) => {
                push_u64(out, *n);
                out.extend_from_slice(b"\r\n");
            }
            Response::Version(v) => line(out, b"VERSION", v),
            Response::Stats(stats) => {
                for (k, v) in stats {
                    out.extend_from_slice(b"STAT ");
                    out.extend_from_slice(k);
                    out.extend_from_slice(b" ");
                    out.extend_from_slice(v);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"END\r\n");
            }
            Response::Meta(m) => {
                out.extend_from_slice(m.code.as_bytes());
                if m.code == MetaCode::Value {
                    out.extend_from_slice(b" ");
                    push_u64(out, m.value.as_ref().map_or(0, |v| v.len()) as u64);
                }
                for t in &m.flags {
                    out.extend_from_slice(b" ");
                    out.extend_from_slice(&[t.flag]);
                    out.extend_from_slice(&t.arg);
                }
                out.extend_from_slice(b"\r\n");
                if m.code == MetaCode::Value {
                    if let Some(v) = &m.value {
                        out.extend_from_slice(v);
                    }
                    out.extend_from_slice(b"\r\n");
                }
            }
            Response::MetaNoop => out.extend_from_slice(b"MN\r\n"),
            Response::MetaDebug(d) => line(out, b"ME", d),
            Response::Error => out.extend_from_slice(b"ERROR\r\n"),
            Response::ClientError(m) => line(out, b"CLIENT_ERROR", m),
            Response::ServerError(m) => line(out, b"SERVER_ERROR", m),
            Response::Raw(m) => line(out, m, b""),
            Response::Lines(text) => out.extend_from_slice(text),
        }
    }
}

/// A reply that is not memcached protocol; the connection cannot continue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseError(pub String);

impl std::fmt::Display for ResponseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed memcached response: {}", self.0)
    }
}

impl std::error::Error for ResponseError {}

/// Longest reply line we accept before calling the peer broken.
const MAX_RESPONSE_LINE: usize = 64 * 1024;

fn bad(what: &str, line: &[u8]) -> ResponseError {
    ResponseError(format!("{what}: {:?}", String::from_utf8_lossy(line)))
}

/// Finds the line at `from`; returns (line without `\r\n`, offset after it).
fn next_line(buf: &[u8], from: usize) -> Result<Option<(&[u8], usize)>, ResponseError> {
    match memchr::memchr(b'\n', &buf[from..]) {
        Some(i) => {
            let end = from + i;
            let text_end = if end > from && buf[end - 1] == b'\r' {
                end - 1
            } else {
                end
            };
            Ok(Some((&buf[from..text_end], end + 1)))
        }
        None if buf.len() - from > MAX_RESPONSE_LINE => {
            Err(ResponseError("reply line too long".into()))
        }
        None => Ok(None),
    }
}

fn split_words(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|&b| b == b' ').filter(|w| !w.is_empty())
}

/// Parses the next complete reply in `buf`, consuming exactly it, or returns
/// `Ok(None)` when more bytes are needed.
pub fn parse_response(buf: &mut BytesMut) -> Result<Option<Response>, ResponseError> {
    let Some((first, after_first)) = next_line(buf, 0)? else {
        return Ok(None);
    };
    if first.starts_with(b"VALUE ") || first.starts_with(b"TOMBSTONE ") || first == b"END" {
        return parse_values(buf);
    }
    if first.starts_with(b"DUMP ") {
        return DumpPage::parse(buf);
    }
    if first.starts_with(b"STAT ") {
        return parse_stats(buf);
    }
    if first.starts_with(b"VA ") {
        return parse_meta_value(buf);
    }
    let response = match first {
        b"STORED" => Response::Stored,
        b"NOT_STORED" => Response::NotStored,
        b"EXISTS" => Response::Exists,
        b"NOT_FOUND" => Response::NotFound,
        b"DELETED" => Response::Deleted,
        b"TOUCHED" => Response::Touched,
        b"OK" => Response::Ok,
        b"RESET" => Response::Reset,
        b"ERROR" => Response::Error,
        b"MN" => Response::MetaNoop,
        _ => {
            let rest_after = |word: &[u8]| Bytes::copy_from_slice(&first[word.len()..]);
            if let Some(v) = first.strip_prefix(b"VERSION ") {
                Response::Version(Bytes::copy_from_slice(v))
            } else if let Some(rest) = first.strip_prefix(b"ZC_CHALLENGE ") {
                let mut words = split_words(rest);
                match (words.next(), words.next(), words.next()) {
                    (Some(nonce), Some(proof), None) => Response::Challenge {
                        nonce: Bytes::copy_from_slice(nonce),
                        proof: Bytes::copy_from_slice(proof),
                    },
                    _ => return Err(bad("bad challenge", first)),
                }
            } else if first.starts_with(b"CLIENT_ERROR") {
                Response::ClientError(trim_message(rest_after(b"CLIENT_ERROR")))
            } else if first.starts_with(b"SERVER_ERROR") {
                Response::ServerError(trim_message(rest_after(b"SERVER_ERROR")))
            } else if let Some(d) = first.strip_prefix(b"ME ") {
                Response::MetaDebug(Bytes::copy_from_slice(d))
            } else if first.len() >= 2 && MetaCode::from_bytes(&first[..2]).is_some() {
                let mut words = split_words(first);
                let code = MetaCode::from_bytes(words.next().unwrap_or_default())
                    .ok_or_else(|| bad("unknown reply", first))?;
                Response::Meta(MetaResponse {
                    code,
                    flags: words.map(meta_token).collect(),
                    value: None,
                })
            } else if !first.is_empty() && first.iter().all(u8::is_ascii_digit) {
                Response::Number(parse_u64(first).ok_or_else(|| bad("bad number", first))?)
            } else {
                return Err(bad("unknown reply", first));
            }
        }
    };
    buf.advance(after_first);
    Ok(Some(response))
}

fn trim_message(b: Bytes) -> Bytes {
    if b.first() == Some(&b' ') {
        b.slice(1..)
    } else {
        b
    }
}

fn meta_token(word: &[u8]) -> MetaToken {
    MetaToken {
        flag: word[0],
        arg: Bytes::copy_from_slice(&word[1..]),
    }
}

fn parse_values(buf: &mut BytesMut) -> Result<Option<Response>, ResponseError> {
    // First find where the whole reply ends, then cut it out once.
    let mut at = 0;
    let mut spans = Vec::new();
    let mut deleted = Vec::new();
    loop {
        let Some((line, next)) = next_line(buf, at)? else {
            return Ok(None);
        };
        if line == b"END" {
            at = next;
            break;
        }
        if let Some(rest) = line.strip_prefix(b"TOMBSTONE ") {
            let mut words = split_words(rest);
            let (Some(key), Some(version), None) = (words.next(), words.next(), words.next())
            else {
                return Err(bad("bad TOMBSTONE line", line));
            };
            let version = parse_u64(version).ok_or_else(|| bad("bad version", line))?;
            deleted.push((Bytes::copy_from_slice(key), version));
            at = next;
            continue;
        }
        let mut words = split_words(line);
        let (Some(b"VALUE"), Some(key), Some(flags), Some(len)) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            return Err(bad("bad VALUE line", line));
        };
        let flags = parse_u32(flags).ok_or_else(|| bad("bad flags", line))?;
        let len = parse_u64(len).ok_or_else(|| bad("bad length", line))? as usize;
        let cas = match words.next() {
            Some(c) => Some(parse_u64(c).ok_or_else(|| bad("bad cas", line))?),
            None => None,
        };
        let key_start = key.as_ptr() as usize - buf.as_ptr() as usize;
        let key_span = (key_start, key_start + key.len());
        if buf.len() < next + len + 2 {
            return Ok(None);
        }
        if &buf[next + len..next + len + 2] != b"\r\n" {
            return Err(ResponseError("value not terminated by \\r\\n".into()));
        }
        spans.push((key_span, flags, (next, next + len), cas));
        at = next + len + 2;
    }
    let all = buf.split_to(at).freeze();
    let values = spans
        .into_iter()
        .map(|((ks, ke), flags, (ds, de), cas)| Value {
            key: all.slice(ks..ke),
            flags,
            data: all.slice(ds..de),
            cas,
        })
        .collect();
    if deleted.is_empty() {
        Ok(Some(Response::Values(values)))
    } else {
        Ok(Some(Response::Versioned { values, deleted }))
    }
}

fn parse_stats(buf: &mut BytesMut) -> Result<Option<Response>, ResponseError> {
    let mut at = 0;
    let mut stats = Vec::new();
    loop {
        let Some((line, next)) = next_line(buf, at)? else {
            return Ok(None);
        };
        at = next;
        if line == b"END" {
            break;
        }
        let Some(rest) = line.strip_prefix(b"STAT ") else {
            return Err(bad("bad STAT line", line));
        };
        let (name, value) = match memchr::memchr(b' ', rest) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &b""[..]),
        };
        stats.push((Bytes::copy_from_slice(name), Bytes::copy_from_slice(value)));
    }
    buf.advance(at);
    Ok(Some(Response::Stats(stats)))
}

fn parse_meta_value(buf: &mut BytesMut) -> Result<Option<Response>, ResponseError> {
    let Some((line, next)) = next_line(buf, 0)? else {
        return Ok(None);
    };
    let mut words = split_words(line);
    words.next();
    let len = words
        .next()
        .and_then(parse_u64)
        .ok_or_else(|| bad("bad VA length", line))? as usize;
    let flags: Vec<MetaToken> = words.map(meta_token).collect();
    if buf.len() < next + len + 2 {
        return Ok(None);
    }
    if &buf[next + len..next + len + 2] != b"\r\n" {
        return Err(ResponseError("VA value not terminated by \\r\\n".into()));
    }
    let all = buf.split_to(next + len + 2).freeze();
    Ok(Some(Response::Meta(MetaResponse {
        code: MetaCode::Value,
        flags,
        value: Some(all.slice(next..next + len)),
    })))
}

impl DumpPage {
    fn encode(&self, out: &mut BytesMut) {
        out.extend_from_slice(b"DUMP ");
        match self.next {
            Some(next) => push_u64(out, next),
            None => out.extend_from_slice(b"done"),
        }
        out.extend_from_slice(b" ");
        push_u64(out, u64::from(self.progress_ppm));
        out.extend_from_slice(b"\r\n");
        for item in &self.items {
            out.extend_from_slice(if item.deleted { b"GONE " } else { b"ITEM " });
            crate::meta::push_key(out, &item.key, item.key_binary);
            if !item.deleted {
                out.extend_from_slice(b" ");
                push_u64(out, u64::from(item.flags));
                out.extend_from_slice(b" ");
                push_u64(out, item.data.len() as u64);
            }
            out.extend_from_slice(b" ");
            push_u64(out, item.version);
            out.extend_from_slice(b" ");
            crate::number::push_i64(out, item.ttl);
            if item.key_binary {
                out.extend_from_slice(b" b");
            }
            out.extend_from_slice(b"\r\n");
            if !item.deleted {
                out.extend_from_slice(&item.data);
                out.extend_from_slice(b"\r\n");
            }
        }
        out.extend_from_slice(b"END\r\n");
    }

    fn parse(buf: &mut BytesMut) -> Result<Option<Response>, ResponseError> {
        let Some((first, mut at)) = next_line(buf, 0)? else {
            return Ok(None);
        };
        let (next, progress_ppm) = Self::parse_head(first)?;
        let mut items = Vec::new();
        loop {
            let Some((line, after)) = next_line(buf, at)? else {
                return Ok(None);
            };
            if line == b"END" {
                at = after;
                break;
            }
            let (item, end) = Self::parse_item(buf, line, after)?;
            let Some(item) = item else {
                return Ok(None);
            };
            items.push(item);
            at = end;
        }
        buf.advance(at);
        Ok(Some(Response::Dump(DumpPage {
            next,
            progress_ppm,
            items,
        })))
    }

    /// The `DUMP <next|done> <ppm>` line.
    fn parse_head(first: &[u8]) -> Result<(Option<u64>, u32), ResponseError> {
        let mut words = split_words(first).skip(1);
        let (Some(next), Some(ppm), None) = (words.next(), words.next(), words.next()) else {
            return Err(bad("bad DUMP line", first));
        };
        let next = match next {
            b"done" => None,
            n => Some(parse_u64(n).ok_or_else(|| bad("bad cursor", first))?),
        };
        let ppm = parse_u32(ppm).ok_or_else(|| bad("bad progress", first))?;
        Ok((next, ppm))
    }

    /// One `ITEM`/`GONE` line (and data block) whose text is `line` and
    /// whose next line starts at `after`; `None` when the data block is
    /// not all in `buf` yet.
    fn parse_item(
        buf: &[u8],
        line: &[u8],
        after: usize,
    ) -> Result<(Option<DumpItem>, usize), ResponseError> {
        let words: Vec<&[u8]> = split_words(line).collect();
        let deleted = words.first() == Some(&&b"GONE"[..]);
        let fixed = if deleted { 4 } else { 6 };
        let key_binary = words.len() == fixed + 1 && words[fixed] == b"b";
        if !(words.len() == fixed || key_binary) || (!deleted && words[0] != b"ITEM") {
            return Err(bad("bad dump line", line));
        }
        let key = if key_binary {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(words[1])
                .map_err(|_| bad("bad base64 key", line))?
                .into()
        } else {
            Bytes::copy_from_slice(words[1])
        };
        let number = |w: &[u8]| parse_u64(w).ok_or_else(|| bad("bad number", line));
        let ttl = std::str::from_utf8(words[fixed - 1])
            .ok()
            .and_then(|t| t.parse::<i64>().ok())
            .ok_or_else(|| bad("bad ttl", line))?;
        let version = number(words[fixed - 2])?;
        let (flags, data, end) = if deleted {
            (0, Bytes::new(), after)
        } else {
            let flags = parse_u32(words[2]).ok_or_else(|| bad("bad flags", line))?;
            let len = number(words[3])? as usize;
            if buf.len() < after + len + 2 {
                return Ok((None, after));
            }
            if &buf[after + len..after + len + 2] != b"\r\n" {
                return Err(ResponseError("value not terminated by \\r\\n".into()));
            }
            (
                flags,
                Bytes::copy_from_slice(&buf[after..after + len]),
                after + len + 2,
            )
        };
        let item = DumpItem {
            key,
            key_binary,
            flags,
            data,
            version,
            ttl,
            deleted,
        };
        Ok((Some(item), end))
    }
}
