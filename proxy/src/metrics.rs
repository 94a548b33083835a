//! The edge's metric families: what arrived on the public port and what
//! became of it.
//!
//! The incident went unnoticed because nothing told a health probe from a
//! client; these counters do, so that probes are counted instead of logged as
//! errors. Families are registered on the one explicit registry the admin
//! listener serves (the upstream registers its own, see
//! `crate::upstream::metrics`). Every label value comes from the fixed sets
//! below or from the config (`source` = a probe source's name), so a hostile
//! peer cannot create series.

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// What a public connection turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// A load balancer's health check (or anything from a probe source).
    Probe,
    /// An HTTP request answered by probegate itself.
    Http,
    /// A Thrift client, forwarded.
    Thrift,
    /// Closed because what it sent is not acceptable.
    Rejected,
    /// Closed because of where it comes from (`clients.deny` / `allow`).
    Denied,
}

impl Class {
    pub const ALL: [Class; 5] = [
        Class::Probe,
        Class::Http,
        Class::Thrift,
        Class::Rejected,
        Class::Denied,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Class::Probe => "probe",
            Class::Http => "http",
            Class::Thrift => "thrift",
            Class::Rejected => "rejected",
            Class::Denied => "denied",
        }
    }
}

/// How a probe ended: `probegate_probes_total{ending}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Connected, sent nothing, reset the connection.
    Rst,
    /// Connected, sent nothing, closed the connection.
    Fin,
    /// Connected and stayed silent until `timeouts.first_byte`.
    Timeout,
    /// An HTTP health request.
    Http,
    /// A PROXY protocol v2 `LOCAL` header (the balancer's own check).
    Local,
    /// A probe source sent something that is not an HTTP request.
    Data,
}

impl Ending {
    pub const ALL: [Ending; 6] = [
        Ending::Rst,
        Ending::Fin,
        Ending::Timeout,
        Ending::Http,
        Ending::Local,
        Ending::Data,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Ending::Rst => "rst",
            Ending::Fin => "fin",
            Ending::Timeout => "timeout",
            Ending::Http => "http",
            Ending::Local => "local",
            Ending::Data => "data",
        }
    }
}

/// `probegate_rejected_total{reason}` values that the edge itself decides;
/// the Thrift codec adds its own (`InvalidThrift::reason`).
pub const REJECT_REASONS: [&str; 14] = [
    "first_bytes_timeout",
    "tls",
    "ssh",
    "garbage",
    "http_not_health",
    "proxy_header",
    "per_source_limit",
    "max_client_connections",
    "frame_too_large",
    "non_strict_binary",
    "theader",
    "bad_thrift",
    "bad_http",
    "register_failed",
];

/// The probe `source` label for health checks that come from no configured
/// probe source (an HTTP health request from an ordinary address).
pub const OTHER_SOURCE: &str = "other";

/// Handles on the edge metric families.
#[derive(Clone)]
pub struct EdgeMetrics {
    pub connections_total: IntCounterVec,
    pub connections_active: IntGaugeVec,
    pub probes_total: IntCounterVec,
    pub rejected_total: IntCounterVec,
    pub draining: IntGauge,
}

impl EdgeMetrics {
    /// Registers the families on `registry`, with a zero series for every
    /// class, reason, and probe source × ending.
    pub fn new(registry: &Registry, probe_sources: &[String]) -> Result<Self, prometheus::Error> {
        let metrics = EdgeMetrics {
            connections_total: IntCounterVec::new(
                Opts::new(
                    "probegate_connections_total",
                    "Public connections by what they turned out to be",
                ),
                &["class"],
            )?,
            connections_active: IntGaugeVec::new(
                Opts::new(
                    "probegate_connections_active",
                    "Public connections open now, by class, counted once classified (HTTP health and Thrift; silent probes close before)",
                ),
                &["class"],
            )?,
            probes_total: IntCounterVec::new(
                Opts::new(
                    "probegate_probes_total",
                    "Health probes answered at the edge, by probe source and how they ended",
                ),
                &["source", "ending"],
            )?,
            rejected_total: IntCounterVec::new(
                Opts::new(
                    "probegate_rejected_total",
                    "Public connections closed without forwarding, by reason",
                ),
                &["reason"],
            )?,
            draining: IntGauge::new(
                "probegate_draining",
                "1 while probegate is draining after SIGTERM (health answers 503)",
            )?,
        };
        registry.register(Box::new(metrics.connections_total.clone()))?;
        registry.register(Box::new(metrics.connections_active.clone()))?;
        registry.register(Box::new(metrics.probes_total.clone()))?;
        registry.register(Box::new(metrics.rejected_total.clone()))?;
        registry.register(Box::new(metrics.draining.clone()))?;
        for class in Class::ALL {
            metrics
                .connections_total
                .with_label_values(&[class.label()]);
            metrics
                .connections_active
                .with_label_values(&[class.label()]);
        }
        for reason in REJECT_REASONS {
            metrics.rejected_total.with_label_values(&[reason]);
        }
        for source in probe_sources
            .iter()
            .map(String::as_str)
            .chain([OTHER_SOURCE])
        {
            for ending in Ending::ALL {
                metrics
                    .probes_total
                    .with_label_values(&[source, ending.label()]);
            }
        }
        Ok(metrics)
    }

    /// Counts a finished classification.
    pub fn classified(&self, class: Class) {
        self.connections_total
            .with_label_values(&[class.label()])
            .inc();
    }

    pub fn probe(&self, source: &str, ending: Ending) {
        self.classified(Class::Probe);
        self.probes_total
            .with_label_values(&[source, ending.label()])
            .inc();
    }

    pub fn rejected(&self, reason: &str) {
        self.classified(Class::Rejected);
        self.rejected_total.with_label_values(&[reason]).inc();
    }

    /// Marks one connection of `class` open until the guard is dropped.
    pub fn active(&self, class: Class) -> ActiveGuard {
        let gauge = self.connections_active.with_label_values(&[class.label()]);
        gauge.inc();
        ActiveGuard { gauge }
    }
}

/// Decrements `probegate_connections_active{class}` when dropped.
pub struct ActiveGuard {
    gauge: IntGauge,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_exists_from_the_start_and_counts() {
        let registry = Registry::new();
        let metrics = EdgeMetrics::new(&registry, &["aliyun".to_string()]).expect("registers");
        let families = registry.gather();
        let probes = families
            .iter()
            .find(|f| f.name() == "probegate_probes_total")
            .expect("probes family");
        assert_eq!(probes.get_metric().len(), 2 * Ending::ALL.len());
        metrics.probe("aliyun", Ending::Rst);
        metrics.rejected("tls");
        {
            let _guard = metrics.active(Class::Thrift);
            assert_eq!(
                metrics
                    .connections_active
                    .with_label_values(&["thrift"])
                    .get(),
                1
            );
        }
        assert_eq!(
            metrics
                .connections_active
                .with_label_values(&["thrift"])
                .get(),
            0
        );
        assert_eq!(
            metrics
                .probes_total
                .with_label_values(&["aliyun", "rst"])
                .get(),
            1
        );
        assert_eq!(
            metrics
                .connections_total
                .with_label_values(&["probe"])
                .get(),
            1
        );
        assert_eq!(
            metrics
                .connections_total
                .with_label_values(&["rejected"])
                .get(),
            1
        );
        assert_eq!(metrics.rejected_total.with_label_values(&["tls"]).get(), 1);
    }
}
