//! The body of a large framed call held in kernel pipes instead of
//! probegate's memory, and moved with `splice(2)`.
//!
//! Received with `recvfrom` and sent on with `sendmsg`, a 1 MiB upload is
//! copied twice by the CPU that probegate shares with the backend. A framed
//! call needs no look past its header (its length delimits it), so its body
//! can go by reference instead: `splice` moves the received pages from the
//! client's socket into a pipe, and later from a pipe into the backend's
//! socket; probegate's CPU never reads or writes the payload. The call is
//! still received *whole* before it is dispatched, so a client that trickles
//! holds pipes, never a backend thread.
//!
//! The body is a chain of pipes (`segments`): a pipe holds at most
//! [`SEGMENT_BYTES`] without privileges, and spliced socket data fills its
//! slots a page fragment at a time, so a 1 MiB body may need two. Fragments
//! can be much smaller than a page: off a real network each TCP segment of
//! ~1.4 KiB takes a slot, and on loopback a receiver that lags its sender
//! was seen filling a pipe to an eighth (small window-limited segments). A
//! pipe that fills while less than a sixteenth full means pieces of under
//! 256 bytes: such a body, one that would need more than [`MAX_SEGMENTS`]
//! pipes, and bytes `splice` cannot take (an urgent byte stops it) are
//! refused with a [`PipeError`], and the caller reads the body into memory
//! instead, so no client can make probegate hold more than a bounded number
//! of pipes per call.
//!
//! The segments keep the bytes for as long as the call may have to be sent
//! again (a pooled connection found dead at write, a retry): each attempt
//! duplicates a segment into the `spare` pipe with `tee(2)` (the pages are
//! shared, nothing is copied) and splices the spare into the backend socket.
//! The spare is made by [`PipedBody::prepare`] before anything is written,
//! so a pipe that cannot be had is probegate's failure, never mistaken for a
//! dead backend connection.
//!
//! The pipes come from, and go back to, a [`PipePool`] (`pipes.rs`), which
//! empties them and keeps them for the next call.

use std::io;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use rustix::io::Errno;
use rustix::net::RecvFlags;
use rustix::pipe::{splice, tee, SpliceFlags};
use tokio::io::Interest;
use tokio::net::TcpStream;

use super::pipes::{Pipe, PipePool, SEGMENT_BYTES};
/// The most pipes one body may hold (two descriptors each); a body that
/// needs more (large, in small fragments) goes through memory.
pub const MAX_SEGMENTS: usize = 32;

/// Why a body is not (or no longer) piped. Each is a reason to receive or
/// send it through memory, never a fault of the client or the backend.
#[derive(Debug, thiserror::Error)]
pub enum PipeError {
    #[error("cannot make a pipe: {0}")]
    Create(io::Error),
    #[error("the kernel made a pipe of {capacity} bytes, asked for {wanted}")]
    TooSmall { capacity: usize, wanted: usize },
    #[error("the body arrives in small pieces: a pipe filled with {held} of its {capacity} bytes")]
    Fragmented { held: usize, capacity: usize },
    #[error(
        "the body needs more than {MAX_SEGMENTS} pipes ({received} of {expected} bytes received)"
    )]
    TooManySegments { received: usize, expected: usize },
    #[error("the client socket reads {0}")]
    Socket(io::Error),
}

/// What one [`PipedBody::fill_from`] step did.
#[derive(Debug, PartialEq, Eq)]
pub enum Fill {
    /// Moved this many bytes from the socket.
    Moved(usize),
    /// The client closed its side.
    Eof,
}

/// A call's body (everything after the bytes already read into memory),
/// held in pipes.
pub struct PipedBody {
    segments: Vec<Pipe>,
    /// The pipe each send duplicates segments into: made by `prepare`,
    /// given back emptied after every send (also one that failed).
    spare: Mutex<Option<Pipe>>,
    /// Bytes the body will have once received.
    expected: usize,
    /// Where the pipes come from and go back to when the body is dropped.
    pool: Arc<PipePool>,
}

impl PipedBody {
    /// The first pipe for a body of `expected` bytes, from `pool`.
    pub fn new(expected: usize, pool: &Arc<PipePool>) -> Result<PipedBody, PipeError> {
        Ok(PipedBody {
            segments: vec![pool.take(segment_for(expected))?],
            spare: Mutex::new(None),
            expected,
            pool: Arc::clone(pool),
        })
    }

    /// Bytes received so far.
    pub fn len(&self) -> usize {
        self.segments.iter().map(|s| s.len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the whole body has been received.
    pub fn is_complete(&self) -> bool {
        self.len() >= self.expected
    }

    /// Moves what `socket` has (at most `max` bytes, never past the body's
    /// end) into the pipes, waiting until it has something. Adds a pipe when
    /// the last one is full, within the limits above.
    pub async fn fill_from(&mut self, socket: &TcpStream, max: usize) -> Result<Fill, PipeError> {
        let max = max.min(self.expected.saturating_sub(self.len()));
        debug_assert!(max > 0, "fill_from on a complete body");
        loop {
            socket.readable().await.map_err(PipeError::Socket)?;
            let last = self.segments.last_mut().expect("a body has a segment");
            let step = socket.try_io(Interest::READABLE, || splice_in(socket, last, max));
            match step {
                Ok(SpliceIn::Moved(0)) => return Ok(Fill::Eof),
                Ok(SpliceIn::Moved(n)) => {
                    last.len += n;
                    return Ok(Fill::Moved(n));
                }
                Ok(SpliceIn::Stuck) => {
                    let (held, capacity) = (last.len, last.capacity);
                    refuse_more(
                        held,
                        capacity,
                        self.segments.len(),
                        self.len(),
                        self.expected,
                    )?;
                    let left = self.expected.saturating_sub(self.len());
                    self.segments.push(self.pool.take(segment_for(left))?);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(PipeError::Socket(e)),
            }
        }
    }

    /// Makes sure a spare pipe as large as the largest segment is ready,
    /// so that [`send_to`](Self::send_to) needs no new pipe. Call before
    /// writing anything of the call.
    pub fn prepare(&self) -> Result<(), PipeError> {
        let largest = self.segments.iter().map(|s| s.capacity).max().unwrap_or(0);
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        if spare.as_ref().is_none_or(|s| s.capacity < largest) {
            let fits = self.pool.take(largest)?;
            if let Some(small) = spare.replace(fits) {
                self.pool.give_back(small);
            }
        }
        Ok(())
    }

    /// Writes the body to `socket` (after the head the caller wrote). The
    /// body stays in its pipes, so it can be written again.
    pub async fn send_to(&self, socket: &TcpStream) -> io::Result<()> {
        let spare = self.spare.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(spare) = spare else {
            return Err(io::Error::other(
                "a piped call was sent without a prepared spare pipe",
            ));
        };
        // Whatever happens below (an error, the caller's timeout dropping
        // this future), the spare goes back emptied.
        let mut spare = SpareGuard {
            body: self,
            pipe: Some(spare),
        };
        for segment in &self.segments {
            let pipe = spare.pipe.as_mut().expect("held until dropped");
            duplicate(segment, pipe)?;
            while pipe.len > 0 {
                socket.writable().await?;
                let step = socket.try_io(Interest::WRITABLE, || {
                    splice(
                        &pipe.read,
                        None,
                        socket,
                        None,
                        pipe.len,
                        SpliceFlags::NONBLOCK,
                    )
                    .map_err(io::Error::from)
                });
                match step {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => pipe.len -= n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Appends the body received so far to `buf` (reading the pipes, one
    /// copy): the way back to an ordinary in-memory message.
    pub fn drain_into(mut self, buf: &mut BytesMut) -> io::Result<()> {
        buf.reserve(self.len());
        for segment in &mut self.segments {
            let start = buf.len();
            buf.resize(start + segment.len, 0);
            let mut filled = start;
            while filled < buf.len() {
                match rustix::io::read(&segment.read, &mut buf[filled..]) {
                    Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                    Ok(n) => {
                        filled += n;
                        segment.len -= n;
                    }
                    Err(Errno::INTR) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }
}

impl Drop for PipedBody {
    /// The pipes go back to the pool, which empties them (the body's pages
    /// are freed there, whoever drops the body).
    fn drop(&mut self) {
        let spare = self
            .spare
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        for pipe in self.segments.drain(..).chain(spare) {
            self.pool.give_back(pipe);
        }
    }
}

/// Gives the spare back to its body when a send ends, emptied of what a
/// send that stopped half-way left in it (or drops it if that fails).
struct SpareGuard<'a> {
    body: &'a PipedBody,
    pipe: Option<Pipe>,
}

impl Drop for SpareGuard<'_> {
    fn drop(&mut self) {
        if let Some(mut pipe) = self.pipe.take() {
            if self.body.pool.empty(&mut pipe) {
                *self.body.spare.lock().unwrap_or_else(|e| e.into_inner()) = Some(pipe);
            }
        }
    }
}

/// Whether a body whose last pipe got stuck holding `held` of its
/// `capacity` bytes may have another pipe (see the module doc).
fn refuse_more(
    held: usize,
    capacity: usize,
    segments: usize,
    received: usize,
    expected: usize,
) -> Result<(), PipeError> {
    if held * 16 < capacity {
        return Err(PipeError::Fragmented { held, capacity });
    }
    if segments >= MAX_SEGMENTS {
        return Err(PipeError::TooManySegments { received, expected });
    }
    Ok(())
}

/// The segment size asked for a body with `left` bytes still to come: room
/// for a quarter more than the bytes (spliced fragments leave pages part
/// empty), within [`SEGMENT_BYTES`].
fn segment_for(left: usize) -> usize {
    left.saturating_add(left / 4).min(SEGMENT_BYTES)
}

enum SpliceIn {
    Moved(usize),
    /// The socket has bytes that `splice` would not move into this pipe:
    /// it is out of slots, or an urgent byte is next.
    Stuck,
}

/// One non-blocking `splice` from `socket` into `pipe`. `EAGAIN` is
/// ambiguous: no bytes, no room in the pipe, an urgent byte next, or bytes
/// that arrived while the splice held the socket and were only queued when
/// it let go. A one-byte peek tells whether bytes are waiting; if so the
/// splice is tried once more (which takes the late ones) before the pipe
/// is called stuck. It is "would block" only when the socket really has
/// nothing, so tokio's readiness is cleared only then and a full pipe
/// never leaves the call waiting for bytes that have already arrived.
fn splice_in(socket: &TcpStream, pipe: &Pipe, max: usize) -> io::Result<SpliceIn> {
    if pipe.len >= pipe.capacity {
        return Ok(SpliceIn::Stuck);
    }
    for _ in 0..2 {
        match splice(socket, None, &pipe.write, None, max, SpliceFlags::NONBLOCK) {
            Ok(n) => return Ok(SpliceIn::Moved(n)),
            Err(Errno::AGAIN) => {
                let mut byte = [0u8; 1];
                let flags = RecvFlags::PEEK | RecvFlags::DONTWAIT;
                match rustix::net::recv(socket, &mut byte[..], flags) {
                    Ok((1, _)) => continue,
                    // Nothing queued (or the end of the stream, which the
                    // next readiness and splice report).
                    Ok(_) | Err(Errno::AGAIN) => return Err(io::ErrorKind::WouldBlock.into()),
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(SpliceIn::Stuck)
}

/// Puts a copy of `segment`'s bytes (the same pages) into the empty
/// `spare`, which has at least as many slots.
fn duplicate(segment: &Pipe, spare: &mut Pipe) -> io::Result<()> {
    if spare.capacity < segment.capacity {
        return Err(io::Error::other(format!(
            "the spare pipe holds {} bytes, a segment {}",
            spare.capacity, segment.capacity
        )));
    }
    // tee duplicates buffer by buffer into a pipe with at least as many
    // slots, so one call takes the whole segment.
    let teed = tee(
        &segment.read,
        &spare.write,
        segment.len,
        SpliceFlags::NONBLOCK,
    )?;
    spare.len = teed;
    if teed != segment.len {
        return Err(io::Error::other(format!(
            "tee duplicated {teed} of {} bytes of a piped call",
            segment.len
        )));
    }
    Ok(())
}

#[cfg(test)]
#[path = "piped_tests.rs"]
mod tests;
