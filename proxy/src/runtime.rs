//! The tokio runtime probegate runs on, and why one thread means tokio's
//! current-thread scheduler rather than a multi-thread one with one worker.
//!
//! Everything probegate does is non-blocking, so one thread per CPU it may
//! use is all the parallelism there is (`runtime.threads = "auto"`, the
//! default, counts CPU affinity and cgroup quota). On one thread the two
//! schedulers are not alike, and the difference is the pipelined path's
//! batching (`crate::upstream::lane`): a lane lets the other ready tasks
//! queue their calls before it writes (`yield_now`). Its wake-up comes
//! after the clients woken by the same poll of epoll; the multi-thread
//! scheduler puts a task woken from its own worker in its LIFO slot and
//! runs it next, so the lane wrote before those clients had queued their
//! calls. The current-thread scheduler runs woken tasks in order, so the
//! lane writes after all of them. Under 32 pinging clients that more than
//! halved the backend writes (one `writev` per 9–10 calls became one per
//! 21–22) and cut probegate's CPU per call and the backend's by about 7 %
//! each (bench/README.md, seventh round). With more CPUs the multi-thread
//! scheduler is kept: its work stealing is what spreads connections over
//! them.

use std::fmt;
use std::io;
use std::num::NonZeroUsize;

use tokio::runtime::{Builder, Runtime};

use crate::config::Threads;

/// Which scheduler runs probegate's tasks, and on how many threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheduler {
    /// Every task on the thread that started the runtime.
    CurrentThread,
    /// Tasks spread over `workers` threads that steal work from each other.
    MultiThread { workers: usize },
}

impl Scheduler {
    /// The scheduler for `threads`; `available` counts the CPUs this
    /// process may use (asked only for `Threads::Auto`).
    pub fn for_threads(threads: Threads, available: impl FnOnce() -> usize) -> Scheduler {
        let count = match threads {
            Threads::Auto => available(),
            Threads::Count(count) => count,
        };
        match count {
            0 | 1 => Scheduler::CurrentThread,
            workers => Scheduler::MultiThread { workers },
        }
    }
}

impl fmt::Display for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scheduler::CurrentThread => write!(f, "1 thread (current-thread scheduler)"),
            Scheduler::MultiThread { workers } => {
                write!(f, "{workers} threads (multi-thread scheduler)")
            }
        }
    }
}

/// The CPUs this process may run on, 1 when that cannot be told.
pub fn available_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

/// Builds the runtime `runtime.threads` asks for, with I/O and timers.
pub fn build(threads: Threads) -> io::Result<(Runtime, Scheduler)> {
    let scheduler = Scheduler::for_threads(threads, available_cpus);
    let mut builder = match scheduler {
        Scheduler::CurrentThread => Builder::new_current_thread(),
        Scheduler::MultiThread { workers } => {
            let mut builder = Builder::new_multi_thread();
            builder.worker_threads(workers);
            builder
        }
    };
    let runtime = builder.enable_all().build()?;
    Ok((runtime, scheduler))
}

#[cfg(test)]
mod tests {
    use tokio::runtime::RuntimeFlavor;

    use super::*;

    #[test]
    fn one_thread_is_the_current_thread_scheduler_more_are_multi_thread() {
        let never = || panic!("a fixed count does not ask for the CPUs");
        assert_eq!(
            Scheduler::for_threads(Threads::Count(1), never),
            Scheduler::CurrentThread
        );
        assert_eq!(
            Scheduler::for_threads(Threads::Count(3), never),
            Scheduler::MultiThread { workers: 3 }
        );
        assert_eq!(
            Scheduler::for_threads(Threads::Auto, || 1),
            Scheduler::CurrentThread
        );
        assert_eq!(
            Scheduler::for_threads(Threads::Auto, || 2),
            Scheduler::MultiThread { workers: 2 }
        );
    }

    #[test]
    fn the_built_runtime_is_the_one_asked_for() {
        for (threads, flavor, workers) in [
            (1, RuntimeFlavor::CurrentThread, 1),
            (2, RuntimeFlavor::MultiThread, 2),
        ] {
            let (runtime, _) = build(Threads::Count(threads)).expect("runtime");
            assert_eq!(
                runtime.handle().runtime_flavor(),
                flavor,
                "{threads} thread(s)"
            );
            assert_eq!(
                runtime.metrics().num_workers(),
                workers,
                "{threads} thread(s)"
            );
            // Timers and I/O are on.
            runtime.block_on(async {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
            });
        }
    }
}
