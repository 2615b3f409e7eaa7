//! The node's side of a peer link's challenge–response (the exchange is
//! described in the client's `credential.rs`). A connection is peer
//! traffic — applied where it lands, never routed — only once it has
//! proved the cluster secret; until then every `zc_` peer command is an
//! unknown command to it, as it is to stock memcached.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use zonecache_client::ClusterSecret;
use zonecache_proto::{Command, Response};

use crate::stats::ServerStats;

/// One connection's progress through the handshake.
#[derive(Debug, Default)]
pub struct PeerAuth {
    /// The caller's nonce and ours, between `zc_challenge` and `zc_peer`.
    pending: Option<(Bytes, String)>,
    /// Proved the secret: the connection is a peer link.
    proved: bool,
}

impl PeerAuth {
    /// Whether the connection proved the cluster secret.
    pub fn is_peer(&self) -> bool {
        self.proved
    }

    /// Answers `zc_challenge` and `zc_peer`; `secret` is the cluster's
    /// (`None` on a node without a cluster, which answers `ERROR`, as
    /// stock memcached does). Each challenge allows one proof.
    pub fn answer(
        &mut self,
        cmd: &Command,
        secret: Option<&ClusterSecret>,
        stats: &ServerStats,
        client: SocketAddr,
    ) -> Response {
        let Some(secret) = secret else {
            return Response::Error;
        };
        match cmd {
            Command::PeerChallenge { nonce } if ClusterSecret::is_nonce(nonce) => {
                let ours = ClusterSecret::nonce();
                let proof = secret.node_proof(nonce, ours.as_bytes());
                self.pending = Some((nonce.clone(), ours.clone()));
                Response::Challenge {
                    nonce: Bytes::from(ours),
                    proof: Bytes::from(proof),
                }
            }
            Command::PeerHello { proof } => {
                let proved = self.pending.take().is_some_and(|(theirs, ours)| {
                    secret.verify_caller(&theirs, ours.as_bytes(), proof)
                });
                if proved {
                    self.proved = true;
                    stats.peer_links_accepted.fetch_add(1, Ordering::Relaxed);
                    Response::Ok
                } else {
                    stats.peer_links_refused.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        %client,
                        "refused a peer link: no valid proof of the cluster secret \
                         (a node or client with another secret, or not a zonecache node)"
                    );
                    Response::Error
                }
            }
            _ => Response::Error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> SocketAddr {
        "127.0.0.1:1".parse().unwrap()
    }

    fn challenge(auth: &mut PeerAuth, secret: &ClusterSecret, caller: &str) -> (Bytes, Bytes) {
        let counters = ServerStats::default();
        let cmd = Command::PeerChallenge {
            nonce: Bytes::from(caller.to_string()),
        };
        match auth.answer(&cmd, Some(secret), &counters, client()) {
            Response::Challenge { nonce, proof } => (nonce, proof),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn only_a_fresh_proof_with_the_secret_makes_a_peer() {
        let secret = ClusterSecret::new(b"sixteen or more bytes").unwrap();
        let other = ClusterSecret::new(b"sixteen or more bytez").unwrap();
        let counters = ServerStats::default();
        let caller = ClusterSecret::nonce();
        let hello = |proof: String| Command::PeerHello {
            proof: Bytes::from(proof),
        };

        // The node proves itself to a caller holding the secret.
        let mut auth = PeerAuth::default();
        let (ours, proof) = challenge(&mut auth, &secret, &caller);
        assert!(secret.verify_node(caller.as_bytes(), &ours, &proof));
        // A wrong secret is refused, and the challenge is used up.
        let wrong = other.caller_proof(caller.as_bytes(), &ours);
        let right = secret.caller_proof(caller.as_bytes(), &ours);
        assert_eq!(
            auth.answer(&hello(wrong), Some(&secret), &counters, client()),
            Response::Error
        );
        assert_eq!(
            auth.answer(&hello(right.clone()), Some(&secret), &counters, client()),
            Response::Error
        );
        assert!(!auth.is_peer());
        assert_eq!(counters.peer_links_refused.load(Ordering::Relaxed), 2);

        // A proof from another connection's challenge does not carry over.
        let mut replay = PeerAuth::default();
        challenge(&mut replay, &secret, &caller);
        assert_eq!(
            replay.answer(&hello(right), Some(&secret), &counters, client()),
            Response::Error
        );

        let mut auth = PeerAuth::default();
        let (ours, _) = challenge(&mut auth, &secret, &caller);
        let right = secret.caller_proof(caller.as_bytes(), &ours);
        assert_eq!(
            auth.answer(&hello(right), Some(&secret), &counters, client()),
            Response::Ok
        );
        assert!(auth.is_peer());
        assert_eq!(counters.peer_links_accepted.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn without_a_cluster_or_with_a_bad_nonce_it_is_an_unknown_command() {
        let secret = ClusterSecret::new(b"sixteen or more bytes").unwrap();
        let counters = ServerStats::default();
        let mut auth = PeerAuth::default();
        let good = Command::PeerChallenge {
            nonce: Bytes::from(ClusterSecret::nonce()),
        };
        assert_eq!(
            auth.answer(&good, None, &counters, client()),
            Response::Error
        );
        let short = Command::PeerChallenge {
            nonce: Bytes::from_static(b"00"),
        };
        assert_eq!(
            auth.answer(&short, Some(&secret), &counters, client()),
            Response::Error
        );
    }
}
