//! Thrift interop through probegate: real clients, the real proxy binary and
//! a real uploader, in every flavor.
//!
//! A client of any transport (framed, buffered) and protocol (binary,
//! compact) talks to probegate; probegate re-expresses each call in the
//! backend's flavor and the reply in the client's. Checked here with the
//! Rust client users run (`uploader::client::Client`, and the `uploader
//! upload` CLI built on it), the test harness's generated client, Apache
//! Thrift's Python client, and raw sockets for what clients cannot be made
//! to do on demand: pipelined calls, an unknown method name, and
//! byte-for-byte comparison with the backend's own replies.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use e2e::client::CALL_TIMEOUT;
use e2e::python::PythonClient;
use e2e::{
    binary, http, images, poll_until, wait_until, CallError, Metrics, Probegate, ProbegateConfig,
    Protocol, TempDir, ThriftClient, TomlConfig, Transport, Uploader, UploaderConfig,
    ERROR_INVALID_IMAGE,
};
use thrift::protocol::{
    TBinaryInputProtocol, TBinaryOutputProtocol, TCompactInputProtocol, TCompactOutputProtocol,
    TFieldIdentifier, TInputProtocol, TMessageIdentifier, TMessageType, TOutputProtocol,
    TStructIdentifier, TType,
};
use thrift::transport::TFramedReadTransport;

const FLAVORS: [(Transport, Protocol); 4] = [
    (Transport::Framed, Protocol::Binary),
    (Transport::Framed, Protocol::Compact),
    (Transport::Buffered, Protocol::Binary),
    (Transport::Buffered, Protocol::Compact),
];

/// A backend in the given flavor and probegate in front of it, ready: the
/// proxy has seen the backend up and a ping through it succeeds.
fn stack(backend_transport: Transport, backend_protocol: Protocol) -> (Uploader, Probegate) {
    let backend = Uploader::start(
        UploaderConfig::new()
            .workers(2)
            .transport(backend_transport)
            .protocol(backend_protocol),
    );
    let proxy = Probegate::start(
        ProbegateConfig::new()
            .backend_table(
                TomlConfig::new()
                    .set("address", backend.thrift_addr().to_string())
                    .set("max_connections", 2)
                    .set("transport", backend_transport.as_str())
                    .set("protocol", backend_protocol.as_str()),
            )
            .set("health.interval", "200ms")
            .set("health.rise", 1),
    );
    let public = proxy.public_addr();
    wait_until(Duration::from_secs(15), "a ping through probegate", || {
        ThriftClient::connect(public)
            .and_then(|mut c| c.ping())
            .is_ok_and(|p| p == "pong")
    });
    (backend, proxy)
}

/// Waits until probegate counts `n` requests of `method` with `outcome`.
fn wait_requests(proxy: &Probegate, method: &str, outcome: &str, n: f64) {
    let query = format!("probegate_requests_total{{method=\"{method}\",outcome=\"{outcome}\"}}");
    let mut seen = 0.0;
    let counted = poll_until(Duration::from_secs(10), || {
        seen = Metrics::scrape(proxy.admin_addr()).get(&query);
        seen == n
    });
    assert!(counted, "{query} is {seen}, expected {n}");
}

fn client(addr: SocketAddr, transport: Transport, protocol: Protocol) -> ThriftClient {
    ThriftClient::connect_with(addr, transport, protocol, CALL_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect {transport:?}+{protocol:?} to {addr}: {e}"))
}

/// Everything the Rust client users run (`uploader::client::Client`, the
/// one behind `uploader upload`) does, in one flavor, on one connection.
fn exercise_rust_client(proxy: SocketAddr, transport: Transport, protocol: Protocol, what: &str) {
    use uploader::client::{Client, ClientError, Flavor};
    let flavor = Flavor::new(
        match transport {
            Transport::Framed => uploader::client::Transport::Framed,
            Transport::Buffered => uploader::client::Transport::Buffered,
        },
        match protocol {
            Protocol::Binary => uploader::client::Protocol::Binary,
            Protocol::Compact => uploader::client::Protocol::Compact,
        },
    );
    let mut c = Client::connect(proxy, flavor, CALL_TIMEOUT)
        .unwrap_or_else(|e| panic!("{what}: connect: {e}"));
    assert_eq!(c.ping().expect("ping"), "pong", "{what}");

    let png = images::unique_png(what);
    let stored = c
        .upload(
            png.clone(),
            Some("through-probegate.png"),
            Some("image/png"),
        )
        .unwrap_or_else(|e| panic!("{what}: upload: {e}"));
    assert_eq!(stored.size, png.len() as i64, "{what}");
    assert_eq!(stored.content_type.as_deref(), Some("image/png"), "{what}");
    let fetched = http::get_url(&stored.url).expect("GET the returned URL");
    assert_eq!(
        fetched.body.as_ref(),
        png.as_slice(),
        "{what}: stored bytes"
    );

    // The declared exception arrives typed, and the connection goes on.
    match c.upload(images::BMP.to_vec(), Some("logo.bmp"), None) {
        Err(ClientError::Upload(e)) => assert_eq!(e.code, ERROR_INVALID_IMAGE, "{what}: {e:?}"),
        other => panic!("{what}: expected UploadError, got {other:?}"),
    }
    // Oneway: nothing comes back, and the next call's reply is its own.
    c.touch(what)
        .unwrap_or_else(|e| panic!("{what}: touch: {e}"));
    assert_eq!(c.ping().expect("ping after touch"), "pong", "{what}");
}

#[test]
fn every_client_flavor_through_a_framed_binary_backend() {
    let (backend, proxy) = stack(Transport::Framed, Protocol::Binary);
    let touches = |b: &Uploader| {
        Metrics::scrape(b.admin_addr()).get("uploader_requests_total{method=\"touch\"}")
    };
    let before = touches(&backend);
    for (transport, protocol) in FLAVORS {
        let what = format!("{transport:?}+{protocol:?} client, framed+binary backend");
        exercise_rust_client(proxy.public_addr(), transport, protocol, &what);
    }
    // Each oneway touch reached the backend.
    wait_until(Duration::from_secs(10), "4 touches at the backend", || {
        touches(&backend) >= before + 4.0
    });
}

#[test]
fn every_client_flavor_through_a_buffered_compact_backend() {
    let (_backend, proxy) = stack(Transport::Buffered, Protocol::Compact);
    for (transport, protocol) in FLAVORS {
        let what = format!("{transport:?}+{protocol:?} client, buffered+compact backend");
        exercise_rust_client(proxy.public_addr(), transport, protocol, &what);
    }
}

#[test]
fn the_uploader_cli_uploads_through_probegate_in_every_flavor() {
    let (_backend, proxy) = stack(Transport::Framed, Protocol::Binary);
    let files = TempDir::new("cli-files");
    for (transport, protocol) in FLAVORS {
        let what = format!("uploader CLI {transport:?}+{protocol:?}");
        let png = images::unique_png(&what);
        let file = files.join(format!("{}-{}.png", transport.as_str(), protocol.as_str()));
        std::fs::write(&file, &png).expect("write the image");
        // The CLI's own --timeout bounds every step of the call.
        let out = Command::new(binary("uploader"))
            .arg("upload")
            .arg(&file)
            .args(["--server", &proxy.public_addr().to_string()])
            .args(["--transport", transport.as_str()])
            .args(["--protocol", protocol.as_str()])
            .args(["--timeout", "10s"])
            .output()
            .expect("run uploader upload");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{what}: {}\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let url = stdout.trim();
        let fetched = http::get_url(url).unwrap_or_else(|e| panic!("{what}: GET {url}: {e}"));
        assert_eq!(fetched.body.as_ref(), png.as_slice(), "{what}");
    }
}

#[test]
fn the_python_client_through_probegate_in_every_flavor() {
    let Some(python) = PythonClient::setup("proxy_interop python") else {
        return;
    };
    let (_backend, proxy) = stack(Transport::Framed, Protocol::Binary);
    let addr = proxy.public_addr();
    let files = TempDir::new("python-files");
    let jpeg = files.join("photo.jpg");
    std::fs::write(&jpeg, images::JPEG).expect("write the image");
    let bmp = files.join("logo.bmp");
    std::fs::write(&bmp, images::BMP).expect("write the image");
    for (transport, protocol) in FLAVORS {
        let what = format!("python {transport:?}+{protocol:?}");
        assert_eq!(
            python.ping(addr, transport, protocol)["pong"],
            "pong",
            "{what}"
        );
        let reply = python.upload(addr, transport, protocol, &jpeg, Some("image/jpeg"));
        let url = reply["url"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: no url in {reply}"));
        let fetched = http::get_url(url).expect("GET the returned URL");
        assert_eq!(fetched.body.as_ref(), images::JPEG, "{what}");
        let reply = python.upload(addr, transport, protocol, &bmp, None);
        assert_eq!(
            reply["error"]["code"], ERROR_INVALID_IMAGE,
            "{what}: {reply}"
        );
    }
}

// ---- raw sockets -------------------------------------------------------

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, CALL_TIMEOUT).expect("connect");
    s.set_read_timeout(Some(CALL_TIMEOUT)).expect("timeout");
    s.set_write_timeout(Some(CALL_TIMEOUT)).expect("timeout");
    s
}

/// One call message, as a client of `protocol` writes it: `name`, `kind`,
/// `seqid`, and an args struct with at most one binary/string field.
fn call(
    protocol: Protocol,
    framed: bool,
    name: &str,
    seqid: i32,
    kind: TMessageType,
    field: Option<(i16, TType, &[u8])>,
) -> Vec<u8> {
    let mut body = Vec::new();
    let write = |o: &mut dyn TOutputProtocol| -> thrift::Result<()> {
        o.write_message_begin(&TMessageIdentifier::new(name, kind, seqid))?;
        o.write_struct_begin(&TStructIdentifier::new("args"))?;
        if let Some((id, ty, bytes)) = field {
            o.write_field_begin(&TFieldIdentifier::new("f", ty, id))?;
            if ty == TType::Struct {
                // An UploadRequest with only its data.
                o.write_struct_begin(&TStructIdentifier::new("req"))?;
                o.write_field_begin(&TFieldIdentifier::new("data", TType::String, 1))?;
                o.write_bytes(bytes)?;
                o.write_field_end()?;
                o.write_field_stop()?;
                o.write_struct_end()?;
            } else {
                o.write_bytes(bytes)?;
            }
            o.write_field_end()?;
        }
        o.write_field_stop()?;
        o.write_struct_end()?;
        o.write_message_end()?;
        o.flush()
    };
    match protocol {
        Protocol::Binary => write(&mut TBinaryOutputProtocol::new(&mut body, true)),
        Protocol::Compact => write(&mut TCompactOutputProtocol::new(&mut body)),
    }
    .expect("encode a call");
    if framed {
        let mut framed = (body.len() as u32).to_be_bytes().to_vec();
        framed.extend_from_slice(&body);
        framed
    } else {
        body
    }
}

fn ping_call(protocol: Protocol, framed: bool, seqid: i32) -> Vec<u8> {
    call(protocol, framed, "ping", seqid, TMessageType::Call, None)
}

fn upload_call(protocol: Protocol, framed: bool, seqid: i32, data: &[u8]) -> Vec<u8> {
    let field = Some((1, TType::Struct, data));
    call(protocol, framed, "upload", seqid, TMessageType::Call, field)
}

/// A reply's header, and its result field 0 as a string when it has one
/// (ping), skipping anything else.
fn read_reply(i: &mut dyn TInputProtocol) -> (String, TMessageType, i32, Option<String>) {
    let header = i.read_message_begin().expect("reply header");
    i.read_struct_begin().expect("result struct");
    let mut success = None;
    loop {
        let field = i.read_field_begin().expect("result field");
        if field.field_type == TType::Stop {
            break;
        }
        if field.id == Some(0) && field.field_type == TType::String {
            success = Some(i.read_string().expect("string result"));
        } else {
            i.skip(field.field_type).expect("skip a result field");
        }
        i.read_field_end().expect("field end");
    }
    i.read_struct_end().expect("struct end");
    i.read_message_end().expect("message end");
    (
        header.name,
        header.message_type,
        header.sequence_number,
        success,
    )
}

#[test]
fn pipelined_calls_are_answered_in_order_with_their_seqids() {
    let (_backend, proxy) = stack(Transport::Framed, Protocol::Binary);
    let png = images::unique_png("pipelined");
    for (transport, protocol) in FLAVORS {
        let what = format!("pipelined {transport:?}+{protocol:?}");
        let framed = transport == Transport::Framed;
        // Three calls in one write, before any reply is read.
        let mut calls = ping_call(protocol, framed, 7);
        calls.extend(upload_call(protocol, framed, 8, &png));
        calls.extend(ping_call(protocol, framed, 9));
        let mut s = connect(proxy.public_addr());
        s.write_all(&calls).expect("write the calls");

        let read = s.try_clone().expect("clone");
        let read: Box<dyn Read> = if framed {
            Box::new(TFramedReadTransport::new(read))
        } else {
            Box::new(read)
        };
        let mut i: Box<dyn TInputProtocol> = match protocol {
            Protocol::Binary => Box::new(TBinaryInputProtocol::new(read, true)),
            Protocol::Compact => Box::new(TCompactInputProtocol::new(read)),
        };
        let replies: Vec<_> = (0..3).map(|_| read_reply(&mut *i)).collect();
        let headers: Vec<_> = replies
            .iter()
            .map(|(n, k, s, _)| (n.as_str(), *k, *s))
            .collect();
        assert_eq!(
            headers,
            [
                ("ping", TMessageType::Reply, 7),
                ("upload", TMessageType::Reply, 8),
                ("ping", TMessageType::Reply, 9),
            ],
            "{what}"
        );
        assert_eq!(replies[0].3.as_deref(), Some("pong"), "{what}");
        assert_eq!(replies[2].3.as_deref(), Some("pong"), "{what}");
    }
}

/// Writes `message` (one framed call) and reads one whole reply frame.
fn framed_round_trip(s: &mut TcpStream, message: &[u8]) -> Vec<u8> {
    s.write_all(message).expect("write the call");
    let mut len = [0u8; 4];
    s.read_exact(&mut len).expect("reply frame length");
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).expect("reply frame");
    [&len[..], &body].concat()
}

#[test]
fn an_unknown_method_reaches_the_backend_and_its_exception_comes_back_intact() {
    let (backend, proxy) = stack(Transport::Framed, Protocol::Binary);
    let unknown = call(
        Protocol::Binary,
        true,
        "frobnicate",
        11,
        TMessageType::Call,
        Some((1, TType::String, b"x")),
    );
    let direct = framed_round_trip(&mut connect(backend.thrift_addr()), &unknown);
    let mut s = connect(proxy.public_addr());
    let proxied = framed_round_trip(&mut s, &unknown);
    assert_eq!(proxied, direct, "the backend's reply, byte for byte");

    let mut i = TBinaryInputProtocol::new(&proxied[4..], true);
    let header = i.read_message_begin().expect("header");
    assert_eq!(
        (
            header.name.as_str(),
            header.message_type,
            header.sequence_number
        ),
        ("frobnicate", TMessageType::Exception, 11)
    );
    let e = thrift::Error::read_application_error_from_in_protocol(&mut i).expect("exception");
    assert_eq!(e.kind, thrift::ApplicationErrorKind::UnknownMethod, "{e:?}");
    // Counted under a bounded label, as the backend's exception.
    wait_requests(&proxy, "other", "exception", 1.0);
    // Whatever the backend did with that connection, this client goes on.
    let pong = framed_round_trip(&mut s, &ping_call(Protocol::Binary, true, 12));
    let mut i = TBinaryInputProtocol::new(&pong[4..], true);
    let reply = read_reply(&mut i);
    assert_eq!((reply.2, reply.3.as_deref()), (12, Some("pong")));
}

#[test]
fn an_upload_error_passes_through_unchanged() {
    let (backend, proxy) = stack(Transport::Framed, Protocol::Binary);
    let bad = upload_call(Protocol::Binary, true, 21, images::BMP);
    let direct = framed_round_trip(&mut connect(backend.thrift_addr()), &bad);
    let proxied = framed_round_trip(&mut connect(proxy.public_addr()), &bad);
    assert_eq!(
        proxied, direct,
        "the backend's UploadError reply, byte for byte"
    );

    // And typed, in a flavor probegate has to re-encode.
    let expected = match ThriftClient::connect(backend.thrift_addr())
        .and_then(|mut c| c.upload(images::BMP, None, None).map(|_| ()))
    {
        Err(CallError::Upload(e)) => e,
        other => panic!("direct: expected UploadError, got {other:?}"),
    };
    let mut c = client(proxy.public_addr(), Transport::Buffered, Protocol::Compact);
    match c.upload(images::BMP, None, None) {
        Err(CallError::Upload(e)) => assert_eq!(e, expected),
        other => panic!("through probegate: expected UploadError, got {other:?}"),
    }
}

#[test]
fn a_oneway_call_gets_no_reply_and_reaches_the_backend() {
    let (backend, proxy) = stack(Transport::Framed, Protocol::Binary);
    let touches =
        || Metrics::scrape(backend.admin_addr()).get("uploader_requests_total{method=\"touch\"}");
    let before = touches();
    let mut s = connect(proxy.public_addr());
    let touch = call(
        Protocol::Binary,
        true,
        "touch",
        31,
        TMessageType::OneWay,
        Some((1, TType::String, b"raw oneway")),
    );
    // touch then ping in one write: the first reply is the ping's.
    let mut both = touch;
    both.extend(ping_call(Protocol::Binary, true, 32));
    let reply = framed_round_trip(&mut s, &both);
    let mut i = TBinaryInputProtocol::new(&reply[4..], true);
    let (name, kind, seqid, pong) = read_reply(&mut i);
    assert_eq!(
        (name.as_str(), kind, seqid, pong.as_deref()),
        ("ping", TMessageType::Reply, 32, Some("pong"))
    );
    wait_until(Duration::from_secs(10), "the touch at the backend", || {
        touches() > before
    });
    wait_requests(&proxy, "touch", "oneway", 1.0);
    // Nothing else is pending on the connection.
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let mut extra = [0u8; 1];
    assert!(
        !poll_until(Duration::from_millis(300), || s
            .read(&mut extra)
            .is_ok_and(|n| n > 0)),
        "probegate sent bytes nobody asked for"
    );
}
