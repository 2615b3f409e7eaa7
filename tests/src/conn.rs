//! A blocking connection for byte-level tests: bounded reads, and a sync
//! marker that tells where the replies to a batch of requests end.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use bytes::BytesMut;
use zonecache_proto::{parse_response, Response};

/// How long a single reply may take.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A blocking client connection for byte-level tests.
pub struct Conn {
    stream: TcpStream,
    /// Counter making each sync marker unique.
    sync: u64,
}

impl Conn {
    /// Connects with bounded timeouts.
    pub fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect_timeout(&addr, REPLY_TIMEOUT).expect("connect");
        stream
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .expect("timeout");
        stream
            .set_write_timeout(Some(REPLY_TIMEOUT))
            .expect("timeout");
        let _ = stream.set_nodelay(true);
        Conn { stream, sync: 0 }
    }

    /// Sends raw bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Reads until the accumulated reply ends with `end` (bounded by the timeout).
    pub fn read_until(&mut self, end: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 64 * 1024];
        while !out.ends_with(end) {
            match self.stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => panic!(
                    "reading reply: {e}; got so far {:?}",
                    String::from_utf8_lossy(&out)
                ),
            }
        }
        out
    }

    /// Reads while `more` says the bytes so far are not the whole reply
    /// (bounded by the timeout; stops at a close).
    pub fn read_while(&mut self, mut more: impl FnMut(&[u8]) -> bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 64 * 1024];
        while more(&out) {
            match self.stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => panic!("reading reply: {e}; got so far {out:?}"),
            }
        }
        out
    }

    /// Whether nothing arrives within `wait` (then the connection is as
    /// before; bytes that do arrive are dropped).
    pub fn nothing_within(&mut self, wait: Duration) -> bool {
        self.stream.set_read_timeout(Some(wait)).expect("timeout");
        let mut buf = [0u8; 1024];
        let quiet = match self.stream.read(&mut buf) {
            Ok(_) => false,
            Err(e) => matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        };
        self.stream
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .expect("timeout");
        quiet
    }

    /// Proves the cluster secret on this connection, as a peer link does
    /// (the client's `credential.rs`): from then on it is peer traffic,
    /// applied where it lands. Panics unless the node proves it too and
    /// takes the proof.
    pub fn prove(&mut self, secret: &zonecache_client::ClusterSecret) {
        use zonecache_client::ClusterSecret;
        let ours = ClusterSecret::nonce();
        self.send(format!("zc_challenge {ours}\r\n").as_bytes());
        let line = self.read_until(b"\r\n");
        let Ok(Some(Response::Challenge { nonce, proof })) =
            parse_response(&mut BytesMut::from(&line[..]))
        else {
            panic!(
                "answer to zc_challenge: {:?}",
                String::from_utf8_lossy(&line)
            );
        };
        let hello = secret
            .answer(&ours, &nonce, &proof)
            .expect("the node's proof checks");
        let mut bytes = BytesMut::new();
        hello.encode(&mut bytes);
        self.send(&bytes);
        assert_eq!(self.read_until(b"\r\n"), b"OK\r\n");
    }

    /// A `stats` value. Read without the sync marker, which is itself a read
    /// and would show in read counters.
    pub fn stat(&mut self, name: &str) -> u64 {
        self.group_stat("", name)
    }

    /// A value of `stats <group>` (`""`: plain `stats`), read the same way.
    pub fn group_stat(&mut self, group: &str, name: &str) -> u64 {
        self.send(format!("stats {group}").trim_end().as_bytes());
        self.send(b"\r\n");
        let reply = String::from_utf8_lossy(&self.read_until(b"END\r\n")).to_string();
        reply
            .lines()
            .find_map(|l| l.strip_prefix(&format!("STAT {name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in stats {group}"))
    }

    /// Sends `bytes` then a sync marker (a meta miss with a unique opaque,
    /// which no step can produce by itself), and returns everything before
    /// the marker's reply.
    pub fn request(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.sync += 1;
        let marker = format!("EN Ozcsync{}\r\n", self.sync);
        self.send(bytes);
        self.send(format!("mg zc:sync:marker Ozcsync{}\r\n", self.sync).as_bytes());
        let mut out = self.read_until(marker.as_bytes());
        out.truncate(out.len().saturating_sub(marker.len()));
        out
    }

    /// Half-closes and reads everything until the server closes.
    pub fn finish(mut self) -> Vec<u8> {
        let _ = self.stream.shutdown(Shutdown::Write);
        self.read_to_close()
    }

    /// Reads until the server closes the connection.
    pub fn read_to_close(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 64 * 1024];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return out,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return out,
                Err(e) => panic!(
                    "waiting for close: {e}; got {:?}",
                    String::from_utf8_lossy(&out)
                ),
            }
        }
    }
}
