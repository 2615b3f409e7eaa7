//! Binary requests in, meta commands out: memcached 1.6.18's
//! `try_read_command_binary` and `dispatch_bin_command`, checks in the same
//! order, bytes consumed (and swallowed) the same way.

use bytes::{Buf, Bytes, BytesMut};

use super::{opcode, Header, Status, HEADER_LEN, MAX_MECHANISM_LEN, REQUEST_MAGIC};
use crate::meta::MetaFlags;
use crate::number::push_u64;
use crate::parse::{ParserConfig, KEY_MAX_LENGTH};
use crate::request::{Command, Meta};

/// What the server does with one binary request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Run this command; [`super::encode_reply`] turns its response into
    /// the binary one.
    Run(Command),
    /// Answer `status` with memcached's message, then close if `close`.
    Refuse { status: Status, close: bool },
    /// A header whose key and extras do not fit its body: answered
    /// `Unknown command` and closed, before anything else is looked at
    /// (authentication included).
    Malformed,
    /// `SASL_LIST_MECHS` on a node that takes SASL.
    ListMechanisms,
    /// `SASL_AUTH` (or `SASL_STEP` when `step`) on a node that takes SASL.
    Authenticate {
        mechanism: Bytes,
        data: Bytes,
        step: bool,
    },
    /// Not a binary request (a wrong magic byte): close without a word.
    Close,
}

/// One binary request: its header (for the reply), key and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryRequest {
    pub header: Header,
    pub key: Bytes,
    pub action: Action,
    /// Run it but answer nothing: a refused value's client left before
    /// its bytes were swallowed (see [`BinaryParser::end_of_input`]).
    pub silent: bool,
    /// Its body was refused and swallowed, or its value refused (memcached
    /// does not send the replies it holds, this one's too, until it reads
    /// on).
    pub swallowed: bool,
}

impl BinaryRequest {
    /// Whether memcached serves this before a SASL sign-in.
    pub fn allowed_before_sign_in(&self) -> bool {
        matches!(self.action, Action::Close | Action::Malformed)
            || matches!(
                self.header.opcode,
                opcode::SASL_LIST_MECHS | opcode::SASL_AUTH | opcode::SASL_STEP | opcode::VERSION
            )
    }
}

/// The parser of one binary connection. Stateful only while it swallows
/// the body of a refused request.
#[derive(Debug, Clone)]
pub struct BinaryParser {
    config: ParserConfig,
    /// The node takes SASL (`-S`); otherwise the SASL opcodes are unknown.
    sasl: bool,
    /// Bytes still to discard.
    swallow: u64,
    /// The refusal given once they are: memcached answers a refused body
    /// only after reading it.
    after_swallow: Option<BinaryRequest>,
    /// The last parse stopped inside a request's body.
    in_body: bool,
}

/// What the header alone says a request is.
enum Shape {
    /// Complete once header, extras and key are in.
    Head(Action),
    /// Answer now and discard this many bytes after the key.
    Swallow(Action, u64),
    /// A store's value refused (too large): as `Swallow`, but memcached
    /// holds its replies whatever the count (it goes on to swallow even
    /// when its C `int` count is negative and there is nothing to).
    RefuseValue(Action, u64),
    /// Needs its whole body (a value or SASL data).
    Body,
}

impl BinaryParser {
    pub fn new(config: ParserConfig, sasl: bool) -> BinaryParser {
        BinaryParser {
            config,
            sasl,
            swallow: 0,
            after_swallow: None,
            in_body: false,
        }
    }

    /// The next request in `buf`, consuming its bytes; `None` until a
    /// whole one is there.
    pub fn parse(&mut self, buf: &mut BytesMut) -> Option<BinaryRequest> {
        self.in_body = false;
        if self.swallow > 0 {
            let n = (self.swallow as usize).min(buf.len());
            buf.advance(n);
            self.swallow -= n as u64;
            if self.swallow > 0 {
                return None;
            }
        }
        if let Some(refusal) = self.after_swallow.take() {
            return Some(refusal);
        }
        if buf.len() < HEADER_LEN {
            return None;
        }
        let header = Header::read(buf);
        if buf[0] != REQUEST_MAGIC {
            return Some(BinaryRequest {
                header,
                key: Bytes::new(),
                action: Action::Close,
                silent: false,
                swallowed: false,
            });
        }
        let (ext, keylen, body) = (
            usize::from(header.extras_len),
            usize::from(header.key_len),
            header.body_len as usize,
        );
        let head = HEADER_LEN + ext + keylen;
        if buf.len() < head {
            return None;
        }
        let shape = if keylen > body || keylen + ext > body {
            Shape::Head(Action::Malformed)
        } else if keylen > KEY_MAX_LENGTH {
            Shape::Head(invalid())
        } else {
            self.shape(&header, &buf[HEADER_LEN..head])
        };
        let whole = HEADER_LEN + body;
        if matches!(shape, Shape::Body) && buf.len() < whole {
            self.in_body = true;
            return None;
        }
        let bytes = buf
            .split_to(if matches!(shape, Shape::Body) {
                whole
            } else {
                head
            })
            .freeze();
        let extras = bytes.slice(HEADER_LEN..HEADER_LEN + ext);
        let key = bytes.slice(HEADER_LEN + ext..head);
        let (action, swallow, refused_value) = match shape {
            Shape::Head(action) => (action, 0, false),
            Shape::Swallow(action, n) => (action, n, false),
            Shape::RefuseValue(action, n) => (action, n, true),
            Shape::Body => (
                body_action(&header, &extras, key.clone(), bytes.slice(head..)),
                0,
                false,
            ),
        };
        let request = BinaryRequest {
            header,
            key,
            action,
            silent: false,
            swallowed: false,
        };
        // memcached keeps the count in a C `int`: from 2^31 up it is
        // negative and nothing is swallowed.
        let swallow = if (swallow as u32 as i32) > 0 {
            swallow
        } else {
            0
        };
        let request = BinaryRequest {
            swallowed: swallow > 0 || refused_value,
            ..request
        };
        let now = (swallow as usize).min(buf.len());
        buf.advance(now);
        self.swallow = swallow - now as u64;
        if self.swallow > 0 {
            self.after_swallow = Some(request);
            return None;
        }
        Some(request)
    }

    /// Whether the parser stopped inside a request (reading or swallowing
    /// its body) rather than between requests: where memcached, waiting
    /// for the rest, has not sent the replies it holds.
    pub fn mid_request(&self) -> bool {
        self.in_body || self.swallow > 0
    }

    /// The input ended. A refused value memcached would already have
    /// acted on (a too-large `set` removes the old value when its header
    /// is read) is handed over by the next [`BinaryParser::parse`], its
    /// reply silenced; returns whether there is one.
    pub fn end_of_input(&mut self) -> bool {
        match &mut self.after_swallow {
            Some(r) if matches!(r.action, Action::Run(Command::TooLarge { .. })) => {
                r.silent = true;
                self.swallow = 0;
                true
            }
            _ => false,
        }
    }

    /// memcached's per-opcode checks on a header whose lengths add up.
    fn shape(&self, h: &Header, ext_and_key: &[u8]) -> Shape {
        let (ext, keylen, body) = (
            usize::from(h.extras_len),
            usize::from(h.key_len),
            h.body_len as usize,
        );
        let extras = &ext_and_key[..ext];
        let key = Bytes::copy_from_slice(&ext_and_key[ext..]);
        let value_len = body - keylen - ext;
        let bare = ext == 0 && keylen == 0 && body == 0;
        // The action is built only for a valid header (its extras are sized).
        let ok = |valid: bool, action: &dyn Fn() -> Action| {
            Shape::Head(if valid { action() } else { invalid() })
        };
        match h.loud() {
            opcode::VERSION => ok(bare, &|| Action::Run(Command::Version)),
            opcode::NOOP => ok(bare, &|| Action::Run(Command::MetaNoop)),
            opcode::QUIT => ok(bare, &|| Action::Run(Command::Quit)),
            opcode::FLUSH => ok(
                keylen == 0 && body == ext && (ext == 0 || ext == 4),
                &|| {
                    Action::Run(Command::FlushAll {
                        delay: if ext == 4 { exptime(extras) } else { 0 },
                        noreply: false,
                    })
                },
            ),
            opcode::SET | opcode::ADD | opcode::REPLACE => {
                if !(ext == 8 && keylen != 0 && body >= keylen + 8) {
                    return Shape::Head(invalid());
                }
                let flags = u32::from_be_bytes(extras[..4].try_into().expect("4 bytes"));
                self.store_shape(h, key, flags, value_len)
            }
            opcode::APPEND | opcode::PREPEND => {
                if !(keylen > 0 && ext == 0) {
                    return Shape::Head(invalid());
                }
                self.store_shape(h, key, 0, value_len)
            }
            opcode::GET | opcode::GETK => ok(ext == 0 && body == keylen && keylen > 0, &|| {
                Action::Run(read(key.clone(), None, true))
            }),
            opcode::TOUCH | opcode::GAT | opcode::GATK => ok(ext == 4 && keylen != 0, &|| {
                Action::Run(read(
                    key.clone(),
                    Some(exptime(extras)),
                    h.loud() != opcode::TOUCH,
                ))
            }),
            opcode::DELETE => ok(keylen > 0 && ext == 0 && body == keylen, &|| {
                Action::Run(delete(key.clone(), h.cas))
            }),
            opcode::INCREMENT | opcode::DECREMENT => {
                ok(keylen > 0 && ext == 20 && body == keylen + ext, &|| {
                    Action::Run(arith(h, key.clone(), extras))
                })
            }
            opcode::STAT => ok(ext == 0, &|| stats(&key)),
            opcode::SASL_LIST_MECHS if !bare => Shape::Head(invalid()),
            opcode::SASL_AUTH | opcode::SASL_STEP if !(ext == 0 && keylen != 0) => {
                Shape::Head(invalid())
            }
            opcode::SASL_LIST_MECHS | opcode::SASL_AUTH | opcode::SASL_STEP if !self.sasl => {
                Shape::Swallow(unknown(), (body - keylen) as u64)
            }
            opcode::SASL_LIST_MECHS => Shape::Head(Action::ListMechanisms),
            opcode::SASL_AUTH | opcode::SASL_STEP => {
                if keylen > MAX_MECHANISM_LEN {
                    Shape::Swallow(invalid_open(), (body - keylen) as u64)
                } else if !self.config.item_fits(keylen, 0, body - keylen) {
                    let refuse = Action::Refuse {
                        status: Status::OutOfMemory,
                        close: false,
                    };
                    Shape::Swallow(refuse, (body - keylen) as u64)
                } else {
                    Shape::Body
                }
            }
            // memcached swallows the whole body length after the extras
            // and key it has already read (so, part of what follows).
            _ => Shape::Swallow(unknown(), body as u64),
        }
    }

    /// A store's value: refused (and swallowed) when it cannot fit.
    fn store_shape(&self, h: &Header, key: Bytes, flags: u32, value_len: usize) -> Shape {
        if self.config.item_fits(key.len(), flags, value_len) {
            return Shape::Body;
        }
        // Run as the text protocol's refusal (a `set` removes the value it
        // would have replaced, so stale data cannot linger), answered
        // `Too large.`.
        let refusal = Command::TooLarge {
            key,
            remove_existing: h.loud() == opcode::SET,
            noreply: false,
        };
        Shape::RefuseValue(Action::Run(refusal), value_len as u64)
    }
}

fn invalid() -> Action {
    Action::Refuse {
        status: Status::InvalidArguments,
        close: true,
    }
}

fn invalid_open() -> Action {
    Action::Refuse {
        status: Status::InvalidArguments,
        close: false,
    }
}

fn unknown() -> Action {
    Action::Refuse {
        status: Status::UnknownCommand,
        close: false,
    }
}

/// A binary expiry (unsigned, 32 bits) as the text protocol's signed one:
/// beyond `i32::MAX` it is an absolute time past 2038 either way.
fn exptime(extras: &[u8]) -> i32 {
    let raw = u32::from_be_bytes(extras[extras.len() - 4..].try_into().expect("4 bytes"));
    i32::try_from(raw).unwrap_or(i32::MAX)
}

fn number(n: impl Into<u64>) -> Bytes {
    let mut b = BytesMut::new();
    push_u64(&mut b, n.into());
    b.freeze()
}

/// Meta flags for `key`: base64 on the wire when it holds bytes a text
/// line cannot carry (binary keys may hold any byte).
fn flags_for(key: &[u8]) -> MetaFlags {
    let mut flags = MetaFlags::default();
    if key.iter().any(|&b| b <= b' ' || b == 0x7f) {
        set(&mut flags, b'b', Bytes::new());
    }
    flags
}

fn set(flags: &mut MetaFlags, flag: u8, arg: Bytes) {
    flags
        .set(flag, arg)
        .expect("flags built here are always valid");
}

/// `mg`: the gets (`value`), touch and the get-and-touches (`touch`).
fn read(key: Bytes, touch: Option<i32>, value: bool) -> Command {
    let mut flags = flags_for(&key);
    if value {
        set(&mut flags, b'v', Bytes::new());
    }
    if let Some(ttl) = touch {
        set(&mut flags, b'T', Bytes::from(ttl.to_string()));
    }
    set(&mut flags, b'f', Bytes::new());
    set(&mut flags, b'c', Bytes::new());
    Command::MetaGet(Meta { key, flags })
}

fn delete(key: Bytes, cas: u64) -> Command {
    let mut flags = flags_for(&key);
    if cas != 0 {
        set(&mut flags, b'C', number(cas));
    }
    Command::MetaDelete(Meta { key, flags })
}

/// `ma`: extras are the delta, the initial value and an expiry whose all
/// ones means "do not create".
fn arith(h: &Header, key: Bytes, extras: &[u8]) -> Command {
    let delta = u64::from_be_bytes(extras[..8].try_into().expect("8 bytes"));
    let initial = u64::from_be_bytes(extras[8..16].try_into().expect("8 bytes"));
    let raw_exptime = u32::from_be_bytes(extras[16..20].try_into().expect("4 bytes"));
    let mut flags = flags_for(&key);
    let mode = if h.loud() == opcode::INCREMENT {
        "I"
    } else {
        "D"
    };
    set(&mut flags, b'M', Bytes::from_static(mode.as_bytes()));
    set(&mut flags, b'D', number(delta));
    if raw_exptime != u32::MAX {
        set(&mut flags, b'N', Bytes::from(exptime(extras).to_string()));
        set(&mut flags, b'J', number(initial));
    }
    if h.cas != 0 {
        set(&mut flags, b'C', number(h.cas));
    }
    set(&mut flags, b'v', Bytes::new());
    set(&mut flags, b'c', Bytes::new());
    Command::MetaArith(Meta { key, flags })
}

/// A request whose body is in: a store or SASL data.
fn body_action(h: &Header, extras: &[u8], key: Bytes, value: Bytes) -> Action {
    let loud = h.loud();
    if matches!(loud, opcode::SASL_AUTH | opcode::SASL_STEP) {
        return Action::Authenticate {
            mechanism: key,
            data: value,
            step: loud == opcode::SASL_STEP,
        };
    }
    let mut flags = flags_for(&key);
    // A CAS makes set, add and replace alike a compare-and-swap.
    let mode = match loud {
        opcode::APPEND => "A",
        opcode::PREPEND => "P",
        _ if h.cas != 0 => "S",
        opcode::ADD => "E",
        opcode::REPLACE => "R",
        _ => "S",
    };
    set(&mut flags, b'M', Bytes::from_static(mode.as_bytes()));
    if extras.len() == 8 {
        let client_flags = u32::from_be_bytes(extras[..4].try_into().expect("4 bytes"));
        set(&mut flags, b'F', number(client_flags));
        set(&mut flags, b'T', Bytes::from(exptime(extras).to_string()));
    }
    if h.cas != 0 {
        set(&mut flags, b'C', number(h.cas));
    }
    set(&mut flags, b'c', Bytes::new());
    Action::Run(Command::MetaSet {
        meta: Meta { key, flags },
        data: value,
    })
}

/// `STAT <group>`: memcached matches `reset`, `settings` and `detail` by
/// prefix and the engine's groups exactly; anything else is not found.
fn stats(key: &[u8]) -> Action {
    let words: &[&'static str] = if key.is_empty() {
        &[]
    } else if key.starts_with(b"reset") {
        &["reset"]
    } else if key.starts_with(b"settings") {
        &["settings"]
    } else if let Some(rest) = key.strip_prefix(b"detail") {
        if rest.starts_with(b" dump") {
            &["detail", "dump"]
        } else if rest.starts_with(b" on") {
            &["detail", "on"]
        } else if rest.starts_with(b" off") {
            &["detail", "off"]
        } else {
            return not_found();
        }
    } else {
        match key {
            b"items" => &["items"],
            b"slabs" => &["slabs"],
            b"sizes" => &["sizes"],
            _ => return not_found(),
        }
    };
    Action::Run(Command::Stats {
        args: words
            .iter()
            .map(|w| Bytes::from_static(w.as_bytes()))
            .collect(),
    })
}

fn not_found() -> Action {
    Action::Refuse {
        status: Status::KeyNotFound,
        close: false,
    }
}
