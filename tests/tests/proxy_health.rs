//! The health answer probegate gives the load balancer, end to end
//! (issue 3): HTTP health on the public port, `/live` `/ready` `/status` on
//! the admin port, how both follow a backend that dies and comes back
//! (within `fall`/`rise` checks), the public port itself closing with
//! `tcp_follows_backend`, and the SIGTERM drain: 503 at once, in-flight work
//! finished, exit 0.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use e2e::net::{connect_from, read_until_closed, End};
use e2e::{
    http, images, metric, wait_until, within, Metrics, Probegate, ProbegateConfig, Protocol,
    ThriftClient, Transport, Uploader, UploaderConfig,
};

/// Bound on anything that should happen promptly.
const PROMPT: Duration = Duration::from_secs(15);
/// What a health flip may take beyond its `fall`/`rise` checks: one check's
/// own time, scheduling, and the test's polling.
const SLACK: Duration = Duration::from_millis(1500);
const INTERVAL: Duration = Duration::from_millis(200);
const FALL: u32 = 3;
const RISE: u32 = 2;

fn health_config(backend: &Uploader) -> ProbegateConfig {
    ProbegateConfig::new()
        .backend(backend.thrift_addr(), 2)
        .set("health.interval", "200ms")
        .set("health.timeout", "500ms")
        .set("health.fall", i64::from(FALL))
        .set("health.rise", i64::from(RISE))
        .set("timeouts.connect", "500ms")
}

/// `HEAD /health` on the public port; `None` when the request fails.
fn health_status(proxy: &Probegate) -> Option<u16> {
    http::head(proxy.public_addr(), "/health")
        .ok()
        .map(|r| r.status.as_u16())
}

fn ready_status(proxy: &Probegate) -> u16 {
    http::get(proxy.admin_addr(), "/ready")
        .expect("GET /ready")
        .status
        .as_u16()
}

/// Reads one HTTP response head (up to the blank line) from a kept-alive
/// connection; returns the status line.
fn read_response_head(stream: &mut TcpStream) -> String {
    stream.set_read_timeout(Some(PROMPT)).expect("timeout");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            Ok(_) => panic!(
                "connection closed after {:?}",
                String::from_utf8_lossy(&head)
            ),
            Err(e) => panic!("reading a response head: {e}"),
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    text.lines().next().unwrap_or_default().to_string()
}

/// Sends `request` in one write from `source` and reads until the server
/// closes the connection.
fn whole_request(source: &str, public: SocketAddr, request: &[u8]) -> String {
    let mut stream = connect_from(source.parse().expect("ip"), public, PROMPT).expect("connect");
    stream.write_all(request).expect("write");
    let (answer, end) = read_until_closed(&mut stream, PROMPT);
    assert_eq!(end, End::Eof, "answered, then closed by probegate");
    String::from_utf8_lossy(&answer).into_owned()
}

/// A load balancer's check usually arrives whole and asks to close; probegate
/// answers it from its accept loop when it is whole by then
/// (proxy/src/protocols/http_once.rs), through hyper otherwise. Either way
/// the answers, the closing and the counting are the same; which path
/// served is not fixed here (the race with accept is the client's), the
/// in-crate test in proxy/src/listeners/public.rs pins the accept-loop
/// path.
#[test]
fn whole_health_requests_that_close_are_answered_and_counted_like_any_other() {
    let backend = Uploader::start(UploaderConfig::new().workers(2));
    let proxy =
        Probegate::start(health_config(&backend).set("probes.sources", vec!["127.100.0.0/16"]));
    proxy.wait_backends_up(&[backend.thrift_addr()], PROMPT);
    let (public, admin) = (proxy.public_addr(), proxy.admin_addr());

    // Aliyun's check: HTTP/1.0 HEAD from the probe range.
    let head = whole_request("127.100.0.1", public, b"HEAD /health HTTP/1.0\r\n\r\n");
    assert!(head.starts_with("HTTP/1.0 200 OK\r\n"), "{head}");
    assert!(
        head.contains("\r\ncache-control: no-store\r\n") && head.ends_with("\r\n\r\n"),
        "{head}"
    );
    // HTTP/1.1 asking to close, from elsewhere: GET, answered with a body.
    let get = whole_request(
        "127.0.0.1",
        public,
        b"GET /health HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n",
    );
    assert!(get.starts_with("HTTP/1.1 200 OK\r\n"), "{get}");
    assert!(
        get.contains("\r\nconnection: close\r\n") && get.ends_with("backends up\n"),
        "{get}"
    );
    // Any other path: 404, closed, counted as not health.
    let other = whole_request("127.0.0.1", public, b"GET /metrics HTTP/1.0\r\n\r\n");
    assert!(other.starts_with("HTTP/1.0 404 Not Found\r\n"), "{other}");

    let m = Metrics::scrape(admin);
    let http_probes = m.get("probegate_probes_total{source=\"127.100.0.0/16\",ending=\"http\"}");
    let other_probes = m.get("probegate_probes_total{source=\"other\",ending=\"http\"}");
    assert_eq!(
        (http_probes, other_probes),
        (1.0, 1.0),
        "health answers counted by source"
    );
    assert_eq!(m.get("probegate_connections_total{class=\"probe\"}"), 1.0);
    assert_eq!(m.get("probegate_connections_total{class=\"http\"}"), 2.0);
    assert_eq!(
        m.get("probegate_rejected_total{reason=\"http_not_health\"}"),
        1.0
    );
}

#[test]
fn health_follows_the_backend_down_and_up_and_admin_agrees() {
    let mut backend = Uploader::start(UploaderConfig::new().workers(2));
    let proxy =
        Probegate::start(health_config(&backend).set("health.paths", vec!["/health", "/healthz"]));
    let addr = backend.thrift_addr();
    proxy.wait_backends_up(&[addr], PROMPT);

    // Up: every configured path answers 200, GET with a reason, HEAD without.
    let head = http::head(proxy.public_addr(), "/health").expect("HEAD /health");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    for path in ["/health", "/healthz"] {
        let get = http::get(proxy.public_addr(), path).expect("GET");
        assert_eq!(get.status, 200, "GET {path}");
        assert!(get.text().starts_with("ok"), "GET {path}: {}", get.text());
    }
    assert_eq!(
        http::get(proxy.public_addr(), "/ready")
            .expect("GET")
            .status,
        404,
        "only health paths are served on the public port"
    );
    // Keep-alive is honoured: two checks on one connection.
    let mut kept = TcpStream::connect(proxy.public_addr()).expect("connect");
    for i in 0..2 {
        kept.write_all(b"HEAD /health HTTP/1.1\r\nHost: probegate\r\n\r\n")
            .expect("send");
        let status = read_response_head(&mut kept);
        assert!(status.starts_with("HTTP/1.1 200"), "request {i}: {status}");
    }
    drop(kept);

    // The admin port tells the same truth.
    let admin = proxy.admin_addr();
    assert_eq!(http::get(admin, "/live").expect("live").status, 200);
    assert_eq!(ready_status(&proxy), 200);
    let status = http::get(admin, "/status").expect("status");
    assert_eq!(status.status, 200);
    let json: serde_json::Value = serde_json::from_slice(&status.body).expect("JSON");
    assert_eq!(json["backends"][0]["address"], addr.to_string(), "{json}");
    assert_eq!(json["backends"][0]["up"], true, "{json}");
    assert!(json["backends"][0]["slots_in_use"].is_u64(), "{json}");
    assert!(json["queue_depth"].is_u64(), "{json}");
    assert!(json["classes"]["probe"].is_object(), "{json}");
    assert_eq!(json["draining"], false, "{json}");

    // The backend dies: 503 after `fall` failed checks, not before.
    let killed = Instant::now();
    backend.kill();
    wait_until(
        FALL * INTERVAL + SLACK,
        "HEAD /health to answer 503",
        || health_status(&proxy) == Some(503),
    );
    let fell_after = killed.elapsed();
    assert!(
        fell_after + Duration::from_millis(50) >= (FALL - 1) * INTERVAL,
        "503 after {fell_after:?}: fewer than fall = {FALL} checks at {INTERVAL:?}"
    );
    let get = http::get(proxy.public_addr(), "/health").expect("GET");
    assert_eq!(get.status, 503);
    assert!(
        !get.text().trim().is_empty() && !get.text().starts_with("ok"),
        "a 503 says why: {:?}",
        get.text()
    );
    assert_eq!(ready_status(&proxy), 503);
    assert_eq!(proxy.backend_up(addr), 0.0);
    let failed_checks = metric(
        admin,
        &format!("probegate_health_checks_total{{backend=\"{addr}\",result=\"failure\"}}"),
    );
    assert!(
        failed_checks >= f64::from(FALL),
        "down after {failed_checks} failed checks, fall = {FALL}"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&http::get(admin, "/status").expect("status").body).expect("JSON");
    assert_eq!(json["backends"][0]["up"], false, "{json}");

    // It comes back on the same port: 200 after `rise` good checks.
    let restarting = Instant::now();
    backend.restart();
    let restarted = Instant::now();
    wait_until(
        RISE * INTERVAL + SLACK,
        "HEAD /health to answer 200 again",
        || health_status(&proxy) == Some(200),
    );
    let rose_after = restarting.elapsed();
    assert!(
        rose_after + Duration::from_millis(50) >= (RISE - 1) * INTERVAL,
        "200 after {rose_after:?}: fewer than rise = {RISE} checks at {INTERVAL:?}"
    );
    eprintln!(
        "fell after {fell_after:?}, rose {:?} after the restart",
        restarted.elapsed()
    );
    assert_eq!(ready_status(&proxy), 200);
    let mut client = ThriftClient::connect(proxy.public_addr()).expect("connect");
    client
        .upload(&images::unique_png("after-restart"), Some("a.png"), None)
        .expect("upload after the backend came back");
}

#[test]
fn with_tcp_follows_backend_the_public_port_closes_and_reopens() {
    let mut backend = Uploader::start(UploaderConfig::new().workers(2));
    let proxy = Probegate::start(health_config(&backend).set("health.tcp_follows_backend", true));
    let addr = backend.thrift_addr();
    wait_until(PROMPT, "HEAD /health to answer 200", || {
        health_status(&proxy) == Some(200)
    });
    assert_eq!(proxy.backend_up(addr), 1.0);

    backend.kill();
    let public = proxy.public_addr();
    wait_until(
        FALL * INTERVAL + SLACK,
        "new connections to the public port to be refused",
        || {
            matches!(
                TcpStream::connect(public),
                Err(e) if e.kind() == ErrorKind::ConnectionRefused
            )
        },
    );
    // The admin port stays up and says why.
    assert_eq!(ready_status(&proxy), 503);
    assert_eq!(proxy.backend_up(addr), 0.0);
    // Still refused a little later: the port stays closed while down.
    for _ in 0..5 {
        let refused = TcpStream::connect(public);
        assert!(
            matches!(&refused, Err(e) if e.kind() == ErrorKind::ConnectionRefused),
            "public port accepted while no backend is up: {refused:?}"
        );
        std::thread::sleep(INTERVAL);
    }

    backend.restart();
    wait_until(
        RISE * INTERVAL + SLACK,
        "the public port to accept and answer 200 again",
        || health_status(&proxy) == Some(200),
    );
    assert_eq!(ready_status(&proxy), 200);
    let mut client = ThriftClient::connect(public).expect("connect");
    assert_eq!(client.ping().expect("ping after re-bind"), "pong");
}

/// A relay to `target` that forwards what the client sends in `chunk`-byte
/// pieces, pausing between them, and the answers at full speed: a slow
/// upload from a real client.
fn slow_relay(target: SocketAddr, chunk: usize, pause: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind relay");
    let addr = listener.local_addr().expect("relay addr");
    std::thread::spawn(move || {
        let Ok((mut client, _)) = listener.accept() else {
            return;
        };
        let Ok(mut upstream) = TcpStream::connect(target) else {
            return;
        };
        let (Ok(mut answers), Ok(mut back)) = (upstream.try_clone(), client.try_clone()) else {
            return;
        };
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut answers, &mut back);
            let _ = back.shutdown(std::net::Shutdown::Write);
        });
        let mut buf = vec![0u8; chunk];
        loop {
            match client.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if upstream.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    // Pacing the upload, not synchronisation.
                    std::thread::sleep(pause);
                }
            }
        }
        let _ = upstream.shutdown(std::net::Shutdown::Write);
    });
    addr
}

#[test]
fn sigterm_answers_503_at_once_finishes_the_in_flight_upload_then_exits_0() {
    let grace = Duration::from_millis(1500);
    let backend = Uploader::start(UploaderConfig::new().workers(2));
    let mut proxy = Probegate::start(
        health_config(&backend)
            .set("shutdown.drain_grace", "1500ms")
            .set("shutdown.timeout", "20s"),
    );
    wait_until(PROMPT, "HEAD /health to answer 200", || {
        health_status(&proxy) == Some(200)
    });

    // A 2 MiB upload sent at 64 KiB per 100 ms: about 3 s, longer than the grace.
    let image = images::png_of_size(2 << 20);
    let expected = image.clone();
    let relay = slow_relay(proxy.public_addr(), 64 << 10, Duration::from_millis(100));
    let mut upload = within(Duration::ZERO, move || {
        ThriftClient::connect_with(
            relay,
            Transport::Framed,
            Protocol::Binary,
            Duration::from_secs(60),
        )
        .and_then(|mut c| c.upload(&image, Some("big.png"), None))
        .map_err(|e| e.to_string())
    });
    let admin = proxy.admin_addr();
    wait_until(
        PROMPT,
        "the slow upload to be a live Thrift connection",
        || metric(admin, "probegate_connections_active{class=\"thrift\"}") == 1.0,
    );

    let signalled = Instant::now();
    proxy.sigterm();
    wait_until(
        Duration::from_millis(500),
        "health to answer 503 at once",
        || health_status(&proxy) == Some(503),
    );
    assert_eq!(ready_status(&proxy), 503);
    assert_eq!(metric(admin, "probegate_draining"), 1.0);
    let get = http::get(proxy.public_addr(), "/health").expect("GET /health");
    assert!(get.text().contains("draining"), "{:?}", get.text());
    // Still serving during the grace: a new client's call succeeds.
    let mut client = ThriftClient::connect(proxy.public_addr()).expect("connect during grace");
    assert_eq!(client.ping().expect("ping during grace"), "pong");
    drop(client);
    assert!(
        signalled.elapsed() < grace,
        "the checks above took longer than the grace ({:?})",
        signalled.elapsed()
    );

    // After the grace, new connections are refused...
    let public = proxy.public_addr();
    wait_until(grace + PROMPT, "the public port to stop accepting", || {
        TcpStream::connect(public).is_err()
    });
    let closed_after = signalled.elapsed();
    assert!(
        closed_after + Duration::from_millis(50) >= grace,
        "stopped accepting {closed_after:?} after SIGTERM, before drain_grace = {grace:?}"
    );
    assert!(
        !upload.is_done(),
        "the slow upload should still be in flight when accepting stops"
    );

    // ...while the in-flight upload completes, and then probegate exits 0.
    let result = upload
        .wait(PROMPT)
        .cloned()
        .expect("the in-flight upload finishes within shutdown.timeout");
    let stored = result.unwrap_or_else(|e| panic!("in-flight upload failed during drain: {e}"));
    assert_eq!(stored.size, expected.len() as i64);
    let fetched = http::get_url(&stored.url).expect("fetch the stored object");
    assert_eq!(fetched.body.as_ref(), &expected[..], "stored bytes");
    let status = proxy.wait_exit(PROMPT + Duration::from_secs(20));
    assert!(status.success(), "probegate exited with {status}");
}
