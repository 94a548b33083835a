//! Request-level forwarding through the real probegate binary, in front of
//! real uploader backends (issue 4, and the overload case of issue 3).
//!
//! Each test shows what a user of a thread-per-connection backend would
//! notice: overload is answered with a `TApplicationException` at once;
//! many persistent clients share two backend threads fairly (and the same
//! load straight at the backend starves all but two, which proves the test
//! can fail); stalled and idle clients cost the backend no connection; a
//! backend killed mid-call costs a retryable call nothing and anything else
//! a prompt exception; per-method metrics count exactly the calls made;
//! large uploads go through pipes that serve one call after another, each
//! stored byte for byte.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::wait::Pending;
use e2e::{
    http, images, metric, probegate_in_front, wait_until, within, CallError, Metrics, Probegate,
    ProbegateConfig, Protocol, ThriftClient, Transport, Uploader, UploaderConfig,
    ERROR_INVALID_IMAGE,
};

/// Bound on anything that should happen promptly.
const PROMPT: Duration = Duration::from_secs(15);

fn client(addr: SocketAddr, timeout: Duration) -> ThriftClient {
    ThriftClient::connect_with(addr, Transport::Framed, Protocol::Binary, timeout).expect("connect")
}

fn app_message(e: &CallError) -> String {
    match e {
        CallError::Application(a) => a.message.clone(),
        other => panic!("expected a TApplicationException, got {other}"),
    }
}

fn requests(m: &Metrics, method: &str, outcome: &str) -> f64 {
    m.get(&format!(
        "probegate_requests_total{{method=\"{method}\",outcome=\"{outcome}\"}}"
    ))
}

/// Occupies a `workers = 1`, no-read-timeout backend's only worker with a
/// silent direct connection, after letting probegate's pooled connection
/// to it close (`pool_idle`), so that the next call probegate sends stays
/// in flight until the returned connection is dropped.
fn stall_only_worker(backend: &Uploader, proxy: &Probegate) -> TcpStream {
    let admin = proxy.admin_addr();
    let idle = format!(
        "probegate_pool_connections{{backend=\"{}\",state=\"idle\"}}",
        backend.thrift_addr()
    );
    wait_until(PROMPT, "probegate's pooled connection to close", || {
        metric(admin, &idle) == 0.0
    });
    wait_until(PROMPT, "the backend worker to be free", || {
        metric(backend.admin_addr(), "uploader_workers_busy") == 0.0
    });
    let silent = TcpStream::connect(backend.thrift_addr()).expect("connect to backend");
    wait_until(PROMPT, "the silent connection to hold the worker", || {
        metric(backend.admin_addr(), "uploader_workers_busy") == 1.0
    });
    silent
}

fn stalling_backend() -> Uploader {
    Uploader::start(UploaderConfig::new().workers(1).read_timeout("0s"))
}

#[test]
fn overload_beyond_max_queue_is_answered_with_an_exception_at_once() {
    let backend = stalling_backend();
    let proxy = Probegate::start(
        ProbegateConfig::new()
            .backend(backend.thrift_addr(), 1)
            .set("health.interval", "60s")
            .set("forwarding.pool_idle", "200ms")
            .set("limits.max_queue", 0)
            .set("timeouts.request", "60s"),
    );
    proxy.wait_backends_up(&[backend.thrift_addr()], PROMPT);
    let silent = stall_only_worker(&backend, &proxy);

    // A 1 MiB upload takes the only slot and stays in flight.
    let public = proxy.public_addr();
    let image = images::png_of_size(1 << 20);
    let mut slow = within(Duration::ZERO, move || {
        client(public, Duration::from_secs(60))
            .upload(&image, Some("big.png"), Some("image/png"))
            .map(|r| r.size)
            .map_err(|e| e.to_string())
    });
    let in_flight = format!(
        "probegate_backend_requests_in_flight{{backend=\"{}\"}}",
        backend.thrift_addr()
    );
    wait_until(PROMPT, "the upload to be in flight", || {
        metric(proxy.admin_addr(), &in_flight) == 1.0
    });

    // The next call finds the slot taken and the queue (0 long) full.
    let started = Instant::now();
    let err = client(public, PROMPT).ping().expect_err("shed");
    assert_eq!(app_message(&err), "overloaded: queue full (max_queue=0)");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "shed took {:?}",
        started.elapsed()
    );
    assert!(!slow.is_done(), "the slow upload is still in flight");

    drop(silent);
    let done = slow
        .wait(PROMPT)
        .expect("upload completes once the worker is free");
    assert_eq!(done, &Ok(1 << 20));
    let m = Metrics::scrape(proxy.admin_addr());
    assert_eq!(requests(&m, "ping", "shed"), 1.0);
    assert_eq!(requests(&m, "upload", "reply"), 1.0);
}

/// Runs `clients` persistent connections to `addr`, each calling `ping` in
/// a loop for `window`; returns how many calls each completed.
fn ping_load(addr: SocketAddr, clients: usize, window: Duration) -> Vec<usize> {
    let start = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                let Ok(mut c) =
                    ThriftClient::connect_with(addr, Transport::Framed, Protocol::Binary, window)
                else {
                    return 0;
                };
                while !start.load(Ordering::SeqCst) {
                    std::thread::yield_now();
                }
                let deadline = Instant::now() + window;
                let mut done = 0;
                while Instant::now() < deadline {
                    match c.ping() {
                        Ok(_) => done += 1,
                        Err(_) => break,
                    }
                }
                done
            })
        })
        .collect();
    start.store(true, Ordering::SeqCst);
    threads
        .into_iter()
        .map(|t| t.join().expect("client thread"))
        .collect()
}

/// On one thread probegate runs tokio's current-thread scheduler, on more
/// the multi-thread one (`probegate::runtime`): each must serve every
/// client, pipelined.
#[test]
fn many_persistent_clients_share_two_workers_fairly_on_one_thread() {
    many_persistent_clients_share_two_workers_fairly(1);
}

#[test]
fn many_persistent_clients_share_two_workers_fairly_on_two_threads() {
    many_persistent_clients_share_two_workers_fairly(2);
}

fn many_persistent_clients_share_two_workers_fairly(threads: i64) {
    const CLIENTS: usize = 64;
    const MIN_CALLS: usize = 5;
    let window = Duration::from_secs(3);
    let backend = Uploader::start(UploaderConfig::new().workers(2).read_timeout("0s"));
    let proxy = Probegate::start(
        ProbegateConfig::new()
            .backend(backend.thrift_addr(), 2)
            .set("runtime.threads", threads),
    );
    proxy.wait_backends_up(&[backend.thrift_addr()], PROMPT);

    let through_proxy = ping_load(proxy.public_addr(), CLIENTS, window);
    let starved: Vec<_> = through_proxy
        .iter()
        .enumerate()
        .filter(|(_, n)| **n < MIN_CALLS)
        .collect();
    assert!(
        starved.is_empty(),
        "through probegate on {threads} thread(s) every client completes >= {MIN_CALLS} calls; these did not: {starved:?}"
    );
    let accepted = metric(backend.admin_addr(), "uploader_connections_accepted_total");
    assert!(accepted <= 2.0, "backend accepted {accepted} connections");
    // 64 clients on 2 connections: the pings were pipelined (the default
    // forwarding.pipeline_methods), and the uploader answered each in order.
    let pipelined = metric(
        proxy.admin_addr(),
        &format!(
            "probegate_backend_pipelined_total{{backend=\"{}\"}}",
            backend.thrift_addr()
        ),
    );
    assert!(pipelined > 0.0, "no ping was pipelined");
    let calls: usize = through_proxy.iter().sum();
    let replies = metric(
        proxy.admin_addr(),
        "probegate_requests_total{method=\"ping\",outcome=\"reply\"}",
    );
    assert!(
        replies >= calls as f64,
        "{calls} calls completed but probegate counted {replies} replies"
    );

    // The same load straight at the backend: two clients hold both workers.
    let direct = ping_load(backend.thrift_addr(), CLIENTS, window);
    let served = direct.iter().filter(|n| **n > 0).count();
    assert!(
        served <= 2,
        "direct to a 2-worker backend only 2 clients can be served, got {served}: {direct:?}"
    );
}

#[test]
fn stalled_clients_hold_no_backend_connection() {
    let backend = Uploader::start(UploaderConfig::new().workers(2).read_timeout("0s"));
    let proxy = Probegate::start(ProbegateConfig::new().backend(backend.thrift_addr(), 2));
    proxy.wait_backends_up(&[backend.thrift_addr()], PROMPT);
    let accepted_before = metric(backend.admin_addr(), "uploader_connections_accepted_total");

    // Five clients (more than the workers) each send half of a framed
    // upload call and stall.
    let half_call = {
        let mut frame = Vec::new();
        frame.extend_from_slice(&(100_000u32).to_be_bytes());
        frame.extend_from_slice(&[0x80, 0x01, 0x00, 0x01, 0, 0, 0, 6]);
        frame.extend_from_slice(b"upload");
        frame.extend_from_slice(&[0, 0, 0, 1]);
        frame.extend(std::iter::repeat_n(0u8, 5_000));
        frame
    };
    let stalled: Vec<TcpStream> = (0..5)
        .map(|_| {
            let mut s = TcpStream::connect(proxy.public_addr()).expect("connect");
            s.write_all(&half_call).expect("half a call");
            s
        })
        .collect();

    let started = Instant::now();
    let result = client(proxy.public_addr(), PROMPT)
        .upload(&images::unique_png("stalled"), Some("a.png"), None)
        .expect("a fresh client's upload succeeds");
    assert!(result.url.starts_with("http"), "{}", result.url);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "upload took {:?}",
        started.elapsed()
    );
    let accepted = metric(backend.admin_addr(), "uploader_connections_accepted_total");
    assert!(
        accepted <= accepted_before.max(1.0) + 1.0,
        "stalled clients reached the backend: accepted {accepted_before} -> {accepted}"
    );
    drop(stalled);
}

#[test]
fn a_thousand_idle_clients_cost_the_backend_nothing() {
    const IDLE: usize = 1000;
    let backend = Uploader::start(UploaderConfig::new().workers(2).read_timeout("0s"));
    let proxy = Probegate::start(
        ProbegateConfig::new()
            .backend(backend.thrift_addr(), 2)
            .set("timeouts.idle", "5m"),
    );
    proxy.wait_backends_up(&[backend.thrift_addr()], PROMPT);
    let rss_before = proxy.rss_kib();

    // Each client makes one call (so it is a real Thrift client, past
    // detection) and then keeps its connection open, idle.
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        let mut c = client(proxy.public_addr(), PROMPT);
        assert_eq!(c.ping().expect("ping"), "pong");
        idle.push(c);
    }
    let rss_after = proxy.rss_kib();

    let started = Instant::now();
    for i in 0..3 {
        client(proxy.public_addr(), PROMPT)
            .upload(
                &images::unique_png(&format!("idle-{i}")),
                Some("a.png"),
                None,
            )
            .expect("fresh upload succeeds");
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "uploads took {:?}",
        started.elapsed()
    );
    let accepted = metric(backend.admin_addr(), "uploader_connections_accepted_total");
    assert!(
        accepted <= 2.0,
        "{IDLE} idle clients made the backend accept {accepted} connections"
    );
    let per_client = rss_after.saturating_sub(rss_before) as f64 / IDLE as f64;
    eprintln!(
        "probegate RSS {rss_before} KiB -> {rss_after} KiB with {IDLE} idle clients: {per_client:.1} KiB each"
    );
    assert!(
        per_client < 64.0,
        "an idle client costs {per_client:.1} KiB of proxy memory"
    );
    drop(idle);
}

/// Starts `call` through the proxy repeatedly until one is stuck in flight
/// on `stuck` (the other backend answers at once). Round robin between
/// equally loaded backends sends a call to `stuck` within two tries.
fn call_stuck_on<T: Send + 'static>(
    proxy: &Probegate,
    stuck: SocketAddr,
    call: impl Fn(SocketAddr) -> T + Send + Sync + 'static,
) -> Pending<T> {
    let call = Arc::new(call);
    let in_flight = format!("probegate_backend_requests_in_flight{{backend=\"{stuck}\"}}");
    let public = proxy.public_addr();
    for _ in 0..4 {
        let c = Arc::clone(&call);
        let mut pending = within(Duration::ZERO, move || c(public));
        let deadline = Instant::now() + PROMPT;
        loop {
            if pending.wait(Duration::from_millis(20)).is_some() {
                break; // answered by the other backend: try again
            }
            if metric(proxy.admin_addr(), &in_flight) == 1.0 {
                return pending;
            }
            assert!(
                Instant::now() < deadline,
                "call neither answered nor in flight"
            );
        }
    }
    panic!("no call was dispatched to {stuck}");
}

/// Two backends: `a` can be stalled (workers = 1, no read timeout), `b` is
/// normal; probegate retries only `ping`.
fn two_backends() -> (Uploader, Uploader, Probegate) {
    let a = stalling_backend();
    let b = Uploader::start(UploaderConfig::new().workers(2));
    let proxy = Probegate::start(
        ProbegateConfig::new()
            .backend(a.thrift_addr(), 1)
            .backend(b.thrift_addr(), 2)
            .set("health.interval", "60s")
            .set("forwarding.pool_idle", "200ms")
            .set("forwarding.retry_methods", vec!["ping"])
            .set("timeouts.request", "10s"),
    );
    proxy.wait_backends_up(&[a.thrift_addr(), b.thrift_addr()], PROMPT);
    (a, b, proxy)
}

#[test]
fn backend_killed_mid_call_a_retried_method_succeeds_on_the_other() {
    let (a, b, proxy) = two_backends();
    let _silent = stall_only_worker(&a, &proxy);
    let a_addr = a.thrift_addr();
    let mut ping = call_stuck_on(&proxy, a_addr, |addr| {
        client(addr, Duration::from_secs(30))
            .ping()
            .map_err(|e| e.to_string())
    });
    drop(a); // killed with the ping in flight on it
    let result = ping.wait(PROMPT).expect("the ping is answered");
    assert_eq!(result, &Ok("pong".to_string()));
    assert!(metric(b.admin_addr(), "uploader_requests_total{method=\"ping\"}") >= 1.0);
}

#[test]
fn backend_killed_mid_call_a_non_retried_call_gets_an_exception() {
    let (a, _b, proxy) = two_backends();
    let _silent = stall_only_worker(&a, &proxy);
    let a_addr = a.thrift_addr();
    let mut upload = call_stuck_on(&proxy, a_addr, |addr| {
        client(addr, Duration::from_secs(30))
            .upload(&images::unique_png("killed"), Some("a.png"), None)
            .map(|r| r.url)
            .map_err(|e| match e {
                CallError::Application(a) => a.message,
                other => format!("not an application exception: {other}"),
            })
    });
    let killed_at = Instant::now();
    drop(a);
    let result = upload
        .wait(Duration::from_secs(10))
        .expect("answered within timeouts.request");
    match result {
        Err(message) => assert!(
            message.starts_with("backend connection failed"),
            "{message}"
        ),
        Ok(url) => panic!("upload must not be retried, but succeeded: {url}"),
    }
    assert!(killed_at.elapsed() < Duration::from_secs(10));
    let m = Metrics::scrape(proxy.admin_addr());
    assert_eq!(requests(&m, "upload", "error"), 1.0);
}

#[test]
fn per_method_metrics_match_the_calls_made() {
    let (_backend, proxy) = probegate_in_front(|config| config, PROMPT);
    let mut c = client(proxy.public_addr(), PROMPT);
    for _ in 0..3 {
        assert_eq!(c.ping().expect("ping"), "pong");
    }
    c.upload(&images::unique_png("metrics"), Some("a.png"), None)
        .expect("upload");
    let err = c
        .upload(images::NOT_AN_IMAGE, Some("a.pdf"), None)
        .expect_err("not an image");
    assert_eq!(err.upload_code(), Some(ERROR_INVALID_IMAGE));
    c.touch("hello").expect("touch");
    assert_eq!(c.ping().expect("ping after touch"), "pong");

    let m = Metrics::scrape(proxy.admin_addr());
    assert_eq!(requests(&m, "ping", "reply"), 4.0);
    assert_eq!(
        requests(&m, "upload", "reply"),
        2.0,
        "a declared UploadError is a normal reply"
    );
    assert_eq!(requests(&m, "touch", "oneway"), 1.0);
    assert_eq!(
        m.get("probegate_request_seconds_count{method=\"ping\"}"),
        4.0
    );
    for outcome in ["exception", "shed", "timeout", "error"] {
        assert_eq!(
            m.sum("probegate_requests_total", &[("outcome", outcome)]),
            0.0
        );
    }
}

#[test]
fn large_uploads_go_through_pipes_kept_from_one_call_to_the_next() {
    const UPLOADS: usize = 3;
    let (_backend, proxy) = probegate_in_front(|config| config, PROMPT);
    let mut c = client(proxy.public_addr(), PROMPT);
    // Different sizes, so different objects: each must come back as sent.
    for i in 0..UPLOADS {
        let image = images::png_of_size(600 * 1024 + i * 4096);
        let stored = c
            .upload(&image, Some("large.png"), None)
            .expect("large upload");
        let fetched = http::get_url(&stored.url).expect("GET the stored object");
        assert!(
            fetched.body.as_ref() == image.as_slice(),
            "upload {i}: stored bytes differ from those sent"
        );
    }
    let m = Metrics::scrape(proxy.admin_addr());
    let piped = m.get("probegate_requests_piped_total");
    assert_eq!(piped, UPLOADS as f64, "every large upload was piped");
    // Each piped call uses at least two pipes (a segment and the spare
    // each send is duplicated into); made fresh every time, that would be
    // at least twice the calls.
    let made = m.get("probegate_pipes_made_total");
    assert!(
        made < 2.0 * piped,
        "{made} pipes made for {piped} sequential calls: none was kept for the next"
    );
    assert!(
        m.get("probegate_pipes_kept") >= 2.0,
        "the last call's pipes are kept"
    );
}
