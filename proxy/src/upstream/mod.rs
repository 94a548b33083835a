//! The backends behind probegate: their slots, pooled connections, health,
//! and the queue in front of them.
//!
//! A thread-per-connection Thrift server can serve exactly as many
//! connections as it has worker threads, so probegate treats those threads as
//! slots and never asks for more. Client calls (or, in connection mode,
//! client connections) take a slot through one bounded FIFO queue; the
//! forwarding layer (`crate::forward`) then uses a pooled connection of that
//! backend. Health checks decide which backends receive traffic, and
//! [`Upstream::serving`] tells the edge whether to answer "healthy".
//!
//! # Layout
//!
//! - `queue`: slots per backend and the FIFO queue of waiters.
//! - `pool`: idle connections per backend, connect, reap.
//! - `backend`: one backend's address, dialect, pool and rise/fall state.
//! - `call`: one call on one connection (write, read one reply).
//! - `lane`: quick calls pipelined on one connection.
//! - `piped`: large call bodies held in kernel pipes, moved with splice.
//! - `pipes`: the pipes those bodies use, emptied and kept between calls.
//! - `health`: the active `ping()` checks and the pool reaper.
//! - `metrics`: the upstream metric families.

use std::sync::Arc;

use prometheus::Registry;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

pub mod backend;
pub mod call;
pub mod health;
pub mod lane;
pub mod metrics;
pub mod piped;
pub mod pipes;
pub mod pool;
pub mod queue;

pub use backend::{Backend, Flip, State};
pub use call::{exchange, CallError, Outgoing, Reply};
pub use metrics::UpstreamMetrics;
pub use queue::{AcquireError, Slot};

use health::CheckResult;
use pool::Pool;
use queue::{Scheduler, SchedulerMetrics};

/// Everything behind the public port's Thrift path.
pub struct Upstream {
    /// The configuration the upstream was built from (timeouts, limits,
    /// forwarding and health settings are read from here).
    pub config: Config,
    /// In config order; a [`Slot`]'s backend index points in here.
    pub backends: Vec<Backend>,
    pub(crate) scheduler: Arc<Scheduler>,
    pub metrics: UpstreamMetrics,
    /// Request bytes buffered across all clients (`limits.max_buffered_bytes`):
    /// one permit per byte, taken as bytes are read.
    pub buffer_budget: Arc<tokio::sync::Semaphore>,
    /// The pipes large calls' bodies are received into (`piped`).
    pub pipes: Arc<pipes::PipePool>,
    serving: watch::Sender<bool>,
    /// Raised when a pipelined connection opens or gets room again, so that
    /// pipelinable calls waiting for a slot can join it instead
    /// (`crate::upstream::lane`). One waiter is woken per event; a waiter
    /// that joins wakes the next, so a freed place costs one or two
    /// wake-ups however many calls wait (waking them all made every reply
    /// cost a wake-up per queued call under overload).
    pub(crate) lane_room: tokio::sync::Notify,
    /// Waiters woken by `lane_room`, for the tests of the above.
    #[cfg(test)]
    pub(crate) lane_room_wakes: std::sync::atomic::AtomicUsize,
}

impl Upstream {
    /// Builds the backends from `config.backends` and registers the upstream
    /// metrics. Every backend starts in the unknown state (no traffic) until
    /// its first check, which [`Upstream::spawn_health_checks`] runs at once.
    pub fn new(config: &Config, registry: &Registry) -> Result<Arc<Upstream>, prometheus::Error> {
        let labels: Vec<String> = config
            .backends
            .iter()
            .map(|b| b.address.to_string())
            .collect();
        let metrics = UpstreamMetrics::new(registry, &labels)?;
        let backends: Vec<Backend> = config
            .backends
            .iter()
            .zip(&labels)
            .map(|(b, label)| {
                let pool = Pool::new(
                    b.address,
                    config.timeouts.connect.get(),
                    config.forwarding.pool_idle.get(),
                    metrics.pool_connections.with_label_values(&[label, "idle"]),
                    metrics.pool_connections.with_label_values(&[label, "busy"]),
                );
                Backend::new(
                    b.address,
                    b.max_connections,
                    b.flavor(),
                    pool,
                    lane::Lanes::new(metrics.pipelined_total.with_label_values(&[label])),
                    metrics
                        .backend_requests_in_flight
                        .with_label_values(&[label]),
                    metrics.backend_up.with_label_values(&[label]),
                )
            })
            .collect();
        let scheduler = Scheduler::new(
            backends.iter().map(|b| b.max_connections).collect(),
            config.limits.max_queue,
            config.timeouts.queue.get(),
            SchedulerMetrics {
                slots_in_use: labels
                    .iter()
                    .map(|l| metrics.slots_in_use.with_label_values(&[l]))
                    .collect(),
                queue_depth: metrics.queue_depth.clone(),
                queue_wait_seconds: metrics.queue_wait_seconds.clone(),
            },
        );
        let budget = config
            .limits
            .max_buffered_bytes
            .min(tokio::sync::Semaphore::MAX_PERMITS);
        let pipes = Arc::new(pipes::PipePool::new(
            config.forwarding.kept_pipe_bytes,
            Some(pipes::PipeMetrics {
                kept: metrics.pipes_kept.clone(),
                made: metrics.pipes_made.clone(),
            }),
        ));
        Ok(Arc::new(Upstream {
            config: config.clone(),
            backends,
            scheduler,
            metrics,
            buffer_budget: Arc::new(tokio::sync::Semaphore::new(budget)),
            pipes,
            serving: watch::Sender::new(false),
            lane_room: tokio::sync::Notify::new(),
            #[cfg(test)]
            lane_room_wakes: std::sync::atomic::AtomicUsize::new(0),
        }))
    }

    /// Starts one health-check task per backend (the first check runs at
    /// once) and the pool reaper; all stop when `shutdown` fires.
    pub fn spawn_health_checks(self: &Arc<Self>, shutdown: CancellationToken) {
        for index in 0..self.backends.len() {
            tokio::spawn(health::run(Arc::clone(self), index, shutdown.clone()));
        }
        tokio::spawn(health::reap(Arc::clone(self), shutdown));
    }

    /// Follows whether at least one backend is up.
    pub fn serving(&self) -> watch::Receiver<bool> {
        self.serving.subscribe()
    }

    /// Whether at least one backend is up now.
    pub fn is_serving(&self) -> bool {
        *self.serving.borrow()
    }

    /// The state of every backend and of the queue, for `/status`.
    pub fn status(&self) -> serde_json::Value {
        let backends: Vec<serde_json::Value> = self
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| {
                serde_json::json!({
                    "address": b.label,
                    "up": b.state() == State::Up,
                    "state": match b.state() {
                        State::Up => "up",
                        State::Down => "down",
                        State::Unknown => "unknown",
                    },
                    "slots_in_use": self.scheduler.in_use(i),
                    "max": b.max_connections,
                    "in_flight": b.in_flight.get(),
                    "pool_idle": b.pool.idle_count(),
                    "pipelined_connections": b.lanes.active_count(),
                    "flavor": b.flavor.to_string(),
                })
            })
            .collect();
        serde_json::json!({
            "backends": backends,
            "queue_depth": self.scheduler.queue_depth(),
            "max_queue": self.config.limits.max_queue,
            "mode": match self.config.forwarding.mode {
                crate::config::ForwardingMode::Request => "request",
                crate::config::ForwardingMode::Connection => "connection",
            },
        })
    }

    /// Takes a slot on the least loaded backend that is up (FIFO queue).
    pub async fn acquire(self: &Arc<Self>) -> Result<Slot, AcquireError> {
        self.scheduler.acquire().await
    }

    /// Records an active check's result.
    pub(crate) fn record_check(&self, index: usize, result: &CheckResult) {
        let backend = &self.backends[index];
        self.metrics
            .health_checks_total
            .with_label_values(&[&backend.label, result.label()])
            .inc();
        let success = !matches!(result, CheckResult::Failure(_));
        if let CheckResult::Failure(reason) = result {
            tracing::debug!(backend = %backend.label, %reason, "health check failed");
        }
        self.apply(index, success, result_reason(result));
    }

    /// Records a failure of real traffic (a failed connect, a call that died
    /// in flight or timed out): it counts toward `health.fall` like a
    /// failed check.
    pub fn report_failure(&self, index: usize, reason: &str) {
        self.apply(index, false, reason);
    }

    fn apply(&self, index: usize, success: bool, reason: &str) {
        let backend = &self.backends[index];
        let health = &self.config.health;
        match backend.record(success, health.rise, health.fall) {
            Flip::None => return,
            Flip::Up => {
                tracing::info!(backend = %backend.label, "backend is up");
                backend.up_gauge.set(1);
                self.scheduler.set_up(index, true);
            }
            Flip::Down => {
                tracing::warn!(backend = %backend.label, %reason, "backend is down");
                backend.up_gauge.set(0);
                self.scheduler.set_up(index, false);
            }
        }
        let any = self.scheduler.any_up();
        self.serving.send_if_modified(|s| {
            let changed = *s != any;
            *s = any;
            changed
        });
    }
}

fn result_reason(result: &CheckResult) -> &str {
    match result {
        CheckResult::Failure(reason) => reason,
        _ => "",
    }
}

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
