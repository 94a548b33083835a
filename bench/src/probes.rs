//! Load-balancer health probes at a fixed rate: the storm a busy SLB sends.
//!
//! Three shapes in turn, from the probe range (127.100.0.0/16, rotating over
//! 64 source addresses so that neither ephemeral ports nor TIME_WAIT run out):
//! - RST: connect, then close with `SO_LINGER` 0 (the Aliyun TCP check);
//! - FIN: connect, then close normally;
//! - HTTP: `HEAD /health`, read whatever comes back, close.
//!
//! Through probegate none of them should ever reach the backend; straight at
//! the backend, or through HAProxy, every one does (the HTTP one even through
//! HAProxy's inspect-delay configuration, because it carries bytes).
//!
//! The storm threads run at Linux's idle scheduling priority (`SCHED_IDLE`):
//! they share the load generator's CPU, and at normal priority the client
//! whose latency is measured would wait behind them, so the p99 would
//! measure the bench as much as the proxy. The achieved rate is reported.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::client::dial;

/// Bound on a probe's connect and on waiting for an HTTP answer.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Behind schedule by more than this, the schedule restarts from now (the
/// probes are then counted as missed, not sent late in a burst).
const MAX_LAG: Duration = Duration::from_millis(50);
/// Source addresses rotated over, all inside the probe range.
const SOURCES: u8 = 64;

/// The shapes of probe, in the order sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Rst,
    Fin,
    Http,
}

const KINDS: [Kind; 3] = [Kind::Rst, Kind::Fin, Kind::Http];

/// Counters shared by the probe threads.
#[derive(Default)]
struct Counters {
    sent: [AtomicU64; 3],
    connect_failed: AtomicU64,
    http_ok: AtomicU64,
    missed: AtomicU64,
}

/// What a storm did.
#[derive(Debug, Clone, Default)]
pub struct StormOutcome {
    /// Probes completed, per kind (RST, FIN, HTTP).
    pub sent: [u64; 3],
    pub connect_failed: u64,
    /// HTTP probes answered `200`.
    pub http_ok: u64,
    /// Probes skipped because the generator fell behind schedule.
    pub missed: u64,
    pub elapsed: Duration,
}

impl StormOutcome {
    pub fn total(&self) -> u64 {
        self.sent.iter().sum()
    }

    pub fn rate(&self) -> f64 {
        self.total() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A storm in progress.
pub struct Storm {
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    threads: Vec<JoinHandle<()>>,
    started: Instant,
}

/// The `i`-th source address of the probe range.
pub fn probe_source(i: u64) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 100, 0, 1 + (i % SOURCES as u64) as u8))
}

impl Storm {
    /// Starts `threads` threads sending `rate` probes per second in all;
    /// with `idle_priority` they run in the `SCHED_IDLE` class (the bench's
    /// measurements; see the module doc).
    pub fn start(addr: SocketAddr, rate: u32, threads: usize, idle_priority: bool) -> Storm {
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let threads = threads.max(1);
        let interval = Duration::from_secs_f64(threads as f64 / f64::from(rate.max(1)));
        let handles = (0..threads)
            .map(|t| {
                let stop = Arc::clone(&stop);
                let counters = Arc::clone(&counters);
                thread::spawn(move || {
                    if idle_priority {
                        lower_to_idle_priority();
                    }
                    let mut n = t as u64;
                    let mut next = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        let now = Instant::now();
                        if next > now {
                            thread::sleep(next - now);
                        } else if now - next > MAX_LAG {
                            let behind =
                                ((now - next).as_secs_f64() / interval.as_secs_f64()) as u64;
                            counters.missed.fetch_add(behind, Ordering::Relaxed);
                            next = now;
                        }
                        next += interval;
                        let kind = KINDS[(n / threads as u64 % 3) as usize];
                        probe(addr, probe_source(n), kind, &counters);
                        n += threads as u64;
                    }
                })
            })
            .collect();
        Storm {
            stop,
            counters,
            threads: handles,
            started: Instant::now(),
        }
    }

    pub fn stop(self) -> StormOutcome {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        let c = &self.counters;
        StormOutcome {
            sent: [0, 1, 2].map(|i| c.sent[i].load(Ordering::Relaxed)),
            connect_failed: c.connect_failed.load(Ordering::Relaxed),
            http_ok: c.http_ok.load(Ordering::Relaxed),
            missed: c.missed.load(Ordering::Relaxed),
            elapsed: self.started.elapsed(),
        }
    }
}

/// Puts the calling thread in the `SCHED_IDLE` class, so that any normal
/// thread on its CPU (the measured client) runs first. Done with
/// util-linux's `chrt` on the thread's id, which keeps the bench free of
/// `unsafe`. Best effort: where it fails, the storm runs at normal priority
/// and says so.
fn lower_to_idle_priority() {
    let tid = std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|link| {
            link.file_name()
                .and_then(|name| name.to_str())
                .map(str::to_string)
        });
    let outcome = match tid {
        Some(tid) => std::process::Command::new("chrt")
            .args(["--idle", "-p", "0", &tid])
            .stdout(std::process::Stdio::null())
            .status()
            .map_err(|e| e.to_string())
            .and_then(|s| s.success().then_some(()).ok_or(s.to_string())),
        None => Err("no /proc/thread-self".to_string()),
    };
    if let Err(why) = outcome {
        eprintln!("bench: probe storm thread stays at normal priority (chrt --idle: {why})");
    }
}

/// Sends one probe of `kind` from `source`.
fn probe(addr: SocketAddr, source: IpAddr, kind: Kind, counters_: &Counters) {
    let socket = match dial(addr, Some(source), PROBE_TIMEOUT) {
        Ok(s) => s,
        Err(_) => {
            counters_.connect_failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    match kind {
        Kind::Rst => {
            // Linger 0: close() sends RST instead of FIN.
            let _ = socket.set_linger(Some(Duration::ZERO));
            drop(socket);
        }
        Kind::Fin => drop(socket),
        Kind::Http => {
            let mut stream: TcpStream = socket.into();
            let _ = stream.set_read_timeout(Some(PROBE_TIMEOUT));
            let _ = stream.set_write_timeout(Some(PROBE_TIMEOUT));
            let request = b"HEAD /health HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n";
            if stream.write_all(request).is_ok() {
                let mut answer = [0u8; 256];
                if let Ok(n) = stream.read(&mut answer) {
                    if is_http_200(&answer[..n]) {
                        counters_.http_ok.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }
    let i = KINDS.iter().position(|k| *k == kind).unwrap_or(0);
    counters_.sent[i].fetch_add(1, Ordering::Relaxed);
}

/// Whether an answer starts with an HTTP 200 status line.
pub fn is_http_200(answer: &[u8]) -> bool {
    answer.starts_with(b"HTTP/1.1 200") || answer.starts_with(b"HTTP/1.0 200")
}

/// Sends one RST probe (used by the incident replay's 2-second checks).
pub fn rst_probe(addr: SocketAddr, source: IpAddr) -> bool {
    let counters = Counters::default();
    probe(addr, source, Kind::Rst, &counters);
    counters.sent[0].load(Ordering::Relaxed) == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_stay_in_the_probe_range() {
        let range: ipnet::IpNet = crate::deploy::PROBE_RANGE.parse().expect("cidr");
        for i in 0..200 {
            assert!(range.contains(&probe_source(i)), "{}", probe_source(i));
        }
        assert_ne!(probe_source(0), probe_source(1));
    }

    #[test]
    fn http_200_detection() {
        assert!(is_http_200(b"HTTP/1.1 200 OK\r\n"));
        assert!(!is_http_200(b"HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(!is_http_200(b""));
    }

    #[test]
    fn a_storm_reaches_a_listener_at_about_its_rate() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&accepted);
        thread::spawn(move || {
            for s in listener.incoming().flatten() {
                counter.fetch_add(1, Ordering::Relaxed);
                drop(s);
            }
        });
        // Normal priority: an idle-class thread gets no CPU on a busy test
        // machine, and this checks the rate, not the priority.
        let storm = Storm::start(addr, 300, 1, false);
        thread::sleep(Duration::from_millis(400));
        let outcome = storm.stop();
        assert!(outcome.total() >= 30, "{outcome:?}");
        assert!(
            outcome.sent.iter().all(|n| *n > 0),
            "all kinds: {outcome:?}"
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while accepted.load(Ordering::Relaxed) < outcome.total() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(accepted.load(Ordering::Relaxed), outcome.total());
    }
}
