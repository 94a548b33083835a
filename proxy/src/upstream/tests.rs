//! Upstream tests over real loopback sockets: pool reuse, idle close, dead
//! connections, health rise/fall and busy checks.

use std::sync::atomic::Ordering;
use std::time::Duration;

use prometheus::Registry;
use thrift::protocol::TMessageType;

use super::health::{check, ping_call, CheckResult};
use super::testing::{config, eventually, Mode, Responder};
use super::*;
use crate::protocols::thrift::Flavor;

const FB: Flavor = Flavor::FRAMED_BINARY;

fn upstream(cfg: &Config) -> Arc<Upstream> {
    Upstream::new(cfg, &Registry::new()).expect("metrics register")
}

async fn ping(up: &Arc<Upstream>) -> Result<Option<Reply>, CallError> {
    let slot = up.acquire().await.expect("slot");
    let out = Outgoing::new(
        ping_call(up.backends[slot.backend()].flavor, 1)
            .unwrap()
            .into(),
    );
    exchange(up, &slot, &out, false, Duration::from_secs(5)).await
}

fn mark_up(up: &Upstream, index: usize) {
    up.record_check(index, &CheckResult::Success);
}

#[tokio::test]
async fn pool_reuses_one_connection_and_closes_it_after_pool_idle() {
    let backend = Responder::start(FB).await;
    let cfg = config(
        &[(backend.addr, 2, FB)],
        "[forwarding]\npool_idle = \"200ms\"\n",
    );
    let up = upstream(&cfg);
    mark_up(&up, 0);
    for _ in 0..5 {
        let reply = ping(&up).await.expect("reply").expect("not oneway");
        assert_eq!(reply.header.kind, TMessageType::Reply);
        assert_eq!(reply.header.name, "ping");
    }
    assert_eq!(
        backend.accepted.load(Ordering::SeqCst),
        1,
        "one pooled connection reused"
    );
    assert_eq!(up.backends[0].pool.idle_count(), 1);

    let shutdown = CancellationToken::new();
    tokio::spawn(health::reap(Arc::clone(&up), shutdown.clone()));
    eventually("idle connection closed by the reaper", || {
        up.backends[0].pool.idle_count() == 0 && backend.open.load(Ordering::SeqCst) == 0
    })
    .await;
    shutdown.cancel();
    let label = backend.addr.to_string();
    let gauge = |state: &str| {
        up.metrics
            .pool_connections
            .with_label_values(&[&label, state])
            .get()
    };
    assert_eq!((gauge("idle"), gauge("busy")), (0, 0));
}

#[tokio::test]
async fn a_dead_pooled_connection_is_replaced_silently() {
    let backend = Responder::start(FB).await;
    let up = upstream(&config(&[(backend.addr, 1, FB)], ""));
    mark_up(&up, 0);
    ping(&up).await.expect("first call").expect("reply");
    backend.close_connections();
    eventually("backend closed its side", || {
        backend.open.load(Ordering::SeqCst) == 0
    })
    .await;
    // The pool still holds the dead connection: the call must not notice.
    let reply = ping(&up).await.expect("second call on a fresh connection");
    assert!(reply.is_some());
    assert_eq!(backend.accepted.load(Ordering::SeqCst), 2);
    assert_eq!(backend.calls(), ["ping", "ping"]);
}

#[tokio::test]
async fn connections_never_exceed_max_connections() {
    let backend = Responder::start(FB).await;
    backend.set_mode(Mode::Delay(Duration::from_millis(5)));
    let up = upstream(&config(
        &[(backend.addr, 3, FB)],
        "[limits]\nmax_queue = 1000\n",
    ));
    mark_up(&up, 0);
    let mut tasks = Vec::new();
    for _ in 0..60 {
        let up = Arc::clone(&up);
        tasks.push(tokio::spawn(
            async move { ping(&up).await.map(|r| r.is_some()) },
        ));
    }
    for t in tasks {
        assert!(t.await.unwrap().expect("every call answered"));
    }
    assert_eq!(backend.peak_open.load(Ordering::SeqCst), 3);
    assert!(backend.accepted.load(Ordering::SeqCst) <= 3);
    assert_eq!(up.scheduler.in_use(0), 0);
}

#[tokio::test]
async fn health_rise_and_fall_flip_state_and_serving() {
    let backend = Responder::start(FB).await;
    let up = upstream(&config(
        &[(backend.addr, 2, FB)],
        "[health]\nrise = 2\nfall = 2\ntimeout = \"500ms\"\n",
    ));
    let mut serving = up.serving();
    assert!(!up.is_serving(), "unknown until the first check");

    let result = check(&up, 0).await;
    assert_eq!(result, CheckResult::Success);
    up.record_check(0, &result);
    assert!(up.is_serving(), "the first success decides at once");
    assert!(serving.has_changed().unwrap());
    assert!(*serving.borrow_and_update());

    backend.set_mode(Mode::CloseOnCall(100));
    let result = check(&up, 0).await;
    assert!(matches!(result, CheckResult::Failure(_)), "{result:?}");
    up.record_check(0, &result);
    assert!(up.is_serving(), "one failure is below fall = 2");
    up.record_check(0, &check(&up, 0).await);
    assert!(!up.is_serving(), "second failure: down");
    assert_eq!(up.backends[0].state(), State::Down);
    assert_eq!(up.acquire().await.unwrap_err(), AcquireError::NoBackendUp);

    backend.set_mode(Mode::Normal);
    up.record_check(0, &check(&up, 0).await);
    assert!(!up.is_serving(), "one success is below rise = 2");
    up.record_check(0, &check(&up, 0).await);
    assert!(up.is_serving());

    let label = backend.addr.to_string();
    let count = |result: &str| {
        up.metrics
            .health_checks_total
            .with_label_values(&[&label, result])
            .get()
    };
    assert_eq!((count("success"), count("failure")), (3, 2));
    assert_eq!(up.metrics.backend_up.with_label_values(&[&label]).get(), 1);
}

#[tokio::test]
async fn a_dead_backend_is_down_after_its_first_check() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let up = upstream(&config(&[(addr, 2, FB)], ""));
    let result = check(&up, 0).await;
    assert!(
        matches!(&result, CheckResult::Failure(reason) if reason.contains(&addr.to_string())),
        "{result:?}"
    );
    up.record_check(0, &result);
    assert_eq!(up.backends[0].state(), State::Down);
    assert!(!up.is_serving());
}

#[tokio::test]
async fn a_busy_backend_with_recent_replies_passes_without_a_slot() {
    let backend = Responder::start(FB).await;
    let up = upstream(&config(
        &[(backend.addr, 1, FB)],
        "[health]\ninterval = \"10s\"\ntimeout = \"200ms\"\n",
    ));
    mark_up(&up, 0);
    let held = up.acquire().await.unwrap();
    // No reply seen yet: the check waits for a slot, then fails.
    let started = std::time::Instant::now();
    assert!(matches!(check(&up, 0).await, CheckResult::Failure(_)));
    assert!(started.elapsed() >= Duration::from_millis(200));
    // A real call just succeeded: busy is fine.
    up.backends[0].note_reply();
    assert_eq!(check(&up, 0).await, CheckResult::BusyOk);
    drop(held);
    assert_eq!(check(&up, 0).await, CheckResult::Success);
}

#[tokio::test]
async fn passive_failures_take_a_backend_down() {
    let backend = Responder::start(FB).await;
    let up = upstream(&config(&[(backend.addr, 1, FB)], "[health]\nfall = 2\n"));
    mark_up(&up, 0);
    up.report_failure(0, "connect refused");
    assert!(up.is_serving());
    up.report_failure(0, "connect refused");
    assert!(!up.is_serving());
}

#[tokio::test]
async fn status_reports_backends_and_queue() {
    let backend = Responder::start(FB).await;
    let up = upstream(&config(&[(backend.addr, 4, FB)], ""));
    mark_up(&up, 0);
    let _slot = up.acquire().await.unwrap();
    let status = up.status();
    assert_eq!(status["backends"][0]["address"], backend.addr.to_string());
    assert_eq!(status["backends"][0]["up"], true);
    assert_eq!(status["backends"][0]["slots_in_use"], 1);
    assert_eq!(status["backends"][0]["max"], 4);
    assert_eq!(status["queue_depth"], 0);
}
