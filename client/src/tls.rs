//! TLS between the cluster's own parties: the config's `[peer_tls]` names
//! the CA that nodes' certificates chain to and, for mutual TLS, the
//! certificate a node (or a direct-mode client) presents. Peer links and
//! direct-mode clients then connect to the nodes' `tls_addr` ports and
//! check each node's certificate against the host that address names.
//!
//! ```toml
//! [peer_tls]
//! ca = "ca.pem"        # relative to the config file's folder
//! cert = "node.pem"    # optional, with key: presented to nodes that
//! key = "node.key"     # require a client certificate (--tls-client-ca)
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

/// The config's `[peer_tls]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PeerTls {
    /// PEM CA certificates the nodes' certificates must chain to.
    pub ca: PathBuf,
    /// PEM certificate chain presented to the nodes (mutual TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// Its PEM private key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
}

impl PeerTls {
    /// The same files, relative paths taken from `folder`.
    pub fn relative_to(&self, folder: &Path) -> PeerTls {
        PeerTls {
            ca: folder.join(&self.ca),
            cert: self.cert.as_ref().map(|p| folder.join(p)),
            key: self.key.as_ref().map(|p| folder.join(p)),
        }
    }

    /// Reads the files into a client configuration (TLS 1.2 and 1.3, on
    /// ring as the nodes' side); the error names the file and what is
    /// wrong with it.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, String> {
        if self.cert.is_some() != self.key.is_some() {
            return Err("peer_tls: give both `cert` and `key`, or neither".into());
        }
        let mut roots = RootCertStore::empty();
        for cert in read_certs(&self.ca)? {
            roots
                .add(cert)
                .map_err(|e| format!("peer_tls ca {}: {e}", self.ca.display()))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("peer_tls: {e}"))?
            .with_root_certificates(roots);
        let config = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let chain = read_certs(cert)?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                    format!("peer_tls key {}: {e} (a PEM private key)", key.display())
                })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("peer_tls cert {}: {e}", cert.display()))?
            }
            _ => builder.with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }
}

impl PeerTls {
    /// A checksum of the files' contents (an unreadable file counts as
    /// empty), so a reload can tell a rotated certificate from the same one.
    pub fn digest(&self) -> u32 {
        let mut hasher = crc32fast::Hasher::new();
        for path in [Some(&self.ca), self.cert.as_ref(), self.key.as_ref()]
            .into_iter()
            .flatten()
        {
            hasher.update(&std::fs::read(path).unwrap_or_default());
        }
        hasher.finalize()
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e} (PEM certificates are needed)", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}
