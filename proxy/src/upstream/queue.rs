//! Backend slots and the one FIFO queue of waiters in front of them.
//!
//! A backend has `max_connections` slots, one per worker thread: whoever
//! holds a slot may use one backend connection, so probegate never asks a
//! thread-per-connection server for more than it can serve. Requests (or, in
//! connection mode, client connections) that find no free slot wait in a
//! single FIFO queue across all backends, bounded in length
//! (`limits.max_queue`: a full queue sheds at once) and in time
//! (`timeouts.queue`). A freed slot goes to the front waiter; among backends
//! that are up the one with the fewest slots taken is chosen, ties broken
//! round robin. With no backend up nobody waits: the answer is immediate.
//!
//! Health checks need a slot on one particular backend, whether it is up or
//! not, and must not queue behind real traffic: they take a free slot
//! directly or register as that backend's priority waiter.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prometheus::{Histogram, IntGauge};
use tokio::sync::{oneshot, Notify};

/// Why no slot was granted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcquireError {
    /// The queue already holds `limits.max_queue` waiters.
    #[error("overloaded: queue full (max_queue={max_queue})")]
    QueueFull { max_queue: usize },
    /// No backend passes its health checks.
    #[error("no backend up")]
    NoBackendUp,
    /// The wait exceeded `timeouts.queue`.
    #[error("queue wait exceeded timeouts.queue={}", humantime::format_duration(*.limit))]
    QueueTimeout { limit: Duration },
}

/// The right to use one connection to one backend. Dropping it frees the
/// slot and hands it to the next waiter.
pub struct Slot {
    /// `None` once the slot has been given back by hand (see `disarm`).
    scheduler: Option<Arc<Scheduler>>,
    backend: usize,
}

impl Slot {
    /// The index of the backend (in config order) this slot belongs to.
    pub fn backend(&self) -> usize {
        self.backend
    }

    /// Detaches the slot from its scheduler without releasing it; the
    /// caller (holding the lock) accounts for it.
    fn disarm(mut self) {
        self.scheduler = None;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(scheduler) = self.scheduler.take() {
            scheduler.release(self.backend);
        }
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("backend", &self.backend)
            .finish()
    }
}

/// One waiter in the FIFO queue.
struct Waiter {
    id: u64,
    tx: oneshot::Sender<Result<Slot, AcquireError>>,
}

/// The priority waiter of one backend: its health check.
struct HealthWaiter {
    id: u64,
    tx: oneshot::Sender<Slot>,
}

struct State {
    /// Slots taken, per backend.
    in_use: Vec<usize>,
    /// Whether each backend may receive real traffic.
    up: Vec<bool>,
    waiters: VecDeque<Waiter>,
    health_waiters: Vec<Option<HealthWaiter>>,
    next_id: u64,
    /// Where the next least-loaded search starts, for round-robin ties.
    next_rr: usize,
}

/// What the scheduler reports through metrics, per backend.
pub struct SchedulerMetrics {
    pub slots_in_use: Vec<IntGauge>,
    pub queue_depth: IntGauge,
    pub queue_wait_seconds: Histogram,
}

/// Slots of every backend plus the FIFO queue.
pub struct Scheduler {
    state: Mutex<State>,
    max: Vec<usize>,
    max_queue: usize,
    queue_timeout: Duration,
    metrics: SchedulerMetrics,
    /// Woken when a call starts waiting in the queue: an idle pipelined
    /// connection lingering on a slot gives it up at once.
    slot_wanted: Notify,
}

impl Scheduler {
    /// `max[i]` is backend i's `max_connections`. Every backend starts down.
    pub fn new(
        max: Vec<usize>,
        max_queue: usize,
        queue_timeout: Duration,
        metrics: SchedulerMetrics,
    ) -> Arc<Scheduler> {
        let n = max.len();
        Arc::new(Scheduler {
            state: Mutex::new(State {
                in_use: vec![0; n],
                up: vec![false; n],
                waiters: VecDeque::new(),
                health_waiters: (0..n).map(|_| None).collect(),
                next_id: 0,
                next_rr: 0,
            }),
            max,
            max_queue,
            queue_timeout,
            metrics,
            slot_wanted: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the counters
        // half-updated in a way worse than refusing all traffic would be.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a slot on the least loaded backend that is up, waiting in the
    /// FIFO queue if none is free.
    pub async fn acquire(self: &Arc<Self>) -> Result<Slot, AcquireError> {
        let (id, mut rx) = {
            let mut st = self.lock();
            if !st.up.iter().any(|u| *u) {
                return Err(AcquireError::NoBackendUp);
            }
            if st.waiters.is_empty() {
                if let Some(backend) = self.choose(&mut st) {
                    return Ok(self.take(&mut st, backend));
                }
            }
            if st.waiters.len() >= self.max_queue {
                return Err(AcquireError::QueueFull {
                    max_queue: self.max_queue,
                });
            }
            let (tx, rx) = oneshot::channel();
            let id = st.next_id;
            st.next_id += 1;
            st.waiters.push_back(Waiter { id, tx });
            self.metrics.queue_depth.set(st.waiters.len() as i64);
            (id, rx)
        };
        self.slot_wanted.notify_waiters();
        let started = Instant::now();
        // If this future is dropped while waiting, the guard takes the
        // waiter out of the queue (or gives back a slot sent meanwhile).
        let guard = WaitGuard {
            scheduler: self,
            id,
        };
        let result = match tokio::time::timeout(self.queue_timeout, &mut rx).await {
            Ok(Ok(result)) => result,
            // The sender is only dropped unanswered if the scheduler is gone.
            Ok(Err(_)) => Err(AcquireError::NoBackendUp),
            Err(_elapsed) => {
                if self.remove_waiter(id) {
                    Err(AcquireError::QueueTimeout {
                        limit: self.queue_timeout,
                    })
                } else {
                    // Answered between the deadline and the lock.
                    rx.try_recv().unwrap_or(Err(AcquireError::QueueTimeout {
                        limit: self.queue_timeout,
                    }))
                }
            }
        };
        std::mem::forget(guard);
        self.metrics
            .queue_wait_seconds
            .observe(started.elapsed().as_secs_f64());
        result
    }

    /// A free slot on `backend` right now, if there is one (up or not).
    pub fn try_acquire_on(self: &Arc<Self>, backend: usize) -> Option<Slot> {
        let mut st = self.lock();
        (st.in_use[backend] < self.max[backend]).then(|| self.take(&mut st, backend))
    }

    /// A slot on `backend`, waiting at most `wait` as that backend's
    /// priority waiter (ahead of the FIFO queue). For health checks.
    pub async fn acquire_on(self: &Arc<Self>, backend: usize, wait: Duration) -> Option<Slot> {
        let (id, mut rx) = {
            let mut st = self.lock();
            if st.in_use[backend] < self.max[backend] {
                return Some(self.take(&mut st, backend));
            }
            let (tx, rx) = oneshot::channel();
            let id = st.next_id;
            st.next_id += 1;
            st.health_waiters[backend] = Some(HealthWaiter { id, tx });
            (id, rx)
        };
        match tokio::time::timeout(wait, &mut rx).await {
            Ok(Ok(slot)) => Some(slot),
            Ok(Err(_)) => None,
            Err(_elapsed) => {
                let mut st = self.lock();
                if st.health_waiters[backend]
                    .as_ref()
                    .is_some_and(|w| w.id == id)
                {
                    st.health_waiters[backend] = None;
                    None
                } else {
                    drop(st);
                    rx.try_recv().ok()
                }
            }
        }
    }

    /// Marks a backend up or down. Going up serves queued waiters; when no
    /// backend is left up, every waiter is answered at once.
    pub fn set_up(self: &Arc<Self>, backend: usize, up: bool) {
        let mut st = self.lock();
        st.up[backend] = up;
        if up {
            self.dispatch(&mut st);
        } else if !st.up.iter().any(|u| *u) {
            for waiter in st.waiters.drain(..) {
                let _ = waiter.tx.send(Err(AcquireError::NoBackendUp));
            }
            self.metrics.queue_depth.set(0);
        }
    }

    /// Whether any backend is up.
    pub fn any_up(&self) -> bool {
        self.lock().up.iter().any(|u| *u)
    }

    /// Slots taken on `backend`.
    pub fn in_use(&self, backend: usize) -> usize {
        self.lock().in_use[backend]
    }

    /// Wakes (`notify_waiters`) whenever a call starts waiting for a slot;
    /// create the `Notified` before looking at [`Scheduler::queue_depth`]
    /// (`notify_waiters` reaches it from its creation on, polled or not).
    pub fn slot_wanted(&self) -> &Notify {
        &self.slot_wanted
    }

    /// Waiters in the FIFO queue.
    pub fn queue_depth(&self) -> usize {
        self.lock().waiters.len()
    }

    /// Whether the backend is up, as the scheduler sees it.
    pub fn is_up(&self, backend: usize) -> bool {
        self.lock().up[backend]
    }

    fn take(self: &Arc<Self>, st: &mut State, backend: usize) -> Slot {
        st.in_use[backend] += 1;
        self.metrics.slots_in_use[backend].set(st.in_use[backend] as i64);
        Slot {
            scheduler: Some(Arc::clone(self)),
            backend,
        }
    }

    /// The up backend with a free slot and the fewest taken; ties go round
    /// robin.
    fn choose(&self, st: &mut State) -> Option<usize> {
        let n = self.max.len();
        let mut best: Option<usize> = None;
        for i in 0..n {
            let b = (st.next_rr + i) % n;
            if !st.up[b] || st.in_use[b] >= self.max[b] {
                continue;
            }
            if best.is_none_or(|c| st.in_use[b] < st.in_use[c]) {
                best = Some(b);
            }
        }
        if let Some(b) = best {
            st.next_rr = (b + 1) % n;
        }
        best
    }

    fn release(self: &Arc<Self>, backend: usize) {
        let mut st = self.lock();
        st.in_use[backend] -= 1;
        self.metrics.slots_in_use[backend].set(st.in_use[backend] as i64);
        if let Some(waiter) = st.health_waiters[backend].take() {
            let slot = self.take(&mut st, backend);
            if let Err(slot) = waiter.tx.send(slot) {
                self.untake(&mut st, slot);
            }
        }
        self.dispatch(&mut st);
    }

    /// Gives back a slot that never reached its holder, under the lock.
    fn untake(&self, st: &mut State, slot: Slot) {
        let backend = slot.backend;
        slot.disarm();
        st.in_use[backend] -= 1;
        self.metrics.slots_in_use[backend].set(st.in_use[backend] as i64);
    }

    /// Hands free slots to the front of the queue.
    fn dispatch(self: &Arc<Self>, st: &mut State) {
        while !st.waiters.is_empty() {
            let Some(backend) = self.choose(st) else {
                break;
            };
            let mut slot = Some(self.take(st, backend));
            while let Some(waiter) = st.waiters.pop_front() {
                let Some(s) = slot.take() else { break };
                match waiter.tx.send(Ok(s)) {
                    Ok(()) => break,
                    // That waiter gave up; the next one gets the slot.
                    Err(Ok(s)) => slot = Some(s),
                    Err(Err(_)) => {}
                }
            }
            if let Some(s) = slot {
                self.untake(st, s);
            }
        }
        self.metrics.queue_depth.set(st.waiters.len() as i64);
    }

    fn remove_waiter(&self, id: u64) -> bool {
        let mut st = self.lock();
        let before = st.waiters.len();
        st.waiters.retain(|w| w.id != id);
        self.metrics.queue_depth.set(st.waiters.len() as i64);
        st.waiters.len() != before
    }
}

/// Takes a cancelled waiter out of the queue.
struct WaitGuard<'a> {
    scheduler: &'a Arc<Scheduler>,
    id: u64,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        // A slot already sent to the dropped receiver is released by the
        // Slot's own Drop when the channel is dropped.
        self.scheduler.remove_waiter(self.id);
    }
}

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;
