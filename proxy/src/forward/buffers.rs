//! A small shared stock of large request buffers, reused across clients.
//!
//! Receiving a 1 MiB upload into new memory makes the kernel fault in every
//! page as `recvfrom` copies into it (the allocator hands large freed blocks
//! back to the system), which the profile put at a quarter of probegate's CPU
//! on uploads. So once a large message has been served, request mode gives
//! its buffer back here, and the next large message takes it with its pages
//! already resident. A client holds such a buffer only while one large
//! message is being received and served: between calls, and so while idle,
//! it holds none. The stock is bounded in count and in each buffer's size,
//! so it never keeps more than `MAX_BUFFERS * MAX_CAPACITY` bytes. It holds
//! no data, so it is not part of `limits.max_buffered_bytes`, which counts
//! bytes received and not yet served.

use std::sync::Mutex;

use bytes::BytesMut;

/// A message at least this large is received into a stocked buffer, and a
/// buffer at least this large is worth stocking. Well below 64 KiB: a
/// buffer of a 64 KiB upload freed after every call still makes the
/// allocator return memory to the system and fault it in again (measured).
pub const LARGE: usize = 16 * 1024;
/// How many buffers the stock keeps at most (beyond that they are freed).
const MAX_BUFFERS: usize = 8;
/// A buffer larger than this is freed rather than stocked.
const MAX_CAPACITY: usize = 4 * 1024 * 1024;

/// The stock shared by every request-mode client of the process.
pub static STOCK: Stock = Stock::new();

/// Empty buffers of at least [`LARGE`] bytes of capacity.
pub struct Stock {
    free: Mutex<Vec<BytesMut>>,
}

impl Stock {
    const fn new() -> Stock {
        Stock {
            free: Mutex::new(Vec::new()),
        }
    }

    /// An empty stocked buffer, the one with the most room, if any.
    pub fn take(&self) -> Option<BytesMut> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        let best = (0..free.len()).max_by_key(|&i| free[i].capacity())?;
        Some(free.swap_remove(best))
    }

    /// Stocks `buf` (its contents are discarded) if it is the only handle on
    /// its memory, large enough to be worth it, not too large, and the stock
    /// has room; otherwise frees it. `whole` is the capacity `buf` had
    /// before messages were split off its front: room the buffer can take
    /// back once those messages are dropped.
    pub fn give_back(&self, mut buf: BytesMut, whole: usize) {
        buf.clear();
        // Takes back the room of the messages split off (no allocation: it
        // fails unless no message still points into the buffer).
        if buf.capacity() < whole && !buf.try_reclaim(whole) {
            return;
        }
        if !(LARGE..=MAX_CAPACITY).contains(&buf.capacity()) {
            return;
        }
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.len() < MAX_BUFFERS {
            free.push(buf);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.free.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer that held a served message comes back with its memory, so
    /// the next large message is received into the same pages.
    #[test]
    fn a_served_buffer_is_reused_whole() {
        let stock = Stock::new();
        let mut buf = BytesMut::with_capacity(1 << 20);
        buf.extend_from_slice(&vec![7u8; (1 << 20) - 10]);
        let whole = buf.capacity();
        let base = buf.as_ptr();
        let message = buf.split_to(buf.len()).freeze();
        drop(message);
        stock.give_back(buf, whole);
        let again = stock.take().expect("stocked");
        assert_eq!(again.as_ptr(), base);
        assert!(again.is_empty());
        assert!(again.capacity() >= whole, "{}", again.capacity());
        assert!(stock.take().is_none());
    }

    #[test]
    fn a_buffer_still_in_use_small_or_huge_is_not_stocked() {
        let stock = Stock::new();
        let mut buf = BytesMut::with_capacity(1 << 20);
        buf.extend_from_slice(&[1; 1000]);
        let whole = buf.capacity();
        let message = buf.split_to(1000).freeze();
        stock.give_back(buf, whole);
        assert_eq!(stock.len(), 0, "a message still points into it");
        drop(message);

        stock.give_back(BytesMut::with_capacity(LARGE / 2), 0);
        stock.give_back(BytesMut::with_capacity(MAX_CAPACITY * 2), 0);
        assert_eq!(stock.len(), 0);
    }

    #[test]
    fn the_stock_is_bounded() {
        let stock = Stock::new();
        for _ in 0..MAX_BUFFERS + 3 {
            stock.give_back(BytesMut::with_capacity(LARGE), 0);
        }
        assert_eq!(stock.len(), MAX_BUFFERS);
    }
}
