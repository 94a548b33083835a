//! The production incident (`INCIDENT.md`), replayed against a target.
//!
//! Ten health-check connections that were accepted and then went silent
//! forever (the lost RSTs), the load balancer's RST probe every 2 seconds,
//! and a real client pinging every 200 ms on a fresh connection, against the
//! real `uploader` with 10 workers and no read timeout. The answer is how many
//! of the real pings pass. Each ping has a 1-second bound, like an impatient
//! client.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::client::dial;
use crate::client::Writes;
use crate::idle::ping_once;
use crate::probes::{probe_source, rst_probe};

/// Silent connections, as many as the backend's workers.
pub const SILENT: usize = 10;
/// The SLB's health-check period.
pub const PROBE_EVERY: Duration = Duration::from_secs(2);
/// A real ping this often.
pub const PING_EVERY: Duration = Duration::from_millis(200);
/// Bound on opening a silent connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// What one replay saw.
#[derive(Debug, Clone, Default)]
pub struct Replay {
    pub pings: u64,
    pub passed: u64,
    pub silent_held: usize,
    pub rst_probes: u64,
    /// The first failure, to show how real clients fail.
    pub first_failure: Option<String>,
}

/// Replays the incident against `addr` for `length`.
pub fn replay(addr: SocketAddr, length: Duration, writes: Writes) -> Replay {
    // The leaked probes come from the probe range, as they did in production.
    let silent: Vec<_> = (0..SILENT)
        .filter_map(|i| dial(addr, Some(probe_source(200 + i as u64)), CONNECT_TIMEOUT).ok())
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let mut sent = 0u64;
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                if Instant::now() >= next {
                    if rst_probe(addr, probe_source(sent)) {
                        sent += 1;
                    }
                    next += PROBE_EVERY;
                }
                thread::sleep(Duration::from_millis(20));
            }
            sent
        })
    };
    let started = Instant::now();
    let mut pings = Vec::new();
    let mut tick = started + PING_EVERY;
    while tick <= started + length {
        let now = Instant::now();
        if tick > now {
            thread::sleep(tick - now);
        }
        pings.push(thread::spawn(move || ping_once(addr, writes)));
        tick += PING_EVERY;
    }
    let mut replay = Replay {
        silent_held: silent.len(),
        ..Replay::default()
    };
    for p in pings {
        replay.pings += 1;
        match p.join() {
            Ok(Ok(_)) => replay.passed += 1,
            Ok(Err(e)) => {
                replay.first_failure.get_or_insert(e);
            }
            Err(_) => {
                replay
                    .first_failure
                    .get_or_insert("ping thread panicked".to_string());
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    replay.rst_probes = prober.join().unwrap_or(0);
    drop(silent);
    replay
}
