//! Running probegate: wiring the parts together and the shutdown sequence.
//!
//! `run` takes already-bound listeners (so tests and the bench bind
//! `127.0.0.1:0`) and a future that resolves when the process is asked to
//! stop. On SIGTERM the sequence is pingora's: drain (health 503, still
//! serving) for `shutdown.drain_grace`, stop accepting, give live
//! connections up to `shutdown.timeout`, return. SIGINT skips the grace.

use std::sync::Arc;

use prometheus::Registry;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::classify::Classifier;
use crate::config::Config;
use crate::listeners::admin::{self, Admin};
use crate::listeners::public::{accept_loop, Edge, PerSource};
use crate::metrics::EdgeMetrics;
use crate::protocols::http_health::HealthAnswers;
use crate::shutdown::{Lifecycle, StopSignal};
use crate::status::Readiness;
use crate::upstream::Upstream;

/// Why probegate could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("registering metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Serves until the first stop signal arrives on `stop_signals`, then
/// drains and returns. A second signal during the drain grace ends the grace
/// at once (an operator pressing Ctrl-C again); a closed channel counts as
/// SIGINT.
pub async fn run(
    config: Config,
    public: TcpListener,
    admin_listener: TcpListener,
    mut stop_signals: mpsc::Receiver<StopSignal>,
) -> Result<(), StartError> {
    let registry = Registry::new();
    let classifier = Arc::new(Classifier::new(&config));
    let metrics = EdgeMetrics::new(&registry, &classifier.probe_source_names())?;
    let upstream = Upstream::new(&config, &registry)?;
    let lifecycle = Lifecycle::new(metrics.clone());
    let readiness = Readiness {
        upstream: Arc::clone(&upstream),
        lifecycle: lifecycle.clone(),
    };
    // Health checks and the admin port outlive the drain: they stop last.
    let background = CancellationToken::new();
    upstream.spawn_health_checks(background.clone());
    let admin_state = Admin {
        registry: registry.clone(),
        readiness: readiness.clone(),
        metrics: metrics.clone(),
    };
    let admin_task = tokio::spawn(admin::serve(
        admin_listener,
        admin_state,
        config.timeouts.idle.get(),
        background.clone(),
    ));

    let config = Arc::new(config);
    let edge = Edge {
        config: Arc::clone(&config),
        classifier,
        upstream: Arc::clone(&upstream),
        metrics: metrics.clone(),
        lifecycle: lifecycle.clone(),
        health: HealthAnswers {
            paths: Arc::new(config.health.paths.clone()),
            readiness,
            metrics,
            idle: config.timeouts.idle.get(),
        },
        per_source: PerSource::default(),
    };
    let tracker = TaskTracker::new();
    let accept_task = tokio::spawn(accept_loop(public, edge, tracker.clone()));

    let signal = stop_signals.recv().await.unwrap_or(StopSignal::Interrupt);
    lifecycle.start_draining();
    if signal == StopSignal::Terminate {
        let grace = config.shutdown.drain_grace.get();
        info!(
            ?grace,
            "SIGTERM: draining (health answers 503) before closing the public port"
        );
        tokio::select! {
            _ = tokio::time::sleep(grace) => {}
            Some(again) = stop_signals.recv() => {
                info!(signal = ?again, "second stop signal: ending the drain grace now");
            }
        }
    } else {
        info!("SIGINT: stopping without drain grace");
    }
    lifecycle.stop.cancel();
    if let Err(e) = accept_task.await {
        warn!(error = %e, "accept loop ended abnormally");
    }
    tracker.close();
    let timeout = config.shutdown.timeout.get();
    let live = tracker.len();
    if live > 0 {
        info!(live, ?timeout, "waiting for live connections to finish");
    }
    if tokio::time::timeout(timeout, tracker.wait()).await.is_err() {
        warn!(
            live = tracker.len(),
            ?timeout,
            "shutdown.timeout expired with connections still open; closing them"
        );
    }
    background.cancel();
    let _ = admin_task.await;
    info!("stopped");
    Ok(())
}
