//! The incident, reproduced on the backend alone (see INCIDENT.md): a fixed
//! pool of worker threads, each serving one connection for as long as it
//! lives, and connections that connect and send nothing.
//!
//! With no read timeout, two silent connections hold both workers of a
//! two-worker backend and a real `ping` waits for as long as they stay open.
//! With a read timeout the workers are taken back and the ping completes
//! after about that timeout.

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use e2e::client::{Protocol, Transport};
use e2e::{metric, wait_until, within, ThriftClient, Uploader, UploaderConfig};

/// How long the starved ping is watched to prove it does not complete.
const STARVED_WAIT: Duration = Duration::from_secs(2);
/// Bound on anything that should happen promptly.
const PROMPT: Duration = Duration::from_secs(10);

fn silent_connections(backend: &Uploader, n: usize) -> Vec<TcpStream> {
    let conns: Vec<TcpStream> = (0..n)
        .map(|_| TcpStream::connect(backend.thrift_addr()).expect("connect"))
        .collect();
    let admin = backend.admin_addr();
    wait_until(PROMPT, "both workers to hold a silent connection", || {
        metric(admin, "uploader_workers_busy") >= n as f64
    });
    conns
}

/// Starts a ping on its own thread with a generous client timeout, so that
/// only the server decides when it completes.
fn ping_in_background(backend: &Uploader) -> e2e::wait::Pending<Result<String, String>> {
    let addr = backend.thrift_addr();
    within(Duration::ZERO, move || {
        ThriftClient::connect_with(
            addr,
            Transport::Framed,
            Protocol::Binary,
            Duration::from_secs(60),
        )
        .and_then(|mut c| c.ping())
        .map_err(|e| e.to_string())
    })
}

#[test]
fn without_read_timeout_two_silent_connections_starve_two_workers() {
    let backend = Uploader::start(UploaderConfig::new().workers(2).read_timeout("0s"));
    let silent = silent_connections(&backend, 2);

    let mut ping = ping_in_background(&backend);
    assert!(
        ping.wait(STARVED_WAIT).is_none(),
        "a ping completed while both workers were held by silent connections: {:?}",
        ping.into_result()
    );
    // Still starved: nothing but the silent clients going away frees a worker.
    assert_eq!(metric(backend.admin_addr(), "uploader_workers_busy"), 2.0);

    drop(silent);
    let result = ping.wait(PROMPT).cloned();
    assert_eq!(
        result,
        Some(Ok("pong".to_string())),
        "the ping should complete once the silent connections close"
    );
    // Closed by the peer before any request: what a probe looks like.
    let admin = backend.admin_addr();
    wait_until(
        PROMPT,
        "uploader_connections_idle_closed_total >= 2",
        || metric(admin, "uploader_connections_idle_closed_total") >= 2.0,
    );
    assert_eq!(metric(admin, "uploader_read_timeouts_total"), 0.0);
}

#[test]
fn with_read_timeout_silent_connections_are_dropped_and_ping_completes() {
    let read_timeout = Duration::from_secs(1);
    let backend = Uploader::start(UploaderConfig::new().workers(2).read_timeout("1s"));
    let connected_at = Instant::now();
    let mut silent = silent_connections(&backend, 2);

    let mut ping = ping_in_background(&backend);
    let result = ping.wait(PROMPT).cloned();
    let elapsed = connected_at.elapsed();
    assert_eq!(
        result,
        Some(Ok("pong".to_string())),
        "ping after the read timeout"
    );
    // Only the timeout can have freed a worker, so not before it expired.
    assert!(
        elapsed >= read_timeout - Duration::from_millis(100),
        "ping completed after {elapsed:?}, before the {read_timeout:?} read timeout could free a worker"
    );

    // The server closed the silent connections...
    for conn in &mut silent {
        conn.set_read_timeout(Some(PROMPT))
            .expect("set_read_timeout");
        let mut buf = [0u8; 1];
        match conn.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => panic!("the server sent {n} bytes to a silent client"),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("the server did not close a silent connection: {e}"),
        }
    }
    // ...and counted it.
    let admin = backend.admin_addr();
    wait_until(PROMPT, "uploader_read_timeouts_total >= 2", || {
        metric(admin, "uploader_read_timeouts_total") >= 2.0
    });
}
