//! Request mode: whole calls, one at a time per client, each on a pooled
//! backend connection (quick ones possibly pipelined with other clients'
//! calls on a shared one: `dispatch.rs`).
//!
//! A call is dispatched only once it is completely buffered, so a client
//! that trickles or stalls costs proxy memory (bounded across all clients by
//! `limits.max_buffered_bytes`: reading pauses when it is used up) and never
//! a backend thread. Between calls a client holds no buffer at all; a
//! message buffer starts at the size of the first read (so a small call is
//! one small allocation) and grows only as far as the message needs,
//! except that a large message is received into a buffer from the shared
//! stock (`buffers.rs`) when one is free, and its buffer goes back there once
//! it is served. The body of a large framed call is received into kernel
//! pipes instead (`piping.rs`) and spliced to the backend, never copied.
//! Pipelined calls are answered in order because they are served one after
//! the other.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::BytesMut;
use thrift::protocol::TMessageType;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::budget::Budget;
use super::buffers::{LARGE, STOCK};
use super::dispatch::{dispatch_alone, dispatch_pipelined, Dispatched, Message, Undispatched};
use super::piping::{self, can_pipe, Piping, PIPE_AT_LEAST};
use super::{convert, exception_for, within, write_client, write_client_bytes};
use crate::protocols::thrift::{delimit, frame_header, Delimit, Flavor, MessageHeader};
use crate::upstream::metrics::{method_index, Outcome, OTHER_METHOD};
use crate::upstream::{AcquireError, CallError, Outgoing, Upstream};

/// The smallest read; also the size a client's buffer starts at.
const READ_CHUNK: usize = 4 * 1024;
/// The largest single read (and permit request) while a message arrives.
const MAX_READ_CHUNK: usize = 256 * 1024;

/// Serves calls from one client until it closes, idles past
/// `timeouts.idle`, sends something that is not a Thrift message, or
/// `shutdown` fires between calls.
pub async fn serve(
    mut client: TcpStream,
    mut buf: BytesMut,
    flavor: Flavor,
    upstream: Arc<Upstream>,
    shutdown: CancellationToken,
) {
    let idle = upstream.config.timeouts.idle.get();
    let max_frame = upstream.config.limits.max_frame_bytes;
    let max_read = MAX_READ_CHUNK.min(upstream.config.limits.max_buffered_bytes);
    let mut budget = Budget::new(Arc::clone(&upstream.buffer_budget));
    let pipes_possible = can_pipe(flavor, &upstream);
    // Set when pipes failed for the message being received: it goes on in
    // memory.
    let mut in_memory = false;
    if within(idle, budget.take(buf.len())).await != Some(true) {
        tracing::debug!("no buffer budget for the first bytes within timeouts.idle; closing");
        return;
    }
    // One timer for the wait between calls, reset per call: moving a
    // registered deadline later is a store, where a fresh timeout per call
    // was a timer-wheel insert and a locked removal each.
    let between_calls = tokio::time::sleep(idle);
    tokio::pin!(between_calls);
    // Likewise one shutdown waiter for the connection: a fresh one per call
    // locked the token's tree and the Notify's list twice (~4 % of
    // probegate's instructions per ping under callgrind).
    let shutting_down = shutdown.cancelled();
    tokio::pin!(shutting_down);
    loop {
        let mut need = 0;
        let mut read_limit = max_read;
        if !buf.is_empty() {
            // A whole call, received in memory or with its body in pipes:
            // the message, its header, the bytes it holds of the budget and
            // the buffer's capacity before it was split off.
            let ready = match delimit(flavor, &buf, max_frame) {
                Ok(Delimit::Complete { header, .. }) if !header.is_call() => {
                    refuse_non_call(&header, &upstream);
                    return;
                }
                Ok(Delimit::Complete { len, header }) => {
                    let whole = buf.capacity();
                    let message = Message::in_memory(buf.split_to(len).freeze());
                    Some((message, header, len, whole))
                }
                Ok(Delimit::NeedMore { at_least }) => {
                    need = at_least.saturating_sub(buf.len());
                    let pipeable = pipes_possible && !in_memory && need >= PIPE_AT_LEAST;
                    let header = pipeable
                        .then(|| frame_header(flavor.protocol, &buf))
                        .flatten();
                    match header {
                        Some(header) if !header.is_call() => {
                            refuse_non_call(&header, &upstream);
                            return;
                        }
                        Some(header) => {
                            let received = piping::receive(
                                &client,
                                &mut budget,
                                need,
                                idle,
                                max_read,
                                &mut buf,
                                &upstream.pipes,
                            )
                            .await;
                            match received {
                                Piping::Whole(body) => {
                                    upstream.metrics.request.piped.inc();
                                    let whole = buf.capacity();
                                    let len = buf.len() + body.len();
                                    let message = Message {
                                        head: buf.split().freeze(),
                                        body: Some(Arc::new(body)),
                                    };
                                    Some((message, header, len, whole))
                                }
                                Piping::InMemory => {
                                    in_memory = true;
                                    continue;
                                }
                                Piping::Gone => return,
                            }
                        }
                        None => {
                            if pipeable {
                                // Only the header is missing (a client that
                                // writes the frame length on its own): read
                                // just enough for it, and leave the body to
                                // the pipes.
                                read_limit = READ_CHUNK;
                            } else if at_least >= LARGE && buf.capacity() < at_least {
                                if let Some(mut stocked) = STOCK.take() {
                                    stocked.extend_from_slice(&buf);
                                    buf = stocked;
                                }
                            }
                            None
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, reason = e.reason(), "client sent a message probegate cannot delimit; closing");
                    upstream.metrics.request.count(OTHER_METHOD, Outcome::Error);
                    return;
                }
            };
            if let Some((message, header, len, whole)) = ready {
                let keep_going = serve_call(&mut client, message, &header, flavor, &upstream).await;
                budget.give_back(len);
                release(&mut buf, whole);
                in_memory = false;
                if !keep_going {
                    return;
                }
                continue;
            }
        } else {
            // Between calls: no buffer, no budget, just wait for bytes. The
            // first bytes of the next call are read into a stack buffer and
            // kept in an allocation of their size: a small call (a ping)
            // then costs one small allocation instead of a READ_CHUNK one.
            between_calls
                .as_mut()
                .reset(tokio::time::Instant::now() + idle);
            let first = tokio::select! {
                biased;
                () = &mut shutting_down => return,
                read = std::future::poll_fn(|cx| read_first(&mut client, cx)) => match read {
                    Ok(first) => first,
                    Err(_) => return,
                },
                () = &mut between_calls => {
                    tracing::debug!("client idle longer than timeouts.idle; closing");
                    return;
                }
            };
            if first.is_empty() {
                return;
            }
            if !budget.take_within(first.len(), idle).await {
                return;
            }
            buf = first;
            continue;
        }
        let want = need.clamp(READ_CHUNK, max_read).min(read_limit);
        // Backpressure: wait for budget, but never longer than the idle bound.
        if !budget.take_within(want, idle).await {
            return;
        }
        buf.reserve(want);
        let mut limited = (&mut client).take(want as u64);
        let read = within(idle, limited.read_buf(&mut buf)).await;
        let n = match read {
            Some(Ok(n)) => n,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "client read failed");
                return;
            }
            None => {
                tracing::debug!(
                    buffered = buf.len(),
                    "client stalled mid-message longer than timeouts.idle; closing"
                );
                return;
            }
        };
        budget.give_back(want - n);
        if n == 0 {
            if !buf.is_empty() {
                tracing::debug!(buffered = buf.len(), "client closed mid-message");
            }
            return;
        }
    }
}

/// A client may only call: every message it sends is held to that, not
/// only the first one the edge sniffed. A reply or exception from a client
/// closes it unforwarded.
fn refuse_non_call(header: &MessageHeader, upstream: &Upstream) {
    tracing::debug!(
        kind = ?header.kind,
        method = %header.name,
        seqid = header.seqid,
        "client sent a message that is not a call; closing"
    );
    upstream.metrics.request.count(OTHER_METHOD, Outcome::Error);
}

/// The most bytes of a new call read onto the stack (see `serve`).
const FIRST_READ: usize = 1024;

/// Reads what the client has sent (up to [`FIRST_READ`] bytes) into a
/// buffer of exactly that size; empty at end of stream. Reading through
/// `poll_read` keeps tokio's readiness right (a short read clears it), and
/// the stack buffer lives only for this poll, not in the client's task. It
/// is left uninitialised (`ReadBuf` tracks what the read filled): zeroing
/// 1 KiB per call was 1.4 % of probegate's instructions under callgrind.
fn read_first(client: &mut TcpStream, cx: &mut Context<'_>) -> Poll<io::Result<BytesMut>> {
    let mut stack = [MaybeUninit::<u8>::uninit(); FIRST_READ];
    let mut read = ReadBuf::uninit(&mut stack);
    Pin::new(client)
        .poll_read(cx, &mut read)
        .map_ok(|()| BytesMut::from(read.filled()))
}

/// Gives back a big buffer once its message is served, so a client that
/// sent one large upload does not keep that memory while idle: to the stock
/// when nothing else is buffered (`whole` is the capacity it had before the
/// message was split off), else by copying what is left into a fitting one.
fn release(buf: &mut BytesMut, whole: usize) {
    if buf.is_empty() {
        let served = std::mem::take(buf);
        if whole >= LARGE {
            STOCK.give_back(served, whole);
        }
    } else if buf.capacity() > LARGE && buf.len() <= buf.capacity() / 4 {
        *buf = BytesMut::from(&buf[..]);
    }
}

/// What the client gets for one call.
enum Answer {
    /// The backend's reply, in the client's dialect.
    Reply(Outgoing),
    /// A TApplicationException made by probegate.
    Exception(Vec<u8>),
    /// Nothing (oneway calls).
    Nothing,
}

/// Forwards one call and writes its answer. Returns whether the client
/// connection should keep being served.
async fn serve_call(
    client: &mut TcpStream,
    message: Message,
    header: &MessageHeader,
    flavor: Flavor,
    upstream: &Arc<Upstream>,
) -> bool {
    let started = Instant::now();
    let method = method_index(&header.name);
    let (answer, outcome) = forward_call(message, header, flavor, upstream).await;
    // Counted once the answer is in hand (a client may act on the answer
    // before probegate has finished writing it).
    let metrics = &upstream.metrics.request;
    metrics.count(method, outcome);
    metrics.observe_seconds(method, started.elapsed().as_secs_f64());
    let idle = upstream.config.timeouts.idle.get();
    match &answer {
        Answer::Reply(out) => {
            let ok = write_client(client, out, idle).await;
            if ok {
                metrics.to_client.inc_by(out.len() as u64);
            }
            ok
        }
        Answer::Exception(bytes) => write_client_bytes(client, bytes, idle).await,
        Answer::Nothing => true,
    }
}

/// Takes a slot, sends the call, reads the reply; retries once when that
/// is safe. Returns the answer and the call's outcome.
async fn forward_call(
    message: Message,
    header: &MessageHeader,
    flavor: Flavor,
    upstream: &Arc<Upstream>,
) -> (Answer, Outcome) {
    let config = &upstream.config;
    let oneway = header.is_oneway();
    let retryable = config.forwarding.retries(&header.name);
    let request_timeout = config.timeouts.request.get();
    let max_frame = config.limits.max_frame_bytes;
    let fail = |outcome: Outcome, text: String| {
        tracing::debug!(method = %header.name, outcome = outcome.label(), reason = %text, "call not served");
        if oneway {
            // A oneway client reads nothing: an answer would be taken as the
            // reply to its next call.
            (Answer::Nothing, outcome)
        } else {
            (
                Answer::Exception(exception_for(flavor, header, &text)),
                outcome,
            )
        }
    };
    // A call that died after it was written is retried once, and only for
    // `forwarding.retry_methods`. One that never reached a backend (connect
    // refused, fresh connection dead at write) is always safe to send
    // elsewhere: up to once per backend, so a dead backend that is still
    // marked up is stepped over.
    let mut retried = false;
    let mut undelivered = 0;
    // A piped call has pages, not bytes, to write; and it is large.
    let pipelinable =
        !oneway && message.body.is_none() && config.forwarding.pipelines(&header.name);
    loop {
        let dispatched = if pipelinable {
            dispatch_pipelined(upstream, &message, flavor).await
        } else {
            dispatch_alone(upstream, &message, flavor, oneway).await
        };
        let Dispatched {
            backend: index,
            sent_bytes,
            result,
            on_lane,
        } = match dispatched {
            Ok(sent) => sent,
            Err(Undispatched::Slot(e @ AcquireError::QueueTimeout { .. })) => {
                return fail(Outcome::Timeout, e.to_string())
            }
            Err(Undispatched::Slot(e)) => return fail(Outcome::Shed, e.to_string()),
            Err(Undispatched::Convert(e)) => {
                return fail(
                    Outcome::Error,
                    format!("cannot re-encode the call for the backend: {e}"),
                )
            }
            Err(Undispatched::Pipe(e)) => {
                return fail(
                    Outcome::Error,
                    format!("probegate cannot send the call from its pipes: {e}"),
                )
            }
        };
        let backend = &upstream.backends[index];
        if result.as_ref().map_or_else(CallError::delivered, |_| true) {
            upstream
                .metrics
                .request
                .to_backend
                .inc_by(sent_bytes as u64);
        }
        match result {
            Ok(None) => return (Answer::Nothing, Outcome::Oneway),
            Ok(Some(reply)) => {
                let outcome = if reply.header.kind == TMessageType::Exception {
                    Outcome::Exception
                } else {
                    Outcome::Reply
                };
                return match convert(&reply.bytes, backend.flavor, flavor, max_frame) {
                    Ok(out) => (Answer::Reply(out), outcome),
                    Err(e) => fail(
                        Outcome::Error,
                        format!("cannot re-encode the backend's reply: {e}"),
                    ),
                };
            }
            Err(CallError::Timeout { .. }) => {
                upstream.report_failure(index, "request timed out");
                return fail(
                    Outcome::Timeout,
                    format!(
                        "request exceeded timeouts.request={}",
                        humantime::format_duration(request_timeout)
                    ),
                );
            }
            Err(e) => {
                // A pipelined connection reports its own end once, however
                // many calls it takes down.
                if !on_lane {
                    upstream.report_failure(index, &e.to_string());
                }
                let again = if e.delivered() {
                    retryable && !std::mem::replace(&mut retried, true)
                } else {
                    undelivered += 1;
                    undelivered <= upstream.backends.len()
                };
                if again {
                    tracing::debug!(backend = %backend.label, method = %header.name, error = %e, "retrying call");
                    continue;
                }
                return fail(Outcome::Error, format!("backend connection failed: {e}"));
            }
        }
    }
}
