//! What a client asked to be spared. The nodes that run a routed command
//! always answer (the router needs their verdicts); the front applies the
//! client's `noreply` or meta `q` to the reply the cluster gives it.

use zonecache_client::Error;
use zonecache_proto::{Command, Meta, MetaCode, Response, Store};

use crate::exec::Reply;

/// The reply the client does not want.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Silence {
    /// Every reply is wanted.
    None,
    /// Text `noreply`: nothing at all.
    NoReply,
    /// Meta `q`: the nominal reply (`HD`, and `EN` of `mg`) is dropped; errors show.
    Quiet,
}

impl Silence {
    /// Takes the client's noreply/quiet off `cmd`, so the nodes that run it
    /// answer; says what the client wanted spared.
    pub fn take(cmd: Command) -> (Silence, Command) {
        match cmd {
            Command::Store(s) if s.noreply => (
                Silence::NoReply,
                Command::Store(Store {
                    noreply: false,
                    ..s
                }),
            ),
            Command::Arith {
                key,
                delta,
                incr,
                noreply: true,
            } => (
                Silence::NoReply,
                Command::Arith {
                    key,
                    delta,
                    incr,
                    noreply: false,
                },
            ),
            Command::Touch {
                key,
                exptime,
                noreply: true,
            } => (
                Silence::NoReply,
                Command::Touch {
                    key,
                    exptime,
                    noreply: false,
                },
            ),
            Command::Delete { key, noreply: true } => (
                Silence::NoReply,
                Command::Delete {
                    key,
                    noreply: false,
                },
            ),
            Command::TooLarge {
                key,
                remove_existing,
                noreply: true,
            } => (
                Silence::NoReply,
                Command::TooLarge {
                    key,
                    remove_existing,
                    noreply: false,
                },
            ),
            Command::FlushAll {
                delay,
                noreply: true,
            } => (
                Silence::NoReply,
                Command::FlushAll {
                    delay,
                    noreply: false,
                },
            ),
            Command::MetaGet(m) if m.flags.quiet => (Silence::Quiet, Command::MetaGet(loud(m))),
            Command::MetaSet { meta, data } if meta.flags.quiet => (
                Silence::Quiet,
                Command::MetaSet {
                    meta: loud(meta),
                    data,
                },
            ),
            Command::MetaDelete(m) if m.flags.quiet => {
                (Silence::Quiet, Command::MetaDelete(loud(m)))
            }
            Command::MetaArith(m) if m.flags.quiet => (Silence::Quiet, Command::MetaArith(loud(m))),
            other => (Silence::None, other),
        }
    }

    /// The reply the client gets for the cluster's `result`.
    pub fn apply(self, result: Result<Response, Error>) -> Reply {
        match (self, result) {
            (Silence::NoReply, _) => Reply::Silent,
            (Silence::Quiet, Ok(Response::Meta(m)))
                if matches!(m.code, MetaCode::Header | MetaCode::Miss) =>
            {
                Reply::Silent
            }
            (_, Ok(r)) => Reply::Send(r),
            (_, Err(e)) => Reply::Send(e.to_response()),
        }
    }
}

fn loud(mut meta: Meta) -> Meta {
    meta.flags.remove(b'q');
    meta
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn noreply_is_taken_off_and_applied_to_the_reply() {
        let (silence, cmd) = Silence::take(Command::Delete {
            key: Bytes::from_static(b"k"),
            noreply: true,
        });
        assert_eq!(silence, Silence::NoReply);
        assert!(!cmd.noreply());
        assert_eq!(silence.apply(Err(Error::Timeout)), Reply::Silent);
    }

    #[test]
    fn quiet_drops_nominal_replies_but_not_errors() {
        let mut meta = Meta {
            key: Bytes::from_static(b"k"),
            flags: Default::default(),
        };
        meta.flags.set(b'q', Bytes::new()).unwrap();
        let (silence, cmd) = Silence::take(Command::MetaDelete(meta));
        let Command::MetaDelete(m) = cmd else {
            panic!("still md")
        };
        assert!(!m.flags.quiet && !m.flags.has(b'q'));
        let hd = Response::Meta(zonecache_proto::MetaResponse {
            code: MetaCode::Header,
            flags: Vec::new(),
            value: None,
        });
        assert_eq!(silence.apply(Ok(hd)), Reply::Silent);
        assert_eq!(
            silence.apply(Err(Error::UnknownCommand)),
            Reply::Send(Response::Error)
        );
    }
}
