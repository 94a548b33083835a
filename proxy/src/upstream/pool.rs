//! Pooled connections to one backend.
//!
//! Connections are opened lazily (bounded by `timeouts.connect`), reused
//! for one call at a time, and closed after `forwarding.pool_idle` unused so
//! that the backend's own read timeout never closes them first. The pool
//! never opens more connections than its backend has slots: a connection is
//! only opened by a slot holder who found no idle one, so idle plus busy
//! connections never exceed `max_connections` (see `Scheduler`).
//!
//! An idle connection the backend closed (EOF or stray bytes seen at
//! checkout) is discarded silently; the caller never sees it.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prometheus::IntGauge;
use tokio::net::TcpStream;

/// Why a backend connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {addr} timed out after timeouts.connect={}", humantime::format_duration(*.limit))]
    Timeout { addr: SocketAddr, limit: Duration },
    #[error("connect to {addr}: {source}")]
    Io { addr: SocketAddr, source: io::Error },
}

struct Idle {
    stream: TcpStream,
    since: Instant,
}

/// The idle connections of one backend and the gauges describing them.
pub struct Pool {
    addr: SocketAddr,
    connect_timeout: Duration,
    idle_timeout: Duration,
    idle: Mutex<Vec<Idle>>,
    idle_gauge: IntGauge,
    busy_gauge: IntGauge,
}

/// A backend connection checked out of the pool. Dropping it closes it;
/// `Pool::checkin` returns it for reuse.
pub struct PooledConn {
    stream: Option<TcpStream>,
    /// Whether the connection served earlier calls (a write failure on it
    /// means it died while idle, not that the backend refuses the call).
    pub reused: bool,
    pool: Arc<Pool>,
}

impl PooledConn {
    pub fn stream(&mut self) -> &mut TcpStream {
        // Only `into_stream` and `Drop` take the stream, both consuming self.
        self.stream
            .as_mut()
            .expect("PooledConn holds its stream until consumed")
    }

    /// Takes the stream out of the pool's accounting for good (connection
    /// mode relays it and closes it at the end).
    pub fn into_stream(mut self) -> TcpStream {
        self.pool.busy_gauge.dec();
        self.stream
            .take()
            .expect("PooledConn holds its stream until consumed")
    }
}

impl Drop for PooledConn {
    fn drop(&mut self) {
        if self.stream.take().is_some() {
            self.pool.busy_gauge.dec();
        }
    }
}

impl Pool {
    pub fn new(
        addr: SocketAddr,
        connect_timeout: Duration,
        idle_timeout: Duration,
        idle_gauge: IntGauge,
        busy_gauge: IntGauge,
    ) -> Arc<Pool> {
        Arc::new(Pool {
            addr,
            connect_timeout,
            idle_timeout,
            idle: Mutex::new(Vec::new()),
            idle_gauge,
            busy_gauge,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A live idle connection, if there is one. Expired and dead ones are
    /// closed on the way.
    pub fn checkout(self: &Arc<Self>) -> Option<PooledConn> {
        let mut idle = self.lock();
        while let Some(entry) = idle.pop() {
            self.idle_gauge.set(idle.len() as i64);
            if entry.since.elapsed() >= self.idle_timeout || !looks_alive(&entry.stream) {
                tracing::debug!(backend = %self.addr, "discarding dead or expired pooled connection");
                continue;
            }
            self.busy_gauge.inc();
            return Some(PooledConn {
                stream: Some(entry.stream),
                reused: true,
                pool: Arc::clone(self),
            });
        }
        None
    }

    /// Opens a new connection, bounded by `timeouts.connect`.
    pub async fn connect(self: &Arc<Self>) -> Result<PooledConn, ConnectError> {
        let addr = self.addr;
        let stream =
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(source)) => return Err(ConnectError::Io { addr, source }),
                Err(_) => {
                    return Err(ConnectError::Timeout {
                        addr,
                        limit: self.connect_timeout,
                    })
                }
            };
        // Small calls (ping) must not wait for Nagle.
        let _ = stream.set_nodelay(true);
        self.busy_gauge.inc();
        Ok(PooledConn {
            stream: Some(stream),
            reused: false,
            pool: Arc::clone(self),
        })
    }

    /// An idle connection if one is alive, else a new one.
    pub async fn get(self: &Arc<Self>) -> Result<PooledConn, ConnectError> {
        match self.checkout() {
            Some(conn) => Ok(conn),
            None => self.connect().await,
        }
    }

    /// Returns a connection whose last call completed cleanly.
    pub fn checkin(&self, mut conn: PooledConn) {
        if let Some(stream) = conn.stream.take() {
            self.busy_gauge.dec();
            let mut idle = self.lock();
            idle.push(Idle {
                stream,
                since: Instant::now(),
            });
            self.idle_gauge.set(idle.len() as i64);
        }
    }

    /// Closes idle connections unused for `forwarding.pool_idle`; returns
    /// when the next one would expire.
    pub fn reap(&self) -> Option<Instant> {
        let mut idle = self.lock();
        idle.retain(|entry| entry.since.elapsed() < self.idle_timeout);
        self.idle_gauge.set(idle.len() as i64);
        idle.iter().map(|e| e.since + self.idle_timeout).min()
    }

    /// Idle connections held now.
    pub fn idle_count(&self) -> usize {
        self.lock().len()
    }
}

/// An idle connection must have nothing to read: EOF means the backend
/// closed it, stray bytes mean it is out of step. Either way it is dead.
fn looks_alive(stream: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    match stream.try_read(&mut probe) {
        Err(e) => e.kind() == io::ErrorKind::WouldBlock,
        Ok(_) => false,
    }
}
