//! The library's `run` on real sockets (127.0.0.1:0): round trips through the
//! Rust client, the incident's worker exhaustion and its cure (read timeout),
//! connection-ending metrics, size limits and unknown methods.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use thrift::protocol::{
    TBinaryInputProtocol, TBinaryOutputProtocol, TFieldIdentifier, TInputProtocol,
    TMessageIdentifier, TMessageType, TOutputProtocol, TStructIdentifier, TType,
};
use thrift::transport::{TFramedReadTransport, TFramedWriteTransport};
use uploader::client::{Client, ClientError, Flavor, Protocol, Transport};
use uploader::config::Config;
use uploader::storage::Storage;
use uploader_idl::{ERROR_EMPTY, ERROR_TOO_LARGE};

const WAIT: Duration = Duration::from_secs(10);

struct TestServer {
    thrift: SocketAddr,
    admin: SocketAddr,
    root: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Runs the server with `server_keys` added to its `[server]` table.
    fn start(server_keys: &str) -> TestServer {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let root = std::env::temp_dir().join(format!(
            "uploader-server-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&root);
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{server_keys}\n[admin]\nlisten = \"127.0.0.1:0\"\n[storage]\nroot = {:?}\n",
            root.display().to_string()
        );
        let config = Config::parse(&text).expect("test config");
        let (addrs_tx, addrs_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let thrift = std::net::TcpListener::bind(config.server.listen.0).expect("bind");
                let admin = tokio::net::TcpListener::bind(config.admin.listen.0)
                    .await
                    .expect("bind admin");
                let admin_addr = admin.local_addr().expect("admin addr");
                let mut storage = Storage::new(&config.storage, None).expect("storage");
                storage.use_admin_addr(admin_addr);
                addrs_tx
                    .send((thrift.local_addr().expect("addr"), admin_addr))
                    .expect("report addresses");
                uploader::server::run(&config, storage, thrift, admin, async {
                    let _ = stop_rx.await;
                })
                .await
                .expect("run");
            });
        });
        let (thrift, admin) = addrs_rx.recv_timeout(WAIT).expect("server started");
        TestServer {
            thrift,
            admin,
            root,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    fn client(&self, flavor: Flavor, timeout: Duration) -> Client {
        Client::connect(self.thrift, flavor, timeout).expect("connect")
    }

    fn metric(&self, name: &str) -> f64 {
        let (status, body) = http_get(self.admin, "/metrics");
        assert_eq!(status, 200);
        let text = String::from_utf8_lossy(&body).into_owned();
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
    }

    fn wait_metric(&self, name: &str, want: f64) {
        let deadline = Instant::now() + WAIT;
        loop {
            let got = self.metric(name);
            if got == want {
                return;
            }
            assert!(Instant::now() < deadline, "{name} is {got}, want {want}");
            std::thread::yield_now();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// A bare HTTP/1.0 GET: (status, body).
fn http_get(addr: SocketAddr, path: &str) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect_timeout(&addr, WAIT).expect("connect admin");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").expect("request");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("response");
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, response[split + 4..].to_vec())
}

/// A PNG signature and IHDR chunk padded to exactly `len` bytes (detection
/// looks only at the start).
fn png(len: usize) -> Vec<u8> {
    let mut data = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0".to_vec();
    let mut n = 0u8;
    while data.len() < len {
        data.push(n);
        n = n.wrapping_add(1);
    }
    data.truncate(len);
    data
}

#[test]
fn uploads_round_trip_in_every_flavor() {
    let flavors = [
        Flavor::new(Transport::Framed, Protocol::Binary),
        Flavor::new(Transport::Framed, Protocol::Compact),
        Flavor::new(Transport::Buffered, Protocol::Binary),
        Flavor::new(Transport::Buffered, Protocol::Compact),
    ];
    for (i, flavor) in flavors.into_iter().enumerate() {
        let server = TestServer::start(&format!(
            "protocol = \"{}\"\ntransport = \"{}\"\n",
            flavor.protocol, flavor.transport
        ));
        let mut client = server.client(flavor, WAIT);
        assert_eq!(client.ping().expect("ping"), "pong");
        let data = png(300 + i);
        let first = client
            .upload(data.clone(), Some("a.png"), None)
            .expect("upload");
        assert_eq!(first.content_type.as_deref(), Some("image/png"));
        assert!(first
            .url
            .starts_with(&format!("http://{}/objects/images/", server.admin)));
        let path = first
            .url
            .split_once(&server.admin.to_string())
            .expect("admin url")
            .1;
        let (status, body) = http_get(server.admin, path);
        assert_eq!(status, 200, "{flavor}");
        assert_eq!(body, data, "{flavor}: fetched bytes differ");

        let second = client.upload(data, None, Some("image/png")).expect("again");
        assert_eq!(second.key, first.key);
        let err = client.upload(Vec::new(), None, None).expect_err("empty");
        assert_eq!(err.upload_code(), Some(ERROR_EMPTY));
        // A refusal leaves the connection usable, and oneway calls work.
        client.touch("hello").expect("touch");
        assert_eq!(client.ping().expect("ping after refusal"), "pong");
        server.wait_metric("uploader_uploads_total{outcome=\"stored\"}", 1.0);
        server.wait_metric("uploader_uploads_total{outcome=\"duplicate\"}", 1.0);
        server.wait_metric("uploader_requests_total{method=\"touch\"}", 1.0);
    }
}

#[test]
fn silent_connections_exhaust_workers_without_a_read_timeout() {
    let server = TestServer::start("workers = 1\nread_timeout = \"0s\"\n");
    let silent = TcpStream::connect(server.thrift).expect("silent connection");
    server.wait_metric("uploader_workers_busy", 1.0);

    // The one worker is held: a real call waits in the backlog, unanswered.
    let mut waiting = server.client(Flavor::default(), Duration::from_millis(800));
    let err = waiting.ping().expect_err("no worker can answer");
    assert!(matches!(err, ClientError::Thrift(_)), "{err}");

    // When the silent client goes away the worker is free again (the client
    // that gave up must go too: its queued connection is served next and,
    // with no read timeout, would hold the worker just the same).
    drop(waiting);
    drop(silent);
    let mut fresh = server.client(Flavor::default(), WAIT);
    assert_eq!(fresh.ping().expect("ping once freed"), "pong");
    server.wait_metric("uploader_connections_idle_closed_total", 1.0);
}

#[test]
fn a_read_timeout_frees_the_worker_and_is_counted() {
    let server = TestServer::start("workers = 1\nread_timeout = \"300ms\"\n");
    let mut silent = TcpStream::connect(server.thrift).expect("silent connection");
    server.wait_metric("uploader_workers_busy", 1.0);

    let mut client = server.client(Flavor::default(), WAIT);
    assert_eq!(client.ping().expect("ping after the timeout"), "pong");
    server.wait_metric("uploader_read_timeouts_total", 1.0);
    server.wait_metric("uploader_connections_idle_closed_total", 0.0);

    // The server closed the silent connection.
    silent.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut byte = [0u8; 1];
    assert_eq!(silent.read(&mut byte).unwrap_or(0), 0);
}

#[test]
fn size_limits_are_enforced_before_buffering() {
    let server = TestServer::start("max_upload_bytes = 1000\n");
    let mut client = server.client(Flavor::default(), WAIT);
    client
        .upload(png(1000), None, None)
        .expect("exactly the limit");
    let err = client
        .upload(png(1001), None, None)
        .expect_err("over the limit");
    assert_eq!(err.upload_code(), Some(ERROR_TOO_LARGE));
    server.wait_metric("uploader_uploads_total{outcome=\"too_large\"}", 1.0);

    // A frame header beyond the limit plus overhead: closed without the
    // server waiting for (or buffering) the body it announces.
    let mut raw = TcpStream::connect(server.thrift).expect("connect");
    raw.set_read_timeout(Some(WAIT)).expect("timeout");
    raw.write_all(&(1000 + 64 * 1024 + 1u32).to_be_bytes())
        .expect("header");
    let mut byte = [0u8; 1];
    assert_eq!(raw.read(&mut byte).unwrap_or(0), 0, "server should close");
}

#[test]
fn buffered_binary_fields_are_capped() {
    let server = TestServer::start("transport = \"buffered\"\nmax_upload_bytes = 1000\n");
    let mut raw = TcpStream::connect(server.thrift).expect("connect");
    raw.set_read_timeout(Some(WAIT)).expect("timeout");
    // upload(req) whose `data` claims 2 GiB - 1 and carries nothing.
    let mut call = vec![0x80, 0x01, 0x00, 0x01];
    call.extend(6u32.to_be_bytes());
    call.extend(b"upload");
    call.extend(1u32.to_be_bytes());
    call.extend([12, 0, 1]); // field 1: struct UploadRequest
    call.extend([11, 0, 1]); // field 1: binary data
    call.extend(i32::MAX.to_be_bytes());
    raw.write_all(&call).expect("call");
    let mut reply = Vec::new();
    let _ = raw.read_to_end(&mut reply);
    let text = String::from_utf8_lossy(&reply);
    assert!(
        text.contains("exceeds maximum allowed size"),
        "expected a protocol-error exception, got {text:?}"
    );
}

#[test]
fn unknown_methods_get_an_exception_and_the_connection_survives() {
    let server = TestServer::start("");
    let stream = TcpStream::connect(server.thrift).expect("connect");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut output = TBinaryOutputProtocol::new(
        TFramedWriteTransport::new(stream.try_clone().expect("clone")),
        true,
    );
    let mut input = TBinaryInputProtocol::new(TFramedReadTransport::new(stream), true);

    output
        .write_message_begin(&TMessageIdentifier::new(
            "frobnicate",
            TMessageType::Call,
            7,
        ))
        .expect("begin");
    output
        .write_struct_begin(&TStructIdentifier::new("args"))
        .expect("struct");
    output
        .write_field_begin(&TFieldIdentifier::new("x", TType::String, 1))
        .expect("field");
    output.write_string("an argument to skip").expect("arg");
    output.write_field_end().expect("field end");
    output.write_field_stop().expect("stop");
    output.write_struct_end().expect("struct end");
    output.write_message_end().expect("end");
    output.flush().expect("flush");

    let reply = input.read_message_begin().expect("reply");
    assert_eq!(reply.message_type, TMessageType::Exception);
    assert_eq!(reply.sequence_number, 7);
    let error = thrift::Error::read_application_error_from_in_protocol(&mut input)
        .expect("application error");
    assert_eq!(error.kind, thrift::ApplicationErrorKind::UnknownMethod);
    input.read_message_end().expect("end");

    output
        .write_message_begin(&TMessageIdentifier::new("ping", TMessageType::Call, 8))
        .expect("begin");
    output
        .write_struct_begin(&TStructIdentifier::new("args"))
        .expect("struct");
    output.write_field_stop().expect("stop");
    output.write_struct_end().expect("struct end");
    output.write_message_end().expect("end");
    output.flush().expect("flush");
    let reply = input.read_message_begin().expect("ping reply");
    assert_eq!(
        (reply.name.as_str(), reply.message_type),
        ("ping", TMessageType::Reply)
    );
    server.wait_metric("uploader_requests_total{method=\"other\"}", 1.0);
}

#[test]
fn admin_answers_liveness_and_readiness() {
    let server = TestServer::start("workers = 3\n");
    assert_eq!(http_get(server.admin, "/live").0, 200);
    let (status, body) = http_get(server.admin, "/ready");
    assert_eq!((status, body.as_slice()), (200, b"ready\n".as_slice()));
    assert_eq!(http_get(server.admin, "/objects/../../etc/passwd").0, 400);
    assert_eq!(http_get(server.admin, "/objects/images/no/such.png").0, 404);
    server.wait_metric("uploader_workers", 3.0);
}
