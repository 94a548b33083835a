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
//! slots a page fragment at a time, so a 1 MiB body may need two. The
//! segments keep the bytes for as long as the call may have to be sent again
//! (a pooled connection found dead at write, a retry): each attempt
//! duplicates a segment into the `spare` pipe with `tee(2)` (the pages are
//! shared, nothing is copied) and splices the spare into the backend socket.
//! When pipes cannot be had (descriptor or pipe-page limits), the caller
//! drains what arrived into memory and carries on the ordinary way.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::sync::Mutex;

use bytes::BytesMut;
use rustix::io::Errno;
use rustix::pipe::{fcntl_setpipe_size, pipe_with, splice, tee, PipeFlags, SpliceFlags};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// The most one pipe is asked to hold: Linux's default `fs.pipe-max-size`,
/// the limit for a process without `CAP_SYS_RESOURCE`.
pub const SEGMENT_BYTES: usize = 1024 * 1024;
/// A pipe the kernel will not make at least this large is not worth its
/// descriptors (over `fs.pipe-user-pages-soft`, new pipes get two pages):
/// the body goes through memory instead.
const MIN_SEGMENT_BYTES: usize = 64 * 1024;

/// One pipe: its read and write ends, and what it can hold.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
    /// Bytes written into it.
    len: usize,
}

impl Pipe {
    /// A non-blocking pipe able to hold about `wanted` bytes (the kernel
    /// rounds up to a power of two pages), or an error when it cannot be
    /// made at least [`MIN_SEGMENT_BYTES`] large.
    fn new(wanted: usize) -> io::Result<Pipe> {
        let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        let wanted = wanted.clamp(MIN_SEGMENT_BYTES, SEGMENT_BYTES);
        let capacity = fcntl_setpipe_size(&write, wanted)?;
        if capacity < MIN_SEGMENT_BYTES {
            return Err(io::Error::other(format!(
                "the kernel made a pipe of {capacity} bytes, asked for {wanted}"
            )));
        }
        Ok(Pipe {
            read,
            write,
            capacity,
            len: 0,
        })
    }
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
    /// Emptied after every complete send; `None` after a send that failed
    /// half-way (the next attempt makes a new one).
    spare: Mutex<Option<Pipe>>,
    /// Bytes the body will have once received.
    expected: usize,
}

impl PipedBody {
    /// Pipes for a body of `expected` bytes: the first segment and the
    /// spare. Fails when the kernel will not give pipes of a useful size.
    pub fn new(expected: usize) -> io::Result<PipedBody> {
        let first = Pipe::new(segment_for(expected))?;
        let spare = Pipe::new(SEGMENT_BYTES.min(first.capacity.max(segment_for(expected))))?;
        Ok(PipedBody {
            segments: vec![first],
            spare: Mutex::new(Some(spare)),
            expected,
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
    /// end) into the pipes, waiting until it has something. Adds a segment
    /// when the last one is full.
    pub async fn fill_from(&mut self, socket: &TcpStream, max: usize) -> io::Result<Fill> {
        let max = max.min(self.expected.saturating_sub(self.len()));
        loop {
            socket.readable().await?;
            let last = self.segments.last_mut().expect("a body has a segment");
            let step = socket.try_io(Interest::READABLE, || splice_in(socket, last, max));
            match step {
                Ok(SpliceIn::Moved(0)) => return Ok(Fill::Eof),
                Ok(SpliceIn::Moved(n)) => {
                    last.len += n;
                    return Ok(Fill::Moved(n));
                }
                Ok(SpliceIn::PipeFull) => {
                    let left = self.expected.saturating_sub(self.len());
                    self.segments.push(Pipe::new(segment_for(left))?);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes the body to `socket` (after the head the caller wrote). The
    /// body stays in its pipes, so it can be written again.
    pub async fn send_to(&self, socket: &TcpStream) -> io::Result<()> {
        let mut spare = match self.take_spare() {
            Some(spare) => spare,
            None => Pipe::new(SEGMENT_BYTES)?,
        };
        for segment in &self.segments {
            duplicate(segment, &mut spare)?;
            while spare.len > 0 {
                socket.writable().await?;
                let step = socket.try_io(Interest::WRITABLE, || {
                    splice(
                        &spare.read,
                        None,
                        socket,
                        None,
                        spare.len,
                        SpliceFlags::NONBLOCK,
                    )
                    .map_err(io::Error::from)
                });
                match step {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => spare.len -= n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            }
        }
        *self.spare.lock().unwrap_or_else(|e| e.into_inner()) = Some(spare);
        Ok(())
    }

    /// Appends the body received so far to `buf` (reading the pipes, one
    /// copy): the way back to an ordinary in-memory message.
    pub fn drain_into(self, buf: &mut BytesMut) -> io::Result<()> {
        buf.reserve(self.len());
        for segment in self.segments {
            let start = buf.len();
            buf.resize(start + segment.len, 0);
            File::from(segment.read).read_exact(&mut buf[start..])?;
        }
        Ok(())
    }

    fn take_spare(&self) -> Option<Pipe> {
        self.spare.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// The segment size asked for a body with `left` bytes still to come: room
/// for a quarter more than the bytes (spliced fragments leave pages part
/// empty), within [`SEGMENT_BYTES`].
fn segment_for(left: usize) -> usize {
    left.saturating_add(left / 4).min(SEGMENT_BYTES)
}

enum SpliceIn {
    Moved(usize),
    /// The pipe cannot take more while the socket has bytes.
    PipeFull,
}

/// One non-blocking `splice` from `socket` into `pipe`. `EAGAIN` is
/// ambiguous (no bytes, or no room in the pipe): it is "would block" only
/// when the socket really has nothing queued, so tokio's readiness is
/// cleared only then and a full pipe never leaves the call waiting for
/// bytes that have already arrived.
fn splice_in(socket: &TcpStream, pipe: &Pipe, max: usize) -> io::Result<SpliceIn> {
    if pipe.len >= pipe.capacity {
        return Ok(SpliceIn::PipeFull);
    }
    match splice(socket, None, &pipe.write, None, max, SpliceFlags::NONBLOCK) {
        Ok(n) => Ok(SpliceIn::Moved(n)),
        Err(Errno::AGAIN) => {
            if rustix::io::ioctl_fionread(socket)? > 0 {
                Ok(SpliceIn::PipeFull)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Puts a copy of `segment`'s bytes (the same pages) into the empty
/// `spare`, growing the spare when it is smaller than the segment.
fn duplicate(segment: &Pipe, spare: &mut Pipe) -> io::Result<()> {
    if spare.capacity < segment.capacity {
        *spare = Pipe::new(segment.capacity)?;
    }
    // tee duplicates buffer by buffer into a pipe with at least as many
    // slots, so one call takes the whole segment.
    let teed = tee(
        &segment.read,
        &spare.write,
        segment.len,
        SpliceFlags::NONBLOCK,
    )?;
    if teed != segment.len {
        return Err(io::Error::other(format!(
            "tee duplicated {teed} of {} bytes of a piped call",
            segment.len
        )));
    }
    spare.len = teed;
    Ok(())
}

#[cfg(test)]
#[path = "piped_tests.rs"]
mod tests;
