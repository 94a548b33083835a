//! Forwarding tests: real generated clients -> `serve_thrift` on a loopback
//! listener -> the in-test Thrift backend.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use prometheus::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use uploader_idl::{TUploaderSyncClient, UploadError, UploadRequest, ERROR_INVALID_IMAGE};

use super::serve_thrift;
use crate::config::Config;
use crate::protocols::thrift::{delimit, Delimit, Flavor};
use crate::upstream::health::{ping_call, CheckResult};
use crate::upstream::testing::{client, config, eventually, Mode, Responder};
use crate::upstream::Upstream;

const FB: Flavor = Flavor::FRAMED_BINARY;

/// Builds the upstream, marks every backend up, and serves `serve_thrift`
/// for clients speaking `flavor` on a loopback port.
pub(super) async fn proxy(cfg: &Config, flavor: Flavor) -> (Arc<Upstream>, SocketAddr) {
    let up = Upstream::new(cfg, &Registry::new()).expect("metrics");
    for i in 0..up.backends.len() {
        up.record_check(i, &CheckResult::Success);
    }
    let addr = serve(Arc::clone(&up), flavor).await;
    (up, addr)
}

async fn serve(up: Arc<Upstream>, flavor: Flavor) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve_thrift(
                stream,
                BytesMut::new(),
                flavor,
                Arc::clone(&up),
                CancellationToken::new(),
            ));
        }
    });
    addr
}

/// Runs blocking client code off the runtime.
pub(super) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("client thread")
}

fn app_error(e: thrift::Error) -> String {
    match e {
        thrift::Error::Application(e) => e.message,
        other => panic!("expected a TApplicationException, got {other:?}"),
    }
}

/// Calls sent pipelined on the first backend.
pub(super) fn pipelined(up: &Upstream) -> u64 {
    up.metrics
        .pipelined_total
        .with_label_values(&[&up.backends[0].label])
        .get()
}

pub(super) fn requests(up: &Upstream, method: &str, outcome: &str) -> u64 {
    up.metrics
        .requests_total
        .with_label_values(&[method, outcome])
        .get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_pass_through_in_every_client_flavor() {
    let backend = Responder::start(FB).await;
    for flavor in Flavor::ALL {
        let (up, addr) = proxy(&config(&[(backend.addr, 2, FB)], ""), flavor).await;
        blocking(move || {
            let mut c = client(addr, flavor);
            assert_eq!(c.ping().expect("ping"), "pong", "{flavor}");
            let req = UploadRequest::new(
                vec![7; 1 << 20],
                "a.png".to_string(),
                "image/png".to_string(),
            );
            let result = c.upload(req).expect("upload");
            assert_eq!(result.size, 1 << 20, "{flavor}");
            let bad = UploadRequest::new(
                b"bad".to_vec(),
                "b.png".to_string(),
                "image/png".to_string(),
            );
            match c.upload(bad) {
                Err(thrift::Error::User(e)) => {
                    let e = e.downcast::<UploadError>().expect("UploadError");
                    assert_eq!(e.code, ERROR_INVALID_IMAGE);
                }
                other => panic!("{flavor}: expected UploadError, got {other:?}"),
            }
        })
        .await;
        assert_eq!(requests(&up, "ping", "reply"), 1, "{flavor}");
        assert_eq!(requests(&up, "upload", "reply"), 2, "{flavor}");
        let to_backend = up
            .metrics
            .bytes_total
            .with_label_values(&["client_to_backend"])
            .get();
        assert!(to_backend > 1 << 20, "{flavor}: {to_backend}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oneway_calls_get_no_answer_and_pipelined_calls_come_back_in_order() {
    let backend = Responder::start(FB).await;
    let (up, addr) = proxy(&config(&[(backend.addr, 2, FB)], ""), FB).await;
    blocking(move || {
        let mut c = client(addr, FB);
        c.touch("hello".into()).expect("oneway written");
        assert_eq!(c.ping().expect("ping after touch"), "pong");
    })
    .await;
    assert_eq!(backend.calls(), ["touch", "ping"]);
    assert_eq!(requests(&up, "touch", "oneway"), 1);

    // Three calls in one write: three replies, seqids in order.
    let mut raw = TcpStream::connect(addr).await.unwrap();
    let mut calls = Vec::new();
    for seqid in [11, 12, 13] {
        calls.extend(ping_call(FB, seqid).unwrap());
    }
    raw.write_all(&calls).await.unwrap();
    let mut buf = Vec::new();
    let mut seqids = Vec::new();
    while seqids.len() < 3 {
        let mut chunk = [0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), raw.read(&mut chunk))
            .await
            .expect("replies arrive")
            .unwrap();
        assert!(n > 0, "proxy closed early");
        buf.extend_from_slice(&chunk[..n]);
        while let Ok(Delimit::Complete { len, header }) = delimit(FB, &buf, 1 << 20) {
            seqids.push(header.seqid);
            buf.drain(..len);
        }
    }
    assert_eq!(seqids, [11, 12, 13]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_dies_in_flight_is_retried_only_for_retry_methods() {
    let backend = Responder::start(FB).await;
    let cfg = config(
        &[(backend.addr, 2, FB)],
        "[forwarding]\nretry_methods = [\"ping\"]\n[health]\nfall = 100\n",
    );
    let (up, addr) = proxy(&cfg, FB).await;
    backend.set_mode(Mode::CloseOnCall(1));
    blocking(move || client(addr, FB).ping().expect("retried ping succeeds")).await;
    assert_eq!(backend.calls(), ["ping", "ping"]);

    backend.set_mode(Mode::CloseOnCall(1));
    let message = blocking(move || {
        let req = UploadRequest::new(vec![1; 100], "a.png".to_string(), "image/png".to_string());
        app_error(client(addr, FB).upload(req).expect_err("not retried"))
    })
    .await;
    assert!(
        message.starts_with("backend connection failed:"),
        "{message}"
    );
    assert_eq!(backend.calls(), ["ping", "ping", "upload"]);
    assert_eq!(requests(&up, "upload", "error"), 1);
    assert_eq!(requests(&up, "ping", "reply"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_past_timeouts_request_gets_an_exception_and_its_connection_is_dropped() {
    let backend = Responder::start(FB).await;
    backend.set_mode(Mode::Hang);
    let cfg = config(
        &[(backend.addr, 1, FB)],
        "[timeouts]\nrequest = \"300ms\"\n[health]\nfall = 100\n",
    );
    let (up, addr) = proxy(&cfg, FB).await;
    let started = Instant::now();
    let message = blocking(move || app_error(client(addr, FB).ping().expect_err("timeout"))).await;
    assert_eq!(message, "request exceeded timeouts.request=300ms");
    assert!(started.elapsed() < Duration::from_secs(3));
    eventually("backend connection closed", || {
        backend.open.load(Ordering::SeqCst) == 0
    })
    .await;
    assert_eq!(up.backends[0].pool.idle_count(), 0);
    assert_eq!(requests(&up, "ping", "timeout"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_backend_up_and_a_full_queue_are_answered_at_once() {
    let backend = Responder::start(FB).await;
    let cfg = config(&[(backend.addr, 1, FB)], "[limits]\nmax_queue = 0\n");
    let up = Upstream::new(&cfg, &Registry::new()).unwrap();
    let addr = serve(Arc::clone(&up), FB).await;
    let message = blocking(move || app_error(client(addr, FB).ping().expect_err("down"))).await;
    assert_eq!(message, "no backend up");
    assert_eq!(backend.accepted.load(Ordering::SeqCst), 0);

    up.record_check(0, &CheckResult::Success);
    backend.set_mode(Mode::Delay(Duration::from_secs(3)));
    let slow = tokio::spawn(blocking(move || client(addr, FB).ping().map_err(app_error)));
    eventually("slow call holds the only slot", || {
        up.metrics
            .backend_requests_in_flight
            .with_label_values(&[&backend.addr.to_string()])
            .get()
            == 1
    })
    .await;
    let started = Instant::now();
    let message = blocking(move || app_error(client(addr, FB).ping().expect_err("shed"))).await;
    assert_eq!(message, "overloaded: queue full (max_queue=0)");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(slow.await.unwrap(), Ok("pong".to_string()));
    assert_eq!(requests(&up, "ping", "shed"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_idle_clients_hold_no_backend_connection() {
    let backend = Responder::start(FB).await;
    let (_up, addr) = proxy(&config(&[(backend.addr, 1, FB)], ""), FB).await;
    let half = ping_call(FB, 1).unwrap();
    let mut stalled = Vec::new();
    for _ in 0..5 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&half[..half.len() / 2]).await.unwrap();
        stalled.push(s);
    }
    for _ in 0..50 {
        stalled.push(TcpStream::connect(addr).await.unwrap());
    }
    let started = Instant::now();
    blocking(move || client(addr, FB).ping().expect("fresh client served")).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(backend.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(backend.calls(), ["ping"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_share_two_backend_connections_fairly() {
    let backend = Responder::start(FB).await;
    // Long enough that calls from different clients overlap.
    backend.set_mode(Mode::Delay(Duration::from_millis(20)));
    let (_up, addr) = proxy(&config(&[(backend.addr, 2, FB)], ""), FB).await;
    let mut clients = Vec::new();
    for _ in 0..32 {
        clients.push(tokio::task::spawn_blocking(move || {
            let mut c = client(addr, FB);
            (0..5).all(|_| c.ping().is_ok_and(|p| p == "pong"))
        }));
    }
    for c in clients {
        assert!(c.await.unwrap(), "every client completes all its calls");
    }
    assert_eq!(backend.peak_open.load(Ordering::SeqCst), 2);
    assert_eq!(backend.calls().len(), 32 * 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_mode_relays_and_closes_idle_connections() {
    let backend = Responder::start(FB).await;
    let cfg = config(
        &[(backend.addr, 1, FB)],
        "[forwarding]\nmode = \"connection\"\n[timeouts]\nidle = \"300ms\"\nqueue = \"100ms\"\n",
    );
    let (up, addr) = proxy(&cfg, FB).await;
    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.write_all(&ping_call(FB, 5).unwrap()).await.unwrap();
    let mut buf = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), raw.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(delimit(FB, &buf[..n], 1 << 20), Ok(Delimit::Complete { header, .. }) if header.seqid == 5)
    );
    assert!(
        up.backends[0].replied_within(Duration::from_secs(60)),
        "relayed replies count as signs of life for busy health checks"
    );

    // The relay holds the only slot: a second connection is refused in time.
    let message =
        blocking(move || app_error(client(addr, FB).ping().expect_err("queued out"))).await;
    assert_eq!(message, "queue wait exceeded timeouts.queue=100ms");

    // Silence on both sides closes both.
    let eof = tokio::time::timeout(Duration::from_secs(5), raw.read(&mut buf))
        .await
        .expect("closed by the idle bound");
    assert!(matches!(eof, Ok(0) | Err(_)));
    eventually("backend side closed too", || {
        backend.open.load(Ordering::SeqCst) == 0
    })
    .await;
    assert_eq!(up.scheduler.in_use(0), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_never_reached_a_dead_backend_goes_to_another() {
    // Ports nobody listens on (bound, then closed).
    let dead: Vec<_> = (0..2)
        .map(|_| {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        })
        .collect();
    let backend = Responder::start(FB).await;
    // No retry_methods: only undelivered calls may be sent again. Two dead
    // backends ahead of the live one in round-robin order.
    let cfg = config(
        &[(dead[0], 2, FB), (dead[1], 2, FB), (backend.addr, 2, FB)],
        "[forwarding]\nretry_methods = []\n[health]\nfall = 100\n",
    );
    let (up, addr) = proxy(&cfg, FB).await;
    blocking(move || {
        let mut c = client(addr, FB);
        for _ in 0..4 {
            assert_eq!(c.ping().expect("served by the live backend"), "pong");
        }
    })
    .await;
    assert_eq!(backend.calls().len(), 4);
    assert_eq!(requests(&up, "ping", "reply"), 4);
}

/// An idle client costs its task's state plus an empty buffer: the state
/// must stay a few KiB (10,000 idle clients must fit in tens of MiB).
#[tokio::test]
async fn a_client_task_is_small() {
    let backend = Responder::start(FB).await;
    let up = Upstream::new(&config(&[(backend.addr, 2, FB)], ""), &Registry::new()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stream = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let task = serve_thrift(stream, BytesMut::new(), FB, up, CancellationToken::new());
    let size = std::mem::size_of_val(&task);
    assert!(size <= 4096, "serve_thrift future is {size} bytes");
}

/// Pings from many clients at once against a 2-thread backend: with
/// pipelining (the default) they share connections, without it each call
/// has a connection to itself; either way every call is served and the
/// backend never sees more than its 2 connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pings_are_pipelined_within_the_backends_threads() {
    for (extra, expect_pipelining) in [("", true), ("[forwarding]\npipeline_depth = 1\n", false)] {
        let backend = Responder::start(FB).await;
        backend.set_mode(Mode::Delay(Duration::from_millis(2)));
        let (up, addr) = proxy(&config(&[(backend.addr, 2, FB)], extra), FB).await;
        let clients: Vec<_> = (0..24)
            .map(|_| {
                tokio::spawn(blocking(move || {
                    let mut c = client(addr, FB);
                    for _ in 0..10 {
                        assert_eq!(c.ping().expect("ping"), "pong");
                    }
                }))
            })
            .collect();
        for c in clients {
            c.await.expect("client");
        }
        assert_eq!(requests(&up, "ping", "reply"), 240, "{extra}");
        assert!(backend.peak_open.load(Ordering::SeqCst) <= 2, "{extra}");
        let joined = pipelined(&up);
        assert_eq!(
            joined > 0,
            expect_pipelining,
            "{extra}: {joined} calls pipelined"
        );
    }
}

/// A call of a method outside `forwarding.pipeline_methods` has its
/// connection to itself: a ping never waits behind it on that connection,
/// it waits for a slot like any call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_pipelined_behind_a_call_outside_pipeline_methods() {
    let backend = Responder::start(FB).await;
    backend.set_mode(Mode::Hang);
    let cfg = config(
        &[(backend.addr, 2, FB)],
        "[timeouts]\nrequest = \"600ms\"\n[health]\nfall = 100\n",
    );
    let (up, addr) = proxy(&cfg, FB).await;
    // A ping alone takes one connection; the upload, with another call in
    // flight, takes the other: the place where a pipelinable call would
    // open a pipelined connection.
    let first_ping = tokio::spawn(blocking(move || client(addr, FB).ping()));
    eventually("the first ping reached the backend", || {
        backend.calls() == ["ping"]
    })
    .await;
    let upload = tokio::spawn(blocking(move || {
        let req = UploadRequest::new(vec![1; 100], "a.png".to_string(), "image/png".to_string());
        app_error(client(addr, FB).upload(req).expect_err("times out"))
    }));
    eventually("the upload reached the backend", || {
        backend.calls() == ["ping", "upload"]
    })
    .await;
    let ping = tokio::spawn(blocking(move || client(addr, FB).ping()));
    eventually("the second ping waits in the slot queue", || {
        up.scheduler.queue_depth() == 1
    })
    .await;
    assert_eq!(
        backend.calls(),
        ["ping", "upload"],
        "the second ping must wait for a slot, not be written behind the upload"
    );
    assert_eq!(pipelined(&up), 0);
    backend.set_mode(Mode::Normal);
    let message = upload.await.expect("upload task");
    assert_eq!(message, "request exceeded timeouts.request=600ms");
    let first = first_ping.await.expect("ping task");
    assert!(first.is_err(), "the first ping timed out: {first:?}");
    assert_eq!(ping.await.expect("ping task").expect("ping served"), "pong");
    assert_eq!(backend.calls(), ["ping", "upload", "ping"]);
    assert_eq!(pipelined(&up), 0);
}

/// Pipelined calls are converted to the backend's dialect like any other:
/// a frame prefix added for buffered clients, a re-encoding for compact
/// ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_calls_are_converted_to_the_backends_dialect() {
    for flavor in [Flavor::BUFFERED_BINARY, Flavor::FRAMED_COMPACT] {
        let backend = Responder::start(FB).await;
        backend.set_mode(Mode::Delay(Duration::from_millis(2)));
        let (up, addr) = proxy(&config(&[(backend.addr, 2, FB)], ""), flavor).await;
        let clients: Vec<_> = (0..8)
            .map(|_| {
                tokio::spawn(blocking(move || {
                    let mut c = client(addr, flavor);
                    for _ in 0..5 {
                        assert_eq!(c.ping().expect("ping"), "pong", "{flavor}");
                    }
                }))
            })
            .collect();
        for c in clients {
            c.await.expect("client");
        }
        assert_eq!(requests(&up, "ping", "reply"), 40, "{flavor}");
        let joined = pipelined(&up);
        assert!(joined > 0, "{flavor}: nothing was pipelined");
    }
}

/// When the backend closes a pipelined connection carrying several calls,
/// that is one failure toward `health.fall`, not one per call: the backend
/// stays up, so the retried pings are not refused for "no backend up".
/// (A retry can itself meet a connection the close has not reached yet, and
/// then fail like any retried call; that is not what this test is about.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_pipelined_connection_counts_as_one_failure() {
    let backend = Responder::start(FB).await;
    backend.set_mode(Mode::Hang);
    let cfg = config(&[(backend.addr, 2, FB)], "[health]\nfall = 3\n");
    let (up, addr) = proxy(&cfg, FB).await;
    let clients: Vec<_> = (0..6)
        .map(|_| tokio::spawn(blocking(move || client(addr, FB).ping())))
        .collect();
    // At least four calls on one pipelined connection (a call that finds
    // both slots taken just before a lane opens waits for a slot instead).
    eventually("pings pipelined on one connection", || pipelined(&up) >= 3).await;
    backend.set_mode(Mode::Normal);
    backend.close_connections();
    let mut served = 0;
    for c in clients {
        match c.await.expect("client").map_err(app_error) {
            Ok(answer) => {
                assert_eq!(answer, "pong");
                served += 1;
            }
            Err(message) => assert!(
                message.starts_with("backend connection failed"),
                "a retried ping was refused: {message}"
            ),
        }
    }
    assert_eq!(
        up.backends[0].state(),
        crate::upstream::State::Up,
        "each lost connection is one failure, below fall = 3"
    );
    assert!(served > 0, "no retried ping was served");
    assert_eq!(requests(&up, "ping", "reply"), served);
}

/// Every message a client sends must be a call: a reply (or exception)
/// after a good call closes the client, and the backend never sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_message_that_is_not_a_call_closes_the_client_unforwarded() {
    let backend = Responder::start(FB).await;
    let (up, addr) = proxy(&config(&[(backend.addr, 1, FB)], ""), FB).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&ping_call(FB, 1).unwrap()).await.unwrap();
    let bound = Duration::from_secs(5);
    let mut prefix = [0u8; 4];
    tokio::time::timeout(bound, s.read_exact(&mut prefix))
        .await
        .expect("the ping's reply")
        .unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(prefix) as usize];
    tokio::time::timeout(bound, s.read_exact(&mut body))
        .await
        .expect("the ping's reply")
        .unwrap();
    // The client sends that reply back, as if it were a call.
    s.write_all(&[&prefix[..], &body].concat()).await.unwrap();
    let mut rest = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), s.read(&mut rest))
        .await
        .expect("probegate closes the client");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert_eq!(backend.calls(), ["ping"]);
    assert_eq!(requests(&up, "other", "error"), 1);
}
