//! Request mode: whole calls, one at a time per client, each on a pooled
//! backend connection.
//!
//! A call is dispatched only once it is completely buffered, so a client
//! that trickles or stalls costs proxy memory (bounded across all clients by
//! `limits.max_buffered_bytes`: reading pauses when it is used up) and never
//! a backend thread. Between calls a client holds no buffer at all; a
//! message buffer starts small and grows only as far as the message needs,
//! except that a large message is received into a buffer from the shared
//! stock (`buffers.rs`) when one is free, and its buffer goes back there once
//! it is served.
//! Pipelined calls are answered in order because they are served one after
//! the other.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use thrift::protocol::TMessageType;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::buffers::{LARGE, STOCK};
use super::{convert, exception_for, within, write_client, write_client_bytes};
use crate::protocols::thrift::{delimit, Delimit, Flavor, InvalidThrift, MessageHeader};
use crate::upstream::metrics::{method_index, Outcome, OTHER_METHOD};
use crate::upstream::{exchange, lane, AcquireError, CallError, Outgoing, Reply, Slot, Upstream};

/// The smallest read; also the size a client's buffer starts at.
const READ_CHUNK: usize = 4 * 1024;
/// The largest single read (and permit request) while a message arrives.
const MAX_READ_CHUNK: usize = 256 * 1024;

/// This client's share of `limits.max_buffered_bytes`: one permit per byte
/// it has buffered (or is about to read). Given back on drop.
struct Budget {
    semaphore: Arc<Semaphore>,
    held: usize,
}

impl Budget {
    async fn take(&mut self, n: usize) -> bool {
        let Ok(n32) = u32::try_from(n) else {
            return false;
        };
        match self.semaphore.acquire_many(n32).await {
            Ok(permit) => {
                permit.forget();
                self.held += n;
                true
            }
            Err(_closed) => false,
        }
    }

    fn give_back(&mut self, n: usize) {
        let n = n.min(self.held);
        self.held -= n;
        self.semaphore.add_permits(n);
    }
}

impl Drop for Budget {
    fn drop(&mut self) {
        self.semaphore.add_permits(self.held);
    }
}

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
    let mut budget = Budget {
        semaphore: Arc::clone(&upstream.buffer_budget),
        held: 0,
    };
    if within(idle, budget.take(buf.len())).await != Some(true) {
        tracing::debug!("no buffer budget for the first bytes within timeouts.idle; closing");
        return;
    }
    loop {
        let mut need = READ_CHUNK;
        if !buf.is_empty() {
            match delimit(flavor, &buf, max_frame) {
                Ok(Delimit::Complete { len, header }) => {
                    let whole = buf.capacity();
                    let message = buf.split_to(len).freeze();
                    let keep_going =
                        serve_call(&mut client, message, &header, flavor, &upstream).await;
                    budget.give_back(len);
                    release(&mut buf, whole);
                    if !keep_going {
                        return;
                    }
                    continue;
                }
                Ok(Delimit::NeedMore { at_least }) => {
                    need = at_least.saturating_sub(buf.len());
                    if at_least >= LARGE && buf.capacity() < at_least {
                        if let Some(mut stocked) = STOCK.take() {
                            stocked.extend_from_slice(&buf);
                            buf = stocked;
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, reason = e.reason(), "client sent a message probegate cannot delimit; closing");
                    upstream.metrics.request.count(OTHER_METHOD, Outcome::Error);
                    return;
                }
            }
        } else {
            // Between calls: no buffer, no budget, just wait for bytes.
            tokio::select! {
                _ = shutdown.cancelled() => return,
                ready = tokio::time::timeout(idle, client.readable()) => match ready {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return,
                    Err(_) => {
                        tracing::debug!("client idle longer than timeouts.idle; closing");
                        return;
                    }
                },
            }
        }
        let want = need.clamp(READ_CHUNK, max_read);
        // Backpressure: wait for budget, but never longer than the idle bound.
        if within(idle, budget.take(want)).await != Some(true) {
            tracing::debug!("buffer budget exhausted for timeouts.idle; closing client");
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
    message: Bytes,
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
    message: Bytes,
    header: &MessageHeader,
    flavor: Flavor,
    upstream: &Arc<Upstream>,
) -> (Answer, Outcome) {
    let config = &upstream.config;
    let oneway = header.is_oneway();
    let retryable = config.forwarding.retry_methods.contains(&header.name);
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
    let pipelinable = !oneway
        && config.forwarding.pipeline_depth > 1
        && config.forwarding.pipeline_methods.contains(&header.name);
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

/// Why a call was not sent anywhere.
enum Undispatched {
    /// No slot: the queue was full or timed out, or no backend is up.
    Slot(AcquireError),
    /// The call cannot be expressed in the backend's dialect.
    Convert(InvalidThrift),
}

/// A call that was sent (or tried).
struct Dispatched {
    /// The backend's index.
    backend: usize,
    /// The call's size in the backend's dialect.
    sent_bytes: usize,
    result: Result<Option<Reply>, CallError>,
    /// Whether it went on a pipelined connection (whose failures the lane
    /// reports itself, once).
    on_lane: bool,
}

/// Sends a call on a backend connection of its own, taking a slot (and
/// queueing for one when all are taken).
async fn dispatch_alone(
    upstream: &Arc<Upstream>,
    message: &Bytes,
    flavor: Flavor,
    oneway: bool,
) -> Result<Dispatched, Undispatched> {
    let slot = upstream.acquire().await.map_err(Undispatched::Slot)?;
    send_alone(upstream, slot, message, flavor, oneway).await
}

async fn send_alone(
    upstream: &Arc<Upstream>,
    slot: Slot,
    message: &Bytes,
    flavor: Flavor,
    oneway: bool,
) -> Result<Dispatched, Undispatched> {
    let index = slot.backend();
    let out = for_backend(upstream, index, message, flavor)?;
    let deadline = upstream.config.timeouts.request.get();
    let result = exchange(upstream, &slot, &out, oneway, deadline).await;
    Ok(Dispatched {
        backend: index,
        sent_bytes: out.len(),
        result,
        on_lane: false,
    })
}

/// Sends a call of `forwarding.pipeline_methods`: behind other such calls
/// on a pipelined connection with room if there is one (no slot needed).
/// Otherwise it takes a slot like any call; when other calls are in flight
/// on that backend it opens a pipelined connection that later calls can
/// join, and when it is alone there it simply has a connection to itself.
async fn dispatch_pipelined(
    upstream: &Arc<Upstream>,
    message: &Bytes,
    flavor: Flavor,
) -> Result<Dispatched, Undispatched> {
    let ticket = match lane::join(upstream) {
        Some(ticket) => ticket,
        None => {
            let slot = upstream.acquire().await.map_err(Undispatched::Slot)?;
            let index = slot.backend();
            if upstream.scheduler.in_use(index) <= 1 {
                return send_alone(upstream, slot, message, flavor, false).await;
            }
            lane::open(upstream, slot)
        }
    };
    let index = ticket.backend;
    let out = for_backend(upstream, index, message, flavor)?;
    let sent_bytes = out.len();
    let deadline = upstream.config.timeouts.request.get();
    let result = lane::call(upstream, ticket, out, deadline).await;
    Ok(Dispatched {
        backend: index,
        sent_bytes,
        result: result.map(Some),
        on_lane: true,
    })
}

/// The call in the dialect of the backend at `index`.
fn for_backend(
    upstream: &Upstream,
    index: usize,
    message: &Bytes,
    flavor: Flavor,
) -> Result<Outgoing, Undispatched> {
    convert(
        message,
        flavor,
        upstream.backends[index].flavor,
        upstream.config.limits.max_frame_bytes,
    )
    .map_err(Undispatched::Convert)
}
