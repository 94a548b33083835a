//! Bodies through real loopback sockets and pipes: bytes identical, never
//! past the body's end, sendable twice, back to memory on demand.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::upstream::testing::pattern;

/// A pool of its own for each test, so tests running at once do not share
/// kept pipes.
fn pool() -> Arc<PipePool> {
    Arc::new(PipePool::default())
}

/// A connected pair: (the writing side, the accepted side).
async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (near, far) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (near.expect("connect"), far.expect("accept").0)
}

/// Reads exactly `len` bytes from `socket`, within 10 s.
fn read_all(mut socket: TcpStream, len: usize) -> tokio::task::JoinHandle<Vec<u8>> {
    tokio::spawn(async move {
        let mut got = vec![0u8; len];
        tokio::time::timeout(Duration::from_secs(10), socket.read_exact(&mut got))
            .await
            .expect("all bytes within 10 s")
            .expect("read");
        got
    })
}

/// Fills `body` from `socket` until it is complete, the peer closes, or
/// the pipes refuse it.
async fn try_fill(body: &mut PipedBody, socket: &TcpStream) -> Result<Fill, PipeError> {
    loop {
        if body.is_complete() {
            return Ok(Fill::Moved(body.len()));
        }
        let step =
            tokio::time::timeout(Duration::from_secs(10), body.fill_from(socket, 256 * 1024))
                .await
                .expect("a fill step within 10 s")?;
        if step == Fill::Eof {
            return Ok(step);
        }
    }
}

/// Reads `body` back into memory and checks it holds exactly `expected`.
fn assert_drains_to(body: PipedBody, expected: &[u8]) {
    let mut memory = BytesMut::new();
    body.drain_into(&mut memory).expect("drain");
    assert_eq!(memory.len(), expected.len());
    assert!(memory[..] == expected[..], "piped bytes differ");
}

async fn fill(body: &mut PipedBody, socket: &TcpStream) -> Fill {
    try_fill(body, socket).await.expect("fill")
}

#[tokio::test]
async fn a_body_larger_than_a_pipe_arrives_whole_and_is_sent_twice_identically() {
    let data = pattern(1536 * 1024 + 123);
    let (mut client, received) = pair().await;
    let writer = {
        let data = data.clone();
        tokio::spawn(async move {
            client.write_all(&data).await.expect("client write");
            client
        })
    };
    let mut body = PipedBody::new(data.len(), &pool()).expect("pipes");
    assert_eq!(fill(&mut body, &received).await, Fill::Moved(data.len()));
    assert!(
        body.segments.len() >= 2,
        "1.5 MiB cannot fit one pipe: {} segment(s)",
        body.segments.len()
    );
    let _client = writer.await.expect("writer");

    let (out, backend) = pair().await;
    let reader = read_all(backend, 2 * data.len());
    body.prepare().expect("spare pipe");
    body.send_to(&out).await.expect("first send");
    body.send_to(&out).await.expect("second send (a retry)");
    let got = reader.await.expect("reader");
    assert!(got[..data.len()] == data[..], "first copy differs");
    assert!(got[data.len()..] == data[..], "second copy differs");
}

#[tokio::test]
async fn filling_stops_at_the_body_end_and_leaves_the_next_call_in_the_socket() {
    let data = pattern(300 * 1024);
    let (mut client, mut received) = pair().await;
    let mut sent = data.clone();
    sent.extend_from_slice(b"NEXT");
    client.write_all(&sent).await.expect("client write");
    let mut body = PipedBody::new(data.len(), &pool()).expect("pipes");
    assert_eq!(fill(&mut body, &received).await, Fill::Moved(data.len()));
    let mut next = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), received.read_exact(&mut next))
        .await
        .expect("the next bytes are readable at once")
        .expect("read");
    assert_eq!(&next, b"NEXT");
    assert_drains_to(body, &data);
}

#[tokio::test]
async fn a_trickled_body_is_received_whole() {
    let data = pattern(200 * 1024);
    let (mut client, received) = pair().await;
    let writer = {
        let data = data.clone();
        tokio::spawn(async move {
            for chunk in data.chunks(7 * 1024 + 3) {
                client.write_all(chunk).await.expect("client write");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            client
        })
    };
    let mut body = PipedBody::new(data.len(), &pool()).expect("pipes");
    assert_eq!(fill(&mut body, &received).await, Fill::Moved(data.len()));
    let _client = writer.await.expect("writer");
    let mut memory = BytesMut::from(&b"head"[..]);
    body.drain_into(&mut memory).expect("drain");
    assert_eq!(&memory[..4], b"head");
    assert!(memory[4..] == data[..]);
}

#[tokio::test]
async fn a_client_that_closes_early_leaves_what_it_sent_and_says_eof() {
    let data = pattern(150 * 1024);
    let (mut client, received) = pair().await;
    client.write_all(&data).await.expect("client write");
    drop(client);
    let mut body = PipedBody::new(1024 * 1024, &pool()).expect("pipes");
    assert_eq!(fill(&mut body, &received).await, Fill::Eof);
    assert!(!body.is_complete());
    assert_eq!(body.len(), data.len());
    assert_drains_to(body, &data);
}

#[tokio::test]
async fn a_send_to_a_closed_peer_fails_and_the_body_can_be_sent_again_whole() {
    let data = pattern(700 * 1024);
    let (mut client, received) = pair().await;
    client.write_all(&data).await.expect("client write");
    let mut body = PipedBody::new(data.len(), &pool()).expect("pipes");
    assert_eq!(fill(&mut body, &received).await, Fill::Moved(data.len()));

    // A peer that is gone (its reset is processed before `drop` returns,
    // on loopback): the send fails part-way.
    let (dead, peer) = pair().await;
    peer.set_zero_linger().expect("linger");
    drop(peer);
    body.prepare().expect("spare pipe");
    let failed = tokio::time::timeout(Duration::from_secs(10), body.send_to(&dead))
        .await
        .expect("a failed send ends");
    assert!(failed.is_err(), "sending 700 KiB to a reset peer succeeded");

    // The spare came back emptied: no prepare needed for the next send.
    let (out, backend) = pair().await;
    let reader = read_all(backend, data.len());
    body.send_to(&out).await.expect("send after a failed one");
    assert!(reader.await.expect("reader") == data);
}

#[test]
fn pipes_are_refused_to_bodies_in_tiny_pieces_and_past_the_segment_limit() {
    let mib = 1024 * 1024;
    assert!(refuse_more(mib / 8, mib, 1, mib / 8, 2 * mib).is_ok());
    assert!(matches!(
        refuse_more(mib / 17, mib, 1, mib / 17, 2 * mib),
        Err(PipeError::Fragmented { held, capacity }) if held == mib / 17 && capacity == mib
    ));
    assert!(matches!(
        refuse_more(mib, mib, MAX_SEGMENTS, 32 * mib, 40 * mib),
        Err(PipeError::TooManySegments { received, expected }) if received == 32 * mib && expected == 40 * mib
    ));
}

/// However a body is cut up, it takes a bounded number of pipes: either
/// it arrives whole within them or it is refused (to go through memory),
/// and what was piped comes back in order with the rest in the socket.
#[tokio::test]
async fn a_body_in_tiny_pieces_never_takes_more_than_the_segment_limit() {
    let data = pattern(1024 * 1024);
    let (client, received) = pair().await;
    client.set_nodelay(true).expect("nodelay");
    let writer = {
        let data = data.clone();
        tokio::spawn(async move {
            let mut client = client;
            for piece in data.chunks(64) {
                if client.write_all(piece).await.is_err() {
                    break;
                }
            }
            client
        })
    };
    let mut body = PipedBody::new(data.len(), &pool()).expect("pipes");
    let outcome = try_fill(&mut body, &received).await;
    assert!(
        matches!(
            outcome,
            Ok(Fill::Moved(_)) | Err(PipeError::Fragmented { .. })
        ),
        "{outcome:?}"
    );
    // Without the limits, 1 MiB in 64-byte writes took 164 pipes here.
    assert!(body.segments.len() <= 32, "{} pipes", body.segments.len());
    let got = body.len();
    assert_drains_to(body, &data[..got]);
    let mut received = received;
    let mut rest = vec![0u8; data.len() - got];
    tokio::time::timeout(Duration::from_secs(10), received.read_exact(&mut rest))
        .await
        .expect("the rest within 10 s")
        .expect("read");
    assert!(rest[..] == data[got..]);
    let _client = writer.await.expect("writer");
}

#[tokio::test]
async fn an_urgent_byte_in_the_body_is_refused_not_waited_on() {
    let (mut client, received) = pair().await;
    client.write_all(&pattern(200 * 1024)).await.expect("write");
    rustix::net::send(&client, b"!", rustix::net::SendFlags::OOB).expect("urgent byte");
    client.write_all(&pattern(100 * 1024)).await.expect("write");
    let mut body = PipedBody::new(400 * 1024, &pool()).expect("pipes");
    let refused = try_fill(&mut body, &received).await;
    assert!(
        matches!(refused, Err(PipeError::Fragmented { .. })),
        "{refused:?}"
    );
    assert_eq!(body.len(), 200 * 1024, "splice stops at the urgent mark");
}

/// Sends `data` from `client`, receives it into a body from `pool` on the
/// accepted side, and sends the body on to a new peer, which must get
/// exactly `data`. Returns the body, still holding its pipes.
async fn relay(
    pool: &Arc<PipePool>,
    client: &mut TcpStream,
    received: &TcpStream,
    data: &[u8],
) -> PipedBody {
    client.write_all(data).await.expect("client write");
    let mut body = PipedBody::new(data.len(), pool).expect("pipes");
    assert_eq!(fill(&mut body, received).await, Fill::Moved(data.len()));
    body.prepare().expect("spare pipe");
    let (out, backend) = pair().await;
    let reader = read_all(backend, data.len());
    body.send_to(&out).await.expect("send");
    assert!(
        reader.await.expect("reader") == data,
        "relayed bytes differ"
    );
    body
}

#[tokio::test]
async fn a_finished_body_gives_its_pipes_back_and_the_next_body_gets_only_its_own_bytes() {
    let pool = pool();
    let (mut client, received) = pair().await;
    let first = relay(&pool, &mut client, &received, &pattern(700 * 1024)).await;
    let used = first.segments.len() + 1;
    drop(first);
    assert_eq!(pool.idle_pipes(), used, "segments and spare kept");

    // Different bytes through the same pipes: nothing of the first body.
    let other: Vec<u8> = pattern(700 * 1024).iter().map(|b| b ^ 0x5a).collect();
    let second = relay(&pool, &mut client, &received, &other).await;
    assert_eq!(
        pool.idle_pipes(),
        used.saturating_sub(second.segments.len() + 1),
        "the second body's pipes came from the pool"
    );
}

#[tokio::test]
async fn a_body_dropped_half_received_leaves_nothing_in_the_kept_pipes() {
    let pool = pool();
    let data = pattern(150 * 1024);
    let (mut client, received) = pair().await;
    client.write_all(&data).await.expect("client write");
    drop(client);
    let mut body = PipedBody::new(1024 * 1024, &pool).expect("pipes");
    assert_eq!(fill(&mut body, &received).await, Fill::Eof);
    drop(body);
    assert_eq!(pool.idle_pipes(), 1);
    let mut pipe = pool.take(1024 * 1024).expect("the kept pipe");
    assert_eq!(rustix::io::ioctl_fionread(&pipe.read).expect("FIONREAD"), 0);
    assert!(pool.empty(&mut pipe));
}
