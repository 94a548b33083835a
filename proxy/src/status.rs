//! The truth about whether this instance can serve, in one place.
//!
//! The public health answer, the admin `/ready` and `/status` all derive
//! from the same verdict, so the load balancer and the operator can never be
//! told different stories (DESIGN.md: "the public-port health answer equals
//! `/ready`"). It reflects this instance alone: its own backends and its own
//! drain state.

use std::sync::Arc;

use crate::metrics::{Class, EdgeMetrics};
use crate::shutdown::Lifecycle;
use crate::upstream::{State, Upstream};

/// Whether real traffic can be served now, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Ready { up: usize, total: usize },
    Draining,
    NoBackend { total: usize },
}

impl Verdict {
    pub fn is_ready(&self) -> bool {
        matches!(self, Verdict::Ready { .. })
    }

    /// A one-line reason, used as the body of health answers.
    pub fn reason(&self) -> String {
        match self {
            Verdict::Ready { up, total } => format!("ok: {up}/{total} backends up\n"),
            Verdict::Draining => "draining: shutting down, take this node out\n".to_string(),
            Verdict::NoBackend { total } => format!("unavailable: 0/{total} backends up\n"),
        }
    }
}

/// Everything the verdict and the status page are made of.
#[derive(Clone)]
pub struct Readiness {
    pub upstream: Arc<Upstream>,
    pub lifecycle: Lifecycle,
}

impl Readiness {
    pub fn verdict(&self) -> Verdict {
        let total = self.upstream.backends.len();
        if self.lifecycle.is_draining() {
            return Verdict::Draining;
        }
        // Answered for every health probe: count states directly rather
        // than building the /status document.
        let up = self
            .upstream
            .backends
            .iter()
            .filter(|b| b.state() == State::Up)
            .count();
        if up > 0 {
            Verdict::Ready { up, total }
        } else {
            Verdict::NoBackend { total }
        }
    }

    /// The `/status` document: the upstream's state plus the edge's counts.
    pub fn status_json(&self, metrics: &EdgeMetrics) -> serde_json::Value {
        let mut status = self.upstream.status();
        let classes: serde_json::Map<String, serde_json::Value> = Class::ALL
            .iter()
            .map(|c| {
                let total = metrics
                    .connections_total
                    .with_label_values(&[c.label()])
                    .get();
                let active = metrics
                    .connections_active
                    .with_label_values(&[c.label()])
                    .get();
                (
                    c.label().to_string(),
                    serde_json::json!({ "total": total, "active": active }),
                )
            })
            .collect();
        let verdict = self.verdict();
        if let Some(map) = status.as_object_mut() {
            map.insert("ready".into(), verdict.is_ready().into());
            map.insert("reason".into(), verdict.reason().trim_end().into());
            map.insert("draining".into(), self.lifecycle.is_draining().into());
            map.insert("classes".into(), classes.into());
            map.insert("version".into(), env!("CARGO_PKG_VERSION").into());
        }
        status
    }
}
