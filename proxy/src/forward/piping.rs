//! Receiving the body of a large framed call into pipes
//! (`crate::upstream::piped`) instead of memory, under the same buffer
//! budget and idle bound as a call received into memory.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::TcpStream;

use super::budget::Budget;
use super::within;
use crate::protocols::thrift::{Flavor, Transport};
use crate::upstream::piped::{Fill, PipeError, PipedBody};
use crate::upstream::pipes::PipePool;
use crate::upstream::Upstream;

/// A call whose body (what is still to come after its first read) is at
/// least this large is received into pipes. Below it, piping costs more
/// than the two copies it saves, even with the pipes kept between calls
/// (`upstream::pipes`): 64 KiB uploads piped cost probegate 30–33 µs per
/// call against 25–30 in memory, and the uploader 74–78 against 66–69
/// (bench/README.md, tenth round).
pub(super) const PIPE_AT_LEAST: usize = 128 * 1024;

/// Whether calls from a client speaking `flavor` can have their bodies
/// piped: `forwarding.pipe_large_calls` is on, the client is framed (the
/// prefix gives the body's length, and the header, read first, is all
/// probegate checks) and speaks the protocol of every backend (no backend
/// needs the bytes re-encoded; a buffered backend gets the call without its
/// prefix, which is in the head).
pub(super) fn can_pipe(flavor: Flavor, upstream: &Upstream) -> bool {
    upstream.config.forwarding.pipe_large_calls
        && flavor.transport == Transport::Framed
        && upstream
            .backends
            .iter()
            .all(|backend| backend.flavor.protocol == flavor.protocol)
}

/// How receiving into pipes ended.
pub(super) enum Piping {
    /// The whole body is in the pipes.
    Whole(PipedBody),
    /// No pipes could be had (or no more): what arrived is in the caller's
    /// buffer, and the call goes on being received into memory.
    InMemory,
    /// The client closed, failed or stalled past `timeouts.idle` (logged).
    Gone,
}

/// Receives `body_len` bytes from `client` into pipes taken from `pipes`,
/// taking budget as they come (at most `max_read` at a time, like reads
/// into memory).
pub(super) async fn receive(
    client: &TcpStream,
    budget: &mut Budget,
    body_len: usize,
    idle: Duration,
    max_read: usize,
    buf: &mut BytesMut,
    pipes: &Arc<PipePool>,
) -> Piping {
    let mut body = match PipedBody::new(body_len, pipes) {
        Ok(body) => body,
        Err(e) => {
            tracing::debug!(error = %e, "no pipes for a large call; receiving it into memory");
            return Piping::InMemory;
        }
    };
    while !body.is_complete() {
        let want = (body_len - body.len()).min(max_read);
        if !budget.take_within(want, idle).await {
            return Piping::Gone;
        }
        match within(idle, body.fill_from(client, want)).await {
            Some(Ok(Fill::Moved(n))) => budget.give_back(want - n),
            Some(Ok(Fill::Eof)) => {
                tracing::debug!(
                    buffered = buf.len() + body.len(),
                    "client closed mid-message"
                );
                return Piping::Gone;
            }
            Some(Err(e)) => {
                budget.give_back(want);
                return back_to_memory(body, buf, &e);
            }
            None => {
                tracing::debug!(
                    buffered = buf.len() + body.len(),
                    "client stalled mid-message longer than timeouts.idle; closing"
                );
                return Piping::Gone;
            }
        }
    }
    Piping::Whole(body)
}

/// When pipes will not do (see [`PipeError`]): the bytes already in pipes
/// go to `buf` and reading goes on in memory, where a broken client shows
/// as a failed read.
fn back_to_memory(body: PipedBody, buf: &mut BytesMut, error: &PipeError) -> Piping {
    tracing::debug!(%error, piped = body.len(), "piping a large call failed; going on in memory");
    match body.drain_into(buf) {
        Ok(()) => Piping::InMemory,
        Err(e) => {
            tracing::debug!(error = %e, "could not read back a piped call; closing client");
            Piping::Gone
        }
    }
}

#[cfg(test)]
#[path = "piping_tests.rs"]
mod tests;
