//! TLS for the tests: a throwaway PKI (a CA, server certificates for
//! 127.0.0.1, a client certificate), written as PEM files the way an
//! operator would hand them to a node, and a blocking rustls client.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, Certificate, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// A CA and what it signed, kept in memory and written to `dir`.
pub struct Pki {
    ca: Certificate,
    ca_key: KeyPair,
    pub dir: PathBuf,
}

/// A certificate and its key, as DER (for a client) and as PEM files.
pub struct Identity {
    pub cert: CertificateDer<'static>,
    key: Vec<u8>,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl Identity {
    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone()))
    }
}

impl Pki {
    /// A new CA, its certificate in `dir/ca.pem`.
    pub fn new(dir: &Path) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "zonecache test CA");
        let ca_key = KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        Pki {
            ca,
            ca_key,
            dir: dir.to_path_buf(),
        }
    }

    /// The CA's certificate file.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A certificate named `name` for 127.0.0.1 and localhost, signed by
    /// the CA, in `dir/<name>.pem` and `dir/<name>.key`.
    pub fn issue(&self, name: &str) -> Identity {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        let cert_file = self.dir.join(format!("{name}.pem"));
        let key_file = self.dir.join(format!("{name}.key"));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        Identity {
            cert: cert.der().clone(),
            key: key.serialize_der(),
            cert_file,
            key_file,
        }
    }

    /// A client configuration trusting this CA, presenting `client` if
    /// given, speaking only TLS 1.2 if `tls12_only`.
    pub fn client_config(&self, client: Option<&Identity>, tls12_only: bool) -> Arc<ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let versions: &[&rustls::SupportedProtocolVersion] = if tls12_only {
            &[&rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots);
        Arc::new(match client {
            Some(id) => builder
                .with_client_auth_cert(vec![id.cert.clone()], id.key())
                .unwrap(),
            None => builder.with_no_client_auth(),
        })
    }
}

/// A blocking TLS connection with reply timeouts.
pub struct TlsConn {
    stream: StreamOwned<ClientConnection, TcpStream>,
}

impl TlsConn {
    /// Connects and completes the handshake, or says why it failed.
    pub fn open(addr: SocketAddr, config: Arc<ClientConfig>) -> Result<TlsConn, String> {
        let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(crate::REPLY_TIMEOUT)).unwrap();
        let name = ServerName::IpAddress(addr.ip().into());
        let conn = ClientConnection::new(config, name).map_err(|e| e.to_string())?;
        let mut stream = StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream
                .conn
                .complete_io(&mut stream.sock)
                .map_err(|e| e.to_string())?;
        }
        Ok(TlsConn { stream })
    }

    /// The certificate the server presented.
    pub fn server_cert(&self) -> CertificateDer<'static> {
        self.stream.conn.peer_certificates().unwrap()[0].clone()
    }

    /// Sends `bytes` and reads until the reply ends with `end`; `Err` when
    /// the connection fails or closes first.
    pub fn request(&mut self, bytes: &[u8], end: &[u8]) -> Result<Vec<u8>, String> {
        self.stream.write_all(bytes).map_err(|e| e.to_string())?;
        self.stream.flush().map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while !out.ends_with(end) {
            match self.stream.read(&mut buf) {
                Ok(0) => return Err(format!("closed after {:?}", String::from_utf8_lossy(&out))),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(out)
    }
}
