//! A node's address as the config writes it: an IP and port, or a DNS name
//! and port. Names are resolved when a connection is made, and again on
//! every reconnect, because a node replaced under the same name (a
//! Kubernetes pod of a StatefulSet) comes back at another IP.

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use serde::{Deserialize, Serialize};

/// `host:port`, where host is an IP (v6 in brackets) or a DNS name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeAddr {
    host: String,
    port: u16,
    /// The host, when it is an IP (no lookup needed).
    ip: Option<IpAddr>,
}

impl NodeAddr {
    /// Parses `host:port`.
    pub fn parse(text: &str) -> Result<NodeAddr, String> {
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(addr.into());
        }
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| format!("address {text:?} has no port (host:port)"))?;
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("address {text:?}: bad port {port:?}"))?;
        let name_ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
        if !name_ok {
            return Err(format!("address {text:?}: {host:?} is no IP or DNS name"));
        }
        Ok(NodeAddr {
            host: host.to_string(),
            port,
            ip: None,
        })
    }

    /// The host: an IP or a DNS name (what a TLS certificate names).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address when the host is an IP; `None` for a DNS name.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.ip.map(|ip| SocketAddr::new(ip, self.port))
    }

    /// The same host at another port.
    pub fn with_port(&self, port: u16) -> NodeAddr {
        NodeAddr {
            port,
            ..self.clone()
        }
    }

    /// Resolves the address now (blocking; for tools, not the runtime).
    pub fn resolve(&self) -> std::io::Result<SocketAddr> {
        if let Some(addr) = self.socket_addr() {
            return Ok(addr);
        }
        (self.host.as_str(), self.port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| no_address(&self.host))
    }

    /// Resolves the address now, on the async runtime.
    #[cfg(not(loom))]
    pub async fn lookup(&self) -> std::io::Result<SocketAddr> {
        if let Some(addr) = self.socket_addr() {
            return Ok(addr);
        }
        tokio::net::lookup_host((self.host.as_str(), self.port))
            .await?
            .next()
            .ok_or_else(|| no_address(&self.host))
    }
}

impl NodeAddr {
    /// Whether a connection to the address is refused within `within`
    /// (no process listens there); false when it connects, times out or
    /// cannot be resolved.
    #[cfg(not(loom))]
    pub async fn refuses(&self, within: std::time::Duration) -> bool {
        let Ok(Ok(addr)) = tokio::time::timeout(within, self.lookup()).await else {
            return false;
        };
        matches!(
            tokio::time::timeout(within, tokio::net::TcpStream::connect(addr)).await,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused
        )
    }
}

fn no_address(host: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::NotFound,
        format!("{host} resolves to no address"),
    )
}

impl From<SocketAddr> for NodeAddr {
    fn from(addr: SocketAddr) -> NodeAddr {
        NodeAddr {
            host: addr.ip().to_string(),
            port: addr.port(),
            ip: Some(addr.ip()),
        }
    }
}

impl TryFrom<String> for NodeAddr {
    type Error = String;
    fn try_from(text: String) -> Result<NodeAddr, String> {
        NodeAddr::parse(&text)
    }
}

impl From<NodeAddr> for String {
    fn from(addr: NodeAddr) -> String {
        addr.to_string()
    }
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.socket_addr() {
            Some(addr) => write!(f, "{addr}"),
            None => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ips_and_names_parse_and_print_back() {
        for text in [
            "127.0.0.1:11211",
            "[::1]:11211",
            "zc-a-0.zc-a.cache.svc.cluster.local:11211",
            "localhost:1",
        ] {
            let addr = NodeAddr::parse(text).unwrap();
            assert_eq!(addr.to_string(), text);
        }
        assert_eq!(
            NodeAddr::parse("127.0.0.1:11211").unwrap().socket_addr(),
            Some("127.0.0.1:11211".parse().unwrap())
        );
        assert_eq!(NodeAddr::parse("localhost:5").unwrap().socket_addr(), None);
        for bad in ["localhost", "host:port", ":11211", "a b:1", "host:70000"] {
            assert!(NodeAddr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_name_resolves() {
        let addr = NodeAddr::parse("localhost:11211").unwrap();
        assert_eq!(addr.resolve().unwrap().port(), 11211);
        assert!(addr.resolve().unwrap().ip().is_loopback());
    }
}
