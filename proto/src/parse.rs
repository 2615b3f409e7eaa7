//! Incremental, zero-copy request parsing.
//!
//! [`RequestParser::parse`] takes the connection's read buffer, and either
//! returns the next complete request (consuming exactly its bytes) or says it
//! needs more bytes. Keys and data blocks are `Bytes` slices of the buffer.
//! Every rule mirrors memcached 1.6's `proto_text.c`, so that replies can be
//! byte-identical to a stock memcached's.

use bytes::{Buf, Bytes, BytesMut};

use crate::meta::{decode_key, parse_flags, FlagErrors, MAX_META_TOKENS, MAX_OPAQUE_LEN};
use crate::number::{parse_i32, parse_u32, parse_u64};
use crate::request::{Command, ErrorKind, ErrorReply, Meta, Store, StoreMode};

/// Longest key memcached accepts.
pub const KEY_MAX_LENGTH: usize = 250;
/// memcached closes a connection whose buffered, newline-less input exceeds
/// this many bytes, unless it looks like a large multi-get.
pub const MAX_LINE_WITHOUT_NEWLINE: usize = 2048;
/// memcached tokenizes at most this many tokens at a time (the last one being
/// a terminal marker).
const MAX_TOKENS: usize = 24;

/// What the parser needs to know about the server it parses for.
#[derive(Debug, Clone, Copy)]
pub struct ParserConfig {
    /// The item size limit (`-I`): values that cannot fit are refused.
    pub item_size_max: usize,
    /// Upper bound on a `get`/`gets` line, which bounds the keys per request
    /// (memcached grows its buffer without a limit; we don't).
    pub max_get_line: usize,
}

impl Default for ParserConfig {
    fn default() -> Self {
        ParserConfig {
            item_size_max: 1024 * 1024,
            max_get_line: 4 * 1024 * 1024,
        }
    }
}

impl ParserConfig {
    /// Whether an item with this key, flags and value length fits the item
    /// size limit, counted the way memcached counts an item: a 48-byte
    /// header, the key and its terminator, 4 bytes of flags when non-zero,
    /// the value with its `\r\n`, and 8 bytes of CAS.
    pub fn item_fits(&self, key_len: usize, flags: u32, value_len: usize) -> bool {
        let flag_bytes = if flags == 0 { 0 } else { 4 };
        let total = 48 + key_len + 1 + flag_bytes + value_len + 2 + 8;
        total <= self.item_size_max
    }
}

/// Input after which the connection must be closed, as memcached closes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fatal {
    /// More than [`MAX_LINE_WITHOUT_NEWLINE`] bytes without a newline (or a
    /// multi-get beyond [`ParserConfig::max_get_line`]).
    LineTooLong,
}

impl std::fmt::Display for Fatal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fatal::LineTooLong => f.write_str("request line too long without a newline"),
        }
    }
}

impl std::error::Error for Fatal {}

/// A parser for one connection. It is stateful only while it swallows the
/// data block of a refused value.
#[derive(Debug, Clone)]
pub struct RequestParser {
    config: ParserConfig,
    /// Bytes of a refused data block still to be discarded.
    swallow: usize,
    /// The refusal, given once its data block is swallowed: memcached
    /// answers a too-large value or a bad `ms` flag only after reading the
    /// data (and a reply sent earlier would reach a client still sending).
    after_swallow: Option<Command>,
}

/// Space-separated tokens of one line, as offsets into the line, plus where
/// unconsumed text starts when the line held more than memcached tokenizes at once.
struct Tokens {
    spans: [(usize, usize); MAX_TOKENS - 1],
    len: usize,
    rest: Option<usize>,
}

impl Tokens {
    /// memcached's `tokenize_command` on `line[start..]`.
    fn split(line: &[u8], start: usize) -> Tokens {
        let mut t = Tokens {
            spans: [(0, 0); MAX_TOKENS - 1],
            len: 0,
            rest: None,
        };
        let mut s = start;
        let mut e = start;
        while e < line.len() {
            if line[e] == b' ' {
                if s != e {
                    t.spans[t.len] = (s, e);
                    t.len += 1;
                    if t.len == MAX_TOKENS - 1 {
                        e += 1;
                        if e < line.len() {
                            t.rest = Some(e);
                        }
                        return t;
                    }
                }
                s = e + 1;
            }
            e += 1;
        }
        if s != e {
            t.spans[t.len] = (s, e);
            t.len += 1;
        }
        t
    }

    fn get<'a>(&self, line: &'a [u8], i: usize) -> &'a [u8] {
        let (s, e) = self.spans[i];
        &line[s..e]
    }

    /// The last token equals `noreply` (memcached's `set_noreply_maybe`).
    fn noreply(&self, line: &[u8]) -> bool {
        self.len > 0 && self.get(line, self.len - 1) == b"noreply"
    }
}

/// Where the command line ends and the next input begins.
struct Line {
    /// Length of the command text (without `\r\n`, cut at the first NUL).
    text_len: usize,
    /// Bytes consumed by the line, newline included.
    consumed: usize,
}

/// memcached's class list of a crawler dump: `all`, `hash` or class ids
/// (1–63) joined by commas. Whether it includes class 1, the engine's one
/// class; `None` when malformed.
fn key_dump_classes(arg: &[u8]) -> Option<bool> {
    if arg == b"all" || arg == b"hash" {
        return Some(true);
    }
    let mut one = false;
    for id in arg.split(|b| *b == b',') {
        let id = parse_u32(id).filter(|i| (1..64).contains(i))?;
        one |= id == 1;
    }
    Some(one)
}

fn find_line(buf: &[u8]) -> Option<Line> {
    let nl = memchr::memchr(b'\n', buf)?;
    let mut end = nl;
    if end > 1 && buf[end - 1] == b'\r' {
        end -= 1;
    }
    // memcached treats the line as a C string.
    if let Some(nul) = memchr::memchr(0, &buf[..end]) {
        end = nul;
    }
    Some(Line {
        text_len: end,
        consumed: nl + 1,
    })
}

const BAD_FORMAT: &str = "bad command line format";
const BAD_EXPTIME: &str = "invalid exptime argument";

impl RequestParser {
    /// A parser for a server with this configuration.
    pub fn new(config: ParserConfig) -> Self {
        RequestParser {
            config,
            swallow: 0,
            after_swallow: None,
        }
    }

    /// The configuration this parser enforces.
    pub fn config(&self) -> &ParserConfig {
        &self.config
    }

    /// Returns the next complete request from `buf`, consuming exactly its
    /// bytes, or `Ok(None)` when more bytes are needed. `Err` means the
    /// connection must be closed.
    pub fn parse(&mut self, buf: &mut BytesMut) -> Result<Option<Command>, Fatal> {
        if self.swallow > 0 {
            let n = self.swallow.min(buf.len());
            buf.advance(n);
            self.swallow -= n;
            if self.swallow > 0 {
                return Ok(None);
            }
        }
        if let Some(refusal) = self.after_swallow.take() {
            return Ok(Some(refusal));
        }
        let Some(line) = find_line(buf) else {
            return self.check_partial_line(buf).map(|()| None);
        };
        let text = &buf[..line.text_len];
        let tokens = Tokens::split(text, 0);
        if tokens.len == 0 || tokens.get(text, 0).len() < 2 {
            buf.advance(line.consumed);
            return Ok(Some(Command::Invalid(ErrorReply::error())));
        }
        let name = tokens.get(text, 0);
        // Storage commands need their data block too; everything else is one line.
        let store = match name {
            b"set" => Some((StoreMode::Set, 5)),
            b"add" => Some((StoreMode::Add, 5)),
            b"replace" => Some((StoreMode::Replace, 5)),
            b"append" => Some((StoreMode::Append, 5)),
            b"prepend" => Some((StoreMode::Prepend, 5)),
            b"cas" => Some((StoreMode::Cas, 6)),
            _ => None,
        };
        if let Some((mode, args)) = store {
            return Ok(self.parse_store(buf, &line, &tokens, mode, args));
        }
        if name == b"ms" {
            return Ok(self.parse_meta_set(buf, &line, &tokens));
        }
        // One-line commands: take the line out of the buffer as `Bytes` so
        // keys can be zero-copy slices of it.
        let line_bytes = buf.split_to(line.consumed).freeze();
        let text = line_bytes.slice(..line.text_len);
        Ok(Some(self.parse_line(&text, &tokens)))
    }

    /// The client closed its side while this parser was swallowing a
    /// refused data block. memcached acts on a refused line before it reads
    /// the block (a too-large `set` removes the old value then), so the
    /// refusal is handed over now to do the same, with its reply silenced:
    /// memcached sends none once the input is gone. `false` when nothing was
    /// pending; the next [`RequestParser::parse`] returns it otherwise.
    pub fn end_of_input(&mut self) -> bool {
        let Some(mut refusal) = self.after_swallow.take() else {
            return false;
        };
        if let Command::TooLarge { noreply, .. } = &mut refusal {
            *noreply = true;
        } else {
            // Other refusals (a bad `ms` flag) change nothing.
            return false;
        }
        self.swallow = 0;
        self.after_swallow = Some(refusal);
        true
    }

    /// Swallows the `vlen`-byte data block (and its `\r\n`) of a refused
    /// store, then gives `refusal`: now if the block is in `buf`, else
    /// from the [`RequestParser::parse`] call that swallows its end.
    fn refuse_after_data(
        &mut self,
        buf: &mut BytesMut,
        vlen: usize,
        refusal: Command,
    ) -> Option<Command> {
        let block = vlen + 2;
        let n = block.min(buf.len());
        buf.advance(n);
        if n == block {
            return Some(refusal);
        }
        self.swallow = block - n;
        self.after_swallow = Some(refusal);
        None
    }

    /// memcached's rule for input with no newline yet.
    fn check_partial_line(&self, buf: &BytesMut) -> Result<(), Fatal> {
        if buf.len() <= MAX_LINE_WITHOUT_NEWLINE {
            return Ok(());
        }
        let spaces = buf.iter().take_while(|&&b| b == b' ').count();
        let rest = &buf[spaces..];
        let is_get = rest.starts_with(b"get ") || rest.starts_with(b"gets ");
        if spaces > 100 || !is_get || buf.len() > self.config.max_get_line {
            return Err(Fatal::LineTooLong);
        }
        Ok(())
    }

    fn parse_store(
        &mut self,
        buf: &mut BytesMut,
        line: &Line,
        tokens: &Tokens,
        mode: StoreMode,
        args: usize,
    ) -> Option<Command> {
        let text = &buf[..line.text_len];
        let n = tokens.len;
        if n != args && n != args + 1 {
            buf.advance(line.consumed);
            return Some(Command::Invalid(ErrorReply::error()));
        }
        let noreply = tokens.noreply(text);
        // The data block's length, when the line says one a client can send.
        let data_len = parse_i32(tokens.get(text, 4))
            .filter(|v| (0..=i32::MAX - 2).contains(v))
            .map(|v| v as usize);
        // A malformed line whose data length is known has its data block
        // swallowed: the block is never read as a command (memcached reads
        // it as one; tests/ACCEPTED_DIFFERENCES.md, 8).
        let mut invalid = |buf: &mut BytesMut| {
            buf.advance(line.consumed);
            if let Some(len) = data_len {
                self.swallow = len + 2;
            }
            Some(Command::Invalid(ErrorReply::client(BAD_FORMAT, noreply)))
        };
        if tokens.get(text, 1).len() > KEY_MAX_LENGTH {
            return invalid(buf);
        }
        let (Some(flags), Some(exptime), Some(vlen)) = (
            parse_u32(tokens.get(text, 2)),
            parse_i32(tokens.get(text, 3)),
            data_len,
        ) else {
            return invalid(buf);
        };
        let mut cas_unique = 0;
        if mode == StoreMode::Cas {
            match parse_u64(tokens.get(text, 5)) {
                Some(c) => cas_unique = c,
                None => return invalid(buf),
            }
        }
        let key_len = tokens.get(text, 1).len();
        if !self.config.item_fits(key_len, flags, vlen) {
            let key = Bytes::copy_from_slice(tokens.get(text, 1));
            buf.advance(line.consumed);
            return self.refuse_after_data(
                buf,
                vlen,
                Command::TooLarge {
                    key,
                    remove_existing: mode == StoreMode::Set,
                    noreply,
                },
            );
        }
        let total = line.consumed + vlen + 2;
        if buf.len() < total {
            return None;
        }
        let key_span = tokens.spans[1];
        let all = buf.split_to(total).freeze();
        if &all[total - 2..] != b"\r\n" {
            return Some(Command::Invalid(ErrorReply::client(
                "bad data chunk",
                noreply,
            )));
        }
        Some(Command::Store(Store {
            mode,
            key: all.slice(key_span.0..key_span.1),
            flags,
            exptime,
            data: all.slice(line.consumed..total - 2),
            cas_unique,
            noreply,
        }))
    }

    fn parse_meta_set(
        &mut self,
        buf: &mut BytesMut,
        line: &Line,
        tokens: &Tokens,
    ) -> Option<Command> {
        let text = &buf[..line.text_len];
        let n = tokens.len;
        let reject = |buf: &mut BytesMut, message: &'static str| {
            buf.advance(line.consumed);
            Some(Command::Invalid(ErrorReply::client(message, false)))
        };
        if n < 2 {
            buf.advance(line.consumed);
            return Some(Command::Invalid(ErrorReply::error()));
        }
        if tokens.get(text, 1).len() > KEY_MAX_LENGTH || n == 2 {
            return reject(buf, BAD_FORMAT);
        }
        if n + 1 > MAX_META_TOKENS {
            return reject(buf, "options flags too long");
        }
        let vlen = match parse_i32(tokens.get(text, 2)) {
            Some(v) if (0..=i32::MAX - 2).contains(&v) => v as usize,
            _ => return reject(buf, BAD_FORMAT),
        };
        let total = line.consumed + vlen + 2;
        // Flag errors and too-large values swallow the data block (and are
        // answered once it is swallowed, as memcached does).
        let mut key = Bytes::copy_from_slice(tokens.get(text, 1));
        let flag_tokens: Vec<Bytes> = (3..n)
            .map(|i| Bytes::copy_from_slice(tokens.get(text, i)))
            .collect();
        // memcached checks the mode before the opaque's length.
        let checked =
            parse_flags(&mut key, &flag_tokens, FlagErrors::Precise, false).and_then(|f| {
                if !matches!(f.mode, None | Some(b'E' | b'A' | b'P' | b'R' | b'S')) {
                    return Err("invalid mode for ms M token");
                }
                if f.opaque.as_ref().is_some_and(|o| o.len() > MAX_OPAQUE_LEN) {
                    return Err("opaque token too long");
                }
                Ok(f)
            });
        let flags = match checked {
            Ok(f) => f,
            Err(message) => {
                buf.advance(line.consumed);
                let refusal = Command::Invalid(ErrorReply::client(message, false));
                return self.refuse_after_data(buf, vlen, refusal);
            }
        };
        if !self
            .config
            .item_fits(key.len(), flags.client_flags.unwrap_or(0), vlen)
        {
            buf.advance(line.consumed);
            let refusal = Command::TooLarge {
                key,
                remove_existing: true,
                noreply: false,
            };
            return self.refuse_after_data(buf, vlen, refusal);
        }
        if buf.len() < total {
            return None;
        }
        let all = buf.split_to(total).freeze();
        if &all[total - 2..] != b"\r\n" {
            return Some(Command::Invalid(ErrorReply::client(
                "bad data chunk",
                false,
            )));
        }
        Some(Command::MetaSet {
            meta: Meta { key, flags },
            data: all.slice(line.consumed..total - 2),
        })
    }

    fn parse_line(&self, text: &Bytes, tokens: &Tokens) -> Command {
        let n = tokens.len;
        let tok = |i: usize| tokens.get(text, i);
        let slice = |i: usize| {
            let (s, e) = tokens.spans[i];
            text.slice(s..e)
        };
        let name = tok(0);
        let noreply = tokens.noreply(text);
        let error = Command::Invalid(ErrorReply::error());
        let client = |m: &'static str| Command::Invalid(ErrorReply::client(m, noreply));
        if name.len() == 2 && name[0] == b'm' {
            return self.parse_meta(text, tokens);
        }
        match name {
            b"get" | b"gets" | b"bget" | b"gat" | b"gats" | b"zc_gets" | b"zc_gats" => {
                if n < 2 {
                    return error;
                }
                let versioned = name.starts_with(b"zc_");
                let name = if versioned { &name[3..] } else { name };
                let touch = name.starts_with(b"gat");
                let cas = name.ends_with(b"s");
                let mut first_key = 1;
                let mut exptime = 0;
                if touch {
                    match parse_i32(tok(1)) {
                        Some(e) => exptime = e,
                        None => return Command::Invalid(ErrorReply::client(BAD_EXPTIME, false)),
                    }
                    first_key = 2;
                }
                let mut keys = Vec::with_capacity(n - first_key);
                for i in first_key..n {
                    keys.push(slice(i));
                }
                let mut rest = tokens.rest;
                while let Some(start) = rest {
                    let more = Tokens::split(text, start);
                    for i in 0..more.len {
                        let (s, e) = more.spans[i];
                        keys.push(text.slice(s..e));
                    }
                    rest = more.rest;
                }
                if keys.iter().any(|k| k.len() > KEY_MAX_LENGTH) {
                    return Command::Invalid(ErrorReply::client(BAD_FORMAT, false));
                }
                if versioned {
                    Command::VersionedGet {
                        keys,
                        touch: touch.then_some(exptime),
                    }
                } else if touch {
                    Command::Gat { exptime, keys, cas }
                } else {
                    Command::Get { keys, cas }
                }
            }
            b"incr" | b"decr" => {
                if n != 3 && n != 4 {
                    return error;
                }
                if tok(1).len() > KEY_MAX_LENGTH {
                    return client(BAD_FORMAT);
                }
                match parse_u64(tok(2)) {
                    Some(delta) => Command::Arith {
                        key: slice(1),
                        delta,
                        incr: name == b"incr",
                        noreply,
                    },
                    None => client("invalid numeric delta argument"),
                }
            }
            b"touch" => {
                if n != 3 && n != 4 {
                    return error;
                }
                if tok(1).len() > KEY_MAX_LENGTH {
                    return client(BAD_FORMAT);
                }
                match parse_i32(tok(2)) {
                    Some(exptime) => Command::Touch {
                        key: slice(1),
                        exptime,
                        noreply,
                    },
                    None => client(BAD_EXPTIME),
                }
            }
            b"delete" => {
                if !(2..=4).contains(&n) {
                    return error;
                }
                // memcached only looks for noreply when there are extra tokens.
                let noreply = n > 2 && noreply;
                if n > 2 {
                    let hold_is_zero = tok(2) == b"0";
                    let valid = (n == 3 && (hold_is_zero || noreply))
                        || (n == 4 && hold_is_zero && noreply);
                    if !valid {
                        return Command::Invalid(ErrorReply::client(
                            "bad command line format.  Usage: delete <key> [noreply]",
                            noreply,
                        ));
                    }
                }
                if tok(1).len() > KEY_MAX_LENGTH {
                    return Command::Invalid(ErrorReply::client(BAD_FORMAT, noreply));
                }
                Command::Delete {
                    key: slice(1),
                    noreply,
                }
            }
            b"flush_all" => {
                if !(1..=3).contains(&n) {
                    return error;
                }
                let mut delay = 0;
                if n != if noreply { 2 } else { 1 } {
                    match parse_i32(tok(1)) {
                        Some(d) => delay = d,
                        None => return client(BAD_EXPTIME),
                    }
                }
                Command::FlushAll { delay, noreply }
            }
            b"version" => Command::Version,
            b"quit" => Command::Quit,
            b"zc_challenge" if n == 2 => Command::PeerChallenge { nonce: slice(1) },
            b"zc_peer" if n == 2 => Command::PeerHello { proof: slice(1) },
            b"zc_leave" if n == 1 => Command::Leave,
            b"zc_asked" if n == 2 => Command::PeerAsked { node: slice(1) },
            b"zc_dump" if n >= 5 && n % 2 == 1 => match (parse_u64(tok(1)), parse_u32(tok(2))) {
                (Some(cursor), Some(count)) => Command::PeerDump {
                    cursor,
                    count,
                    owners: (3..n)
                        .step_by(2)
                        .map(|i| (slice(i), slice(i + 1)))
                        .collect(),
                },
                _ => client(BAD_FORMAT),
            },
            b"zc_drain" if n == 3 => {
                let percent = std::str::from_utf8(&slice(2))
                    .ok()
                    .and_then(|p| p.parse::<u8>().ok())
                    .filter(|p| *p <= 100);
                match percent {
                    Some(percent) => Command::PeerDrain {
                        zone: slice(1),
                        percent,
                    },
                    None => client(BAD_FORMAT),
                }
            }
            b"zc_lease" if n == 2 => Command::PeerLease {
                node: slice(1),
                fenced: false,
            },
            b"zc_lease" if n == 3 && &*slice(2) == b"fenced" => Command::PeerLease {
                node: slice(1),
                fenced: true,
            },
            b"lru_crawler" if n == 3 && matches!(tok(1), b"metadump" | b"mgdump") => {
                match key_dump_classes(tok(2)) {
                    Some(everything) => Command::KeyDump {
                        mg: tok(1) == b"mgdump",
                        everything,
                    },
                    None => Command::Invalid(ErrorReply {
                        kind: ErrorKind::Raw,
                        message: "BADCLASS invalid class id",
                        noreply: false,
                    }),
                }
            }
            b"stats" => Command::Stats {
                args: (1..n).map(slice).collect(),
            },
            b"verbosity" => {
                if n != 2 && n != 3 {
                    return error;
                }
                match parse_u32(tok(1)) {
                    Some(level) => Command::Verbosity { level, noreply },
                    None => client(BAD_FORMAT),
                }
            }
            b"shutdown" => Command::Shutdown {
                graceful: match (n, tok(1)) {
                    (1, _) => Some(false),
                    (2, b"graceful") => Some(true),
                    _ => None,
                },
            },
            b"refresh_certs" if n <= 2 => Command::RefreshCerts { noreply },
            b"cache_memlimit" => {
                if n != 2 && n != 3 {
                    return error;
                }
                let raw = |message| {
                    Command::Invalid(ErrorReply {
                        kind: ErrorKind::Raw,
                        message,
                        noreply,
                    })
                };
                match parse_u32(tok(1)) {
                    None => Command::Invalid(ErrorReply {
                        noreply,
                        ..ErrorReply::error()
                    }),
                    Some(..8) => raw("MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m"),
                    Some(1_000_000_001..) => {
                        raw("MEMLIMIT_ADJUST_FAILED input value is megabytes not bytes")
                    }
                    Some(megabytes) => Command::CacheMemlimit { megabytes, noreply },
                }
            }
            _ => {
                // memcached's dispatch ends by dropping HTTP clients silently.
                let first = name[0];
                let dispatched_earlier =
                    matches!(first, b'g' | b's' | b'a' | b'c' | b'i' | b'd' | b't');
                if !dispatched_earlier && tok(n - 1).starts_with(b"HTTP/") {
                    Command::Close
                } else {
                    error
                }
            }
        }
    }

    fn parse_meta(&self, text: &Bytes, tokens: &Tokens) -> Command {
        let n = tokens.len;
        let name = tokens.get(text, 0);
        let reject = |m: &'static str| Command::Invalid(ErrorReply::client(m, false));
        match name[1] {
            b'n' => return Command::MetaNoop,
            b'g' | b'd' | b'a' => {}
            b'e' => {
                if n < 2 || tokens.get(text, 1).len() > KEY_MAX_LENGTH {
                    return reject(BAD_FORMAT);
                }
                let (s, e) = tokens.spans[1];
                let mut key = text.slice(s..e);
                let base64 = n >= 3 && tokens.get(text, 2) == b"b";
                if base64 {
                    match decode_key(&key) {
                        Some(d) => key = d,
                        None => return reject(BAD_FORMAT),
                    }
                }
                return Command::MetaDebug { key, base64 };
            }
            _ => return Command::Invalid(ErrorReply::error()),
        }
        if n < 2 {
            return Command::Invalid(ErrorReply::error());
        }
        if tokens.get(text, 1).len() > KEY_MAX_LENGTH {
            return reject(BAD_FORMAT);
        }
        if n + 1 > MAX_META_TOKENS {
            return reject(if name[1] == b'g' {
                "options flags are too long"
            } else {
                "options flags too long"
            });
        }
        let (s, e) = tokens.spans[1];
        let mut key = text.slice(s..e);
        let flag_tokens: Vec<Bytes> = (2..n)
            .map(|i| {
                let (s, e) = tokens.spans[i];
                text.slice(s..e)
            })
            .collect();
        let errors = if name[1] == b'g' {
            FlagErrors::Precise
        } else {
            FlagErrors::Generic
        };
        let flags = match parse_flags(&mut key, &flag_tokens, errors, name[1] == b'd') {
            Ok(f) => f,
            Err(m) => return reject(m),
        };
        if name[1] == b'a' {
            if let Some(mode) = flags.mode {
                if !matches!(mode, b'I' | b'+' | b'D' | b'-') {
                    return reject("invalid mode for ma M token");
                }
            }
        }
        if flags
            .opaque
            .as_ref()
            .is_some_and(|o| o.len() > MAX_OPAQUE_LEN)
        {
            return reject("opaque token too long");
        }
        let meta = Meta { key, flags };
        match name[1] {
            b'g' => Command::MetaGet(meta),
            b'd' => Command::MetaDelete(meta),
            _ => Command::MetaArith(meta),
        }
    }
}
