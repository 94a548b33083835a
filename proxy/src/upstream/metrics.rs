//! The upstream side's metric families: backends, slots, queue, pool, health
//! checks and per-request outcomes.
//!
//! They are registered on the one explicit registry the admin listener
//! serves. Every label value is bounded: `backend` is an address from the
//! config, `method` one of `uploader_idl::METHOD_NAMES` or `"other"`, and the
//! other labels are the fixed sets named below. Every series is created at
//! start with a zero value so that dashboards and tests see it before the
//! first event.

use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

/// `probegate_requests_total{outcome}` values.
pub const OUTCOMES: [&str; 6] = ["reply", "exception", "oneway", "shed", "timeout", "error"];
/// `probegate_health_checks_total{result}` values.
pub const HEALTH_RESULTS: [&str; 3] = ["success", "failure", "busy_ok"];
/// `probegate_bytes_total{direction}` values.
pub const CLIENT_TO_BACKEND: &str = "client_to_backend";
pub const BACKEND_TO_CLIENT: &str = "backend_to_client";

/// Handles on the upstream metric families.
#[derive(Clone)]
pub struct UpstreamMetrics {
    /// 1 while the backend passes its health checks.
    pub backend_up: IntGaugeVec,
    /// Slots taken (requests in flight, or relayed connections in connection mode).
    pub slots_in_use: IntGaugeVec,
    /// Requests (or connections) waiting for a slot.
    pub queue_depth: IntGauge,
    /// How long a waiter waited before it got a slot.
    pub queue_wait_seconds: Histogram,
    /// Active health checks by result.
    pub health_checks_total: IntCounterVec,
    /// Thrift bytes relayed, by direction.
    pub bytes_total: IntCounterVec,
    /// Client calls by method and outcome.
    pub requests_total: IntCounterVec,
    /// Client call latency from a complete request to its reply, by method.
    pub request_seconds: HistogramVec,
    /// Calls (including health checks) in flight on each backend.
    pub backend_requests_in_flight: IntGaugeVec,
    /// Pooled backend connections by state (`idle`, `busy`).
    pub pool_connections: IntGaugeVec,
}

impl UpstreamMetrics {
    /// Creates the families, registers them on `registry` and initialises a
    /// zero series for every backend and label value.
    pub fn new(registry: &Registry, backends: &[String]) -> Result<Self, prometheus::Error> {
        let latency = exponential_buckets(0.0005, 2.0, 18)?;
        let metrics = UpstreamMetrics {
            backend_up: IntGaugeVec::new(
                Opts::new(
                    "probegate_backend_up",
                    "1 while the backend passes its health checks, else 0",
                ),
                &["backend"],
            )?,
            slots_in_use: IntGaugeVec::new(
                Opts::new(
                    "probegate_backend_slots_in_use",
                    "Backend slots (worker threads) taken by probegate",
                ),
                &["backend"],
            )?,
            queue_depth: IntGauge::new(
                "probegate_queue_depth",
                "Requests waiting in the FIFO queue for a backend slot",
            )?,
            queue_wait_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "probegate_queue_wait_seconds",
                    "Time spent waiting in the queue for a backend slot",
                )
                .buckets(latency.clone()),
            )?,
            health_checks_total: IntCounterVec::new(
                Opts::new(
                    "probegate_health_checks_total",
                    "Active backend health checks by result (success, failure, busy_ok)",
                ),
                &["backend", "result"],
            )?,
            bytes_total: IntCounterVec::new(
                Opts::new(
                    "probegate_bytes_total",
                    "Thrift bytes relayed between clients and backends",
                ),
                &["direction"],
            )?,
            requests_total: IntCounterVec::new(
                Opts::new(
                    "probegate_requests_total",
                    "Client Thrift calls by method and outcome",
                ),
                &["method", "outcome"],
            )?,
            request_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "probegate_request_seconds",
                    "Client Thrift call latency, from a complete request to its answer ready to write",
                )
                .buckets(latency),
                &["method"],
            )?,
            backend_requests_in_flight: IntGaugeVec::new(
                Opts::new(
                    "probegate_backend_requests_in_flight",
                    "Calls in flight on each backend, health checks included",
                ),
                &["backend"],
            )?,
            pool_connections: IntGaugeVec::new(
                Opts::new(
                    "probegate_pool_connections",
                    "Backend connections held by probegate, by state (idle, busy)",
                ),
                &["backend", "state"],
            )?,
        };
        registry.register(Box::new(metrics.backend_up.clone()))?;
        registry.register(Box::new(metrics.slots_in_use.clone()))?;
        registry.register(Box::new(metrics.queue_depth.clone()))?;
        registry.register(Box::new(metrics.queue_wait_seconds.clone()))?;
        registry.register(Box::new(metrics.health_checks_total.clone()))?;
        registry.register(Box::new(metrics.bytes_total.clone()))?;
        registry.register(Box::new(metrics.requests_total.clone()))?;
        registry.register(Box::new(metrics.request_seconds.clone()))?;
        registry.register(Box::new(metrics.backend_requests_in_flight.clone()))?;
        registry.register(Box::new(metrics.pool_connections.clone()))?;

        for backend in backends {
            metrics.backend_up.with_label_values(&[backend]).set(0);
            metrics.slots_in_use.with_label_values(&[backend]).set(0);
            metrics
                .backend_requests_in_flight
                .with_label_values(&[backend])
                .set(0);
            for state in ["idle", "busy"] {
                metrics
                    .pool_connections
                    .with_label_values(&[backend, state])
                    .set(0);
            }
            for result in HEALTH_RESULTS {
                metrics
                    .health_checks_total
                    .with_label_values(&[backend, result]);
            }
        }
        for direction in [CLIENT_TO_BACKEND, BACKEND_TO_CLIENT] {
            metrics.bytes_total.with_label_values(&[direction]);
        }
        for method in uploader_idl::METHOD_NAMES.iter().copied().chain(["other"]) {
            metrics.request_seconds.with_label_values(&[method]);
            for outcome in OUTCOMES {
                metrics.requests_total.with_label_values(&[method, outcome]);
            }
        }
        Ok(metrics)
    }
}
