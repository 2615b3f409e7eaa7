//! The cluster secret, and the challenge–response that proves it when a
//! peer link opens.
//!
//! A node applies a peer's writes where they land, without routing them,
//! and lets peers dump its store, take its leases and drain its zone; so
//! only a holder of the cluster's secret may open a peer link. The secret
//! itself never crosses the wire: both sides send a fresh nonce and prove
//! the secret with an HMAC-SHA256 over both nonces, each proof labelled by
//! its side so one side's proof is never valid as the other's.
//!
//! ```text
//! caller → node:  zc_challenge <caller nonce>
//! node → caller:  ZC_CHALLENGE <node nonce> <HMAC("zonecache node v1", caller nonce, node nonce)>
//! caller → node:  zc_peer <HMAC("zonecache peer v1", caller nonce, node nonce)>
//! node → caller:  OK          (anything else, or a bad proof: ERROR)
//! ```

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use std::fmt;
use std::path::Path;
use zonecache_proto::Command;

/// Random bytes in a nonce (sent as 32 hex digits).
pub const NONCE_BYTES: usize = 16;
/// The shortest secret accepted: 128 bits of a random secret.
pub const MIN_SECRET_BYTES: usize = 16;
const NODE_LABEL: &[u8] = b"zonecache node v1";
const CALLER_LABEL: &[u8] = b"zonecache peer v1";

/// The secret every node of a cluster (and every direct-mode client) holds.
/// Its `Debug` form never shows it.
#[derive(Clone)]
pub struct ClusterSecret {
    key: hmac::Key,
}

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterSecret(…)")
    }
}

impl ClusterSecret {
    /// A secret from its text; whitespace around it (a file's last newline)
    /// is not part of it.
    pub fn new(secret: &[u8]) -> Result<ClusterSecret, String> {
        let secret = secret.trim_ascii();
        if secret.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "the cluster secret has {} bytes; use at least {MIN_SECRET_BYTES} random ones \
                 (e.g. `head -c 32 /dev/urandom | base64`)",
                secret.len()
            ));
        }
        Ok(ClusterSecret {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        })
    }

    /// Reads a secret file (its whole contents, whitespace trimmed).
    pub fn read(path: &Path) -> Result<ClusterSecret, String> {
        let text = std::fs::read(path)
            .map_err(|e| format!("cluster secret file {}: {e}", path.display()))?;
        ClusterSecret::new(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// A new random secret, as text for a secret file (64 hex digits).
    pub fn generate() -> String {
        let mut bytes = [0u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .expect("the system's random source works");
        hex(&bytes)
    }

    /// A fresh nonce (hex).
    pub fn nonce() -> String {
        let mut bytes = [0u8; NONCE_BYTES];
        SystemRandom::new()
            .fill(&mut bytes)
            .expect("the system's random source works");
        hex(&bytes)
    }

    /// Whether `nonce` has a nonce's shape: 32 hex digits.
    pub fn is_nonce(nonce: &[u8]) -> bool {
        nonce.len() == 2 * NONCE_BYTES && nonce.iter().all(u8::is_ascii_hexdigit)
    }

    /// The caller's side after the node's `ZC_CHALLENGE`: checks the node's
    /// nonce and proof for our nonce `ours`, and gives the `zc_peer` to
    /// send (`None`: the node did not prove the secret). The one check
    /// every caller — pooled link, operator tool, test — makes.
    pub fn answer(&self, ours: &str, theirs: &[u8], proof: &[u8]) -> Option<Command> {
        let proved =
            ClusterSecret::is_nonce(theirs) && self.verify_node(ours.as_bytes(), theirs, proof);
        proved.then(|| Command::PeerHello {
            proof: self.caller_proof(ours.as_bytes(), theirs).into(),
        })
    }

    /// The node's proof for a challenge.
    pub fn node_proof(&self, caller_nonce: &[u8], node_nonce: &[u8]) -> String {
        self.sign(NODE_LABEL, caller_nonce, node_nonce)
    }

    /// The caller's proof for a challenge.
    pub fn caller_proof(&self, caller_nonce: &[u8], node_nonce: &[u8]) -> String {
        self.sign(CALLER_LABEL, caller_nonce, node_nonce)
    }

    /// Whether `proof` is the node's proof for these nonces (in constant time).
    pub fn verify_node(&self, caller_nonce: &[u8], node_nonce: &[u8], proof: &[u8]) -> bool {
        self.verify(NODE_LABEL, caller_nonce, node_nonce, proof)
    }

    /// Whether `proof` is the caller's proof for these nonces (in constant time).
    pub fn verify_caller(&self, caller_nonce: &[u8], node_nonce: &[u8], proof: &[u8]) -> bool {
        self.verify(CALLER_LABEL, caller_nonce, node_nonce, proof)
    }

    fn message(label: &[u8], caller_nonce: &[u8], node_nonce: &[u8]) -> Vec<u8> {
        [label, b"\0", caller_nonce, b"\0", node_nonce].concat()
    }

    fn sign(&self, label: &[u8], caller_nonce: &[u8], node_nonce: &[u8]) -> String {
        let tag = hmac::sign(&self.key, &Self::message(label, caller_nonce, node_nonce));
        hex(tag.as_ref())
    }

    fn verify(&self, label: &[u8], caller_nonce: &[u8], node_nonce: &[u8], proof: &[u8]) -> bool {
        let Some(tag) = unhex(proof) else {
            return false;
        };
        let message = Self::message(label, caller_nonce, node_nonce);
        hmac::verify(&self.key, &message, &tag).is_ok()
    }
}

#[cfg(not(loom))]
pub use handshake::{prove, Handshake};

/// The caller's side of the exchange, on a client connection (not in the
/// loom build, which has no networking).
#[cfg(not(loom))]
mod handshake {
    use std::time::Duration;

    use bytes::Bytes;
    use zonecache_proto::{Command, Response};

    use super::ClusterSecret;
    use crate::conn::Connection;
    use crate::error::Error;

    /// What the far end of a new connection turned out to be.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Handshake {
        /// A cluster node that proved the secret and took ours: the link is
        /// peer traffic.
        Peer,
        /// A server with no cluster (stock memcached, a lone zonecached): it
        /// routes nothing, so plain traffic is what it applies where it lands.
        NoCluster,
    }

    /// Proves `secret` on a new connection and checks the node proves it too.
    pub async fn prove(
        c: &Connection,
        secret: &ClusterSecret,
        deadline: Duration,
    ) -> Result<Handshake, Error> {
        let ours = ClusterSecret::nonce();
        let challenge = Command::PeerChallenge {
            nonce: Bytes::from(ours.clone()),
        };
        let (theirs, proof) = match c.call(&challenge, deadline).await {
            Ok(Response::Challenge { nonce, proof }) => (nonce, proof),
            Err(Error::UnknownCommand) => return Ok(Handshake::NoCluster),
            Ok(other) => {
                return Err(Error::Protocol(format!(
                    "unexpected answer to zc_challenge: {other:?}"
                )))
            }
            Err(e) => return Err(e),
        };
        let Some(hello) = secret.answer(&ours, &theirs, &proof) else {
            return Err(Error::Connection(
                "the node did not prove the cluster secret: do both configs name the same secret?"
                    .into(),
            ));
        };
        match c.call(&hello, deadline).await {
            Ok(Response::Ok) => Ok(Handshake::Peer),
            Err(Error::UnknownCommand) => Err(Error::Connection(
                "the node refused our proof of the cluster secret".into(),
            )),
            Ok(other) => Err(Error::Protocol(format!(
                "unexpected answer to zc_peer: {other:?}"
            ))),
            Err(e) => Err(e),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &[u8]) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_check_only_with_the_same_secret_and_side() {
        let a = ClusterSecret::new(b"0123456789abcdef0123\n").unwrap();
        let same = ClusterSecret::new(b"  0123456789abcdef0123").unwrap();
        let other = ClusterSecret::new(b"0123456789abcdef0124").unwrap();
        let (caller, node) = (ClusterSecret::nonce(), ClusterSecret::nonce());
        let (caller, node) = (caller.as_bytes(), node.as_bytes());
        let proof = a.node_proof(caller, node);
        assert_eq!(proof.len(), 64);
        assert!(same.verify_node(caller, node, proof.as_bytes()));
        assert!(!other.verify_node(caller, node, proof.as_bytes()));
        // The node's proof is not the caller's, nor valid for other nonces.
        assert!(!a.verify_caller(caller, node, proof.as_bytes()));
        assert!(!a.verify_node(node, caller, proof.as_bytes()));
        assert!(a.verify_caller(caller, node, a.caller_proof(caller, node).as_bytes()));
        assert!(!a.verify_caller(caller, node, b"zz"));
        assert!(!a.verify_caller(caller, node, b""));
    }

    #[test]
    fn short_secrets_and_bad_nonces_are_refused() {
        assert!(ClusterSecret::new(b"short\n").is_err());
        assert!(ClusterSecret::new(ClusterSecret::generate().as_bytes()).is_ok());
        assert!(ClusterSecret::is_nonce(ClusterSecret::nonce().as_bytes()));
        assert!(!ClusterSecret::is_nonce(b"0123"));
        assert!(!ClusterSecret::is_nonce(&[b'g'; 32]));
        assert_ne!(ClusterSecret::nonce(), ClusterSecret::nonce());
    }
}
