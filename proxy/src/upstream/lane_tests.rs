//! Lane tests over real loopback sockets: calls share one connection and
//! come back to the right caller, the lane gives its connection and slot
//! back when done, and a stuck or closed connection fails the calls on it
//! the right way.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use prometheus::Registry;
use thrift::protocol::TMessageType;

use super::{call, join, open, Ticket, SOLO_CALLS_BEFORE_RETIRING};
use crate::protocols::thrift::Flavor;
use crate::upstream::health::{ping_call, CheckResult};
use crate::upstream::testing::{config, eventually, Mode, Responder};
use crate::upstream::{CallError, Outgoing, Reply, Upstream};

const FB: Flavor = Flavor::FRAMED_BINARY;

fn upstream(backend: &Responder, max_connections: usize, extra: &str) -> Arc<Upstream> {
    let up = Upstream::new(
        &config(&[(backend.addr, max_connections, FB)], extra),
        &Registry::new(),
    )
    .expect("metrics register");
    up.record_check(0, &CheckResult::Success);
    up
}

fn ping(seqid: i32) -> Outgoing {
    Outgoing::new(ping_call(FB, seqid).expect("encode").into())
}

/// [`call`], failing the test (instead of hanging it) if the lane does not
/// answer within the call's deadline and a margin.
async fn bounded(
    up: &Upstream,
    ticket: Ticket,
    out: Outgoing,
    deadline: Duration,
) -> Result<Reply, CallError> {
    tokio::time::timeout(
        deadline + Duration::from_secs(5),
        call(up, ticket, out, deadline),
    )
    .await
    .expect("the lane answers every call by its deadline")
}

/// The backend is still up after what the test did; `why` says why it must be.
fn assert_still_up(up: &Upstream, why: &str) {
    assert_eq!(up.backends[0].state(), crate::upstream::State::Up, "{why}");
}

/// Opens a lane and joins it until it holds `calls` places.
async fn lane_with(up: &Arc<Upstream>, calls: usize) -> Vec<Ticket> {
    let slot = up.acquire().await.expect("slot");
    let mut tickets = vec![open(up, slot)];
    for _ in 1..calls {
        tickets.push(join(up).expect("room on the lane"));
    }
    tickets
}

/// Sends every ticket's ping at once; results in ticket order.
async fn send_all(
    up: &Arc<Upstream>,
    tickets: Vec<Ticket>,
    deadline: Duration,
) -> Vec<Result<Reply, CallError>> {
    let calls: Vec<_> = tickets
        .into_iter()
        .enumerate()
        .map(|(i, ticket)| {
            let up = Arc::clone(up);
            tokio::spawn(async move { bounded(&up, ticket, ping(100 + i as i32), deadline).await })
        })
        .collect();
    let mut results = Vec::new();
    for c in calls {
        results.push(c.await.expect("call task"));
    }
    results
}

#[tokio::test]
async fn calls_share_one_connection_and_each_gets_its_own_reply() {
    let backend = Responder::start(FB).await;
    backend.set_mode(Mode::Delay(Duration::from_millis(5)));
    let up = upstream(&backend, 4, "");
    let tickets = lane_with(&up, 10).await;
    assert_eq!(up.scheduler.in_use(0), 1, "a lane holds one slot");
    let results = send_all(&up, tickets, Duration::from_secs(5)).await;
    for (i, result) in results.into_iter().enumerate() {
        let reply = result.expect("reply");
        assert_eq!(reply.header.kind, TMessageType::Reply);
        assert_eq!(
            reply.header.seqid,
            100 + i as i32,
            "reply {i} to its caller"
        );
    }
    assert_eq!(backend.accepted.load(Ordering::SeqCst), 1, "one connection");
    assert_eq!(backend.calls().len(), 10);
    assert_eq!(
        up.metrics
            .pipelined_total
            .with_label_values(&[&up.backends[0].label])
            .get(),
        9,
        "every call after the first joined"
    );
    eventually("the lane retires: connection pooled, slot freed", || {
        up.backends[0].lanes.active_count() == 0
            && up.scheduler.in_use(0) == 0
            && up.backends[0].pool.idle_count() == 1
    })
    .await;
}

#[tokio::test]
async fn a_lane_takes_no_more_than_pipeline_depth_calls() {
    let backend = Responder::start(FB).await;
    let up = upstream(&backend, 4, "[forwarding]\npipeline_depth = 3\n");
    let tickets = lane_with(&up, 3).await;
    assert!(join(&up).is_none(), "a full lane takes no fourth call");
    drop(tickets);
    eventually("tickets dropped unused give the lane back", || {
        up.backends[0].lanes.active_count() == 0 && up.scheduler.in_use(0) == 0
    })
    .await;
}

#[tokio::test]
async fn a_lane_of_a_backend_that_is_down_is_not_joined() {
    let backend = Responder::start(FB).await;
    let up = upstream(&backend, 4, "[health]\nfall = 1\n");
    let _tickets = lane_with(&up, 1).await;
    up.report_failure(0, "test");
    assert!(join(&up).is_none());
}

#[tokio::test]
async fn a_call_past_its_deadline_closes_the_connection_under_the_others() {
    let backend = Responder::start(FB).await;
    backend.set_mode(Mode::Hang);
    let up = upstream(&backend, 4, "");
    let mut tickets = lane_with(&up, 3).await;
    let others = tickets.split_off(1);
    let first = tickets.pop().expect("first ticket");
    let slow = {
        let up = Arc::clone(&up);
        tokio::spawn(async move { send_all(&up, others, Duration::from_secs(30)).await })
    };
    let result = bounded(&up, first, ping(1), Duration::from_millis(100)).await;
    assert!(
        matches!(result, Err(CallError::Timeout { .. })),
        "{result:?}"
    );
    let others = tokio::time::timeout(Duration::from_secs(5), slow)
        .await
        .expect("the other calls end at once, not at their own deadline")
        .expect("task");
    for result in others {
        let error = result.expect_err("no reply");
        assert!(
            matches!(error, CallError::PipelineBroken | CallError::Write(_)),
            "{error:?}"
        );
    }
    eventually("connection closed, slot freed, nothing pooled", || {
        backend.open.load(Ordering::SeqCst) == 0
            && up.scheduler.in_use(0) == 0
            && up.backends[0].pool.idle_count() == 0
            && up.backends[0].lanes.active_count() == 0
    })
    .await;
}

#[tokio::test]
async fn a_backend_that_closes_the_connection_fails_the_calls_written_on_it() {
    let backend = Responder::start(FB).await;
    backend.set_mode(Mode::Hang);
    let up = upstream(&backend, 4, "[health]\nfall = 2\n");
    let tickets = lane_with(&up, 4).await;
    let calls = {
        let up = Arc::clone(&up);
        tokio::spawn(async move { send_all(&up, tickets, Duration::from_secs(5)).await })
    };
    // The hanging backend reads the first call and swallows the rest: all
    // four are written once it has swallowed three calls' bytes.
    let rest = 3 * ping(0).len();
    eventually("all four calls reached the backend", || {
        backend.calls().len() == 1 && backend.swallowed.load(Ordering::SeqCst) >= rest
    })
    .await;
    backend.close_connections();
    let results = calls.await.expect("task");
    for result in results {
        let error = result.expect_err("connection closed");
        assert!(error.delivered(), "written calls may have run: {error:?}");
    }
    eventually("slot freed, nothing pooled", || {
        up.scheduler.in_use(0) == 0
            && up.backends[0].pool.idle_count() == 0
            && up.backends[0].lanes.active_count() == 0
    })
    .await;
    assert_still_up(
        &up,
        "four calls lost on one connection are one failure (fall = 2)",
    );
}

/// A backend that answers the first call it reads twice, then reads
/// nothing more (holding the connection open).
async fn double_replier() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        let mut buf = bytes::BytesMut::new();
        let call_len = loop {
            if let Ok(crate::protocols::thrift::Delimit::Complete { len, .. }) =
                crate::protocols::thrift::delimit(FB, &buf, 1 << 20)
            {
                break len;
            }
            if stream.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                return;
            }
        };
        let body = buf[4..call_len].to_vec();
        let reply = crate::protocols::thrift::testing::processor_reply(FB.protocol, body);
        let mut framed = (reply.len() as u32).to_be_bytes().to_vec();
        framed.extend_from_slice(&reply);
        let twice = [framed.clone(), framed].concat();
        let _ = stream.write_all(&twice).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    addr
}

/// A reply for a call not completely written cannot be that call's: the
/// connection is out of step, the unwritten call fails as safe to resend,
/// and the connection is not pooled.
#[tokio::test]
async fn a_reply_nobody_is_waiting_for_puts_the_connection_out_of_service() {
    let addr = double_replier().await;
    let up = Upstream::new(&config(&[(addr, 4, FB)], ""), &Registry::new()).expect("metrics");
    up.record_check(0, &CheckResult::Success);
    let mut tickets = lane_with(&up, 2).await;
    let second = tickets.pop().expect("second ticket");
    let first = tickets.pop().expect("first ticket");
    // A call far larger than the socket buffers: the backend reads none of
    // it, so it stays partly written.
    let huge = Outgoing::new(vec![0u8; 32 << 20].into());
    let first = {
        let up = Arc::clone(&up);
        tokio::spawn(async move { bounded(&up, first, ping(1), Duration::from_secs(5)).await })
    };
    let second = {
        let up = Arc::clone(&up);
        tokio::spawn(async move { bounded(&up, second, huge, Duration::from_secs(5)).await })
    };
    let first = first.await.expect("task").expect("the first call's reply");
    assert_eq!(first.header.seqid, 1);
    let second = tokio::time::timeout(Duration::from_secs(4), second)
        .await
        .expect("the second call fails at once, not at its deadline")
        .expect("task");
    match second {
        Err(error @ CallError::Write(_)) => assert!(!error.delivered()),
        other => panic!("expected a not-written failure, got {other:?}"),
    }
    eventually("slot freed, nothing pooled", || {
        up.scheduler.in_use(0) == 0
            && up.backends[0].pool.idle_count() == 0
            && up.backends[0].lanes.active_count() == 0
    })
    .await;
}

/// The longest linger allowed: far longer than any step of these tests.
const LINGER_LONG: &str = "[forwarding]\npipeline_linger = \"1s\"\n";

/// Opens a lane and has two calls on it answered; with `LINGER_LONG` the
/// lane then lingers.
async fn answer_two_on_a_lane(up: &Arc<Upstream>) {
    let results = send_all(up, lane_with(up, 2).await, Duration::from_secs(5)).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
}

#[tokio::test]
async fn an_answered_lane_lingers_and_the_next_call_joins_it() {
    let backend = Responder::start(FB).await;
    let up = upstream(&backend, 4, LINGER_LONG);
    answer_two_on_a_lane(&up).await;
    assert_eq!(up.backends[0].lanes.active_count(), 1, "the lane lingers");
    assert_eq!(up.scheduler.in_use(0), 1, "holding its slot");
    let next = join(&up).expect("the next call joins the lingering lane");
    let reply = bounded(&up, next, ping(7), Duration::from_secs(5))
        .await
        .expect("reply on the lingering lane");
    assert_eq!(reply.header.seqid, 7);
    assert_eq!(backend.accepted.load(Ordering::SeqCst), 1, "one connection");
}

/// Sends `count` pings one after another, each joining the lingering
/// lane and answered before the next: calls alone on the lane.
async fn lone_calls_on_the_lane(up: &Arc<Upstream>, count: usize) {
    for seqid in 0..count as i32 {
        let ticket = join(up).expect("the lingering lane");
        bounded(up, ticket, ping(seqid), Duration::from_secs(5))
            .await
            .expect("reply on the lane");
    }
}

#[tokio::test]
async fn a_lane_whose_calls_come_one_at_a_time_retires_without_lingering() {
    let backend = Responder::start(FB).await;
    let up = upstream(&backend, 4, LINGER_LONG);
    answer_two_on_a_lane(&up).await;
    lone_calls_on_the_lane(&up, SOLO_CALLS_BEFORE_RETIRING - 1).await;
    assert_eq!(
        up.backends[0].lanes.active_count(),
        1,
        "one lone call short of the limit, the lane still lingers"
    );
    lone_calls_on_the_lane(&up, 1).await;
    let retired = tokio::time::timeout(Duration::from_millis(500), async {
        while up.backends[0].lanes.active_count() != 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    assert!(
        retired.is_ok(),
        "after {SOLO_CALLS_BEFORE_RETIRING} lone calls the lane retires at once, not after its 1 s linger"
    );
    assert_eq!(up.scheduler.in_use(0), 0, "its slot freed");
    assert_eq!(up.backends[0].pool.idle_count(), 1, "its connection pooled");
    assert_eq!(backend.accepted.load(Ordering::SeqCst), 1, "one connection");
}

#[tokio::test]
async fn calls_that_overlap_on_a_lane_restart_the_count_of_lone_ones() {
    let backend = Responder::start(FB).await;
    let up = upstream(&backend, 4, LINGER_LONG);
    // Both calls go out in one batch (this test's runtime runs the two
    // callers before the lane task), so the lane starts with no lone call.
    answer_two_on_a_lane(&up).await;
    let just_short = SOLO_CALLS_BEFORE_RETIRING - 1;
    lone_calls_on_the_lane(&up, just_short).await;
    // Two calls at once on the lingering lane: they overlap.
    let together = vec![
        join(&up).expect("the lingering lane"),
        join(&up).expect("room for a second"),
    ];
    let results = send_all(&up, together, Duration::from_secs(5)).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    lone_calls_on_the_lane(&up, just_short).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        up.backends[0].lanes.active_count(),
        1,
        "{just_short} lone calls since the overlap: the lane still lingers"
    );
}

#[tokio::test]
async fn a_lingering_lane_gives_its_slot_to_a_call_that_waits_for_one() {
    let backend = Responder::start(FB).await;
    let up = upstream(&backend, 1, LINGER_LONG);
    answer_two_on_a_lane(&up).await;
    assert_eq!(
        up.scheduler.in_use(0),
        1,
        "the lingering lane holds the only slot"
    );
    let slot = tokio::time::timeout(Duration::from_millis(500), up.acquire())
        .await
        .expect("the lane retires for a waiting call, not after its 1 s linger")
        .expect("slot");
    assert_eq!(slot.backend(), 0);
    assert_eq!(up.backends[0].lanes.active_count(), 0);
    assert_eq!(up.backends[0].pool.idle_count(), 1, "its connection pooled");
}

#[tokio::test]
async fn a_backend_closing_a_lingering_lane_is_no_failure() {
    let backend = Responder::start(FB).await;
    let extra = format!("[health]\nfall = 1\n{LINGER_LONG}");
    let up = upstream(&backend, 4, &extra);
    answer_two_on_a_lane(&up).await;
    backend.close_connections();
    eventually("the lane ends: slot freed, connection dropped", || {
        up.backends[0].lanes.active_count() == 0
            && up.scheduler.in_use(0) == 0
            && up.backends[0].pool.idle_count() == 0
    })
    .await;
    assert_still_up(
        &up,
        "an idle connection closed by the backend failed no call (fall = 1)",
    );
}

#[tokio::test]
async fn a_call_joining_after_the_timer_was_set_still_times_out() {
    let backend = Responder::start(FB).await;
    let up = upstream(&backend, 4, LINGER_LONG);
    let first = lane_with(&up, 1).await.pop().expect("ticket");
    bounded(&up, first, ping(1), Duration::from_millis(500))
        .await
        .expect("first call answered; its deadline stays on the lane's timer");
    backend.set_mode(Mode::Hang);
    let next = join(&up).expect("the lingering lane");
    // Later than the first call's: the timer fires for an answered call
    // while this one waits, and must be set again for this one.
    // bounded() fails the test if the lane does not answer by this call's
    // own deadline (and a margin).
    let result = bounded(&up, next, ping(2), Duration::from_millis(800)).await;
    assert!(
        matches!(result, Err(CallError::Timeout { limit }) if limit == Duration::from_millis(800)),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_later_call_with_an_earlier_deadline_times_out_first() {
    let backend = Responder::start(FB).await;
    backend.set_mode(Mode::Hang);
    let up = upstream(&backend, 4, "[health]\nfall = 1\n");
    let mut tickets = lane_with(&up, 2).await;
    let quick = tickets.pop().expect("second ticket");
    let slow = tickets.pop().expect("first ticket");
    let slow = {
        let up = Arc::clone(&up);
        tokio::spawn(async move { bounded(&up, slow, ping(1), Duration::from_secs(30)).await })
    };
    eventually("the slow call reached the backend", || {
        backend.calls().len() == 1
    })
    .await;
    // Timed out by its own deadline (bounded() allows it a 5 s margin), not
    // by the first call's 30 s.
    let quick = bounded(&up, quick, ping(2), Duration::from_millis(100)).await;
    assert!(matches!(quick, Err(CallError::Timeout { .. })), "{quick:?}");
    let slow = slow.await.expect("task");
    assert!(
        matches!(slow, Err(CallError::PipelineBroken)),
        "the other call fails with the lane: {slow:?}"
    );
    assert_still_up(
        &up,
        "a timeout is its caller's to report, not the lane's (fall = 1)",
    );
}

#[tokio::test]
async fn a_call_already_past_its_deadline_is_not_sent() {
    let backend = Responder::start(FB).await;
    let up = upstream(&backend, 4, LINGER_LONG);
    let late = lane_with(&up, 1).await.pop().expect("ticket");
    let result = bounded(&up, late, ping(1), Duration::ZERO).await;
    assert!(
        matches!(result, Err(CallError::Timeout { .. })),
        "{result:?}"
    );
    let next = join(&up).expect("the lane is still open: nothing was sent");
    let reply = bounded(&up, next, ping(2), Duration::from_secs(5))
        .await
        .expect("reply");
    assert_eq!(reply.header.seqid, 2);
    assert_eq!(
        backend.calls().len(),
        1,
        "only the second call reached the backend"
    );
}

/// The race a lingering lane must not lose on a runtime with several
/// threads: a call starts waiting for the only slot just as the lane's last
/// reply is delivered and the lane turns idle. Lost, the waiting call would
/// get the slot only when the lane's 1 s linger ran out. Each round starts
/// the waiter a little later relative to the calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_call_that_starts_waiting_as_the_lane_turns_idle_is_not_left_for_the_linger() {
    const ROUNDS: usize = 300;
    let backend = Responder::start(FB).await;
    let up = upstream(&backend, 1, LINGER_LONG);
    for round in 0..ROUNDS {
        let tickets = tokio::time::timeout(Duration::from_secs(5), lane_with(&up, 2))
            .await
            .expect("the freed slot is taken within 5 s");
        let waiter = {
            let up = Arc::clone(&up);
            tokio::spawn(async move {
                for _ in 0..round % 16 {
                    tokio::task::yield_now().await;
                }
                let started = tokio::time::Instant::now();
                let slot = up.acquire().await.expect("slot");
                (started.elapsed(), slot)
            })
        };
        let results = send_all(&up, tickets, Duration::from_secs(5)).await;
        assert!(
            results.iter().all(Result::is_ok),
            "round {round}: {results:?}"
        );
        let (waited, slot) = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiting call gets a slot")
            .expect("waiter task");
        assert!(
            waited < Duration::from_millis(900),
            "round {round}: the waiting call got the slot after {waited:?}, when the lane's 1 s linger ran out, not when the lane turned idle"
        );
        drop(slot);
    }
}
