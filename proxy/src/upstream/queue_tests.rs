//! Scheduler tests: slot accounting, FIFO order, shedding, timeouts.

use crate::upstream::testing::eventually;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus::{Histogram, HistogramOpts, IntGauge};

use super::*;

fn scheduler(max: Vec<usize>, max_queue: usize, queue_timeout: Duration) -> Arc<Scheduler> {
    let metrics = SchedulerMetrics {
        slots_in_use: max
            .iter()
            .enumerate()
            .map(|(i, _)| IntGauge::new(format!("s{i}"), "s").unwrap())
            .collect(),
        queue_depth: IntGauge::new("q", "q").unwrap(),
        queue_wait_seconds: Histogram::with_opts(HistogramOpts::new("w", "w")).unwrap(),
    };
    let s = Scheduler::new(max.clone(), max_queue, queue_timeout, metrics);
    for i in 0..max.len() {
        s.set_up(i, true);
    }
    s
}

#[tokio::test]
async fn slots_never_exceed_max_under_contention() {
    let s = scheduler(vec![2, 3], 1000, Duration::from_secs(10));
    let held = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let peak = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let (s, held, peak) = (Arc::clone(&s), Arc::clone(&held), Arc::clone(&peak));
        tasks.push(tokio::spawn(async move {
            let slot = s.acquire().await.expect("slot");
            let b = slot.backend();
            let now = held[b].fetch_add(1, Ordering::SeqCst) + 1;
            peak[b].fetch_max(now, Ordering::SeqCst);
            tokio::task::yield_now().await;
            held[b].fetch_sub(1, Ordering::SeqCst);
            drop(slot);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(peak[0].load(Ordering::SeqCst), 2);
    assert_eq!(peak[1].load(Ordering::SeqCst), 3);
    assert_eq!(s.in_use(0) + s.in_use(1), 0);
    assert_eq!(s.queue_depth(), 0);
}

#[tokio::test]
async fn least_loaded_backend_is_chosen_with_round_robin_ties() {
    let s = scheduler(vec![4, 4], 10, Duration::from_secs(1));
    let a = s.acquire().await.unwrap();
    let b = s.acquire().await.unwrap();
    assert_ne!(a.backend(), b.backend(), "ties alternate");
    drop(a);
    let freed = 1 - b.backend();
    let c = s.acquire().await.unwrap();
    assert_eq!(c.backend(), freed, "the less loaded backend wins");
}

#[tokio::test]
async fn waiters_are_served_in_fifo_order() {
    let s = scheduler(vec![1], 100, Duration::from_secs(10));
    let first = s.acquire().await.unwrap();
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..10 {
        let (s2, order) = (Arc::clone(&s), Arc::clone(&order));
        tasks.push(tokio::spawn(async move {
            let slot = s2.acquire().await.expect("slot");
            order.lock().unwrap().push(i);
            drop(slot);
        }));
        // Enqueue in a known order.
        let want = i + 1;
        eventually("waiter queued", || s.queue_depth() == want).await;
    }
    drop(first);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), (0..10).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_full_queue_sheds_at_once() {
    let s = scheduler(vec![1], 2, Duration::from_secs(10));
    let _held = s.acquire().await.unwrap();
    let w1 = tokio::spawn({
        let s = Arc::clone(&s);
        async move { s.acquire().await.map(drop) }
    });
    let w2 = tokio::spawn({
        let s = Arc::clone(&s);
        async move { s.acquire().await.map(drop) }
    });
    eventually("two waiters", || s.queue_depth() == 2).await;
    let shed = s.acquire().await.expect_err("queue is full");
    assert_eq!(shed, AcquireError::QueueFull { max_queue: 2 });
    assert_eq!(shed.to_string(), "overloaded: queue full (max_queue=2)");
    w1.abort();
    w2.abort();
    let _ = (w1.await, w2.await);
    eventually("cancelled waiters leave the queue", || s.queue_depth() == 0).await;
}

#[tokio::test(start_paused = true)]
async fn a_wait_past_the_queue_timeout_fails() {
    let s = scheduler(vec![1], 10, Duration::from_secs(5));
    let held = s.acquire().await.unwrap();
    let started = tokio::time::Instant::now();
    let err = s.acquire().await.expect_err("times out");
    assert_eq!(
        err,
        AcquireError::QueueTimeout {
            limit: Duration::from_secs(5)
        }
    );
    assert_eq!(err.to_string(), "queue wait exceeded timeouts.queue=5s");
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    assert_eq!(s.queue_depth(), 0);
    drop(held);
    assert_eq!(s.in_use(0), 0, "no slot leaked to the expired waiter");
}

#[tokio::test]
async fn no_backend_up_answers_at_once_and_flushes_waiters() {
    let s = scheduler(vec![1, 1], 10, Duration::from_secs(60));
    let a = s.acquire().await.unwrap();
    let b = s.acquire().await.unwrap();
    let waiter = tokio::spawn({
        let s = Arc::clone(&s);
        async move { s.acquire().await.map(drop) }
    });
    eventually("queued", || s.queue_depth() == 1).await;
    s.set_up(0, false);
    assert_eq!(s.queue_depth(), 1, "one backend is still up: keep waiting");
    s.set_up(1, false);
    assert_eq!(waiter.await.unwrap(), Err(AcquireError::NoBackendUp));
    assert_eq!(s.acquire().await.unwrap_err(), AcquireError::NoBackendUp);
    drop((a, b));
    s.set_up(1, true);
    assert_eq!(s.acquire().await.unwrap().backend(), 1);
}

#[tokio::test]
async fn a_backend_coming_up_serves_the_queue() {
    let s = scheduler(vec![1, 1], 10, Duration::from_secs(60));
    s.set_up(1, false);
    let _held = s.acquire().await.unwrap();
    let waiter = tokio::spawn({
        let s = Arc::clone(&s);
        async move { s.acquire().await.map(|slot| slot.backend()) }
    });
    eventually("queued", || s.queue_depth() == 1).await;
    s.set_up(1, true);
    assert_eq!(waiter.await.unwrap(), Ok(1));
}

#[tokio::test]
async fn health_waiter_gets_the_next_freed_slot_of_its_backend() {
    let s = scheduler(vec![1], 10, Duration::from_secs(60));
    let held = s.acquire().await.unwrap();
    assert!(s.try_acquire_on(0).is_none());
    let queued = tokio::spawn({
        let s = Arc::clone(&s);
        async move { s.acquire().await.map(drop) }
    });
    eventually("queued", || s.queue_depth() == 1).await;
    let check = tokio::spawn({
        let s = Arc::clone(&s);
        async move { s.acquire_on(0, Duration::from_secs(10)).await.is_some() }
    });
    // Let the check register before the slot frees.
    eventually("health waiter registered", || {
        s.lock().health_waiters[0].is_some()
    })
    .await;
    drop(held);
    assert!(check.await.unwrap(), "the check jumps the queue");
    assert_eq!(queued.await.unwrap(), Ok(()));
}

#[tokio::test(start_paused = true)]
async fn health_waiter_gives_up_after_its_bound() {
    let s = scheduler(vec![1], 10, Duration::from_secs(60));
    let _held = s.acquire().await.unwrap();
    assert!(s.acquire_on(0, Duration::from_secs(1)).await.is_none());
    assert!(s.lock().health_waiters[0].is_none());
}
