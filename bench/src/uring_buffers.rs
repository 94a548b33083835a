//! The provided-buffer ring the `answerer-uring` target receives into.
//!
//! A multishot receive stays armed for the life of a connection and picks a
//! buffer from a ring the kernel shares with us each time data arrives, so
//! no receive is submitted per call and no connection holds a buffer while
//! it waits. The answerer copies each completion's bytes into the
//! connection's own input and hands the buffer straight back.
//!
//! The ring and its buffers are leaked on purpose: the kernel may write into
//! them for as long as any receive is armed, and a receive can outlive the
//! ring's owner (io_uring tears a ring down asynchronously). One server per
//! process is what the bench runs, so the leak is one allocation per server.
//! Both are only ever reached through raw pointers derived from the
//! allocations themselves, never through references the kernel's writes
//! would invalidate.

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::IoUring;

/// Buffers in the ring: a power of two (the ring index is masked).
const BUFFERS: u16 = 64;
/// Bytes per buffer: a ping is a few dozen bytes, an upload takes several.
pub const BUFFER_SIZE: usize = 16 * 1024;

/// A registered ring of [`BUFFERS`] buffers of [`BUFFER_SIZE`] bytes.
pub struct BufferRing {
    /// The entries the kernel takes buffers from (the ring's tail is the
    /// first entry's reserved field).
    entries: NonNull<BufRingEntry>,
    /// `BUFFERS * BUFFER_SIZE` bytes, buffer `id` at `id * BUFFER_SIZE`.
    buffers: NonNull<u8>,
    /// The group receives name to take a buffer from this ring.
    group: u16,
    /// How many buffers were ever handed to the kernel (wraps, as the
    /// kernel's head does).
    tail: u16,
}

impl BufferRing {
    /// Allocates the ring, gives the kernel every buffer and registers the
    /// ring with `ring` as buffer group `group`.
    pub fn register(ring: &IoUring, group: u16) -> io::Result<Self> {
        let layout = std::alloc::Layout::from_size_align(
            BUFFERS as usize * size_of::<BufRingEntry>(),
            page_size(),
        )
        .map_err(io::Error::other)?;
        // SAFETY: the layout has a non-zero size.
        let entries = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) })
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::OutOfMemory,
                    "no memory for the io_uring buffer ring",
                )
            })?
            .cast::<BufRingEntry>();
        let buffers = Box::leak(vec![0u8; BUFFERS as usize * BUFFER_SIZE].into_boxed_slice());
        let mut this = BufferRing {
            entries,
            buffers: NonNull::from(buffers).cast::<u8>(),
            group,
            tail: 0,
        };
        for id in 0..BUFFERS {
            this.give_back(id);
        }
        // SAFETY: the entries live for the rest of the process (leaked),
        // hold `BUFFERS` entries, a power of two, and start on a page.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                this.entries.as_ptr() as u64,
                BUFFERS,
                group,
                0,
            )
        }
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("io_uring unavailable here: cannot register a provided-buffer ring: {e}"),
            )
        })?;
        Ok(this)
    }

    /// The buffer group receives name to take buffers from this ring.
    pub fn group(&self) -> u16 {
        self.group
    }

    /// The first `len` bytes the kernel put into buffer `id`, which a
    /// completion handed back to us and which the kernel does not touch
    /// until [`give_back`](Self::give_back).
    pub fn filled(&self, id: u16, len: usize) -> &[u8] {
        assert!(id < BUFFERS, "buffer id {id} out of the ring's {BUFFERS}");
        // SAFETY: buffer `id` lies within the leaked allocation, the kernel
        // is done writing to it (its completion arrived) and gets it back
        // only through `give_back`, which takes `&mut self` and so cannot
        // run while the returned slice lives.
        unsafe {
            std::slice::from_raw_parts(
                self.buffers.as_ptr().add(id as usize * BUFFER_SIZE),
                len.min(BUFFER_SIZE),
            )
        }
    }

    /// Hands buffer `id` back to the kernel, once its bytes have been read.
    pub fn give_back(&mut self, id: u16) {
        assert!(id < BUFFERS, "buffer id {id} out of the ring's {BUFFERS}");
        let index = (self.tail & (BUFFERS - 1)) as usize;
        // SAFETY: `index` < `BUFFERS`, so the entry lies within the leaked
        // ring, and the kernel reads an entry only after the tail store
        // below publishes it; the buffer address is within the leaked
        // buffers.
        unsafe {
            let entry = &mut *self.entries.as_ptr().add(index);
            entry.set_addr(self.buffers.as_ptr().add(id as usize * BUFFER_SIZE) as u64);
            entry.set_len(BUFFER_SIZE as u32);
            entry.set_bid(id);
        }
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail is the first entry's reserved `u16`, aligned, in
        // the leaked ring; the kernel reads it concurrently, hence the
        // atomic store, with Release so the entry written above is seen
        // first.
        let tail =
            unsafe { AtomicU16::from_ptr(BufRingEntry::tail(self.entries.as_ptr()) as *mut u16) };
        tail.store(self.tail, Ordering::Release);
    }
}

/// The kernel requires the ring's entries to start on a page.
fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        size if size > 0 => size as usize,
        _ => 4096,
    }
}
