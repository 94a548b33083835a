//! Pipelinable calls waiting for a slot: they take a place on a pipelined
//! connection as soon as one has room, and a freed place wakes one or two
//! of them, not all.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use uploader_idl::{TUploaderSyncClient, UploadRequest};

use super::super::tests::{blocking, pipelined, proxy};
use crate::protocols::thrift::Flavor;
use crate::upstream::testing::{client, config, eventually, Mode, Responder};
use crate::upstream::Upstream;

const FB: Flavor = Flavor::FRAMED_BINARY;

/// A backend with two slots, pipelining depth 2, and one slot held by an
/// upload the backend answers after `upload_delay` (pings after
/// `ping_delay`): what is left for pings is one slot. Returns once the
/// upload has reached the backend, with the task that waits for its result.
async fn one_slot_held_by_an_upload(
    upload_delay: Duration,
    ping_delay: Duration,
    extra_config: &str,
) -> (
    Responder,
    Arc<Upstream>,
    SocketAddr,
    JoinHandle<thrift::Result<i64>>,
) {
    let backend = Responder::start(FB).await;
    backend.set_mode(Mode::DelayMethods(vec![
        ("upload", upload_delay),
        ("ping", ping_delay),
    ]));
    let cfg = config(
        &[(backend.addr, 2, FB)],
        &format!("[forwarding]\npipeline_depth = 2\n[health]\nfall = 100\n{extra_config}"),
    );
    let (up, addr) = proxy(&cfg, FB).await;
    let upload = tokio::spawn(blocking(move || {
        let req = UploadRequest::new(vec![1; 100], "a.png".to_string(), "image/png".to_string());
        client(addr, FB).upload(req).map(|r| r.size)
    }));
    eventually("the upload reached the backend", || {
        backend.calls() == ["upload"]
    })
    .await;
    (backend, up, addr, upload)
}

/// A ping that finds the pipelined connection full and every slot taken
/// waits in the queue, and joins the connection as soon as it has room,
/// rather than waiting for a slot while later pings ride it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_ping_joins_a_pipelined_connection_that_gets_room() {
    let (_backend, up, addr, upload) =
        one_slot_held_by_an_upload(Duration::from_secs(3), Duration::from_millis(300), "").await;
    // Two pings fill a pipelined connection on the other slot.
    let first_pings: Vec<_> = (0..2)
        .map(|_| tokio::spawn(blocking(move || client(addr, FB).ping())))
        .collect();
    eventually("two pings on the pipelined connection", || {
        up.backends[0].in_flight.get() == 3 && up.backends[0].lanes.active_count() == 1
    })
    .await;
    assert_eq!(pipelined(&up), 1);
    // Full connection, no slot: this one queues.
    let queued = tokio::spawn(blocking(move || client(addr, FB).ping()));
    eventually("the third ping is queued", || {
        up.scheduler.queue_depth() == 1
    })
    .await;
    // When the first ping's reply frees a place, the queued one takes it.
    assert_eq!(queued.await.expect("task").expect("served"), "pong");
    assert_eq!(
        pipelined(&up),
        2,
        "the queued ping joined the pipelined connection"
    );
    assert_eq!(up.scheduler.queue_depth(), 0);
    for ping in first_pings {
        assert_eq!(ping.await.expect("task").expect("served"), "pong");
    }
    assert_eq!(upload.await.expect("task").expect("stored"), 100);
}

/// Many pings queued behind a full pipelined connection: each freed place
/// wakes one waiter (and a joiner the next), so wake-ups grow with the
/// number of calls, not with calls times waiters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freed_place_wakes_one_waiter_not_all() {
    const QUEUED: usize = 60;
    let (_backend, up, addr, upload) = one_slot_held_by_an_upload(
        Duration::from_secs(2),
        Duration::from_millis(5),
        "[limits]\nmax_queue = 1000\n",
    )
    .await;
    let pings: Vec<_> = (0..QUEUED + 2)
        .map(|_| tokio::spawn(blocking(move || client(addr, FB).ping())))
        .collect();
    for ping in pings {
        assert_eq!(ping.await.expect("task").expect("served"), "pong");
    }
    let wakes = up.lane_room_wakes.load(Ordering::Relaxed);
    // Waking every waiter per freed place made this about QUEUED² / 2.
    // More pings than one lane takes: some waited and were woken, so the
    // bound below is about real wake-ups.
    assert!(wakes > 0, "no queued ping was ever woken");
    assert!(
        wakes <= 4 * QUEUED,
        "{wakes} wake-ups for {QUEUED} queued pings"
    );
    assert!(pipelined(&up) >= QUEUED as u64 / 2, "{}", pipelined(&up));
    assert_eq!(upload.await.expect("task").expect("stored"), 100);
}
