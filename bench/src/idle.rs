//! Thousands of client connections held open without a byte sent: what do
//! they cost the proxy (RSS) and the backend (connections, workers)?
//!
//! Connections come from 16 loopback source addresses (127.0.1.1-16) so that
//! no single source passes probegate's default per-source limit (1,024). They
//! are opened by several threads with a short connect timeout under one
//! overall deadline: straight at a thread-per-connection backend the accept
//! queue fills and further connects stall, which is part of the answer.
//! While they are held, one real `ping` on a fresh connection says whether the
//! target still serves.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use socket2::Socket;

use crate::client::{dial, Conn, Writes};

/// Bound on one connect: past the kernel's SYN retransmissions at 1 s and
/// 3 s, so a burst that overflows a listen backlog is retried, not lost.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(3500);
/// Bound on opening all the connections. The workload runs the proxies
/// with a 30 s first-byte wait, so connections opened early are still
/// held when the last ones arrive and RSS is read.
const OPEN_DEADLINE: Duration = Duration::from_secs(8);
/// Threads opening connections.
const OPENERS: usize = 32;
/// Source addresses used.
const SOURCES: u8 = 16;
/// Bound on the real ping made while the idle clients are held.
const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// The `i`-th idle client's source address.
pub fn idle_source(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1 + (i % SOURCES as usize) as u8))
}

/// Silent connections being held.
pub struct Held {
    sockets: Vec<Socket>,
    pub failed: u64,
    pub open_time: Duration,
}

impl Held {
    pub fn count(&self) -> usize {
        self.sockets.len()
    }

    pub fn close(self) {
        drop(self.sockets);
    }
}

/// Opens up to `n` silent connections to `addr` within the deadline.
pub fn open(addr: SocketAddr, n: usize) -> Held {
    let started = Instant::now();
    let deadline = started + OPEN_DEADLINE;
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let sockets = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let threads: Vec<_> = (0..OPENERS)
        .map(|_| {
            let next = Arc::clone(&next);
            let failed = Arc::clone(&failed);
            let sockets = Arc::clone(&sockets);
            thread::spawn(move || {
                let mut mine = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if i >= n || Instant::now() >= deadline {
                        break;
                    }
                    match dial(addr, Some(idle_source(i)), CONNECT_TIMEOUT) {
                        Ok(s) => mine.push(s),
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                if let Ok(mut all) = sockets.lock() {
                    all.extend(mine);
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let open_time = started.elapsed();
    let sockets = Arc::try_unwrap(sockets)
        .ok()
        .and_then(|m| m.into_inner().ok())
        .unwrap_or_default();
    let failed = failed.load(Ordering::Relaxed);
    Held {
        // Connections never attempted before the deadline count as failed.
        failed: failed.max((n - sockets.len().min(n)) as u64),
        sockets,
        open_time,
    }
}

/// One `ping` on a fresh connection, written as `writes` says: its latency,
/// or why it failed.
pub fn ping_once(addr: SocketAddr, writes: Writes) -> Result<Duration, String> {
    let started = Instant::now();
    let mut conn =
        Conn::open(addr, PING_TIMEOUT, PING_TIMEOUT, writes).map_err(|e| e.to_string())?;
    conn.ping()?;
    Ok(started.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_connections_from_several_sources() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let held = open(addr, 50);
        assert_eq!(held.count(), 50);
        assert_eq!(held.failed, 0);
        let mut sources = std::collections::BTreeSet::new();
        for _ in 0..50 {
            let (_, peer) = listener.accept().expect("accept");
            sources.insert(peer.ip());
        }
        assert_eq!(sources.len(), SOURCES as usize);
        held.close();
    }
}
