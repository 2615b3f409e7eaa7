//! Typed errors: what went wrong talking to a node, in words a caller can act on.

use std::fmt;

use zonecache_proto::Response;

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// No reply before the call's deadline; the node may be slow or hung.
    Timeout,
    /// The connection could not be made or broke; the node may be down.
    Connection(String),
    /// Too many calls are already in flight to this node; retry later or elsewhere.
    Busy,
    /// The node replied with something that is not memcached protocol.
    Protocol(String),
    /// The node answered `SERVER_ERROR <text>`.
    Server(String),
    /// The node answered `CLIENT_ERROR <text>` (or `ERROR`): the request was malformed.
    Client(String),
    /// The cluster config is missing or wrong; the text says what to fix.
    Config(String),
    /// The key breaks memcached's rules (1–250 bytes, no spaces or control
    /// characters); nothing was sent.
    InvalidKey(String),
    /// `add`/`replace`/`append`/`prepend` found the key in the wrong state.
    NotStored,
    /// `cas`: the item changed since its CAS token was read.
    Exists,
    /// The key is not there (`cas`, `delete`, `touch`, `incr`/`decr`).
    NotFound,
    /// Too few zones acknowledged a write for its write policy; the zones
    /// that did keep it.
    WritePolicy {
        policy: &'static str,
        acked: usize,
        zones: usize,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Timeout => f.write_str("timed out waiting for the node's reply"),
            Error::Connection(e) => write!(f, "connection failed: {e}"),
            Error::Busy => f.write_str("too many requests in flight to this node"),
            Error::Protocol(e) => write!(f, "not memcached protocol: {e}"),
            Error::Server(e) => write!(f, "SERVER_ERROR {e}"),
            Error::Client(e) => write!(f, "CLIENT_ERROR {e}"),
            Error::Config(why) => write!(f, "cluster config: {why}"),
            Error::InvalidKey(why) => write!(f, "invalid key: {why}"),
            Error::NotStored => f.write_str("not stored"),
            Error::Exists => f.write_str("the item changed since its CAS was read"),
            Error::NotFound => f.write_str("not found"),
            Error::WritePolicy {
                policy,
                acked,
                zones,
            } => write!(
                f,
                "write policy {policy} not met: {acked} of {zones} zones acknowledged"
            ),
        }
    }
}

impl std::error::Error for Error {}

impl Error {
    /// Whether the request was refused for load (by our own in-flight
    /// budget or by the node's `SERVER_ERROR busy…`): retry later, elsewhere,
    /// or on the batch job's own schedule.
    pub fn is_shed(&self) -> bool {
        match self {
            Error::Busy => true,
            Error::Server(m) => m.starts_with("busy"),
            _ => false,
        }
    }

    /// Whether the node did not answer (so another zone should be tried).
    pub fn is_unanswered(&self) -> bool {
        matches!(
            self,
            Error::Timeout | Error::Connection(_) | Error::Busy | Error::Protocol(_)
        )
    }

    /// Turns an error reply (`ERROR`, `CLIENT_ERROR`, `SERVER_ERROR`) into
    /// the error it means; any other reply passes through.
    pub fn from_reply(reply: Response) -> Result<Response, Error> {
        match reply {
            Response::Error => Err(Error::Client("ERROR".into())),
            Response::ClientError(m) => {
                Err(Error::Client(String::from_utf8_lossy(&m).into_owned()))
            }
            Response::ServerError(m) => {
                Err(Error::Server(String::from_utf8_lossy(&m).into_owned()))
            }
            other => Ok(other),
        }
    }
}
