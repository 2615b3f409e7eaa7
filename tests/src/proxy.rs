//! A fault-injecting TCP proxy: faults on a connection between two real
//! processes, changed while they talk (`tc netem` is not available here).
//! One proxy stands in front of one listener; every connection it accepts
//! is forwarded to that listener, and each chunk of bytes is passed,
//! delayed or discarded by the fault in force when it arrives.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the proxy does to the traffic through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forwards everything.
    Pass,
    /// Forwards every chunk this much later (both ways, order kept).
    Delay(Duration),
    /// Closes every connection (FIN), and new ones as they come.
    Drop,
    /// Resets every connection (RST), and new ones as they come.
    Reset,
    /// Accepts and never answers: bytes both ways are discarded and
    /// connections stay open.
    Blackhole,
    /// One-way partition: requests are lost, nothing reaches the target.
    LoseRequests,
    /// One-way partition: the target gets and acts on requests, its replies
    /// are lost.
    LoseReplies,
}

/// Which way a chunk goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    ToTarget,
    ToClient,
}

struct Shared {
    fault: Mutex<Fault>,
    /// Open connections: (client side, target side), by number.
    conns: Mutex<HashMap<u64, (TcpStream, TcpStream)>>,
    next: AtomicU64,
    stop: AtomicBool,
}

/// A proxy listening on loopback; stops (closing every connection) when
/// dropped.
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Proxy {
    /// A proxy at `listen` (port 0: any free port) forwarding to `target`.
    pub fn start(listen: SocketAddr, target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind(listen).expect("proxy port");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            fault: Mutex::new(Fault::Pass),
            conns: Mutex::default(),
            next: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let accepting = shared.clone();
        std::thread::spawn(move || accept_loop(listener, target, accepting));
        Proxy { addr, shared }
    }

    /// Puts `fault` in force for every connection, open or new.
    pub fn set(&self, fault: Fault) {
        *lock(&self.shared.fault) = fault;
        if matches!(fault, Fault::Drop | Fault::Reset) {
            let conns: Vec<_> = lock(&self.shared.conns).drain().collect();
            for (_, (client, target)) in conns {
                end(&client, fault);
                end(&target, fault);
            }
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.set(Fault::Drop);
        // Wakes the accept loop so it sees `stop`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(100));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Ends a connection as `fault` says: RST for `Reset` (linger 0, then the
/// pumps' reads end and the last descriptor closes), FIN otherwise.
fn end(s: &TcpStream, fault: Fault) {
    if fault == Fault::Reset {
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: a valid socket descriptor and a correctly sized option.
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                &linger as *const libc::linger as *const libc::c_void,
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
        }
        let _ = s.shutdown(Shutdown::Read);
    } else {
        let _ = s.shutdown(Shutdown::Both);
    }
}

fn accept_loop(listener: TcpListener, target: SocketAddr, shared: Arc<Shared>) {
    for client in listener.incoming() {
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(client) = client else { continue };
        let fault = *lock(&shared.fault);
        if matches!(fault, Fault::Drop | Fault::Reset) {
            end(&client, fault);
            continue;
        }
        let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_millis(500)) else {
            end(&client, Fault::Reset);
            continue;
        };
        let _ = (client.set_nodelay(true), server.set_nodelay(true));
        let id = shared.next.fetch_add(1, Ordering::Relaxed);
        let clones = (client.try_clone(), server.try_clone());
        let (Ok(c2), Ok(s2)) = clones else { continue };
        lock(&shared.conns).insert(id, (client, server));
        for (from, to, way) in [
            (c2.try_clone(), s2.try_clone(), Way::ToTarget),
            (s2.try_clone(), c2.try_clone(), Way::ToClient),
        ] {
            let (Ok(from), Ok(to)) = (from, to) else {
                continue;
            };
            let shared = shared.clone();
            std::thread::spawn(move || pump(id, from, to, way, shared));
        }
    }
}

/// Copies `from` to `to` under the fault in force for each chunk; when
/// either side ends, ends both.
fn pump(id: u64, mut from: TcpStream, mut to: TcpStream, way: Way, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let pass = match *lock(&shared.fault) {
            Fault::Pass => true,
            Fault::Delay(d) => {
                std::thread::sleep(d);
                true
            }
            Fault::LoseRequests => way == Way::ToClient,
            Fault::LoseReplies => way == Way::ToTarget,
            Fault::Drop | Fault::Reset | Fault::Blackhole => false,
        };
        if pass && to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    // A reset must not send FIN first: only wake the other pump, and let
    // the last descriptor's close send RST.
    let how = match *lock(&shared.fault) {
        Fault::Reset => Shutdown::Read,
        _ => Shutdown::Both,
    };
    let _ = (from.shutdown(how), to.shutdown(how));
    lock(&shared.conns).remove(&id);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};

    /// An echo server on a free port: answers each line with the line.
    fn echo() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut w = s.try_clone().unwrap();
                    for line in BufReader::new(s).lines().map_while(Result::ok) {
                        if w.write_all(format!("{line}\n").as_bytes()).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    fn connect(p: &Proxy) -> (TcpStream, BufReader<TcpStream>) {
        let s = TcpStream::connect(p.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let r = BufReader::new(s.try_clone().unwrap());
        (s, r)
    }

    fn ask(c: &mut (TcpStream, BufReader<TcpStream>), line: &str) -> std::io::Result<String> {
        c.0.write_all(format!("{line}\n").as_bytes())?;
        let mut out = String::new();
        match c.1.read_line(&mut out)? {
            0 => Err(std::io::ErrorKind::UnexpectedEof.into()),
            _ => Ok(out.trim_end().to_string()),
        }
    }

    #[test]
    fn faults_change_what_a_live_connection_sees() {
        let p = Proxy::start("127.0.0.1:0".parse().unwrap(), echo());
        let mut c = connect(&p);
        assert_eq!(ask(&mut c, "a").unwrap(), "a");
        p.set(Fault::Blackhole);
        assert!(ask(&mut c, "b").is_err(), "no answer");
        p.set(Fault::Pass);
        let mut c = connect(&p);
        p.set(Fault::Delay(Duration::from_millis(100)));
        let started = std::time::Instant::now();
        assert_eq!(ask(&mut c, "c").unwrap(), "c");
        assert!(started.elapsed() >= Duration::from_millis(200), "both ways");
        p.set(Fault::LoseReplies);
        assert!(ask(&mut c, "d").is_err());
        p.set(Fault::Reset);
        let err = ask(&mut c, "e").unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
        let mut fresh = connect(&p);
        assert!(ask(&mut fresh, "f").is_err(), "new connections reset too");
        p.set(Fault::Pass);
        let mut c = connect(&p);
        assert_eq!(ask(&mut c, "g").unwrap(), "g");
        p.set(Fault::Drop);
        let err = ask(&mut c, "h").unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{err}");
    }
}
