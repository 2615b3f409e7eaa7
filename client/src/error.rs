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
        }
    }
}

impl std::error::Error for Error {}

impl Error {
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
