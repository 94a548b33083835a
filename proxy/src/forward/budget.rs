//! A client's share of `limits.max_buffered_bytes`.
//!
//! Request mode receives whole calls before dispatching them, so what
//! bounds proxy memory across all clients is one semaphore with a permit
//! per byte: a client takes permits before it reads (waiting, bounded by
//! `timeouts.idle`, when others hold them all) and gives them back once the
//! bytes are served. Bytes held in pipes (`crate::upstream::piped`) count
//! the same as bytes in memory.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use super::within;

/// This client's share of `limits.max_buffered_bytes`: one permit per byte
/// it has buffered (or is about to read). Given back on drop.
pub(super) struct Budget {
    semaphore: Arc<Semaphore>,
    held: usize,
}

impl Budget {
    pub(super) fn new(semaphore: Arc<Semaphore>) -> Budget {
        Budget { semaphore, held: 0 }
    }

    /// Takes `n` permits, waiting for them; false if that can never be.
    pub(super) async fn take(&mut self, n: usize) -> bool {
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

    /// Takes `n` permits, waiting at most `idle` (a client's reading pauses
    /// while others hold them all); false, logged, when it got none: the
    /// client is then closed.
    pub(super) async fn take_within(&mut self, n: usize, idle: Duration) -> bool {
        let taken = within(idle, self.take(n)).await == Some(true);
        if !taken {
            tracing::debug!(
                bytes = n,
                "buffer budget exhausted for timeouts.idle; closing client"
            );
        }
        taken
    }

    /// Gives back up to `n` of the permits held.
    pub(super) fn give_back(&mut self, n: usize) {
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
