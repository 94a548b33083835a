//! One configured backend: its address and dialect, its connection pool, and
//! the rise/fall state its health checks (active and passive) maintain.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prometheus::IntGauge;

use super::lane::Lanes;
use super::pool::Pool;
use crate::protocols::thrift::Flavor;

/// What the health checks concluded so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No check has finished yet: not used for traffic.
    Unknown,
    Up,
    Down,
}

#[derive(Debug)]
struct Health {
    state: State,
    /// Consecutive successes while down (or unknown).
    successes: u32,
    /// Consecutive failures while up (or unknown).
    failures: u32,
}

/// A state change worth logging and counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flip {
    None,
    Up,
    Down,
}

/// A backend and everything probegate knows about it.
pub struct Backend {
    /// The address as configured; also the `backend` metric label.
    pub addr: SocketAddr,
    pub label: String,
    pub max_connections: usize,
    /// The transport and protocol the backend speaks.
    pub flavor: Flavor,
    pub pool: Arc<Pool>,
    /// Pooled connections now carrying pipelined calls.
    pub lanes: Lanes,
    health: Mutex<Health>,
    /// When a real call last got a reply, in ms since `epoch` (-1: never).
    /// A busy backend whose calls succeed needs no slot for its check.
    last_success_ms: AtomicI64,
    epoch: Instant,
    pub in_flight: IntGauge,
    pub up_gauge: IntGauge,
}

impl Backend {
    pub fn new(
        addr: SocketAddr,
        max_connections: usize,
        flavor: Flavor,
        pool: Arc<Pool>,
        lanes: Lanes,
        in_flight: IntGauge,
        up_gauge: IntGauge,
    ) -> Backend {
        Backend {
            addr,
            label: addr.to_string(),
            max_connections,
            flavor,
            pool,
            lanes,
            health: Mutex::new(Health {
                state: State::Unknown,
                successes: 0,
                failures: 0,
            }),
            last_success_ms: AtomicI64::new(-1),
            epoch: Instant::now(),
            in_flight,
            up_gauge,
        }
    }

    fn health(&self) -> MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn state(&self) -> State {
        self.health().state
    }

    /// Notes that a call on this backend got its reply just now.
    pub fn note_reply(&self) {
        let ms = self.epoch.elapsed().as_millis() as i64;
        self.last_success_ms.store(ms, Ordering::Relaxed);
    }

    /// Whether a call got a reply within `window`.
    pub fn replied_within(&self, window: Duration) -> bool {
        let last = self.last_success_ms.load(Ordering::Relaxed);
        if last < 0 {
            return false;
        }
        let now = self.epoch.elapsed().as_millis() as i64;
        now - last <= window.as_millis() as i64
    }

    /// Records one check result (or passive failure) and says whether the
    /// state flipped. From `Unknown` the first result decides at once.
    pub fn record(&self, success: bool, rise: u32, fall: u32) -> Flip {
        let mut h = self.health();
        if success {
            h.failures = 0;
            h.successes = h.successes.saturating_add(1);
            match h.state {
                State::Up => Flip::None,
                State::Unknown => {
                    h.state = State::Up;
                    Flip::Up
                }
                State::Down if h.successes >= rise => {
                    h.state = State::Up;
                    Flip::Up
                }
                State::Down => Flip::None,
            }
        } else {
            h.successes = 0;
            h.failures = h.failures.saturating_add(1);
            match h.state {
                State::Down => Flip::None,
                State::Unknown => {
                    h.state = State::Down;
                    Flip::Down
                }
                State::Up if h.failures >= fall => {
                    h.state = State::Down;
                    Flip::Down
                }
                State::Up => Flip::None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::thrift::Flavor;

    fn backend() -> Backend {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let pool = Pool::new(
            addr,
            Duration::from_secs(1),
            Duration::from_secs(1),
            IntGauge::new("i", "i").unwrap(),
            IntGauge::new("b", "b").unwrap(),
        );
        Backend::new(
            addr,
            2,
            Flavor::FRAMED_BINARY,
            pool,
            Lanes::new(prometheus::IntCounter::new("p", "p").unwrap()),
            IntGauge::new("f", "f").unwrap(),
            IntGauge::new("u", "u").unwrap(),
        )
    }

    #[test]
    fn first_result_decides_then_rise_and_fall_apply() {
        let b = backend();
        assert_eq!(b.record(true, 2, 3), Flip::Up, "first success: up at once");
        assert_eq!(b.record(false, 2, 3), Flip::None);
        assert_eq!(b.record(false, 2, 3), Flip::None);
        assert_eq!(
            b.record(true, 2, 3),
            Flip::None,
            "a success resets the count"
        );
        assert_eq!(b.record(false, 2, 3), Flip::None);
        assert_eq!(b.record(false, 2, 3), Flip::None);
        assert_eq!(
            b.record(false, 2, 3),
            Flip::Down,
            "third consecutive failure"
        );
        assert_eq!(b.record(false, 2, 3), Flip::None);
        assert_eq!(b.record(true, 2, 3), Flip::None);
        assert_eq!(b.record(true, 2, 3), Flip::Up, "second consecutive success");
        assert_eq!(b.state(), State::Up);

        let b = backend();
        assert_eq!(
            b.record(false, 2, 3),
            Flip::Down,
            "first failure: down at once"
        );
        assert_eq!(b.state(), State::Down);
    }

    #[test]
    fn replied_within_tracks_the_last_reply() {
        let b = backend();
        assert!(!b.replied_within(Duration::from_secs(60)));
        b.note_reply();
        assert!(b.replied_within(Duration::from_secs(60)));
    }
}
