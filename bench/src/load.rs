//! Closed-loop load: N client connections, each making one call after
//! another, measured over windows.
//!
//! A [`Session`] connects every client first. Then it runs one or more
//! slices, each a warm-up followed by a measured window: the calls that
//! *complete* inside a window are counted and their latencies kept, while
//! the caller samples the servers' CPU at the window's edges. Between
//! slices the clients are parked, connections open and idle, so the bench
//! can measure another target in between: slices of several targets taken
//! in turn see the same phases of the VM (bench/README.md, eleventh round).
//! At the end the clients' sockets are shut down from outside, which also
//! frees clients still stuck waiting for a backend that never served them
//! (the 10-worker case).

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::client::{Conn, Writes};
use crate::upload_call::EncodedUpload;

/// Bound on connecting a client.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on one call's read or write; a client blocked longer is not
/// served, and the session's end frees it anyway.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for all clients to report their connect outcome.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a slice's end waits for clients to finish the call they are
/// in and park. A client still in a call after it is one its target never
/// answers (a 10-worker backend's queue); the next slice goes on without it.
const PARK_TIMEOUT: Duration = Duration::from_secs(2);

/// Clients wait, connected, for the next slice.
const PAUSE: u8 = 0;
const WARMUP: u8 = 1;
const MEASURE: u8 = 2;
const STOP: u8 = 3;

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
    let mut session = Session::start(addr, clients, call, writes);
    session.slice(warmup, window, hooks);
    session.finish()
}

/// Where the clients are told what to do, and where they park between
/// slices.
struct Gate {
    phase: AtomicU8,
    /// Clients parked, and clients whose thread still runs.
    parked: AtomicUsize,
    running: AtomicUsize,
    lock: Mutex<()>,
    changed: Condvar,
}

impl Gate {
    fn phase(&self) -> u8 {
        self.phase.load(Ordering::Acquire)
    }

    fn set(&self, phase: u8) {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.phase.store(phase, Ordering::Release);
        self.changed.notify_all();
    }

    /// A client waits here while the phase is [`PAUSE`].
    fn park(&self) {
        let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.parked.fetch_add(1, Ordering::AcqRel);
        while self.phase() == PAUSE {
            guard = self
                .changed
                .wait_timeout(guard, Duration::from_secs(1))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        self.parked.fetch_sub(1, Ordering::AcqRel);
    }

    /// Waits, at most `bound`, until every running client is parked.
    fn await_parked(&self, bound: Duration) {
        let deadline = Instant::now() + bound;
        while self.parked.load(Ordering::Acquire) < self.running.load(Ordering::Acquire)
            && Instant::now() < deadline
        {
            thread::sleep(Duration::from_millis(1));
        }
    }
}

/// `clients` connections to one target, kept open across slices.
pub struct Session {
    gate: Arc<Gate>,
    handles: Arc<Mutex<Vec<TcpStream>>>,
    threads: Vec<JoinHandle<ClientResult>>,
    /// The measured windows' lengths, summed.
    measured: Duration,
}

impl Session {
    /// Connects `clients` clients to `addr` (waiting at most
    /// [`START_TIMEOUT`] for all to report) and parks them.
    pub fn start(addr: SocketAddr, clients: usize, call: &Call, writes: Writes) -> Session {
        let gate = Arc::new(Gate {
            phase: AtomicU8::new(PAUSE),
            parked: AtomicUsize::new(0),
            running: AtomicUsize::new(clients),
            lock: Mutex::new(()),
            changed: Condvar::new(),
        });
        let handles: Arc<Mutex<Vec<TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
        let ready = Arc::new(AtomicUsize::new(0));
        let threads = (0..clients)
            .map(|_| {
                let (gate, handles, ready) =
                    (Arc::clone(&gate), Arc::clone(&handles), Arc::clone(&ready));
                let call = call.clone();
                thread::spawn(move || {
                    let result = client_loop(addr, &call, writes, &gate, &handles, &ready);
                    gate.running.fetch_sub(1, Ordering::AcqRel);
                    result
                })
            })
            .collect();
        let deadline = Instant::now() + START_TIMEOUT;
        while ready.load(Ordering::Acquire) < clients && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        Session {
            gate,
            handles,
            threads,
            measured: Duration::ZERO,
        }
    }

    /// One slice: the clients call for `warmup`, then for a measured
    /// `window` (with `hooks` run at its edges), then park.
    pub fn slice(&mut self, warmup: Duration, window: Duration, hooks: &mut dyn Window) {
        self.gate.set(WARMUP);
        thread::sleep(warmup);
        hooks.opened();
        let start = Instant::now();
        self.gate.set(MEASURE);
        thread::sleep(window);
        self.gate.set(PAUSE);
        self.measured += start.elapsed();
        hooks.closed();
        self.gate.await_parked(PARK_TIMEOUT);
    }

    /// Stops the clients and sums up what the slices measured.
    pub fn finish(mut self) -> Outcome {
        self.stop_clients();
        let mut outcome = Outcome {
            window: self.measured,
            ..Outcome::default()
        };
        for t in std::mem::take(&mut self.threads) {
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

    /// Tells the clients to stop and shuts their sockets down, which frees
    /// any stuck in a call; parked ones wake and leave. The handles are
    /// closed as they are shut down, so the `Drop` that follows `finish`
    /// finds none left.
    fn stop_clients(&self) {
        self.gate.set(STOP);
        let handles = std::mem::take(&mut *self.handles.lock().unwrap_or_else(|e| e.into_inner()));
        for h in handles {
            let _ = h.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for Session {
    /// A session dropped without [`finish`](Session::finish) (an error
    /// returned between slices, a panic) still ends its clients, which
    /// would otherwise wait parked for good with their connections open.
    /// Their threads end on their own; nobody waits for them.
    fn drop(&mut self) {
        self.stop_clients();
    }
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
    gate: &Gate,
    handles: &Mutex<Vec<TcpStream>>,
    ready: &AtomicUsize,
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
        match gate.phase() {
            STOP => break,
            PAUSE => {
                gate.park();
                continue;
            }
            _ => {}
        }
        let started = Instant::now();
        let r = match call {
            Call::Ping => conn.ping(),
            Call::Upload(upload) => conn.send_upload(upload),
        };
        let elapsed = started.elapsed();
        let p = gate.phase();
        match r {
            Ok(()) if p == MEASURE => result.latencies_ns.push(elapsed.as_nanos() as u64),
            Ok(()) => {}
            Err(e) => {
                // Errors caused by the session's end shutting the socket
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::atomic::AtomicU64;
    use uploader_idl::{UploadRequest, UploadResult, UploaderSyncHandler, UploaderSyncProcessor};

    /// Answers pings and counts them.
    struct Counting(Arc<AtomicU64>);

    impl UploaderSyncHandler for Counting {
        fn handle_ping(&self) -> thrift::Result<String> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Ok("pong".to_string())
        }

        fn handle_upload(&self, req: UploadRequest) -> thrift::Result<UploadResult> {
            let size = req.data.len() as i64;
            Ok(UploadResult::new(
                String::new(),
                String::new(),
                size,
                None,
                None,
            ))
        }

        fn handle_touch(&self, _note: String) -> thrift::Result<()> {
            Ok(())
        }
    }

    /// A server of `workers` threads counting the pings it answers.
    fn counting_server(workers: usize) -> (SocketAddr, Arc<AtomicU64>) {
        let listener = Arc::new(TcpListener::bind("127.0.0.1:0").expect("bind"));
        let addr = listener.local_addr().expect("addr");
        let pings = Arc::new(AtomicU64::new(0));
        for _ in 0..workers {
            let (listener, pings) = (Arc::clone(&listener), Arc::clone(&pings));
            // Ends with the test process.
            thread::spawn(move || {
                let processor = UploaderSyncProcessor::new(Counting(pings));
                while let Ok((stream, _)) = listener.accept() {
                    crate::responder::serve(&processor, stream);
                }
            });
        }
        (addr, pings)
    }

    #[derive(Default)]
    struct Edges {
        opened: u32,
        closed: u32,
    }

    impl Window for Edges {
        fn opened(&mut self) {
            self.opened += 1;
        }
        fn closed(&mut self) {
            self.closed += 1;
        }
    }

    #[test]
    fn clients_call_only_in_slices_and_only_windows_are_counted() {
        let (addr, pings) = counting_server(2);
        let mut session = Session::start(addr, 2, &Call::Ping, Writes::One);
        thread::sleep(Duration::from_millis(100));
        assert_eq!(
            pings.load(Ordering::Relaxed),
            0,
            "clients call before a slice"
        );
        let mut edges = Edges::default();
        let (warmup, window) = (Duration::from_millis(50), Duration::from_millis(150));
        session.slice(warmup, window, &mut edges);
        let after_first = pings.load(Ordering::Relaxed);
        assert!(after_first > 0, "no call in the first slice");
        thread::sleep(Duration::from_millis(150));
        assert_eq!(
            pings.load(Ordering::Relaxed),
            after_first,
            "clients went on calling between slices"
        );
        session.slice(warmup, window, &mut edges);
        let outcome = session.finish();
        assert_eq!((edges.opened, edges.closed), (2, 2));
        assert_eq!(outcome.errors, 0, "{:?}", outcome.first_error);
        assert!(outcome.window >= 2 * window, "{:?}", outcome.window);
        assert!(outcome.window < 2 * window + warmup, "{:?}", outcome.window);
        assert!(
            outcome.per_client.iter().all(|c| *c > 0),
            "{:?}",
            outcome.per_client
        );
        assert_eq!(outcome.latencies_ns.len() as u64, outcome.calls);
        // The warm-ups' calls were answered but not counted.
        assert!(
            outcome.calls < pings.load(Ordering::Relaxed),
            "{} counted of {} answered",
            outcome.calls,
            pings.load(Ordering::Relaxed)
        );
    }

    #[test]
    fn a_session_dropped_without_finish_ends_its_clients() {
        let (addr, _) = counting_server(2);
        let mut session = Session::start(addr, 2, &Call::Ping, Writes::One);
        session.slice(
            Duration::ZERO,
            Duration::from_millis(50),
            &mut Edges::default(),
        );
        let gate = Arc::clone(&session.gate);
        assert_eq!(gate.running.load(Ordering::Acquire), 2);
        drop(session);
        let deadline = Instant::now() + Duration::from_secs(5);
        while gate.running.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            gate.running.load(Ordering::Acquire),
            0,
            "clients still parked 5 s after their session was dropped"
        );
    }

    #[test]
    fn a_client_its_target_never_answers_does_not_hold_the_session_up() {
        // One worker, two clients: the second waits in the accept queue
        // for good, in its first call, and never parks.
        let (addr, _) = counting_server(1);
        let mut session = Session::start(addr, 2, &Call::Ping, Writes::One);
        let started = Instant::now();
        session.slice(
            Duration::ZERO,
            Duration::from_millis(100),
            &mut Edges::default(),
        );
        assert!(started.elapsed() < PARK_TIMEOUT + Duration::from_secs(1));
        let outcome = session.finish();
        let served = outcome.per_client.iter().filter(|c| **c > 0).count();
        assert_eq!(served, 1, "{:?}", outcome.per_client);
        assert_eq!(
            outcome.errors, 0,
            "the session's end is not the target's error"
        );
    }
}
