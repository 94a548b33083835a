//! How one call reaches a backend: on a connection of its own, or, for
//! `forwarding.pipeline_methods`, pipelined with other quick calls on a
//! shared one (`crate::upstream::lane`). `request.rs` decides what to do
//! with the outcome (answer, retry, count).

use std::sync::Arc;

use bytes::Bytes;

use super::convert;
use crate::protocols::thrift::{Flavor, InvalidThrift};
use crate::upstream::piped::{PipeError, PipedBody};
use crate::upstream::{exchange, lane, AcquireError, CallError, Outgoing, Reply, Slot, Upstream};

/// A whole call as received: its bytes in memory and, for a large framed
/// call (`piping.rs`), the rest of it held in pipes.
pub(super) struct Message {
    pub head: Bytes,
    pub body: Option<Arc<PipedBody>>,
}

impl Message {
    pub(super) fn in_memory(bytes: Bytes) -> Message {
        Message {
            head: bytes,
            body: None,
        }
    }
}

/// Why a call was not sent anywhere.
pub(super) enum Undispatched {
    /// No slot: the queue was full or timed out, or no backend is up.
    Slot(AcquireError),
    /// The call cannot be expressed in the backend's dialect.
    Convert(InvalidThrift),
    /// A piped call's spare pipe could not be had (descriptor or pipe-page
    /// limits): probegate's failure, not the backend's.
    Pipe(PipeError),
}

/// A call that was sent (or tried).
pub(super) struct Dispatched {
    /// The backend's index.
    pub backend: usize,
    /// The call's size in the backend's dialect.
    pub sent_bytes: usize,
    pub result: Result<Option<Reply>, CallError>,
    /// Whether it went on a pipelined connection (whose failures the lane
    /// reports itself, once).
    pub on_lane: bool,
}

/// Sends a call on a backend connection of its own, taking a slot (and
/// queueing for one when all are taken).
pub(super) async fn dispatch_alone(
    upstream: &Arc<Upstream>,
    message: &Message,
    flavor: Flavor,
    oneway: bool,
) -> Result<Dispatched, Undispatched> {
    let slot = upstream.acquire().await.map_err(Undispatched::Slot)?;
    send_alone(upstream, slot, message, flavor, oneway).await
}

async fn send_alone(
    upstream: &Arc<Upstream>,
    slot: Slot,
    message: &Message,
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
pub(super) async fn dispatch_pipelined(
    upstream: &Arc<Upstream>,
    message: &Message,
    flavor: Flavor,
) -> Result<Dispatched, Undispatched> {
    let ticket = match lane::join(upstream) {
        Some(ticket) => ticket,
        None => match slot_or_lane(upstream).await? {
            SlotOrLane::Lane(ticket) => ticket,
            SlotOrLane::Slot(slot) => {
                let index = slot.backend();
                if upstream.scheduler.in_use(index) <= 1 {
                    return send_alone(upstream, slot, message, flavor, false).await;
                }
                lane::open(upstream, slot)
            }
        },
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

enum SlotOrLane {
    Slot(Slot),
    Lane(lane::Ticket),
}

/// Waits in the slot queue like any call, but also takes a place on a
/// pipelined connection as soon as one opens or gets room: a queued ping
/// must not wait for a slot while later pings ride a lane past it.
///
/// `lane_room` wakes one waiter per event; a waiter that was woken and
/// joins wakes the next (there may be more room), and one that finds none
/// goes back to waiting. A woken waiter that leaves without looking (it
/// got a slot, or its caller gave up) hands its wake-up on: tokio's
/// `Notified` does that when dropped.
async fn slot_or_lane(upstream: &Arc<Upstream>) -> Result<SlotOrLane, Undispatched> {
    // One acquire for the whole wait: it keeps its place in the FIFO queue
    // (and its timeouts.queue bound) across wake-ups; dropped, it leaves
    // the queue.
    let acquire = upstream.acquire();
    tokio::pin!(acquire);
    let mut woken = false;
    loop {
        // Registered before looking, so that room made in between wakes us.
        let room = upstream.lane_room.notified();
        tokio::pin!(room);
        room.as_mut().enable();
        if let Some(ticket) = lane::join(upstream) {
            if woken {
                upstream.lane_room.notify_one();
            }
            return Ok(SlotOrLane::Lane(ticket));
        }
        tokio::select! {
            biased;
            slot = &mut acquire => {
                return slot.map(SlotOrLane::Slot).map_err(Undispatched::Slot);
            }
            () = &mut room => {
                woken = true;
                #[cfg(test)]
                upstream
                    .lane_room_wakes
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}

/// The call in the dialect of the backend at `index`.
fn for_backend(
    upstream: &Upstream,
    index: usize,
    message: &Message,
    flavor: Flavor,
) -> Result<Outgoing, Undispatched> {
    // A piped call is only received from a client in the protocol of every
    // backend (`piping::can_pipe`), so its head converts on its own: at
    // most the frame prefix is dropped.
    let mut out = convert(
        &message.head,
        flavor,
        upstream.backends[index].flavor,
        upstream.config.limits.max_frame_bytes,
    )
    .map_err(Undispatched::Convert)?;
    if let Some(body) = &message.body {
        // Before anything is written, so that a missing pipe never looks
        // like a dead connection.
        body.prepare().map_err(Undispatched::Pipe)?;
        out.piped = Some(Arc::clone(body));
    }
    Ok(out)
}

#[cfg(test)]
#[path = "dispatch_tests.rs"]
mod tests;
