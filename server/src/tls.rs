//! TLS for the client and batch ports: which files make the server's
//! identity (certificate chain, key, and the CA that client certificates
//! must chain to for mutual TLS), the oldest protocol version allowed, and
//! the rustls configuration made from them. The configuration is re-read on
//! SIGHUP or `refresh_certs` without touching open connections: a handshake
//! takes the configuration current when it starts.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedProtocolVersion};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub use crate::config::{TlsFiles, TlsMinVersion as MinVersion};

static TLS12_AND_UP: [&SupportedProtocolVersion; 2] =
    [&rustls::version::TLS13, &rustls::version::TLS12];
static TLS13_ONLY: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS13];

fn versions(min: MinVersion) -> &'static [&'static SupportedProtocolVersion] {
    match min {
        MinVersion::Tls12 => &TLS12_AND_UP,
        MinVersion::Tls13 => &TLS13_ONLY,
    }
}

impl TlsFiles {
    /// Reads the files and builds a server configuration; the error says
    /// which file is wrong and how.
    pub fn server_config(&self) -> Result<ServerConfig, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = read_certs(&self.cert)?;
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|e| {
            format!(
                "TLS key {}: {e} (a PEM private key is needed)",
                self.key.display()
            )
        })?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions(self.min_version))
            .map_err(|e| format!("TLS versions: {e}"))?;
        let builder = match &self.client_ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for cert in read_certs(ca)? {
                    roots
                        .add(cert)
                        .map_err(|e| format!("TLS client CA {}: {e}", ca.display()))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| format!("TLS client CA {}: {e}", ca.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        builder.with_single_cert(certs, key).map_err(|e| {
            format!(
                "TLS certificate {} and key {} do not make an identity: {e}",
                self.cert.display(),
                self.key.display()
            )
        })
    }
}

fn read_certs(path: &PathBuf) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("TLS certificates {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "TLS certificates {}: no PEM certificate in the file",
            path.display()
        ));
    }
    Ok(certs)
}

/// The configuration handshakes use now, and how to re-read it.
pub struct Tls {
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
}

impl Tls {
    /// Loads `files` once; a node does not start with a broken identity.
    pub fn load(files: TlsFiles) -> Result<Tls, String> {
        let config = files.server_config()?;
        Ok(Tls {
            files,
            current: RwLock::new(Arc::new(config)),
        })
    }

    /// Re-reads the files. On error the running configuration stays.
    pub fn reload(&self) -> Result<(), String> {
        let config = Arc::new(self.files.server_config()?);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = config;
        Ok(())
    }

    /// The configuration for a handshake starting now.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The files it was made from (for `stats settings`).
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }
}
