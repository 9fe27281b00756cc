//! A round-robin TCP proxy in front of several instances, as a load balancer without session
//! affinity: each new client connection goes to the next instance in turn, so a docker or
//! skopeo push (several connections) lands on all of them.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

pub struct RoundRobinProxy {
    /// `127.0.0.1:PORT` clients connect to.
    pub addr: String,
    /// Connections sent to each backend so far, in the order of `backends`.
    counts: Arc<Vec<AtomicUsize>>,
    stopped: Arc<AtomicBool>,
}

impl RoundRobinProxy {
    /// Listens on a free loopback port and forwards to `backends` (`host:port` each).
    pub fn start(backends: &[&str]) -> RoundRobinProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the round-robin proxy");
        let addr = listener.local_addr().expect("proxy address").to_string();
        let backends: Vec<String> = backends.iter().map(|b| b.to_string()).collect();
        let counts = Arc::new((0..backends.len()).map(|_| AtomicUsize::new(0)).collect::<Vec<_>>());
        let stopped = Arc::new(AtomicBool::new(false));
        let (counts2, stopped2) = (counts.clone(), stopped.clone());
        thread::spawn(move || {
            let mut next = 0usize;
            for client in listener.incoming() {
                if stopped2.load(Ordering::Acquire) {
                    return;
                }
                let Ok(client) = client else { continue };
                let i = next % backends.len();
                next += 1;
                counts2[i].fetch_add(1, Ordering::Relaxed);
                let Ok(upstream) = TcpStream::connect(&backends[i]) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = upstream.set_nodelay(true);
                pipe(client.try_clone().expect("clone"), upstream.try_clone().expect("clone"));
                pipe(upstream, client);
            }
        });
        RoundRobinProxy { addr, counts, stopped }
    }

    /// Connections each backend got so far.
    pub fn connections(&self) -> Vec<usize> {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect()
    }
}

/// Copies `from` to `to` on a thread of its own until `from` ends.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

impl Drop for RoundRobinProxy {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::Release);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(&self.addr);
    }
}
