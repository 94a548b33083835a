//! Large framed calls through request mode with their bodies in pipes: the
//! backend gets exactly the client's bytes, once per attempt, and nothing
//! of a call the client did not finish.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uploader_idl::{TUploaderSyncClient, UploadRequest};

use super::super::tests::{blocking, proxy, requests};
use crate::protocols::thrift::testing::upload_call;
use crate::protocols::thrift::Flavor;
use crate::upstream::testing::{client, config, eventually, pattern, Mode, Responder};
use crate::upstream::Upstream;

const FB: Flavor = Flavor::FRAMED_BINARY;
const SIZE: usize = 1536 * 1024;

/// The request `upload_call` writes (seqid 1), so the bytes a generated
/// client sends for it are known.
fn request(data: Vec<u8>) -> UploadRequest {
    UploadRequest::new(data, "cat.png".to_string(), "image/png".to_string())
}

/// Uploads `data` with a fresh generated client, then pings on the same
/// connection (the stream must go on after a piped call).
async fn upload_then_ping(addr: std::net::SocketAddr, flavor: Flavor, data: Vec<u8>) {
    blocking(move || {
        let mut c = client(addr, flavor);
        let len = data.len() as i64;
        let result = c.upload(request(data)).expect("upload");
        assert_eq!(result.size, len);
        assert_eq!(c.ping().expect("ping after the upload"), "pong");
    })
    .await;
}

fn piped(up: &Upstream) -> u64 {
    up.metrics.request.piped.get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_framed_call_reaches_framed_and_buffered_backends_byte_for_byte() {
    let data = pattern(SIZE);
    let sent = upload_call(FB, data.clone());
    for backend_flavor in [FB, Flavor::BUFFERED_BINARY] {
        let backend = Responder::start(backend_flavor).await;
        let (up, addr) = proxy(&config(&[(backend.addr, 1, backend_flavor)], ""), FB).await;
        upload_then_ping(addr, FB, data.clone()).await;
        let got = backend.messages();
        assert_eq!(got.len(), 2, "{backend_flavor}: upload and ping");
        // A buffered backend gets the call without its frame prefix.
        let expected = if backend_flavor == FB {
            &sent[..]
        } else {
            &sent[4..]
        };
        assert_eq!(got[0].len(), expected.len(), "{backend_flavor}");
        assert!(got[0][..] == expected[..], "{backend_flavor}: bytes differ");
        assert_eq!(piped(&up), 1, "{backend_flavor}");
        assert_eq!(requests(&up, "upload", "reply"), 1, "{backend_flavor}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_piped_call_is_sent_again_whole_when_retried() {
    let data = pattern(SIZE);
    let sent = upload_call(FB, data.clone());
    let backend = Responder::start(FB).await;
    let cfg = config(
        &[(backend.addr, 1, FB)],
        "[forwarding]\nretry_methods = [\"upload\"]\n[health]\nfall = 100\n",
    );
    let (up, addr) = proxy(&cfg, FB).await;
    backend.set_mode(Mode::CloseOnCall(1));
    upload_then_ping(addr, FB, data).await;
    let got = backend.messages();
    assert_eq!(got.len(), 3, "upload, its retry, ping");
    assert!(got[0][..] == sent[..], "first attempt differs");
    assert!(got[1][..] == sent[..], "retry differs");
    assert_eq!(piped(&up), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_the_backend_needs_re_encoded_or_small_stay_in_memory() {
    let backend = Responder::start(FB).await;
    let (up, addr) = proxy(
        &config(&[(backend.addr, 1, FB)], ""),
        Flavor::FRAMED_COMPACT,
    )
    .await;
    upload_then_ping(addr, Flavor::FRAMED_COMPACT, pattern(SIZE)).await;
    assert_eq!(piped(&up), 0, "a compact client's call is re-encoded");

    let (up, addr) = proxy(&config(&[(backend.addr, 1, FB)], ""), FB).await;
    upload_then_ping(addr, FB, pattern(64 * 1024)).await;
    assert_eq!(piped(&up), 0, "a 64 KiB call is not worth pipes");
    assert_eq!(requests(&up, "upload", "reply"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_pipes_turned_off_a_large_call_goes_through_memory_unchanged() {
    let data = pattern(SIZE);
    let sent = upload_call(FB, data.clone());
    let backend = Responder::start(FB).await;
    let cfg = config(
        &[(backend.addr, 1, FB)],
        "[forwarding]\npipe_large_calls = false\n",
    );
    let (up, addr) = proxy(&cfg, FB).await;
    upload_then_ping(addr, FB, data).await;
    let got = backend.messages();
    assert_eq!(got.len(), 2, "upload and ping");
    assert!(got[0][..] == sent[..], "bytes differ");
    assert_eq!(piped(&up), 0, "forwarding.pipe_large_calls = false");
    assert_eq!(requests(&up, "upload", "reply"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_pipe_bytes_decides_whether_the_next_large_call_makes_its_pipes() {
    // Half a megabyte fits one segment: each call takes two pipes (the
    // segment and the spare), whatever the fragments.
    let size = 512 * 1024;
    let backend = Responder::start(FB).await;
    for (extra, keeps) in [("", true), ("[forwarding]\nkept_pipe_bytes = 0\n", false)] {
        let (up, addr) = proxy(&config(&[(backend.addr, 1, FB)], extra), FB).await;
        let made = || up.metrics.pipes_made.get();
        upload_then_ping(addr, FB, pattern(size)).await;
        let first = made();
        assert_eq!(first, 2, "{extra:?}: the first call made its pipes");
        if keeps {
            eventually("both pipes kept after the first call", || {
                up.pipes.idle_pipes() == 2
            })
            .await;
        }
        upload_then_ping(addr, FB, pattern(size)).await;
        let second = made() - first;
        if keeps {
            assert_eq!(second, 0, "the second call reused the kept pipes");
        } else {
            assert_eq!(second, 2, "nothing kept: the second call made its own");
            assert_eq!(up.pipes.idle_pipes(), 0);
        }
        assert_eq!(piped(&up), 2, "{extra:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_mid_body_sends_nothing_to_the_backend() {
    let data = pattern(SIZE);
    let sent = upload_call(FB, data.clone());
    let backend = Responder::start(FB).await;
    let cfg = config(&[(backend.addr, 1, FB)], "[timeouts]\nidle = \"300ms\"\n");
    let (up, addr) = proxy(&cfg, FB).await;

    let mut closed = TcpStream::connect(addr).await.unwrap();
    closed.write_all(&sent[..sent.len() / 2]).await.unwrap();
    drop(closed);

    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled.write_all(&sent[..sent.len() - 1000]).await.unwrap();
    let mut rest = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), stalled.read(&mut rest))
        .await
        .expect("probegate closes a client stalled past timeouts.idle");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

    upload_then_ping(addr, FB, data).await;
    assert_eq!(backend.calls(), ["upload", "ping"]);
    assert!(backend.messages()[0][..] == sent[..]);
    assert_eq!(piped(&up), 1, "only the whole call went on");
    // Every budget permit of the abandoned calls comes back (the last
    // call's once its task has moved on from the reply it wrote).
    let max = up.config.limits.max_buffered_bytes;
    eventually("every buffer permit back", || {
        up.buffer_budget.available_permits() == max
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_sent_in_tiny_pieces_arrives_unchanged() {
    let data = pattern(512 * 1024);
    let sent = upload_call(FB, data);
    let backend = Responder::start(FB).await;
    let (up, addr) = proxy(&config(&[(backend.addr, 1, FB)], ""), FB).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    // The prefix and header at once, then the body 64 bytes a write.
    s.write_all(&sent[..64]).await.unwrap();
    for piece in sent[64..].chunks(64) {
        s.write_all(piece).await.unwrap();
    }
    let mut prefix = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(20), s.read_exact(&mut prefix))
        .await
        .expect("a reply within 20 s")
        .unwrap();
    let mut reply = vec![0u8; u32::from_be_bytes(prefix) as usize];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut reply))
        .await
        .expect("the rest of the reply")
        .unwrap();
    assert_eq!(backend.calls(), ["upload"]);
    assert!(backend.messages()[0][..] == sent[..], "bytes differ");
    assert_eq!(requests(&up, "upload", "reply"), 1);
    // Piped or (when its pieces filled a pipe under a sixteenth) refused
    // and received into memory: either way whole and unchanged, as checked
    // above.
}
