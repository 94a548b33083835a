//! One call on one backend connection: write a whole message, read exactly
//! one whole reply.
//!
//! Thread-per-connection servers answer one call at a time, so a connection
//! carries at most one call in flight and the reply needs no matching (the
//! client's seqid is passed through untouched). A pooled connection that
//! turns out dead when the call is written is replaced silently by another
//! idle one or a fresh connection; what happens after the call is written is
//! the caller's to judge (see [`CallError::delivered`]).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::piped::PipedBody;
use super::pool::ConnectError;
use super::queue::Slot;
use super::Upstream;
use crate::protocols::thrift::{delimit, Delimit, Flavor, InvalidThrift, MessageHeader};

/// Initial size of a reply buffer; grown only when a reply needs it.
const READ_CHUNK: usize = 4096;

/// A message ready to be written in the backend's dialect: an optional
/// 4-byte frame prefix (added when only the transport differs), the bytes
/// as received, so a 1 MiB upload is written without being copied, and for
/// a large framed call the rest of it, held in pipes (`piped`).
#[derive(Clone)]
pub struct Outgoing {
    pub prefix: Option<[u8; 4]>,
    pub body: Bytes,
    pub piped: Option<Arc<PipedBody>>,
}

impl Outgoing {
    pub fn new(body: Bytes) -> Outgoing {
        Outgoing {
            prefix: None,
            body,
            piped: None,
        }
    }

    pub fn len(&self) -> usize {
        self.prefix.map_or(0, |p| p.len())
            + self.body.len()
            + self.piped.as_ref().map_or(0, |p| p.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub async fn write_to(&self, stream: &mut TcpStream) -> io::Result<()> {
        if let Some(prefix) = &self.prefix {
            stream.write_all(prefix).await?;
        }
        stream.write_all(&self.body).await?;
        if let Some(piped) = &self.piped {
            piped.send_to(stream).await?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing")
            .field("prefix", &self.prefix)
            .field("body", &self.body.len())
            .field("piped", &self.piped.as_ref().map(|p| p.len()))
            .finish()
    }
}

/// A whole reply message in the backend's dialect.
#[derive(Debug)]
pub struct Reply {
    pub bytes: Bytes,
    pub header: MessageHeader,
}

/// Why a call got no reply.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No connection could be opened: nothing was sent.
    #[error("{0}")]
    Connect(#[from] ConnectError),
    /// A fresh connection failed while the call was written; a partial
    /// message is never executed.
    #[error("write to backend failed: {0}")]
    Write(io::Error),
    /// The backend closed the connection before a whole reply.
    #[error("backend closed the connection before replying")]
    Closed,
    #[error("read from backend failed: {0}")]
    Read(io::Error),
    /// The reply did not arrive within the deadline.
    #[error("no reply within {}", humantime::format_duration(*.limit))]
    Timeout { limit: Duration },
    /// The backend sent bytes that are not a Thrift message.
    #[error("bad reply from backend: {0}")]
    BadReply(InvalidThrift),
    /// An earlier call pipelined on the same connection got no reply within
    /// `timeouts.request`, so the connection was closed under this one.
    #[error("an earlier call on the same pipelined backend connection timed out; the connection was closed")]
    PipelineBroken,
}

impl CallError {
    /// Whether the backend may have received (and executed) the call.
    pub fn delivered(&self) -> bool {
        !matches!(self, CallError::Connect(_) | CallError::Write(_))
    }
}

/// Counts a call in `probegate_backend_requests_in_flight` while it lives.
pub(super) struct InFlight<'a>(&'a prometheus::IntGauge);

impl<'a> InFlight<'a> {
    pub(super) fn new(gauge: &'a prometheus::IntGauge) -> Self {
        gauge.inc();
        InFlight(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Writes `out` on a connection of the slot's backend and, unless `oneway`,
/// reads one reply within `deadline` (counted from the moment a connection
/// is in hand; opening one is bounded by `timeouts.connect`). A connection
/// that completed its call cleanly goes back to the pool; any other is
/// closed.
pub async fn exchange(
    upstream: &Upstream,
    slot: &Slot,
    out: &Outgoing,
    oneway: bool,
    deadline: Duration,
) -> Result<Option<Reply>, CallError> {
    let backend = &upstream.backends[slot.backend()];
    let _in_flight = InFlight::new(&backend.in_flight);
    let timeout = CallError::Timeout { limit: deadline };
    let (mut conn, deadline_at) = loop {
        if let Some(mut conn) = backend.pool.checkout() {
            let deadline_at = Instant::now() + deadline;
            match tokio::time::timeout_at(deadline_at, out.write_to(conn.stream())).await {
                Ok(Ok(())) => break (conn, deadline_at),
                Ok(Err(e)) => {
                    tracing::debug!(backend = %backend.label, error = %e, "pooled connection dead at write; replacing it");
                    continue;
                }
                Err(_) => return Err(timeout),
            }
        }
        let mut conn = backend.pool.connect().await?;
        let deadline_at = Instant::now() + deadline;
        match tokio::time::timeout_at(deadline_at, out.write_to(conn.stream())).await {
            Ok(Ok(())) => break (conn, deadline_at),
            Ok(Err(e)) => return Err(CallError::Write(e)),
            Err(_) => return Err(timeout),
        }
    };
    if oneway {
        backend.pool.checkin(conn);
        return Ok(None);
    }
    let max_frame = upstream.config.limits.max_frame_bytes;
    let read = read_message(conn.stream(), backend.flavor, max_frame);
    let (reply, leftover) = match tokio::time::timeout_at(deadline_at, read).await {
        Ok(result) => result?,
        Err(_) => return Err(timeout),
    };
    backend.note_reply();
    if leftover {
        // More than one reply to one call: the connection is out of step.
        tracing::debug!(backend = %backend.label, "backend sent bytes after its reply; closing the connection");
    } else {
        backend.pool.checkin(conn);
    }
    Ok(Some(reply))
}

/// Reads exactly one whole message (and reports whether more bytes came
/// after it).
pub async fn read_message(
    stream: &mut TcpStream,
    flavor: Flavor,
    max_frame: usize,
) -> Result<(Reply, bool), CallError> {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    loop {
        if !buf.is_empty() {
            match delimit(flavor, &buf, max_frame).map_err(CallError::BadReply)? {
                Delimit::Complete { len, header } => {
                    let leftover = buf.len() > len;
                    let bytes = buf.split_to(len).freeze();
                    return Ok((Reply { bytes, header }, leftover));
                }
                Delimit::NeedMore { at_least } => {
                    buf.reserve(at_least.saturating_sub(buf.len()).max(READ_CHUNK));
                }
            }
        }
        let n = stream.read_buf(&mut buf).await.map_err(CallError::Read)?;
        if n == 0 {
            return Err(CallError::Closed);
        }
    }
}
