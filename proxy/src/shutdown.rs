//! The process lifecycle shared by every task: draining and stopping.
//!
//! On SIGTERM probegate first *drains*: health answers (public and `/ready`)
//! turn to 503 while traffic is still served, so the load balancer takes the
//! node out before any connection is refused. Then it *stops*: accepting
//! ends, live connections get a bounded time to finish, and forwarders are
//! told (through the cancellation token) to finish their in-flight call and
//! close.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::metrics::EdgeMetrics;

/// Shared lifecycle state.
#[derive(Clone)]
pub struct Lifecycle {
    draining: Arc<AtomicBool>,
    /// Fired when accepting must stop and connections must wind down.
    pub stop: CancellationToken,
    metrics: EdgeMetrics,
}

impl Lifecycle {
    pub fn new(metrics: EdgeMetrics) -> Lifecycle {
        Lifecycle {
            draining: Arc::new(AtomicBool::new(false)),
            stop: CancellationToken::new(),
            metrics,
        }
    }

    /// Health answers 503 from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.metrics.draining.set(1);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

/// Which signal asked the process to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// Graceful: drain for `shutdown.drain_grace` first.
    Terminate,
    /// Interactive: no grace, straight to stopping.
    Interrupt,
}

/// Installed signal listeners. Create them before the listening line is
/// printed, so that a signal sent right after it is never lost to the
/// default action.
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for SIGTERM or SIGINT.
    pub async fn recv(&mut self) -> StopSignal {
        tokio::select! {
            _ = self.term.recv() => StopSignal::Terminate,
            _ = self.int.recv() => StopSignal::Interrupt,
        }
    }
}
