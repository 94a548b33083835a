//! The uploader's Prometheus metrics, on an explicit registry.
//!
//! These are the numbers that would have explained the incident at a glance:
//! connections accepted versus closed idle, read timeouts, and how many of the
//! fixed workers are held. Label values are closed enums so that no client
//! input can grow the series count.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Every metric family the uploader exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    pub connections_accepted: IntCounter,
    /// Connections that ended (peer close or reset) before a complete request.
    pub connections_idle_closed: IntCounter,
    pub read_timeouts: IntCounter,
    pub workers_busy: IntGauge,
    pub workers: IntGauge,
    requests: IntCounterVec,
    uploads: IntCounterVec,
    pub upload_bytes: IntCounter,
    pub storage_seconds: Histogram,
}

/// `uploader_requests_total{method}`: the method named in a message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Ping,
    Upload,
    Touch,
    /// Any name the service does not have.
    Other,
}

impl Method {
    pub fn from_name(name: &str) -> Method {
        match name {
            "ping" => Method::Ping,
            "upload" => Method::Upload,
            "touch" => Method::Touch,
            _ => Method::Other,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Method::Ping => "ping",
            Method::Upload => "upload",
            Method::Touch => "touch",
            Method::Other => "other",
        }
    }
}

/// `uploader_uploads_total{outcome}`: how each upload call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Stored,
    /// The object already existed with the same content; nothing was written.
    Duplicate,
    Empty,
    TooLarge,
    InvalidImage,
    ContentTypeMismatch,
    StorageError,
    IntegrityError,
}

impl Outcome {
    pub const ALL: [Outcome; 8] = [
        Outcome::Stored,
        Outcome::Duplicate,
        Outcome::Empty,
        Outcome::TooLarge,
        Outcome::InvalidImage,
        Outcome::ContentTypeMismatch,
        Outcome::StorageError,
        Outcome::IntegrityError,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Stored => "stored",
            Outcome::Duplicate => "duplicate",
            Outcome::Empty => "empty",
            Outcome::TooLarge => "too_large",
            Outcome::InvalidImage => "invalid_image",
            Outcome::ContentTypeMismatch => "content_type_mismatch",
            Outcome::StorageError => "storage_error",
            Outcome::IntegrityError => "integrity_error",
        }
    }
}

impl Metrics {
    /// Creates and registers every family. `workers` is the pool size.
    pub fn new(workers: usize) -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("static metric definition");
            registry
                .register(Box::new(c.clone()))
                .expect("metric registered once");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("static metric definition");
            registry
                .register(Box::new(g.clone()))
                .expect("metric registered once");
            g
        };
        let counter_vec = |name: &str, help: &str, label: &str| {
            let c = IntCounterVec::new(Opts::new(name, help), &[label])
                .expect("static metric definition");
            registry
                .register(Box::new(c.clone()))
                .expect("metric registered once");
            c
        };
        let metrics = Metrics {
            connections_accepted: counter(
                "uploader_connections_accepted_total",
                "Thrift connections accepted by the worker pool.",
            ),
            connections_idle_closed: counter(
                "uploader_connections_idle_closed_total",
                "Thrift connections closed or reset by the peer before completing a single request (health probes look like this).",
            ),
            read_timeouts: counter(
                "uploader_read_timeouts_total",
                "Thrift connections closed because server.read_timeout expired while waiting for bytes.",
            ),
            workers_busy: gauge(
                "uploader_workers_busy",
                "Worker threads currently holding a connection.",
            ),
            workers: gauge("uploader_workers", "Worker threads in the pool (server.workers)."),
            requests: counter_vec(
                "uploader_requests_total",
                "Thrift requests by the method named in the message header.",
                "method",
            ),
            uploads: counter_vec(
                "uploader_uploads_total",
                "Upload calls by outcome.",
                "outcome",
            ),
            upload_bytes: counter(
                "uploader_upload_bytes_total",
                "Image bytes of successful uploads (stored or duplicate).",
            ),
            storage_seconds: {
                let h = Histogram::with_opts(
                    HistogramOpts::new(
                        "uploader_storage_seconds",
                        "Time spent storing one upload (existence check, write, retries).",
                    )
                    .buckets(vec![
                        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                        30.0, 60.0,
                    ]),
                )
                .expect("static metric definition");
                registry
                    .register(Box::new(h.clone()))
                    .expect("metric registered once");
                h
            },
            registry,
        };
        metrics
            .workers
            .set(i64::try_from(workers).unwrap_or(i64::MAX));
        // Export every label value from the start so that rates work from
        // the first scrape and dashboards show zeros rather than gaps.
        for method in [Method::Ping, Method::Upload, Method::Touch, Method::Other] {
            metrics.requests.with_label_values(&[method.label()]);
        }
        for outcome in Outcome::ALL {
            metrics.uploads.with_label_values(&[outcome.label()]);
        }
        metrics
    }

    pub fn request(&self, method: Method) {
        self.requests.with_label_values(&[method.label()]).inc();
    }

    pub fn upload(&self, outcome: Outcome) {
        self.uploads.with_label_values(&[outcome.label()]).inc();
    }

    /// The Prometheus text exposition of every family.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed families.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_exported_with_its_labels() {
        let m = Metrics::new(4);
        m.request(Method::from_name("frobnicate"));
        m.upload(Outcome::Duplicate);
        let text = m.render();
        for needle in [
            "uploader_connections_accepted_total 0",
            "uploader_connections_idle_closed_total 0",
            "uploader_read_timeouts_total 0",
            "uploader_workers_busy 0",
            "uploader_workers 4",
            "uploader_requests_total{method=\"other\"} 1",
            "uploader_requests_total{method=\"ping\"} 0",
            "uploader_uploads_total{outcome=\"duplicate\"} 1",
            "uploader_uploads_total{outcome=\"integrity_error\"} 0",
            "uploader_upload_bytes_total 0",
            "uploader_storage_seconds_count 0",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
    }
}
