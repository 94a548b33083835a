//! probegate's edge, end to end (issue 3): what happens to a public
//! connection before anything is forwarded.
//!
//! The incident (INCIDENT.md) is replayed first straight at a two-worker
//! backend, where silent connections and reset probes make a real call fail,
//! and then through probegate, where hundreds of probes from a probe range
//! are answered at the edge while uploads keep succeeding and the backend
//! never sees a probe connection. Then: silent clients from a normal address,
//! every kind of bad input (each closed and counted by its reason, with the
//! proxy healthy afterwards), and PROXY protocol v1/v2 headers whose address
//! decides the connection's class.

use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::net::{close_with_rst, connect_from, read_until_closed};
use e2e::{
    images, metric, probegate_in_front, wait_until, within, Metrics, Probegate, ProbegateConfig,
    Protocol, ThriftClient, Transport, Uploader, UploaderConfig,
};
use thrift::protocol::{TBinaryInputProtocol, TBinaryOutputProtocol};
use thrift::transport::{TFramedReadTransport, TFramedWriteTransport};
use uploader_idl::{TUploaderSyncClient, UploaderSyncClient};

/// Bound on anything that should happen promptly.
const PROMPT: Duration = Duration::from_secs(15);
/// The probe range of these tests, as configured and as labelled.
const PROBE_RANGE: &str = "127.100.0.0/16";

fn probe_ip() -> IpAddr {
    "127.100.0.1".parse().expect("literal address")
}

fn local_ip() -> IpAddr {
    "127.0.0.1".parse().expect("literal address")
}

fn probes(m: &Metrics, source: &str, ending: &str) -> f64 {
    m.get(&format!(
        "probegate_probes_total{{source=\"{source}\",ending=\"{ending}\"}}"
    ))
}

fn rejected(m: &Metrics, reason: &str) -> f64 {
    m.get(&format!("probegate_rejected_total{{reason=\"{reason}\"}}"))
}

fn class(m: &Metrics, class: &str) -> f64 {
    m.get(&format!("probegate_connections_total{{class=\"{class}\"}}"))
}

fn accepted(backend: &Uploader) -> f64 {
    metric(backend.admin_addr(), "uploader_connections_accepted_total")
}

fn backend_calls(backend: &Uploader) -> f64 {
    Metrics::scrape(backend.admin_addr()).sum("uploader_requests_total", &[])
}

type RawClient = UploaderSyncClient<
    TBinaryInputProtocol<TFramedReadTransport<TcpStream>>,
    TBinaryOutputProtocol<TFramedWriteTransport<TcpStream>>,
>;

/// The generated Rust client (framed, strict binary) on a stream the test
/// opened itself: from a chosen source address, or after a PROXY header.
fn client_on(stream: TcpStream) -> RawClient {
    stream.set_read_timeout(Some(PROMPT)).expect("timeout");
    stream.set_write_timeout(Some(PROMPT)).expect("timeout");
    let read = stream.try_clone().expect("clone stream");
    UploaderSyncClient::new(
        TBinaryInputProtocol::new(TFramedReadTransport::new(read), true),
        TBinaryOutputProtocol::new(TFramedWriteTransport::new(stream), true),
    )
}

/// A whole HTTP/1.1 exchange on `stream` with `Connection: close`: the raw
/// response, read until the server closes.
fn http_on(mut stream: TcpStream, method: &str, path: &str) -> String {
    let request =
        format!("{method} {path} HTTP/1.1\r\nHost: probegate\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("send request");
    let (response, _) = read_until_closed(&mut stream, PROMPT);
    String::from_utf8_lossy(&response).into_owned()
}

fn upload_through(proxy: SocketAddr, seed: &str) -> Result<String, String> {
    ThriftClient::connect_with(proxy, Transport::Framed, Protocol::Binary, PROMPT)
        .and_then(|mut c| c.upload(&images::unique_png(seed), Some("a.png"), None))
        .map(|r| r.url)
        .map_err(|e| e.to_string())
}

#[test]
fn incident_replay_probes_starve_the_backend_directly_but_never_reach_it_through_probegate() {
    // Direct: the incident. Two silent connections hold both workers, and
    // the balancer's reset probes pile up behind them.
    let direct = Uploader::start(UploaderConfig::new().workers(2).read_timeout("0s"));
    let silent: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(direct.thrift_addr()).expect("connect"))
        .collect();
    let direct_admin = direct.admin_addr();
    wait_until(PROMPT, "both workers held by silent connections", || {
        metric(direct_admin, "uploader_workers_busy") >= 2.0
    });
    for _ in 0..20 {
        let probe = TcpStream::connect(direct.thrift_addr()).expect("probe connects");
        close_with_rst(probe).expect("rst");
    }
    let addr = direct.thrift_addr();
    let call = within(PROMPT, move || {
        ThriftClient::connect_with(
            addr,
            Transport::Framed,
            Protocol::Binary,
            Duration::from_secs(2),
        )
        .and_then(|mut c| c.upload(&images::unique_png("direct"), Some("a.png"), None))
        .map(|r| r.url)
        .map_err(|e| e.to_string())
    });
    let result = call
        .into_result()
        .expect("the client gives up within its timeout");
    assert!(
        result.is_err(),
        "direct to a starved 2-worker backend the upload must fail, got {result:?}"
    );
    drop(silent);

    // Through probegate: the same backend shape, probes from a probe range.
    let backend = Uploader::start(UploaderConfig::new().workers(2).read_timeout("0s"));
    let proxy = Probegate::start(
        ProbegateConfig::new()
            .backend(backend.thrift_addr(), 2)
            .set("probes.sources", vec![PROBE_RANGE])
            .set("timeouts.first_byte", "500ms"),
    );
    proxy.wait_backends_up(&[backend.thrift_addr()], PROMPT);
    let public = proxy.public_addr();

    const RST: usize = 200;
    const FIN: usize = 200;
    const HTTP: usize = 100;
    const SILENT: usize = 50;
    const THREADS: usize = 8;
    // Jobs 0..RST reset, then FIN, then HTTP; silent ones are held together.
    let next = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let next = Arc::clone(&next);
            let failures = Arc::clone(&failures);
            std::thread::spawn(move || loop {
                let job = next.fetch_add(1, Ordering::SeqCst);
                if job >= RST + FIN + HTTP {
                    return;
                }
                let stream = match connect_from(probe_ip(), public, PROMPT) {
                    Ok(s) => s,
                    Err(e) => {
                        failures.lock().unwrap().push(format!("connect: {e}"));
                        continue;
                    }
                };
                if job < RST {
                    close_with_rst(stream).expect("rst");
                } else if job < RST + FIN {
                    drop(stream);
                } else {
                    let response = http_on(stream, "HEAD", "/health");
                    if !response.starts_with("HTTP/1.1 200") {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("HEAD /health: {response:?}"));
                    }
                }
            })
        })
        .collect();
    let silent_thread = std::thread::spawn(move || {
        let mut held: Vec<TcpStream> = (0..SILENT)
            .map(|_| connect_from(probe_ip(), public, PROMPT).expect("silent probe connects"))
            .collect();
        for stream in &mut held {
            let (bytes, _) = read_until_closed(stream, PROMPT);
            assert!(bytes.is_empty(), "a silent probe was sent {bytes:?}");
        }
    });

    // Uploads keep succeeding while the probes run, each on a new connection.
    let storm_over = Arc::new(AtomicBool::new(false));
    let mut uploads = 0usize;
    let started = Instant::now();
    while !storm_over.load(Ordering::SeqCst) || uploads < 3 {
        let result = upload_through(public, &format!("storm-{uploads}"));
        assert!(
            result.is_ok(),
            "upload {uploads} through probegate failed during the probe storm: {result:?}"
        );
        uploads += 1;
        if workers.iter().all(|w| w.is_finished()) && silent_thread.is_finished() {
            storm_over.store(true, Ordering::SeqCst);
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "probe storm did not end"
        );
    }
    for w in workers {
        w.join().expect("probe thread");
    }
    silent_thread
        .join()
        .expect("silent probes were closed by probegate");
    let failures = failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "probe failures: {failures:?}");

    let admin = proxy.admin_addr();
    let want = [
        ("rst", RST),
        ("fin", FIN),
        ("http", HTTP),
        ("timeout", SILENT),
    ];
    // A probe that closes right after its handshake is, rarely, never seen
    // by probegate (199 of 200 resets counted on a loaded 2-core machine,
    // with no accept error logged: most likely lost in the kernel's accept
    // queue, whose backlog is 128), so at most 1% of those may go uncounted.
    // Probes that wait for probegate's answer or timeout are counted exactly.
    let lost_max = |ending: &str, n: usize| match ending {
        "rst" | "fin" => n / 100,
        _ => 0,
    };
    // Poll until all are counted; on a timeout the asserts below say which.
    e2e::poll_until(PROMPT, || {
        let m = Metrics::scrape(admin);
        want.iter()
            .all(|(ending, n)| probes(&m, PROBE_RANGE, ending) >= (n - lost_max(ending, *n)) as f64)
    });
    let m = Metrics::scrape(admin);
    let counted: Vec<(&str, f64)> = ["rst", "fin", "http", "timeout", "data"]
        .into_iter()
        .map(|ending| (ending, probes(&m, PROBE_RANGE, ending)))
        .collect();
    let mut total = 0.0;
    for (ending, n) in want {
        let got = probes(&m, PROBE_RANGE, ending);
        total += got;
        assert!(
            got <= n as f64 && got >= (n - lost_max(ending, n)) as f64,
            "{got} probes ending {ending}, sent {n}; all counted: {counted:?}, rejected: {}",
            m.sum("probegate_rejected_total", &[])
        );
    }
    assert_eq!(probes(&m, PROBE_RANGE, "data"), 0.0);
    assert_eq!(
        class(&m, "probe"),
        total,
        "every probe connection, and nothing else, is class probe"
    );
    assert_eq!(class(&m, "thrift"), uploads as f64);
    assert_eq!(m.sum("probegate_rejected_total", &[]), 0.0, "{}", m.text);

    // The backend saw the uploads and probegate's pooled connections only.
    assert_eq!(
        metric(
            backend.admin_addr(),
            "uploader_requests_total{method=\"upload\"}"
        ),
        uploads as f64
    );
    let accepted = accepted(&backend);
    assert!(
        (1.0..=2.0).contains(&accepted),
        "the backend accepted {accepted} connections; probegate may open at most max_connections = 2"
    );
}

#[test]
fn silent_clients_from_a_normal_address_do_not_hold_backend_workers() {
    const SILENT: usize = 6; // three times the backend's workers
    let first_byte = Duration::from_secs(1);
    let backend = Uploader::start(UploaderConfig::new().workers(2).read_timeout("0s"));
    let proxy = Probegate::start(
        ProbegateConfig::new()
            .backend(backend.thrift_addr(), 2)
            .set("timeouts.first_byte", "1s"),
    );
    proxy.wait_backends_up(&[backend.thrift_addr()], PROMPT);
    let connected_at = Instant::now();
    let mut silent: Vec<TcpStream> = (0..SILENT)
        .map(|_| TcpStream::connect(proxy.public_addr()).expect("connect"))
        .collect();

    for i in 0..3 {
        let started = Instant::now();
        let result = upload_through(proxy.public_addr(), &format!("silent-{i}"));
        assert!(result.is_ok(), "upload {i}: {result:?}");
        assert!(
            started.elapsed() < first_byte + Duration::from_secs(2),
            "upload {i} took {:?}",
            started.elapsed()
        );
    }

    // Each silent connection is closed once first_byte has passed.
    for conn in &mut silent {
        let (bytes, _) = read_until_closed(conn, first_byte + PROMPT);
        assert!(
            bytes.is_empty(),
            "probegate sent {bytes:?} to a silent client"
        );
    }
    let elapsed = connected_at.elapsed();
    assert!(
        elapsed >= first_byte - Duration::from_millis(50),
        "silent clients closed after {elapsed:?}, before first_byte = {first_byte:?}"
    );
    let admin = proxy.admin_addr();
    wait_until(PROMPT, "the silent clients to be counted", || {
        probes(&Metrics::scrape(admin), "other", "timeout") >= SILENT as f64
    });
    let m = Metrics::scrape(admin);
    assert_eq!(probes(&m, "other", "timeout"), SILENT as f64);
    assert_eq!(class(&m, "thrift"), 3.0);
    let accepted = accepted(&backend);
    assert!(
        accepted <= 2.0,
        "silent clients reached the backend: it accepted {accepted} connections"
    );
}

/// A framed strict-binary message header of a call to `name`, claiming a
/// frame of `frame_len` bytes.
fn framed_call_start(frame_len: u32, name: &str) -> Vec<u8> {
    let mut bytes = frame_len.to_be_bytes().to_vec();
    bytes.extend_from_slice(&[0x80, 0x01, 0x00, 0x01]);
    bytes.extend_from_slice(&(name.len() as u32).to_be_bytes());
    bytes.extend_from_slice(name.as_bytes());
    bytes.extend_from_slice(&1i32.to_be_bytes());
    bytes
}

/// A whole framed strict-binary call to `name` with empty arguments.
fn whole_call(name: &str) -> Vec<u8> {
    // version, name length, name, seqid, field stop
    let body_len = 4 + 4 + name.len() + 4 + 1;
    let mut call = framed_call_start(body_len as u32, name);
    call.push(0);
    call
}

/// The start of a TLS 1.2 ClientHello record.
fn tls_client_hello() -> Vec<u8> {
    let mut hello = vec![
        0x16, 0x03, 0x01, 0x00, 0x2f, 0x01, 0x00, 0x00, 0x2b, 0x03, 0x03,
    ];
    hello.extend((0u8..32).map(|i| i.wrapping_mul(37)));
    hello.extend_from_slice(&[0x00, 0x00, 0x02, 0x13, 0x01, 0x01, 0x00]);
    hello
}

/// Deterministic noise (xorshift), never starting like a protocol we know.
fn random_bytes(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = vec![0x00, 0x00, 0x01, 0x00];
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.push((seed >> 24) as u8 | 0x01);
    }
    out
}

/// Sends `bytes` from a normal address and expects probegate to close the
/// connection, counted under `reason`; returns what it answered.
fn expect_rejected(proxy: &Probegate, bytes: &[u8], reason: &str) -> Vec<u8> {
    let admin = proxy.admin_addr();
    let before = Metrics::scrape(admin);
    let mut stream = TcpStream::connect(proxy.public_addr()).expect("connect");
    stream.write_all(bytes).expect("send");
    let (answer, _) = read_until_closed(&mut stream, PROMPT);
    wait_until(
        PROMPT,
        &format!("rejected_total{{reason={reason}}} + 1"),
        || rejected(&Metrics::scrape(admin), reason) > rejected(&before, reason),
    );
    let after = Metrics::scrape(admin);
    assert_eq!(
        rejected(&after, reason),
        rejected(&before, reason) + 1.0,
        "{reason}"
    );
    assert_eq!(
        class(&after, "thrift"),
        class(&before, "thrift"),
        "{reason}: nothing may be forwarded"
    );
    answer
}

#[test]
fn bad_input_is_closed_and_counted_by_reason_and_the_proxy_stays_healthy() {
    let (backend, proxy) = probegate_in_front(
        |config| {
            config
                .set("probes.sources", vec![PROBE_RANGE])
                .set("timeouts.first_byte", "1500ms")
        },
        PROMPT,
    );
    let calls_before = backend_calls(&backend);

    // HTTP that is not a health check, from a normal address.
    for path in ["/", "/metrics"] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: probegate\r\n\r\n");
        let answer = expect_rejected(&proxy, request.as_bytes(), "http_not_health");
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 404"), "GET {path}: {text}");
        assert!(
            !text.contains("probegate_"),
            "GET {path} leaked metrics: {text}"
        );
    }

    // A 2 GB frame length: refused from its header, never allocated.
    let rss_before = proxy.rss_kib();
    let mut huge = framed_call_start(2_000_000_000, "upload");
    huge.extend(std::iter::repeat_n(0u8, 64 * 1024));
    expect_rejected(&proxy, &huge, "frame_too_large");
    let rss_after = proxy.rss_kib();
    assert!(
        rss_after < 64 * 1024,
        "probegate RSS is {rss_after} KiB after a 2 GB frame header (was {rss_before} KiB)"
    );

    expect_rejected(&proxy, &tls_client_hello(), "tls");
    expect_rejected(&proxy, b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13\r\n", "ssh");
    expect_rejected(&proxy, &random_bytes(512, 0x9e37_79b9_7f4a_7c15), "garbage");
    // Thrift-looking headers that are wrong.
    expect_rejected(
        &proxy,
        b"\x00\x00\x00\x11\x80\x01\x00\x07\x00\x00\x00\x04ping\x00\x00\x00\x01\x00",
        "bad_thrift",
    );
    expect_rejected(
        &proxy,
        b"\x00\x00\x00\x04ping\x01\x00\x00\x00\x01\x00",
        "non_strict_binary",
    );

    // A byte-per-second trickle of a real call gets no more than first_byte.
    let first_byte = Duration::from_millis(1500);
    let admin = proxy.admin_addr();
    let before = rejected(&Metrics::scrape(admin), "first_bytes_timeout");
    let mut stream = TcpStream::connect(proxy.public_addr()).expect("connect");
    let opened = Instant::now();
    let mut writer = stream.try_clone().expect("clone");
    let trickle = std::thread::spawn(move || {
        for byte in whole_call("ping") {
            if writer.write_all(&[byte]).is_err() {
                return;
            }
            // Pacing the trickle, not synchronisation.
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    let (answer, _) = read_until_closed(&mut stream, first_byte + PROMPT);
    let closed_after = opened.elapsed();
    assert!(
        answer.is_empty(),
        "probegate answered a trickle: {answer:?}"
    );
    assert!(
        closed_after >= first_byte - Duration::from_millis(50)
            && closed_after < first_byte + Duration::from_secs(2),
        "a trickle was closed after {closed_after:?}, expected about first_byte = {first_byte:?}"
    );
    wait_until(PROMPT, "the trickle to be counted", || {
        rejected(&Metrics::scrape(admin), "first_bytes_timeout") == before + 1.0
    });
    drop(stream);
    trickle.join().expect("trickle thread");

    // Healthy afterwards: health answers 200 and calls go through.
    let health = e2e::http::head(proxy.public_addr(), "/health").expect("HEAD /health");
    assert_eq!(health.status, 200);
    let mut client = ThriftClient::connect(proxy.public_addr()).expect("connect");
    assert_eq!(client.ping().expect("ping after bad input"), "pong");
    // None of the rejected bytes reached the backend: no upload call, and no
    // connection beyond probegate's pool.
    assert_eq!(
        metric(
            backend.admin_addr(),
            "uploader_requests_total{method=\"upload\"}"
        ),
        0.0
    );
    assert!(
        backend_calls(&backend) > calls_before,
        "the final ping was served"
    );
    let accepted = accepted(&backend);
    assert!(
        accepted <= 2.0,
        "the backend accepted {accepted} connections"
    );
}

#[test]
fn framed_non_strict_binary_is_counted_as_non_strict_binary() {
    // An old client with strict_write = false on a framed transport: a frame
    // length, then a name length, the name and the message type.
    let backend = Uploader::start(UploaderConfig::new().workers(1));
    let proxy = Probegate::start(ProbegateConfig::new().backend(backend.thrift_addr(), 1));
    proxy.wait_backends_up(&[backend.thrift_addr()], PROMPT);
    expect_rejected(
        &proxy,
        b"\x00\x00\x00\x0d\x00\x00\x00\x04ping\x01\x00\x00\x00\x01\x00",
        "non_strict_binary",
    );
}

/// A PROXY protocol v1 line for a TCP4 client.
fn proxy_v1(source: &str) -> Vec<u8> {
    format!("PROXY TCP4 {source} 127.0.0.1 40000 9455\r\n").into_bytes()
}

/// A PROXY protocol v2 header: `PROXY` for a TCP4 client at `source`, or
/// `LOCAL` (the balancer's own connection) when `source` is `None`.
fn proxy_v2(source: Option<[u8; 4]>) -> Vec<u8> {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    match source {
        Some(ip) => {
            header.extend_from_slice(&[0x21, 0x11, 0x00, 12]);
            header.extend_from_slice(&ip);
            header.extend_from_slice(&[127, 0, 0, 1]);
            header.extend_from_slice(&40000u16.to_be_bytes());
            header.extend_from_slice(&9455u16.to_be_bytes());
        }
        None => header.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]),
    }
    header
}

/// Connects from `source` and writes `header` first.
fn with_header(proxy: &Probegate, source: IpAddr, header: &[u8]) -> TcpStream {
    let mut stream = connect_from(source, proxy.public_addr(), PROMPT).expect("connect");
    stream.write_all(header).expect("send PROXY header");
    stream
}

/// Waits until `query(metrics)` has grown by exactly one from `before`.
fn counted_once(proxy: &Probegate, before: &Metrics, what: &str, query: impl Fn(&Metrics) -> f64) {
    let admin = proxy.admin_addr();
    wait_until(PROMPT, what, || {
        query(&Metrics::scrape(admin)) > query(before)
    });
    assert_eq!(
        query(&Metrics::scrape(admin)),
        query(before) + 1.0,
        "{what}: counted more than once"
    );
}

#[test]
fn proxy_protocol_headers_decide_the_client_address() {
    let (backend, proxy) = probegate_in_front(
        |config| {
            config
                .set("listen.proxy_protocol", true)
                .set("probes.sources", vec![PROBE_RANGE])
                .set("clients.deny", vec!["192.0.2.0/24"])
                .set("timeouts.first_byte", "1s")
                .set("timeouts.proxy_header", "1s")
        },
        PROMPT,
    );
    let admin = proxy.admin_addr();
    let uploads =
        |b: &Uploader| metric(b.admin_addr(), "uploader_requests_total{method=\"upload\"}");

    // v1 and v2 from a normal client: forwarded like any Thrift client.
    for (version, header) in [
        ("v1", proxy_v1("198.51.100.7")),
        ("v2", proxy_v2(Some([198, 51, 100, 8]))),
    ] {
        let before = Metrics::scrape(admin);
        let mut client = client_on(with_header(&proxy, local_ip(), &header));
        let req = uploader_idl::UploadRequest::new(
            images::unique_png(&format!("proxied-{version}")),
            Some("a.png".to_string()),
            None,
        );
        let result = client
            .upload(req)
            .unwrap_or_else(|e| panic!("{version}: {e}"));
        assert!(
            result.url.starts_with("http://"),
            "{version}: {}",
            result.url
        );
        assert_eq!(client.ping().expect("second call"), "pong");
        counted_once(
            &proxy,
            &before,
            &format!("{version} client is class thrift"),
            |m| class(m, "thrift"),
        );
    }
    assert_eq!(uploads(&backend), 2.0);

    // The TCP peer is 127.0.0.1 (not a probe); the header says 127.100.0.7,
    // which makes the connection a probe: HTTP health is answered...
    let before = Metrics::scrape(admin);
    let stream = with_header(&proxy, local_ip(), &proxy_v2(Some([127, 100, 0, 7])));
    let response = http_on(stream, "HEAD", "/health");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    counted_once(&proxy, &before, "v2 probe-range HTTP probe", |m| {
        probes(m, PROBE_RANGE, "http")
    });

    // ...and a Thrift call from that address is never forwarded.
    let before = Metrics::scrape(admin);
    let mut stream = with_header(&proxy, local_ip(), &proxy_v2(Some([127, 100, 0, 7])));
    stream.write_all(&whole_call("upload")).expect("send call");
    let (answer, _) = read_until_closed(&mut stream, PROMPT);
    assert!(
        answer.is_empty(),
        "a probe source got an answer: {answer:?}"
    );
    counted_once(&proxy, &before, "v2 probe-range data", |m| {
        probes(m, PROBE_RANGE, "data")
    });
    assert_eq!(
        uploads(&backend),
        2.0,
        "the probe's call reached the backend"
    );

    // v1 from the probe range, then FIN: a probe that ended with fin.
    let before = Metrics::scrape(admin);
    let mut stream = with_header(&proxy, local_ip(), &proxy_v1("127.100.0.8"));
    stream.shutdown(std::net::Shutdown::Write).expect("FIN");
    read_until_closed(&mut stream, PROMPT);
    counted_once(&proxy, &before, "v1 probe-range FIN", |m| {
        probes(m, PROBE_RANGE, "fin")
    });

    // v2 LOCAL: the balancer's own health check, closed and counted.
    let before = Metrics::scrape(admin);
    let mut stream = with_header(&proxy, probe_ip(), &proxy_v2(None));
    let (answer, _) = read_until_closed(&mut stream, PROMPT);
    assert!(answer.is_empty(), "LOCAL got {answer:?}");
    counted_once(&proxy, &before, "v2 LOCAL", |m| {
        m.sum("probegate_probes_total", &[("ending", "local")])
    });

    // A denied address inside the header is denied, though the peer is not.
    let before = Metrics::scrape(admin);
    let mut stream = with_header(&proxy, local_ip(), &proxy_v1("192.0.2.1"));
    stream.write_all(&whole_call("ping")).expect("send");
    let (answer, _) = read_until_closed(&mut stream, PROMPT);
    assert!(answer.is_empty(), "a denied client got {answer:?}");
    counted_once(&proxy, &before, "denied by header address", |m| {
        class(m, "denied")
    });

    // No header, a malformed one, or silence: closed, counted.
    let ping_call = whole_call("ping");
    let cases: [(&str, &[u8]); 3] = [
        ("missing", &ping_call),
        ("malformed", b"PROXY TCP4 nonsense\r\n"),
        ("silent", b""),
    ];
    for (what, bytes) in cases {
        let before = Metrics::scrape(admin);
        let mut stream = TcpStream::connect(proxy.public_addr()).expect("connect");
        stream.write_all(bytes).expect("send");
        let (answer, _) = read_until_closed(&mut stream, PROMPT);
        assert!(answer.is_empty(), "{what} header: got {answer:?}");
        counted_once(&proxy, &before, &format!("{what} PROXY header"), |m| {
            rejected(m, "proxy_header")
        });
    }
    let m = Metrics::scrape(admin);
    assert_eq!(
        class(&m, "thrift"),
        2.0,
        "only the two proxied clients were forwarded"
    );
}

#[test]
fn clients_allow_and_deny_decide_by_address_and_probe_sources_are_never_forwarded() {
    let (backend, proxy) = probegate_in_front(
        |config| {
            config
                .set("probes.sources", vec![PROBE_RANGE])
                .set("clients.allow", vec!["127.0.0.0/29"])
                .set("clients.deny", vec!["127.0.0.4/32"])
                .set("timeouts.first_byte", "1s")
        },
        PROMPT,
    );
    let admin = proxy.admin_addr();
    let public = proxy.public_addr();
    let ip = |s: &str| -> IpAddr { s.parse().expect("test address") };
    let uploads = || {
        metric(
            backend.admin_addr(),
            "uploader_requests_total{method=\"upload\"}",
        )
    };

    // Inside `allow` and not denied: served.
    let mut client = client_on(connect_from(ip("127.0.0.2"), public, PROMPT).expect("connect"));
    assert_eq!(client.ping().expect("an allowed client is served"), "pong");

    // Denied, and outside `allow`: closed at once without a byte, even
    // when the client speaks first.
    for source in ["127.0.0.4", "127.0.0.9"] {
        let before = Metrics::scrape(admin);
        let started = Instant::now();
        let mut stream = connect_from(ip(source), public, PROMPT).expect("connect");
        let _ = stream.write_all(&whole_call("upload"));
        let (answer, _) = read_until_closed(&mut stream, PROMPT);
        assert!(answer.is_empty(), "{source} got {answer:?}");
        assert!(
            started.elapsed() < Duration::from_millis(900),
            "{source} was closed only after {:?} (first_byte is 1s): not at once",
            started.elapsed()
        );
        counted_once(&proxy, &before, &format!("{source} denied"), |m| {
            class(m, "denied")
        });
        // One that resets at once has usually ended before probegate
        // accepts it (counted in the accept loop): denied all the same,
        // never a probe.
        let before = Metrics::scrape(admin);
        close_with_rst(connect_from(ip(source), public, PROMPT).expect("connect")).expect("rst");
        counted_once(&proxy, &before, &format!("{source} denied, reset"), |m| {
            class(m, "denied")
        });
        assert_eq!(
            probes(&Metrics::scrape(admin), "other", "rst"),
            0.0,
            "a denied client counted as a probe"
        );
    }

    // A probe source, though outside `allow`, gets its health answer...
    let response = http_on(
        connect_from(probe_ip(), public, PROMPT).expect("connect"),
        "GET",
        "/health",
    );
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    // ...and whatever else it sends is never forwarded.
    let before = Metrics::scrape(admin);
    let mut stream = connect_from(probe_ip(), public, PROMPT).expect("connect");
    stream.write_all(&whole_call("upload")).expect("send");
    let (answer, _) = read_until_closed(&mut stream, PROMPT);
    assert!(answer.is_empty(), "a probe source got {answer:?}");
    counted_once(&proxy, &before, "probe source data", |m| {
        probes(m, PROBE_RANGE, "data")
    });
    assert_eq!(
        uploads(),
        0.0,
        "a probe's or denied client's upload reached the backend"
    );
    assert_eq!(class(&Metrics::scrape(admin), "thrift"), 1.0);
}
