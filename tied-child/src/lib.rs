//! Child processes that do not outlive the program that started them.
//!
//! `cargo stack` and the bench start servers (the uploader, probegate,
//! HAProxy, the bench's responder). Both stop them on every way out they
//! see: an error, Ctrl-C, SIGTERM. SIGKILL no handler sees, and a killed
//! stack used to leave its servers holding their ports, a killed bench left
//! them loading the CPU the next run measures on. [`tied_to_this_process`]
//! asks the kernel to send such a child SIGTERM when its parent goes
//! (`PR_SET_PDEATHSIG`), however it goes.
//!
//! The kernel's notion of "parent" is the *thread* that started the child:
//! start servers from a thread that lives as long as they should (both
//! programs start them from their main thread). The signal survives the
//! `exec` of a wrapper such as `taskset`, so it reaches the server itself.

// Allowed in one function only: `pre_exec`, to arm the parent-death signal.
#![deny(unsafe_code)]

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Arms `command` so that the process it starts gets SIGTERM from the
/// kernel when the thread that starts it ends: with a program's main
/// thread, so also when the program is killed with SIGKILL or crashes. A
/// program that died before the signal was armed makes the start fail
/// (`ESRCH`) instead of leaving a child nobody will stop.
#[allow(unsafe_code)]
pub fn tied_to_this_process(command: &mut Command) -> &mut Command {
    let starter = rustix::process::getpid();
    // SAFETY: the closure runs in the forked child before `exec`, where only
    // async-signal-safe work is allowed: it makes two system calls (`prctl`,
    // `getppid`) and neither allocates nor takes a lock (`io::Error` from an
    // errno is not boxed).
    unsafe {
        command.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM))?;
            // Reparented already: the starter is gone and nobody will send it.
            if rustix::process::getppid() != Some(starter) {
                return Err(io::Error::from(rustix::io::Errno::SRCH));
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use signal_hook::consts::SIGTERM;
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;
    use std::thread;
    use std::time::{Duration, Instant};

    /// Starts `command` tied, from a thread that then ends, and returns
    /// how the child exited: the same kernel notice as when the whole
    /// program is killed (its main thread starts the servers), while the
    /// test process survives to see it. Fails if the child is still there
    /// 5 s later.
    fn exit_after_its_starter_ends(mut command: Command) -> ExitStatus {
        let shown = format!("{command:?}");
        let mut child = thread::spawn(move || tied_to_this_process(&mut command).spawn())
            .join()
            .expect("starting thread")
            .expect("spawn");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match child.try_wait().expect("its status") {
                Some(status) => return status,
                None if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("{shown} outlived the thread that started it by 5 s");
                }
                None => thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    #[test]
    fn a_child_gets_sigterm_when_the_thread_that_started_it_ends() {
        let mut sleep = Command::new("sleep");
        sleep.arg("30");
        let status = exit_after_its_starter_ends(sleep);
        assert_eq!(status.signal(), Some(SIGTERM), "{status}");
    }

    #[test]
    fn the_signal_reaches_a_program_a_wrapper_execs() {
        // `taskset` (how the bench pins its servers) execs the server: the
        // server itself must get the signal, not only the wrapper.
        let mut sh = Command::new("sh");
        sh.args(["-c", "exec sleep 30"]);
        let status = exit_after_its_starter_ends(sh);
        assert_eq!(status.signal(), Some(SIGTERM), "{status}");
    }

    #[test]
    fn a_child_of_a_living_thread_keeps_running() {
        let mut child = tied_to_this_process(Command::new("sleep").arg("30"))
            .spawn()
            .expect("sleep");
        thread::sleep(Duration::from_millis(200));
        let running = matches!(child.try_wait(), Ok(None));
        let _ = child.kill();
        let _ = child.wait();
        assert!(running, "the child died while its starter lived");
    }
}
