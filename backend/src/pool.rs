//! The Thrift listener: an accept loop feeding a fixed pool of worker threads.
//!
//! Like Apache Thrift's `TThreadPoolServer`, exactly `server.workers` threads
//! serve connections, one connection per worker for as long as it lives. This
//! is deliberately the incident's model: probegate exists to protect servers
//! built this way. Two things differ from the `thrift` crate's `TServer`:
//!
//! - every accepted socket gets `TCP_NODELAY` and the configured read and
//!   write timeouts, so a silent client holds a worker for at most
//!   `server.read_timeout` (unless that is `"0s"`, which reproduces the
//!   incident);
//! - the accept loop takes a free worker *before* calling `accept()`, so when
//!   every worker is busy new connections wait in the kernel's listen backlog
//!   (as they did in the incident) instead of piling up in an unbounded
//!   userspace queue.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::connection::{self, ConnectionContext};

/// After a failed `accept()` (e.g. out of file descriptors), wait this long
/// before trying again so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Bound on the loopback connect that wakes a blocked `accept()` at shutdown.
const WAKE_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Socket options applied to every accepted connection.
#[derive(Debug, Clone, Copy)]
pub struct SocketOptions {
    pub read_timeout: Option<Duration>,
    pub write_timeout: Option<Duration>,
}

/// Free workers, and whether the pool is stopping. The accept loop waits on
/// `changed` for either.
#[derive(Debug)]
struct Slots {
    free: Mutex<usize>,
    changed: Condvar,
    stopping: AtomicBool,
}

impl Slots {
    /// Takes a free worker, waiting as long as it takes; `false` when stopping.
    fn acquire(&self) -> bool {
        let Ok(mut free) = self.free.lock() else {
            return false;
        };
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                return false;
            }
            if *free > 0 {
                *free -= 1;
                return true;
            }
            free = match self.changed.wait(free) {
                Ok(guard) => guard,
                Err(_) => return false,
            };
        }
    }

    fn release(&self) {
        if let Ok(mut free) = self.free.lock() {
            *free += 1;
        }
        self.changed.notify_all();
    }

    /// Sleeps for `pause` unless the pool starts stopping first.
    fn pause(&self, pause: Duration) {
        if let Ok(free) = self.free.lock() {
            if !self.stopping.load(Ordering::SeqCst) {
                let _ = self.changed.wait_timeout(free, pause);
            }
        }
    }
}

/// A running pool. Dropping it does not stop it; call `stop`.
#[derive(Debug)]
pub struct ThriftPool {
    slots: Arc<Slots>,
    local_addr: SocketAddr,
    acceptor: Option<JoinHandle<()>>,
}

/// Starts the worker threads and the accept loop on an already-bound listener.
pub fn start(
    listener: TcpListener,
    workers: usize,
    options: SocketOptions,
    ctx: Arc<ConnectionContext>,
) -> io::Result<ThriftPool> {
    let local_addr = listener.local_addr()?;
    let slots = Arc::new(Slots {
        free: Mutex::new(workers),
        changed: Condvar::new(),
        stopping: AtomicBool::new(false),
    });
    // Holds at most `workers` connections, and only ever one per free worker.
    let (tx, rx) = mpsc::sync_channel::<(TcpStream, SocketAddr)>(workers);
    let rx = Arc::new(Mutex::new(rx));
    for id in 0..workers {
        let rx = Arc::clone(&rx);
        let ctx = Arc::clone(&ctx);
        let slots = Arc::clone(&slots);
        thread::Builder::new()
            .name(format!("uploader-worker-{id}"))
            .spawn(move || worker(&rx, &ctx, &slots))?;
    }
    let acceptor = {
        let slots = Arc::clone(&slots);
        let metrics = ctx.metrics.clone();
        thread::Builder::new()
            .name("uploader-accept".to_string())
            .spawn(move || {
                while slots.acquire() {
                    let accepted = listener.accept();
                    if slots.stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    match accepted {
                        Ok((stream, peer)) => {
                            metrics.connections_accepted.inc();
                            if let Err(e) = configure(&stream, options) {
                                tracing::warn!(peer = %peer, error = %e, "cannot set socket options; closing");
                                let _ = stream.shutdown(Shutdown::Both);
                                slots.release();
                                continue;
                            }
                            if tx.send((stream, peer)).is_err() {
                                break;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            slots.release();
                            slots.pause(ACCEPT_ERROR_BACKOFF);
                        }
                    }
                }
                tracing::debug!("accept loop stopped");
            })?
    };
    Ok(ThriftPool {
        slots,
        local_addr,
        acceptor: Some(acceptor),
    })
}

fn configure(stream: &TcpStream, options: SocketOptions) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(options.read_timeout)?;
    stream.set_write_timeout(options.write_timeout)?;
    Ok(())
}

fn worker(rx: &Mutex<Receiver<(TcpStream, SocketAddr)>>, ctx: &ConnectionContext, slots: &Slots) {
    loop {
        // The lock is held only while waiting for the next connection.
        let next = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok((stream, peer)) = next else {
            return;
        };
        ctx.metrics.workers_busy.inc();
        let span = tracing::debug_span!("connection", peer = %peer);
        // A bug that panics while serving one connection must not cost the
        // pool a worker for good: the connection is dropped, the worker stays.
        let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            span.in_scope(|| connection::serve(stream, peer, ctx))
        }));
        if served.is_err() {
            tracing::error!(peer = %peer, "serving a connection panicked; connection dropped");
        }
        ctx.metrics.workers_busy.dec();
        slots.release();
    }
}

impl ThriftPool {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting and waits for the accept loop to end. Workers finish
    /// their current connection (or are abandoned when the process exits).
    pub fn stop(&mut self) {
        self.slots.stopping.store(true, Ordering::SeqCst);
        self.slots.changed.notify_all();
        // The accept loop may be blocked in accept(): give it a connection.
        let mut wake = self.local_addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(if wake.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        let _ = TcpStream::connect_timeout(&wake, WAKE_CONNECT_TIMEOUT);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}
