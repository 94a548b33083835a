//! Polling with a deadline: the tests' only way to wait for something.
//!
//! A fixed sleep is a guess that fails on a loaded machine and wastes time on
//! an idle one; polling a condition until a deadline is neither.

use std::time::{Duration, Instant};

/// How often conditions are re-checked.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Polls `cond` until it holds or `timeout` passes; returns whether it held.
pub fn poll_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Polls `cond` until it holds; panics naming `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, cond: impl FnMut() -> bool) {
    assert!(
        poll_until(timeout, cond),
        "timed out after {timeout:?} waiting for: {what}"
    );
}

/// Runs `f` on a thread and returns its result if it finishes within
/// `timeout`, or `None` (leaving the thread to finish or die on its own).
/// For calls that are expected to hang, such as a ping to a starved server.
pub fn within<T: Send + 'static>(
    timeout: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Pending<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    let mut pending = Pending { rx, done: None };
    pending.wait(timeout);
    pending
}

/// A call started by [`within`] that may still be running.
pub struct Pending<T> {
    rx: std::sync::mpsc::Receiver<T>,
    done: Option<T>,
}

impl<T> Pending<T> {
    /// Whether the call has finished (so far).
    pub fn is_done(&self) -> bool {
        self.done.is_some()
    }

    /// Waits up to `timeout` more; returns the result if it is there.
    pub fn wait(&mut self, timeout: Duration) -> Option<&T> {
        if self.done.is_none() {
            self.done = self.rx.recv_timeout(timeout).ok();
        }
        self.done.as_ref()
    }

    /// The result, if the call finished.
    pub fn into_result(self) -> Option<T> {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_until_sees_true_and_gives_up() {
        let mut n = 0;
        assert!(poll_until(Duration::from_secs(5), || {
            n += 1;
            n == 3
        }));
        assert!(!poll_until(Duration::from_millis(50), || false));
    }

    #[test]
    fn within_reports_slow_calls() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let mut slow = within(Duration::from_millis(50), move || rx.recv().is_err());
        assert!(!slow.is_done());
        drop(tx);
        assert_eq!(slow.wait(Duration::from_secs(5)), Some(&true));
    }
}
