//! Typed errors: what went wrong talking to a node, in words a caller can act on.

use std::fmt;

use zonecache_proto::Response;

/// How a connection that broke with requests in flight begins its error
/// (they were sent, so they may have been applied).
pub const CONNECTION_CLOSED: &str = "connection lost with the request in flight";
/// How a refused connection starts: no process listens there (the node is
/// dead), so it holds and serves nothing.
pub const NOBODY_LISTENING: &str = "nobody listening";
/// How a call to a node marked down fails (it is not made).
pub const MARKED_DOWN: &str = "is marked down";

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
    /// The node shed the request for load (`SERVER_ERROR busy…`): retry
    /// later, or on the batch job's own schedule.
    Shed(String),
    /// The node answered `ERROR`: it does not know the command (stock
    /// memcached, for zonecache's own commands).
    UnknownCommand,
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
    /// that did keep it, and in `unknown` zones the write may or may not
    /// have been applied (the node took it but did not answer in time).
    WritePolicy {
        policy: &'static str,
        acked: usize,
        unknown: usize,
        zones: usize,
    },
    /// A conditional write (incr, cas, add, …) could not be decided: the
    /// key's arbiter did not answer. With `unknown`, it may have applied
    /// it (a later read shows); without, nothing changed. Retry later.
    Undecided { unknown: bool, why: String },
    /// A write reached enough zones, but a zone that missed it may still
    /// serve the older value (it could not be fenced, `route/fence.rs`):
    /// the cluster cannot promise the write is seen, so it does not
    /// acknowledge it. Read the key before retrying.
    Unfenced(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Timeout => f.write_str("timed out waiting for the node's reply"),
            Error::Connection(e) => write!(f, "connection failed: {e}"),
            Error::Busy => f.write_str("too many requests in flight to this node"),
            Error::Protocol(e) => write!(f, "not memcached protocol: {e}"),
            Error::Server(e) | Error::Shed(e) => write!(f, "SERVER_ERROR {e}"),
            Error::UnknownCommand => f.write_str("ERROR: the node does not know the command"),
            Error::Client(e) => write!(f, "CLIENT_ERROR {e}"),
            Error::Config(why) => write!(f, "cluster config: {why}"),
            Error::InvalidKey(why) => write!(f, "invalid key: {why}"),
            Error::NotStored => f.write_str("not stored"),
            Error::Exists => f.write_str("the item changed since its CAS was read"),
            Error::NotFound => f.write_str("not found"),
            Error::WritePolicy {
                policy,
                acked,
                unknown,
                zones,
            } => {
                write!(
                    f,
                    "write policy {policy} not met: {acked} of {zones} zones acknowledged"
                )?;
                if *unknown > 0 {
                    write!(f, ", outcome unknown in {unknown}")?;
                }
                Ok(())
            }
            Error::Undecided { unknown: true, why } => write!(
                f,
                "outcome unknown: the key's arbiter did not answer ({why}); read the key before retrying"
            ),
            Error::Undecided { unknown: false, why } => write!(
                f,
                "not applied: the key's arbiter is unreachable ({why}); retry later"
            ),
            Error::Unfenced(why) => write!(
                f,
                "outcome unknown: {why}; read the key before retrying"
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
        matches!(self, Error::Busy | Error::Shed(_))
    }

    /// Whether the node answered with its verdict on the request itself (a
    /// malformed or unknown command): it is up, and another zone would
    /// answer the same.
    pub fn is_refusal(&self) -> bool {
        matches!(self, Error::Client(_) | Error::UnknownCommand)
    }

    /// Whether a write that failed this way may still have been applied:
    /// the request left, but no answer came back.
    pub fn may_have_applied(&self) -> bool {
        match self {
            Error::Timeout | Error::Protocol(_) | Error::Unfenced(_) => true,
            Error::Connection(why) => why.starts_with(CONNECTION_CLOSED),
            _ => false,
        }
    }

    /// Whether the node's port refused the connection: no process is
    /// there to serve anything.
    pub fn is_refused(&self) -> bool {
        matches!(self, Error::Connection(why) if why.starts_with(NOBODY_LISTENING))
    }

    /// Whether the node did not answer (so another zone should be tried).
    pub fn is_unanswered(&self) -> bool {
        matches!(
            self,
            Error::Timeout | Error::Connection(_) | Error::Busy | Error::Protocol(_)
        )
    }

    /// The reply a node sends a client for this error (a front answering
    /// for the cluster).
    pub fn to_response(&self) -> Response {
        let text = |m: &str| bytes::Bytes::from(m.to_string());
        match self {
            Error::UnknownCommand => Response::Error,
            Error::Client(m) => Response::ClientError(text(m)),
            Error::Server(m) | Error::Shed(m) => Response::ServerError(text(m)),
            policy @ (Error::WritePolicy { .. } | Error::Undecided { .. } | Error::Unfenced(_)) => {
                Response::ServerError(text(&policy.to_string()))
            }
            other => Response::ServerError(text(&format!("cluster: {other}"))),
        }
    }

    /// Turns an error reply (`ERROR`, `CLIENT_ERROR`, `SERVER_ERROR`) into
    /// the error it means; any other reply passes through.
    pub fn from_reply(reply: Response) -> Result<Response, Error> {
        match reply {
            Response::Error => Err(Error::UnknownCommand),
            Response::ClientError(m) => {
                Err(Error::Client(String::from_utf8_lossy(&m).into_owned()))
            }
            Response::ServerError(m) if zonecache_proto::is_shed_message(&m) => {
                Err(Error::Shed(String::from_utf8_lossy(&m).into_owned()))
            }
            Response::ServerError(m) => {
                Err(Error::Server(String::from_utf8_lossy(&m).into_owned()))
            }
            other => Ok(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nodes_shed_reply_is_a_shed_error() {
        let reply = Response::ServerError(zonecache_proto::BATCH_SHED_MESSAGE.into());
        let error = Error::from_reply(reply).unwrap_err();
        assert!(error.is_shed(), "{error:?}");
        assert_eq!(
            Error::from_reply(Response::Error),
            Err(Error::UnknownCommand)
        );
        let other = Error::from_reply(Response::ServerError("out of memory".into())).unwrap_err();
        assert!(!other.is_shed());
    }
}
