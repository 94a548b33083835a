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

use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::IoUring;

/// Buffers in the ring: a power of two (the ring index is masked).
const BUFFERS: u16 = 64;
/// Bytes per buffer: a ping is a few dozen bytes, an upload takes several.
pub const BUFFER_SIZE: usize = 16 * 1024;
/// The kernel requires the ring's entries to start on a page.
const PAGE: usize = 4096;

/// A registered ring of [`BUFFERS`] buffers of [`BUFFER_SIZE`] bytes.
pub struct BufferRing {
    /// The entries the kernel takes buffers from (its tail is the first
    /// entry's reserved field).
    entries: &'static mut [BufRingEntry],
    buffers: &'static mut [u8],
    /// The group receives name to take a buffer from this ring.
    group: u16,
    /// How many buffers were ever handed to the kernel (wraps).
    tail: u16,
}

impl BufferRing {
    /// Allocates the ring, gives the kernel every buffer and registers the
    /// ring with `ring` as buffer group `group`.
    pub fn register(ring: &IoUring, group: u16) -> io::Result<Self> {
        let entries: &'static mut [BufRingEntry] = {
            let layout = std::alloc::Layout::from_size_align(
                BUFFERS as usize * size_of::<BufRingEntry>(),
                PAGE,
            )
            .map_err(io::Error::other)?;
            // SAFETY: the layout has a non-zero size.
            let base = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<BufRingEntry>();
            if base.is_null() {
                return Err(io::Error::new(
                    io::ErrorKind::OutOfMemory,
                    "no memory for the io_uring buffer ring",
                ));
            }
            // SAFETY: `base` is a fresh, zeroed (a valid `BufRingEntry` is
            // plain integers), suitably aligned allocation of `BUFFERS`
            // entries that nothing else refers to; it is never freed.
            unsafe { std::slice::from_raw_parts_mut(base, BUFFERS as usize) }
        };
        let buffers = Box::leak(vec![0u8; BUFFERS as usize * BUFFER_SIZE].into_boxed_slice());
        let mut this = BufferRing {
            entries,
            buffers,
            group,
            tail: 0,
        };
        for id in 0..BUFFERS {
            this.give_back(id);
        }
        // SAFETY: the entries live for the rest of the process (leaked) and
        // hold `BUFFERS` entries, a power of two, starting on a page.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                this.entries.as_ptr() as u64,
                BUFFERS,
                group,
                0,
            )?;
        }
        Ok(this)
    }

    /// The buffer group receives name to take buffers from this ring.
    pub fn group(&self) -> u16 {
        self.group
    }

    /// The first `len` bytes the kernel put into buffer `id`.
    pub fn filled(&self, id: u16, len: usize) -> &[u8] {
        let start = id as usize * BUFFER_SIZE;
        &self.buffers[start..start + len.min(BUFFER_SIZE)]
    }

    /// Hands buffer `id` back to the kernel, once its bytes have been read.
    pub fn give_back(&mut self, id: u16) {
        let address = self.buffers[id as usize * BUFFER_SIZE..].as_ptr() as u64;
        let entry = &mut self.entries[(self.tail & (BUFFERS - 1)) as usize];
        entry.set_addr(address);
        entry.set_len(BUFFER_SIZE as u32);
        entry.set_bid(id);
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the pointer is to the first entry of the registered ring,
        // whose reserved field is the ring's tail; it is `u16`-aligned and
        // the kernel reads it concurrently, hence the atomic release store
        // that publishes the entry written above.
        let tail = unsafe { &*BufRingEntry::tail(self.entries.as_ptr()).cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
    }
}
