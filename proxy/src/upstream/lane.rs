//! Pipelined calls: several quick calls in flight on one backend connection.
//!
//! A thread-per-connection Thrift server reads a call, answers it and reads
//! the next, so calls written back to back on one connection are answered in
//! order. When calls arrive together, probegate uses that for the methods in
//! `forwarding.pipeline_methods` (quick ones such as `ping`): they are
//! written to one connection in one send, and their replies often come back
//! in one receive. The proxy then pays one send and one receive per batch
//! instead of per call, and the backend wakes one thread once instead of one
//! thread per call; for a small call those system calls and wake-ups are
//! most of the cost (see bench/README.md).
//!
//! A pipelined connection (a *lane*) carries only pipelinable calls, at most
//! `forwarding.pipeline_depth` at once, so a call waits behind at most that
//! many quick calls and never behind an upload. A lane holds one slot of its
//! backend and one pooled connection while it has calls: the backend still
//! never sees more connections than it has threads. When its last reply is
//! delivered it waits `forwarding.pipeline_linger` for the next call (under
//! steady load one comes within microseconds; reopening a lane for every
//! burst cost more than the calls it carried), then the connection goes
//! back to the pool and the slot is freed; at once if a call is waiting
//! for a slot, or if its last calls came one at a time (a lone client's
//! pings gain nothing from a lane).
//!
//! One task per lane owns the connection. It writes what callers queued, in
//! batches (it first lets the other ready tasks queue theirs), reads the
//! replies and hands each to its caller, in order. A call whose
//! `timeouts.request` passes breaks the lane: the connection is closed (the
//! backend is stuck or out of step) and the other calls on it fail, those
//! never written as safe to send again. The lane keeps its calls' deadlines
//! itself, with one timer: a timeout per call was a timer-wheel insert and a
//! locked removal for every ping.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use prometheus::IntCounter;
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::call::{CallError, InFlight, Outgoing, Reply};
use super::pool::{ConnectError, PooledConn};
use super::queue::Slot;
use super::Upstream;
use crate::protocols::thrift::{delimit, Delimit, InvalidThrift};

/// A lane that has carried this many calls in a row, each alone on it,
/// retires as soon as it is idle instead of lingering. It batches nothing:
/// its one caller is better off with a connection to itself
/// (`forward::dispatch`), and a lingering lane keeps a timer due within
/// `forwarding.pipeline_linger` while probegate sleeps between calls; on
/// the VM measured, one client's pings cost 33.8 µs of CPU each on a lane
/// lingering 4 ms against 23.6 µs alone (bench/README.md, seventh round).
/// Under load calls overlap and the count restarts. (A lone client whose
/// pings overlap a long call on another slot, an upload, still gets a new
/// lane after each retirement: `dispatch` opens one whenever another slot
/// is busy.)
const SOLO_CALLS_BEFORE_RETIRING: usize = 64;
/// Initial size of a lane's reply buffer; grown only when replies need it.
const READ_CHUNK: usize = 16 * 1024;
/// The most chunks handed to one vectored write.
const MAX_IOV: usize = 64;

/// The lanes of one backend that carry calls now.
pub struct Lanes {
    active: Mutex<Vec<Arc<Lane>>>,
    /// `probegate_backend_pipelined_total{backend}`: calls that joined a
    /// lane already carrying calls.
    pipelined: IntCounter,
}

/// The lane's shared state: how callers reach its task.
struct Lane {
    /// `None` says a caller that joined left without a call.
    calls: mpsc::UnboundedSender<Option<Queued>>,
    /// Calls joined and not answered yet. It grows only under
    /// `Lanes::active`'s lock, and the lane retires only under that lock
    /// when it is zero, so nobody joins a retiring lane.
    in_flight: AtomicUsize,
    /// Cancelled by a caller that stopped waiting (its client went away):
    /// the lane closes.
    broken: CancellationToken,
}

/// One call's place on a lane, taken by [`join`] or [`open`] and used by
/// [`call`]. Dropped unused, it gives the place back.
pub struct Ticket {
    lane: Arc<Lane>,
    /// The index of the lane's backend.
    pub backend: usize,
    used: bool,
    /// Taken on a lane that already carried calls (counted as pipelined
    /// when the call is sent).
    joined: bool,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.used {
            // The lane's task counts the place free and may retire.
            let _ = self.lane.calls.send(None);
        }
    }
}

/// A call handed to the lane's task.
struct Queued {
    out: Outgoing,
    reply: Replier,
}

/// Where a call's answer goes, and until when the lane waits for it.
struct Replier {
    tx: oneshot::Sender<Result<Reply, CallError>>,
    deadline: Instant,
    /// The caller's `timeouts.request`, for its error.
    limit: Duration,
}

impl Replier {
    fn send(self, result: Result<Reply, CallError>) {
        let _ = self.tx.send(result);
    }
}

impl Lanes {
    pub fn new(pipelined: IntCounter) -> Lanes {
        Lanes {
            active: Mutex::new(Vec::new()),
            pipelined,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Arc<Lane>>> {
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lanes carrying calls now.
    pub fn active_count(&self) -> usize {
        self.lock().len()
    }

    /// The fullest lane with room (fullest, so that calls arriving together
    /// share one send) and its calls; `None` when every lane is at `depth`.
    fn fullest_with_room(lanes: &[Arc<Lane>], depth: usize) -> Option<(usize, &Arc<Lane>)> {
        lanes
            .iter()
            .filter(|lane| !lane.broken.is_cancelled())
            .map(|lane| (lane.in_flight.load(Ordering::Acquire), lane))
            .filter(|(in_flight, _)| *in_flight < depth)
            .max_by_key(|(in_flight, _)| *in_flight)
    }

    /// The calls on this backend's fullest lane with room, if any.
    fn room(&self, depth: usize) -> Option<usize> {
        Self::fullest_with_room(&self.lock(), depth).map(|(calls, _)| calls)
    }

    /// Joins the fullest lane with room.
    fn join(&self, depth: usize) -> Option<Arc<Lane>> {
        let active = self.lock();
        let (_, lane) = Self::fullest_with_room(&active, depth)?;
        lane.in_flight.fetch_add(1, Ordering::AcqRel);
        Some(Arc::clone(lane))
    }

    /// Removes `lane` if it has no call left; says whether it did.
    fn retire_if_idle(&self, lane: &Arc<Lane>) -> bool {
        let mut active = self.lock();
        if lane.in_flight.load(Ordering::Acquire) != 0 {
            return false;
        }
        active.retain(|l| !Arc::ptr_eq(l, lane));
        true
    }

    fn remove(&self, lane: &Arc<Lane>) {
        self.lock().retain(|l| !Arc::ptr_eq(l, lane));
    }
}

/// Joins a lane with room on a backend that is up: the backend's index and
/// the lane, counted as one more call on it.
pub fn join(upstream: &Upstream) -> Option<Ticket> {
    let depth = upstream.config.forwarding.pipeline_depth;
    // The fullest lane across backends; if it fills up in between, the
    // next fullest of its backend is taken, or none (the caller then takes
    // a slot like any call).
    let (index, _) = upstream
        .backends
        .iter()
        .enumerate()
        .filter_map(|(index, backend)| backend.lanes.room(depth).map(|calls| (index, calls)))
        // Only backends with a lane ask the scheduler (its lock) whether
        // they are up.
        .filter(|(index, _)| upstream.scheduler.is_up(*index))
        .max_by_key(|(_, calls)| *calls)?;
    let lane = upstream.backends[index].lanes.join(depth)?;
    Some(Ticket {
        lane,
        backend: index,
        used: false,
        joined: true,
    })
}

/// Opens a lane on the slot's backend with one call counted on it, for the
/// caller to send with [`call`]. The lane can be joined at once; its task
/// takes a pooled connection (or opens one) and fails every call as never
/// sent if it cannot.
pub fn open(upstream: &Arc<Upstream>, slot: Slot) -> Ticket {
    let index = slot.backend();
    let backend = &upstream.backends[index];
    let (calls, queued) = mpsc::unbounded_channel();
    let lane = Arc::new(Lane {
        calls,
        in_flight: AtomicUsize::new(1),
        broken: CancellationToken::new(),
    });
    backend.lanes.lock().push(Arc::clone(&lane));
    // One waiter; each that joins wakes the next (`dispatch::slot_or_lane`).
    upstream.lane_room.notify_one();
    tokio::spawn(drive(Arc::clone(upstream), slot, Arc::clone(&lane), queued));
    Ticket {
        lane,
        backend: index,
        used: false,
        joined: false,
    }
}

/// Sends `out` on the ticket's lane and waits for its reply, at most
/// `deadline` (the lane answers `CallError::Timeout` when it passes), or
/// `timeouts.connect` while the lane's connection is being opened.
pub async fn call(
    upstream: &Upstream,
    mut ticket: Ticket,
    out: Outgoing,
    deadline: Duration,
) -> Result<Reply, CallError> {
    debug_assert!(out.piped.is_none(), "piped calls are never pipelined");
    let backend = &upstream.backends[ticket.backend];
    let _in_flight = InFlight::new(&backend.in_flight);
    let (tx, answer) = oneshot::channel();
    let reply = Replier {
        tx,
        deadline: Instant::now() + deadline,
        limit: deadline,
    };
    ticket.used = true;
    let lane = &ticket.lane;
    if lane.calls.send(Some(Queued { out, reply })).is_err() {
        return Err(not_written());
    }
    if ticket.joined {
        backend.lanes.pipelined.inc();
    }
    // This future dropped unanswered (its client went away) breaks the
    // lane: the calls behind this one must not wait on a connection whose
    // reply nobody would take off it.
    let guard = lane.broken.drop_guard_ref();
    // Bounded by the lane: it answers every call by its deadline (judged
    // whenever its reads pause, so at most a burst of replies late), or
    // fails it once timeouts.connect passes while it opens its connection.
    let result = answer.await.unwrap_or(Err(CallError::Closed));
    guard.disarm();
    result
}

fn not_written() -> CallError {
    CallError::Write(io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the pipelined backend connection closed before the call was written",
    ))
}

/// Part of the bytes still to write; `ends_call` marks a call's last part.
struct Chunk {
    bytes: Bytes,
    ends_call: bool,
}

/// Why a lane stopped.
enum End {
    /// No call left: the connection is clean and goes back to the pool.
    Idle,
    /// The backend closed the connection while it carried no call.
    ClosedIdle,
    /// A caller stopped waiting.
    Broken,
    /// A call's `timeouts.request` passed.
    Expired,
    /// The backend closed the connection.
    Closed,
    ReadFailed(io::Error),
    WriteFailed(io::Error),
    /// The backend sent bytes that are not a Thrift reply.
    BadReply(InvalidThrift),
    /// Reply bytes arrived that no completely written call was waiting for.
    OutOfStep,
}

impl End {
    /// What happened, for the log.
    fn reason(&self) -> String {
        match self {
            End::Idle => "no call left".to_string(),
            End::Broken => "a caller stopped waiting".to_string(),
            End::Expired => "a call exceeded timeouts.request".to_string(),
            End::Closed => "the backend closed it".to_string(),
            End::ClosedIdle => "the backend closed it while it carried no call".to_string(),
            End::ReadFailed(e) => format!("read failed: {e}"),
            End::WriteFailed(e) => format!("write failed: {e}"),
            End::BadReply(e) => format!("bad reply: {e}"),
            End::OutOfStep => "the backend sent bytes no call was waiting for".to_string(),
        }
    }

    /// The error for a call that was written before the lane stopped.
    fn error(&self) -> CallError {
        match self {
            // A lane ends idle only with no call left; out of step, only
            // unwritten calls remain (see `deliver`).
            End::Idle | End::Closed | End::ClosedIdle | End::OutOfStep => CallError::Closed,
            End::Broken | End::Expired => CallError::PipelineBroken,
            End::ReadFailed(e) => CallError::Read(copy_io_error(e)),
            End::WriteFailed(_) => CallError::Closed,
            End::BadReply(e) => CallError::BadReply(e.clone()),
        }
    }
}

/// The lane's task: holds the slot until the lane ends, and the connection
/// once it has one.
async fn drive(
    upstream: Arc<Upstream>,
    slot: Slot,
    lane: Arc<Lane>,
    mut queued: mpsc::UnboundedReceiver<Option<Queued>>,
) {
    let backend = &upstream.backends[slot.backend()];
    match backend.pool.get().await {
        Ok(conn) => serve(upstream, slot, conn, lane, queued).await,
        Err(e) => {
            backend.lanes.remove(&lane);
            upstream.report_failure(slot.backend(), &e.to_string());
            fail_queued(&mut queued, || CallError::Connect(copy_connect_error(&e)));
        }
    }
}

/// Closes the lane's queue and answers every call still in it with
/// `error()`: none of them was written.
fn fail_queued(
    queued: &mut mpsc::UnboundedReceiver<Option<Queued>>,
    error: impl Fn() -> CallError,
) {
    queued.close();
    while let Ok(item) = queued.try_recv() {
        if let Some(Queued { reply, .. }) = item {
            reply.send(Err(error()));
        }
    }
}

/// `ConnectError` holds an `io::Error`, which cannot be cloned.
fn copy_connect_error(e: &ConnectError) -> ConnectError {
    match e {
        ConnectError::Timeout { addr, limit } => ConnectError::Timeout {
            addr: *addr,
            limit: *limit,
        },
        ConnectError::Io { addr, source } => ConnectError::Io {
            addr: *addr,
            source: copy_io_error(source),
        },
    }
}

/// An `io::Error` cannot be cloned: the same kind and text.
fn copy_io_error(e: &io::Error) -> io::Error {
    io::Error::new(e.kind(), e.to_string())
}

/// Runs a lane on its connection until it ends: idle (the connection goes
/// back to the pool) or broken (it is closed).
async fn serve(
    upstream: Arc<Upstream>,
    slot: Slot,
    mut conn: PooledConn,
    lane: Arc<Lane>,
    mut queued: mpsc::UnboundedReceiver<Option<Queued>>,
) {
    let backend = &upstream.backends[slot.backend()];
    // Calls written or being written, oldest first; the last `unwritten` of
    // them are not completely written yet.
    let mut waiting: VecDeque<Replier> = VecDeque::new();
    let mut unwritten = 0usize;
    let mut outgoing: VecDeque<Chunk> = VecDeque::new();
    let mut replies = BytesMut::with_capacity(READ_CHUNK);
    let (mut reader, writer) = conn.stream().split();
    let linger_for = upstream.config.forwarding.pipeline_linger.get();
    // One timer for the lane's life, reset whenever its calls are all
    // answered (a fresh one per pause would be a timer-wheel insert and a
    // locked removal each).
    let linger = tokio::time::sleep(linger_for);
    tokio::pin!(linger);
    let mut lingering = false;
    // One waiter for the lane's life, not one per turn of the loop.
    let broken = lane.broken.cancelled();
    tokio::pin!(broken);
    // The earliest deadline of the calls on the lane, or a later one: the
    // timer is set earlier when a call needs it and otherwise left to fire,
    // and then set to what is left.
    let expiry = tokio::time::sleep(linger_for);
    tokio::pin!(expiry);
    let mut expiry_set = false;
    // Calls in a row that were alone on the lane when written.
    let mut solo_calls = 0usize;
    let end = loop {
        // Bytes left over once every call is answered would be read by the
        // next user of the connection: the lane ends out of step instead.
        if waiting.is_empty() && !replies.is_empty() {
            break End::OutOfStep;
        }
        // Every call answered: wait `forwarding.pipeline_linger` for the
        // next one, unless the lane's last calls came one at a time
        // ([`SOLO_CALLS_BEFORE_RETIRING`]) or a call is waiting for a slot
        // (this one's). The queue is looked at on every turn while the lane
        // is idle, after the `Notified` is created (it receives every
        // `notify_waiters` from its creation on, polled or not), so a call
        // that starts waiting at any point wakes the lane or is seen; and a
        // lane retires only while someone still waits (one waiter does not
        // close every idle lane).
        let wanted = upstream.scheduler.slot_wanted().notified();
        tokio::pin!(wanted);
        if waiting.is_empty() {
            if linger_for.is_zero()
                || solo_calls >= SOLO_CALLS_BEFORE_RETIRING
                || upstream.scheduler.queue_depth() > 0
            {
                lingering = false;
                if backend.lanes.retire_if_idle(&lane) {
                    break End::Idle;
                }
            } else if !lingering {
                lingering = true;
                linger.as_mut().reset(Instant::now() + linger_for);
            }
        } else {
            lingering = false;
        }
        tokio::select! {
            biased;
            () = &mut broken => break End::Broken,
            // Looked at on the next turn.
            () = &mut wanted, if lingering => {}
            () = &mut linger, if lingering => {
                lingering = false;
                if backend.lanes.retire_if_idle(&lane) {
                    break End::Idle;
                }
            }
            // While lingering nothing is expected: the backend closing its
            // end (an idle timeout, a restart) ends the lane quietly, and
            // bytes no call waits for end it out of step (at the loop's top).
            read = reader.read_buf(&mut replies), if lingering || (!waiting.is_empty() && unwritten < waiting.len()) => {
                match read {
                    // A close or reset with no call on the lane failed nobody.
                    Ok(0) | Err(_) if waiting.is_empty() => break End::ClosedIdle,
                    Ok(0) => break End::Closed,
                    Ok(_) => {}
                    Err(e) => break End::ReadFailed(e),
                }
                let written = waiting.len() - unwritten;
                if let Err(end) = deliver(&mut replies, &mut waiting, written, &upstream, &lane, backend) {
                    break end;
                }
            }
            // After the read: replies already here are delivered before a
            // deadline is judged (as the callers' own timeouts did).
            () = &mut expiry, if expiry_set => {
                match waiting.iter().map(|call| call.deadline).min() {
                    Some(earliest) if earliest <= Instant::now() => break End::Expired,
                    Some(earliest) => expiry.as_mut().reset(earliest),
                    None => expiry_set = false,
                }
            }
            ready = writer.writable(), if !outgoing.is_empty() => {
                if let Err(e) = ready.and_then(|()| write_some(&writer, &mut outgoing, &mut unwritten)) {
                    break End::WriteFailed(e);
                }
            }
            call = queued.recv() => {
                // `None` cannot happen: this task's `Lane` holds a sender.
                let Some(first) = call else { break End::OutOfStep };
                // Let the other tasks that are ready now queue their calls,
                // so that they share this send (all of them on the
                // current-thread scheduler; on the multi-thread one the
                // lane runs again before the tasks woken with it, see
                // `crate::runtime`).
                if first.is_some() {
                    tokio::task::yield_now().await;
                }
                let mut next = Some(first);
                let mut added = 0usize;
                let now = Instant::now();
                while let Some(item) = next {
                    match item {
                        // Its deadline passed while the lane was being
                        // opened: not sent, the backend would work for
                        // nobody.
                        Some(Queued { reply, .. }) if reply.deadline <= now => {
                            let limit = reply.limit;
                            reply.send(Err(CallError::Timeout { limit }));
                            leave(&upstream, &lane);
                        }
                        Some(Queued { out, reply }) => {
                            if let Some(prefix) = out.prefix {
                                outgoing.push_back(Chunk { bytes: Bytes::copy_from_slice(&prefix), ends_call: false });
                            }
                            outgoing.push_back(Chunk { bytes: out.body, ends_call: true });
                            if !expiry_set || reply.deadline < expiry.deadline() {
                                expiry.as_mut().reset(reply.deadline);
                                expiry_set = true;
                            }
                            waiting.push_back(reply);
                            unwritten += 1;
                            added += 1;
                        }
                        None => leave(&upstream, &lane),
                    }
                    next = queued.try_recv().ok();
                }
                solo_calls = match (added, waiting.len()) {
                    // Nothing sent (dropped tickets, calls already late).
                    (0, _) => solo_calls,
                    (1, 1) => solo_calls + 1,
                    _ => 0,
                };
                if let Err(e) = write_some(&writer, &mut outgoing, &mut unwritten) {
                    break End::WriteFailed(e);
                }
            }
        }
    };
    if !matches!(end, End::Idle) {
        backend.lanes.remove(&lane);
        tracing::debug!(backend = %backend.label, calls = waiting.len(), reason = %end.reason(), "pipelined backend connection closed");
        // One failure of the backend, however many calls it takes down (a
        // timeout is reported by the call that timed out; a caller that
        // went away or a connection closed while idle failed nobody).
        if !matches!(end, End::Broken | End::Expired | End::ClosedIdle) {
            upstream.report_failure(slot.backend(), &end.reason());
        }
    }
    // Calls never written are safe to send again; the others may have run.
    fail_queued(&mut queued, not_written);
    let written = waiting.len().saturating_sub(unwritten);
    let now = Instant::now();
    for (i, reply) in waiting.into_iter().enumerate() {
        let error = if matches!(end, End::Expired) && reply.deadline <= now {
            CallError::Timeout { limit: reply.limit }
        } else if i < written {
            end.error()
        } else {
            not_written()
        };
        reply.send(Err(error));
    }
    match end {
        End::Idle => backend.pool.checkin(conn),
        _ => drop(conn),
    }
    drop(slot);
}

/// Writes as much of `outgoing` as the socket takes now, without waiting.
fn write_some(
    writer: &tokio::net::tcp::WriteHalf<'_>,
    outgoing: &mut VecDeque<Chunk>,
    unwritten: &mut usize,
) -> io::Result<()> {
    while !outgoing.is_empty() {
        let mut slices = [IoSlice::new(&[]); MAX_IOV];
        let count = outgoing.len().min(MAX_IOV);
        for (slice, chunk) in slices.iter_mut().zip(outgoing.iter()) {
            *slice = IoSlice::new(&chunk.bytes);
        }
        let mut written = match writer.try_write_vectored(&slices[..count]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        };
        while written > 0 {
            let Some(chunk) = outgoing.front_mut() else {
                break;
            };
            if written < chunk.bytes.len() {
                chunk.bytes.advance(written);
                break;
            }
            written -= chunk.bytes.len();
            if chunk.ends_call {
                *unwritten = unwritten.saturating_sub(1);
            }
            outgoing.pop_front();
        }
    }
    Ok(())
}

/// One call is done with the lane (answered, or its ticket dropped
/// unused). A lane that was full has room now: calls waiting for a slot
/// may join it.
fn leave(upstream: &Upstream, lane: &Lane) {
    let before = lane.in_flight.fetch_sub(1, Ordering::AcqRel);
    if before == upstream.config.forwarding.pipeline_depth {
        upstream.lane_room.notify_one();
    }
}

/// Hands every whole reply in `replies` to the oldest waiting call, among
/// the `written` oldest (a reply for a call not completely written yet is
/// not its reply: the backend is out of step).
fn deliver(
    replies: &mut BytesMut,
    waiting: &mut VecDeque<Replier>,
    mut written: usize,
    upstream: &Upstream,
    lane: &Lane,
    backend: &super::Backend,
) -> Result<(), End> {
    let mut noted = false;
    while !replies.is_empty() {
        let max_frame = upstream.config.limits.max_frame_bytes;
        match delimit(backend.flavor, replies, max_frame).map_err(End::BadReply)? {
            Delimit::Complete { len, header } => {
                if written == 0 {
                    return Err(End::OutOfStep);
                }
                let Some(reply) = waiting.pop_front() else {
                    return Err(End::OutOfStep);
                };
                written -= 1;
                let bytes = replies.split_to(len).freeze();
                // One clock read per batch of replies, not per reply.
                if !noted {
                    backend.note_reply();
                    noted = true;
                }
                leave(upstream, lane);
                reply.send(Ok(Reply { bytes, header }));
            }
            Delimit::NeedMore { at_least } => {
                replies.reserve(at_least.saturating_sub(replies.len()).max(READ_CHUNK));
                return Ok(());
            }
        }
    }
    if replies.capacity() - replies.len() < READ_CHUNK / 4 {
        replies.reserve(READ_CHUNK);
    }
    Ok(())
}

#[cfg(test)]
#[path = "lane_tests.rs"]
mod tests;
