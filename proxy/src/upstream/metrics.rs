//! The upstream side's metric families: backends, slots, queue, pool, health
//! checks and per-request outcomes.
//!
//! They are registered on the one explicit registry the admin listener
//! serves. Every label value is bounded: `backend` is an address from the
//! config, `method` one of `uploader_idl::METHOD_NAMES` or `"other"`, and the
//! other labels are the fixed sets named below. Every series is created at
//! start with a zero value so that dashboards and tests see it before the
//! first event. The per-request series are also resolved once into
//! [`RequestMetrics`], so that the request path does no label hashing.

use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry,
};

/// `probegate_requests_total{outcome}` values, in [`Outcome`] order.
pub const OUTCOMES: [&str; 6] = ["reply", "exception", "oneway", "shed", "timeout", "error"];

/// What became of a client call: the `outcome` label of
/// `probegate_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Reply,
    Exception,
    Oneway,
    Shed,
    Timeout,
    Error,
}

impl Outcome {
    pub const ALL: [Outcome; 6] = [
        Outcome::Reply,
        Outcome::Exception,
        Outcome::Oneway,
        Outcome::Shed,
        Outcome::Timeout,
        Outcome::Error,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        OUTCOMES[self as usize]
    }
}

/// `method` label values: `uploader_idl::METHOD_NAMES`, then `"other"`.
const METHODS: usize = uploader_idl::METHOD_NAMES.len() + 1;
/// The [`method_index`] of `"other"`.
pub const OTHER_METHOD: usize = METHODS - 1;

/// Where `name` sits among the `method` label values (anything not a
/// method of the service is `"other"`, the last).
pub fn method_index(name: &str) -> usize {
    uploader_idl::METHOD_NAMES
        .iter()
        .position(|m| *m == name)
        .unwrap_or(OTHER_METHOD)
}

fn method_label(index: usize) -> &'static str {
    uploader_idl::METHOD_NAMES
        .get(index)
        .copied()
        .unwrap_or("other")
}

/// The series every client call updates, looked up once at start and
/// indexed by [`method_index`] and [`Outcome`].
#[derive(Clone)]
pub struct RequestMetrics {
    /// `probegate_requests_total{method, outcome}`.
    requests: [[IntCounter; OUTCOMES.len()]; METHODS],
    /// `probegate_request_seconds{method}`.
    seconds: [Histogram; METHODS],
    /// `probegate_bytes_total{direction="client_to_backend"}`.
    pub to_backend: IntCounter,
    /// `probegate_bytes_total{direction="backend_to_client"}`.
    pub to_client: IntCounter,
    /// `probegate_requests_piped_total`.
    pub piped: IntCounter,
}

impl RequestMetrics {
    fn new(
        requests_total: &IntCounterVec,
        request_seconds: &HistogramVec,
        bytes_total: &IntCounterVec,
        piped: IntCounter,
    ) -> Self {
        RequestMetrics {
            piped,
            requests: std::array::from_fn(|m| {
                Outcome::ALL
                    .map(|o| requests_total.with_label_values(&[method_label(m), o.label()]))
            }),
            seconds: std::array::from_fn(|m| request_seconds.with_label_values(&[method_label(m)])),
            to_backend: bytes_total.with_label_values(&[CLIENT_TO_BACKEND]),
            to_client: bytes_total.with_label_values(&[BACKEND_TO_CLIENT]),
        }
    }

    /// Counts one call of the method at `method` (see [`method_index`]).
    pub fn count(&self, method: usize, outcome: Outcome) {
        self.requests[method.min(OTHER_METHOD)][outcome as usize].inc();
    }

    /// Records one call's latency.
    pub fn observe_seconds(&self, method: usize, seconds: f64) {
        self.seconds[method.min(OTHER_METHOD)].observe(seconds);
    }
}
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
    /// `probegate_pipes_kept`: emptied pipes kept for the next large call.
    pub pipes_kept: IntGauge,
    /// `probegate_pipes_made_total`: pipes made because none kept fitted.
    pub pipes_made: IntCounter,
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
    /// Calls sent on a backend connection already carrying calls.
    pub pipelined_total: IntCounterVec,
    /// The per-request series of the families above, resolved once.
    pub request: RequestMetrics,
}

impl UpstreamMetrics {
    /// Creates the families, registers them on `registry` and initialises a
    /// zero series for every backend and label value.
    pub fn new(registry: &Registry, backends: &[String]) -> Result<Self, prometheus::Error> {
        let latency = exponential_buckets(0.0005, 2.0, 18)?;
        let bytes_total = IntCounterVec::new(
            Opts::new(
                "probegate_bytes_total",
                "Thrift bytes relayed between clients and backends",
            ),
            &["direction"],
        )?;
        let requests_total = IntCounterVec::new(
            Opts::new(
                "probegate_requests_total",
                "Client Thrift calls by method and outcome",
            ),
            &["method", "outcome"],
        )?;
        let request_seconds = HistogramVec::new(
            HistogramOpts::new(
                "probegate_request_seconds",
                "Client Thrift call latency, from a complete request to its answer ready to write",
            )
            .buckets(latency.clone()),
            &["method"],
        )?;
        // Creating every series here also gives each a zero value at start.
        let requests_piped = IntCounter::new(
            "probegate_requests_piped_total",
            "Large framed calls whose body went from client to backend through kernel pipes (splice), never copied into probegate's memory",
        )?;
        let request = RequestMetrics::new(
            &requests_total,
            &request_seconds,
            &bytes_total,
            requests_piped,
        );
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
                .buckets(latency),
            )?,
            pipes_kept: IntGauge::new(
                "probegate_pipes_kept",
                "Emptied kernel pipes kept idle for the next large call's body",
            )?,
            pipes_made: IntCounter::new(
                "probegate_pipes_made_total",
                "Kernel pipes made for large calls' bodies because no kept pipe fitted; growing about as fast as probegate_requests_piped_total means more large calls run at once than pipes are kept",
            )?,
            health_checks_total: IntCounterVec::new(
                Opts::new(
                    "probegate_health_checks_total",
                    "Active backend health checks by result (success, failure, busy_ok)",
                ),
                &["backend", "result"],
            )?,
            bytes_total,
            requests_total,
            request_seconds,
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
            pipelined_total: IntCounterVec::new(
                Opts::new(
                    "probegate_backend_pipelined_total",
                    "Calls of forwarding.pipeline_methods sent on a backend connection that already carried calls (pipelined)",
                ),
                &["backend"],
            )?,
            request,
        };
        registry.register(Box::new(metrics.backend_up.clone()))?;
        registry.register(Box::new(metrics.slots_in_use.clone()))?;
        registry.register(Box::new(metrics.queue_depth.clone()))?;
        registry.register(Box::new(metrics.queue_wait_seconds.clone()))?;
        registry.register(Box::new(metrics.health_checks_total.clone()))?;
        registry.register(Box::new(metrics.bytes_total.clone()))?;
        registry.register(Box::new(metrics.requests_total.clone()))?;
        registry.register(Box::new(metrics.request_seconds.clone()))?;
        registry.register(Box::new(metrics.request.piped.clone()))?;
        registry.register(Box::new(metrics.pipes_kept.clone()))?;
        registry.register(Box::new(metrics.pipes_made.clone()))?;
        registry.register(Box::new(metrics.backend_requests_in_flight.clone()))?;
        registry.register(Box::new(metrics.pool_connections.clone()))?;
        registry.register(Box::new(metrics.pipelined_total.clone()))?;

        for backend in backends {
            metrics.backend_up.with_label_values(&[backend]).set(0);
            metrics.slots_in_use.with_label_values(&[backend]).set(0);
            metrics.pipelined_total.with_label_values(&[backend]);
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
        Ok(metrics)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each resolved handle is the series its labels name, and every series
    /// exists from the start.
    #[test]
    fn request_handles_update_the_series_they_stand_for() {
        let registry = Registry::new();
        let m = UpstreamMetrics::new(&registry, &[]).unwrap();
        let names: Vec<&str> = uploader_idl::METHOD_NAMES
            .iter()
            .copied()
            .chain(["other"])
            .collect();
        for (i, method) in names.iter().enumerate() {
            assert_eq!(method_index(method), i);
            for (k, outcome) in Outcome::ALL.into_iter().enumerate() {
                let n = (i * 10 + k + 1) as u64;
                for _ in 0..n {
                    m.request.count(i, outcome);
                }
                assert_eq!(
                    m.requests_total
                        .with_label_values(&[method, outcome.label()])
                        .get(),
                    n
                );
            }
            m.request.observe_seconds(i, 0.25);
            assert_eq!(
                m.request_seconds
                    .with_label_values(&[method])
                    .get_sample_count(),
                1
            );
        }
        assert_eq!(method_index("drop_tables"), names.len() - 1);
        m.request.to_backend.inc_by(5);
        m.request.to_client.inc_by(7);
        assert_eq!(
            m.bytes_total.with_label_values(&[CLIENT_TO_BACKEND]).get(),
            5
        );
        assert_eq!(
            m.bytes_total.with_label_values(&[BACKEND_TO_CLIENT]).get(),
            7
        );
        let families = registry.gather();
        let series = |name: &str| {
            families
                .iter()
                .find(|f| f.name() == name)
                .map_or(0, |f| f.get_metric().len())
        };
        assert_eq!(
            series("probegate_requests_total"),
            names.len() * OUTCOMES.len()
        );
        assert_eq!(series("probegate_request_seconds"), names.len());
        assert_eq!(series("probegate_bytes_total"), 2);
    }
}
