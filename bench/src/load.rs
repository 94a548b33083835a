//! Closed-loop load: N client connections, each making one call after
//! another, measured over a window.
//!
//! Every client thread connects first; once all are connected (or have
//! failed) the run warms up, then a window opens: the calls that *complete*
//! inside it are counted and their latencies kept, while the caller samples
//! the servers' CPU at the window's edges. At the end the clients' sockets
//! are shut down from outside, which also frees clients still stuck waiting
//! for a backend that never served them (the 10-worker case).

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::client::{Conn, Writes};
use crate::upload_call::EncodedUpload;

/// Bound on connecting a client.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on one call's read or write; a client blocked longer is not
/// served, and the window's end frees it anyway.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for all clients to report their connect outcome.
const START_TIMEOUT: Duration = Duration::from_secs(10);

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

/// The call each client repeats.
#[derive(Clone)]
pub enum Call {
    Ping,
    /// An upload, encoded once for every client and call.
    Upload(Arc<EncodedUpload>),
}

impl Call {
    /// Payload bytes moved per call (for MB/s), zero for ping.
    pub fn bytes(&self) -> u64 {
        match self {
            Call::Ping => 0,
            Call::Upload(upload) => upload.payload_len() as u64,
        }
    }
}

/// What a window measured.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Calls completed inside the window.
    pub calls: u64,
    /// Calls that failed inside the window (plus failed connects).
    pub errors: u64,
    /// Latencies of the counted calls, nanoseconds, sorted.
    pub latencies_ns: Vec<u64>,
    /// Calls per client inside the window: who was served at all.
    pub per_client: Vec<u64>,
    /// The window's measured length.
    pub window: Duration,
    /// The first error seen, to explain a run that failed.
    pub first_error: Option<String>,
}

/// Hooks run at the edges of the measurement window (CPU and counter
/// snapshots), on the calling thread.
pub trait Window {
    fn opened(&mut self);
    fn closed(&mut self);
}

/// Runs `clients` connections repeating `call` against `addr`: `warmup`,
/// then a measured `window`.
pub fn run(
    addr: SocketAddr,
    clients: usize,
    call: &Call,
    writes: Writes,
    warmup: Duration,
    window: Duration,
    hooks: &mut dyn Window,
) -> Outcome {
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let handles: Arc<Mutex<Vec<TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
    let ready = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut threads = Vec::with_capacity(clients);
    for _ in 0..clients {
        let phase = Arc::clone(&phase);
        let handles = Arc::clone(&handles);
        let ready = Arc::clone(&ready);
        let call = call.clone();
        threads.push(thread::spawn(move || {
            client_loop(addr, &call, writes, &phase, &handles, &ready)
        }));
    }
    let deadline = Instant::now() + START_TIMEOUT;
    while ready.load(Ordering::Acquire) < clients && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    thread::sleep(warmup);
    hooks.opened();
    let start = Instant::now();
    phase.store(MEASURE, Ordering::Release);
    thread::sleep(window);
    phase.store(STOP, Ordering::Release);
    let measured = start.elapsed();
    hooks.closed();
    if let Ok(handles) = handles.lock() {
        for h in handles.iter() {
            let _ = h.shutdown(std::net::Shutdown::Both);
        }
    }
    let mut outcome = Outcome {
        window: measured,
        ..Outcome::default()
    };
    for t in threads {
        let r = t.join().unwrap_or_else(|_| ClientResult {
            error: Some("client thread panicked".to_string()),
            errors: 1,
            ..ClientResult::default()
        });
        outcome.calls += r.latencies_ns.len() as u64;
        outcome.errors += r.errors;
        outcome.per_client.push(r.latencies_ns.len() as u64);
        outcome.latencies_ns.extend(r.latencies_ns);
        if outcome.first_error.is_none() {
            outcome.first_error = r.error;
        }
    }
    outcome.latencies_ns.sort_unstable();
    outcome
}

#[derive(Default)]
struct ClientResult {
    latencies_ns: Vec<u64>,
    errors: u64,
    error: Option<String>,
}

fn client_loop(
    addr: SocketAddr,
    call: &Call,
    writes: Writes,
    phase: &AtomicU8,
    handles: &Mutex<Vec<TcpStream>>,
    ready: &std::sync::atomic::AtomicUsize,
) -> ClientResult {
    let mut result = ClientResult::default();
    let mut conn = match Conn::open(addr, CONNECT_TIMEOUT, IO_TIMEOUT, writes) {
        Ok(c) => c,
        Err(e) => {
            ready.fetch_add(1, Ordering::Release);
            result.errors = 1;
            result.error = Some(format!("connect {addr}: {e}"));
            return result;
        }
    };
    if let (Ok(mut h), Ok(clone)) = (handles.lock(), conn.handle.try_clone()) {
        h.push(clone);
    }
    ready.fetch_add(1, Ordering::Release);
    loop {
        if phase.load(Ordering::Acquire) == STOP {
            break;
        }
        let started = Instant::now();
        let r = match call {
            Call::Ping => conn.ping(),
            Call::Upload(upload) => conn.send_upload(upload),
        };
        let elapsed = started.elapsed();
        let p = phase.load(Ordering::Acquire);
        match r {
            Ok(()) if p == MEASURE => result.latencies_ns.push(elapsed.as_nanos() as u64),
            Ok(()) => {}
            Err(e) => {
                // Errors caused by the window's end shutting the socket
                // are not errors of the target.
                if p != STOP {
                    result.errors += 1;
                    if result.error.is_none() {
                        result.error = Some(e);
                    }
                }
                // A broken connection stays broken: this client is done.
                break;
            }
        }
    }
    result
}
