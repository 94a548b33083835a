//! The process contract every server keeps, on the backend: SIGTERM and
//! SIGINT stop it with status 0, and a restart on the same addresses serves
//! what was stored before (the harness's `restart()`, which proxy tests use
//! to bring a backend back), and on glibc it sets its allocator up before
//! any worker starts.

use std::time::Duration;

use e2e::{http, images, ServerProcess, ThriftClient, Uploader, UploaderConfig};

const STOP: Duration = Duration::from_secs(15);

/// A running server (it has answered a request) stops cleanly.
#[test]
fn sigterm_and_sigint_exit_zero() {
    type Signal = fn(&ServerProcess);
    let signals: [(&str, Signal); 2] = [
        ("SIGTERM", ServerProcess::sigterm),
        ("SIGINT", ServerProcess::sigint),
    ];
    for (name, signal) in signals {
        let mut backend = Uploader::start(UploaderConfig::new());
        let live = http::get(backend.admin_addr(), "/live").expect("/live");
        assert_eq!(live.status, 200);
        signal(&backend);
        let status = backend.wait_exit(STOP);
        assert!(status.success(), "{name}: {status}");
    }
}

/// The contract says a signal stops the server cleanly once it has printed
/// its `listening` line. Orchestrators (and `cargo stack`) may signal at any
/// moment after that, so the handlers must be installed before the line is
/// printed; a signal in the gap kills the process with the default action.
#[test]
fn signal_right_after_the_listening_line_exits_zero() {
    for round in 0..20 {
        let mut backend = Uploader::start(UploaderConfig::new());
        let name = if round % 2 == 0 {
            backend.sigint();
            "SIGINT"
        } else {
            backend.sigterm();
            "SIGTERM"
        };
        let status = backend.wait_exit(STOP);
        assert!(
            status.success(),
            "{name} right after the listening line: {status}"
        );
    }
}

#[test]
fn restart_keeps_addresses_and_data() {
    let mut backend = Uploader::start(UploaderConfig::new().workers(2));
    let (thrift, admin) = (backend.thrift_addr(), backend.admin_addr());
    let stored = ThriftClient::connect(thrift)
        .and_then(|mut c| c.upload(images::GIF, None, None))
        .expect("upload");
    backend.restart();
    assert_eq!(
        (backend.thrift_addr(), backend.admin_addr()),
        (thrift, admin)
    );
    let fetched = http::get_url(&stored.url).expect("GET after restart");
    assert_eq!(fetched.body.as_ref(), images::GIF);
    assert_eq!(
        ThriftClient::connect(thrift)
            .and_then(|mut c| c.ping())
            .expect("ping"),
        "pong"
    );
}

/// On glibc the uploader fixes its allocator's thresholds before any worker
/// starts (`uploader::malloc`); without that, some workers map and fault in
/// every upload's buffers anew. A setting inside the C library shows
/// outside only in the line the uploader logs about it, so this test sets
/// the log filter itself instead of trusting the environment's `RUST_LOG`.
#[test]
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn on_glibc_the_uploader_keeps_upload_buffers_in_the_heap() {
    let mut config = UploaderConfig::new();
    config
        .env
        .push(("RUST_LOG".to_string(), "uploader=debug".to_string()));
    let backend = Uploader::start(config);
    let expected = format!("allocator: {}", uploader::malloc::describe());
    let log = backend.stderr();
    assert!(log.contains(&expected), "no {expected:?} in:\n{log}");
    assert!(!log.contains("refused fixed malloc thresholds"), "{log}");
}
