//! The pipes that piped bodies (`piped.rs`) are held in, kept between calls.
//!
//! Making a pipe for each large call and closing it afterwards cost the call
//! a `pipe2` and an `F_SETPIPE_SZ` per pipe, then two `close`s, and the kernel
//! an inode, two open files and the pipe's slots, made and freed each time:
//! three pipes per 1 MiB upload (its segments and the spare each send is
//! duplicated into). A pipe that has served a call is emptied instead, its
//! pages handed to `/dev/null` with `splice` (nothing is copied), checked
//! empty with `FIONREAD`, and kept for the next call. Only an emptied pipe
//! is ever kept: a pipe that cannot be emptied, or holds a byte more than
//! it should, is closed, so no byte of one call can reach another.
//!
//! Kept pipes stay sized and count against the user's pipe allowance
//! (`fs.pipe-user-pages-soft`) while idle, and hold two descriptors each,
//! so what is kept is bounded by their total capacity ([`PipePool::new`],
//! `forwarding.kept_pipe_bytes`) and by their number ([`KEEP_PIPES`]).

use std::fs::{File, OpenOptions};
use std::os::fd::OwnedFd;
use std::sync::Mutex;

use prometheus::{IntCounter, IntGauge};
use rustix::pipe::{fcntl_setpipe_size, pipe_with, splice, PipeFlags, SpliceFlags};

use super::piped::PipeError;

/// The most one pipe is asked to hold: Linux's default `fs.pipe-max-size`,
/// the limit for a process without `CAP_SYS_RESOURCE`.
pub const SEGMENT_BYTES: usize = 1024 * 1024;
/// A pipe the kernel will not make at least this large is not worth its
/// descriptors (over `fs.pipe-user-pages-soft`, new pipes get two pages).
pub const MIN_SEGMENT_BYTES: usize = 64 * 1024;
/// The capacity probegate keeps in idle pipes unless
/// `forwarding.kept_pipe_bytes` says otherwise: room for a few 1 MiB
/// calls' pipes, 2,048 of the 16,384 pages a user may have in pipes by
/// default.
pub const KEEP_BYTES: usize = 8 * SEGMENT_BYTES;
/// The most idle pipes kept, whatever their size: 32 descriptors.
pub const KEEP_PIPES: usize = 16;

/// One pipe: its read and write ends, and what it can hold.
pub struct Pipe {
    pub read: OwnedFd,
    pub write: OwnedFd,
    pub capacity: usize,
    /// Bytes written into it and not yet read out.
    pub len: usize,
}

impl Pipe {
    /// A new non-blocking pipe able to hold `wanted` bytes, clamped to
    /// [`MIN_SEGMENT_BYTES`]..=[`SEGMENT_BYTES`] (the kernel rounds up to a
    /// power of two pages).
    fn create(wanted: usize) -> Result<Pipe, PipeError> {
        let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)
            .map_err(|e| PipeError::Create(e.into()))?;
        let wanted = clamped(wanted);
        let capacity =
            fcntl_setpipe_size(&write, wanted).map_err(|e| PipeError::Create(e.into()))?;
        if capacity < wanted {
            return Err(PipeError::TooSmall { capacity, wanted });
        }
        Ok(Pipe {
            read,
            write,
            capacity,
            len: 0,
        })
    }

    /// Hands the `len` bytes the pipe holds to `sink` (`/dev/null`)
    /// without copying them. False if that failed: such a pipe must not
    /// serve again.
    fn discard_into(&mut self, sink: &File) -> bool {
        while self.len > 0 {
            match splice(
                &self.read,
                None,
                sink,
                None,
                self.len,
                SpliceFlags::NONBLOCK,
            ) {
                Ok(0) | Err(_) => return false,
                Ok(n) => self.len = self.len.saturating_sub(n),
            }
        }
        true
    }

    /// Whether the kernel says the pipe holds nothing, whatever `len` says.
    fn verified_empty(&self) -> bool {
        matches!(rustix::io::ioctl_fionread(&self.read), Ok(0))
    }
}

fn clamped(wanted: usize) -> usize {
    wanted.clamp(MIN_SEGMENT_BYTES, SEGMENT_BYTES)
}

/// The pool's two series (`upstream::metrics`).
pub struct PipeMetrics {
    /// Idle pipes kept now.
    pub kept: IntGauge,
    /// Pipes made because none kept fitted.
    pub made: IntCounter,
}

/// Emptied pipes kept for the next calls.
pub struct PipePool {
    idle: Mutex<Vec<Pipe>>,
    /// Total capacity of the idle pipes kept, at most.
    keep_bytes: usize,
    /// Where a used pipe's pages go; without it nothing is kept.
    sink: Option<File>,
    metrics: Option<PipeMetrics>,
}

impl PipePool {
    /// A pool keeping idle pipes of at most `keep_bytes` in all, and at
    /// most [`KEEP_PIPES`] of them (0 bytes: none, every pipe is made for
    /// its call and closed after it).
    pub fn new(keep_bytes: usize, metrics: Option<PipeMetrics>) -> PipePool {
        let sink = OpenOptions::new().write(true).open("/dev/null");
        if let Err(e) = &sink {
            tracing::warn!(error = %e, "cannot open /dev/null: every piped call makes its own pipes");
        }
        PipePool {
            idle: Mutex::new(Vec::new()),
            keep_bytes,
            sink: sink.ok(),
            metrics,
        }
    }

    /// An empty pipe able to hold `wanted` bytes (clamped like a new one):
    /// the smallest kept pipe that fits, or a new one.
    pub fn take(&self, wanted: usize) -> Result<Pipe, PipeError> {
        let wanted = clamped(wanted);
        let kept = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            let best = idle
                .iter()
                .enumerate()
                .filter(|(_, pipe)| pipe.capacity >= wanted)
                .min_by_key(|(_, pipe)| pipe.capacity)
                .map(|(i, _)| i);
            let kept = best.map(|i| idle.swap_remove(i));
            self.count_kept(idle.len());
            kept
        };
        match kept {
            Some(pipe) => Ok(pipe),
            None => {
                if let Some(metrics) = &self.metrics {
                    metrics.made.inc();
                }
                Pipe::create(wanted)
            }
        }
    }

    fn count_kept(&self, idle: usize) {
        if let Some(metrics) = &self.metrics {
            metrics.kept.set(i64::try_from(idle).unwrap_or(i64::MAX));
        }
    }

    /// Takes back a pipe a call is done with: emptied and kept if there is
    /// room and the kernel confirms it empty, closed otherwise.
    pub fn give_back(&self, mut pipe: Pipe) {
        let Some(sink) = &self.sink else { return };
        // A pipe there is no room for is closed as it is, without emptying
        // it first (the room is checked again before it is kept).
        if !self.has_room_for(&pipe, &self.idle.lock().unwrap_or_else(|e| e.into_inner())) {
            return;
        }
        if !(pipe.discard_into(sink) && pipe.verified_empty()) {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if self.has_room_for(&pipe, &idle) {
            idle.push(pipe);
            self.count_kept(idle.len());
        }
    }

    /// Whether `pipe` may join the `idle` ones within both bounds.
    fn has_room_for(&self, pipe: &Pipe, idle: &[Pipe]) -> bool {
        let kept: usize = idle.iter().map(|p| p.capacity).sum();
        kept + pipe.capacity <= self.keep_bytes && idle.len() < KEEP_PIPES
    }

    /// Empties `pipe` (what a send that stopped half-way left in it) so the
    /// same call can use it again, trusting its `len` (no system call when
    /// it is 0); false if that failed, and the pipe must be dropped.
    pub fn empty(&self, pipe: &mut Pipe) -> bool {
        match &self.sink {
            Some(sink) => pipe.discard_into(sink),
            None => pipe.len == 0,
        }
    }

    /// Idle pipes kept now.
    pub fn idle_pipes(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Default for PipePool {
    /// Keeps [`KEEP_BYTES`], counted nowhere.
    fn default() -> PipePool {
        PipePool::new(KEEP_BYTES, None)
    }
}

#[cfg(test)]
#[path = "pipes_tests.rs"]
mod tests;
