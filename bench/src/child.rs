//! Starting a server process, learning where it listens, and stopping it.
//!
//! Every server of the project prints one line after binding, e.g.
//! `probegate listening public=127.0.0.1:4242 admin=127.0.0.1:4243`, so the
//! bench configures port 0 and reads the real addresses from that line. The
//! servers' logs go to a file per process under the output folder, so that
//! they neither flood the table nor block on a full pipe.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};

/// How long a server may take to print its `listening` line.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a server gets to exit after SIGTERM before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the servers get to exit when the bench itself is told to stop.
const SIGNALLED_STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// The servers this process started and has not stopped yet, by PID: what a
/// signal to the bench stops before it exits ([`stop_servers_on_signals`]).
static RUNNING: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

/// Notes a server process just started, to be stopped with the bench.
pub fn started(child: &Child) {
    RUNNING
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(child.id());
}

/// On SIGTERM, SIGINT or SIGHUP to the bench, stops every server it
/// started (SIGTERM, at most [`SIGNALLED_STOP_TIMEOUT`], then SIGKILL) and
/// exits with 128 + the signal. Without it a `kill` of a run left its
/// servers loading CPU 1 (Ctrl-C reaches the whole process group anyway).
pub fn stop_servers_on_signals() -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            eprintln!("bench: signal {signal}: stopping the servers it started");
            stop_running(SIGNALLED_STOP_TIMEOUT);
            std::process::exit(128 + signal);
        }
    });
    Ok(())
}

/// Stops every server in [`RUNNING`] (see [`stop_all`]).
fn stop_running(grace: Duration) {
    let pids = std::mem::take(&mut *RUNNING.lock().unwrap_or_else(|e| e.into_inner()));
    stop_all(&pids.into_iter().collect::<Vec<_>>(), grace);
}

/// SIGTERM to all of `pids`, then SIGKILL to those still alive after
/// `grace`.
fn stop_all(pids: &[u32], grace: Duration) {
    signal_all(pids, Signal::TERM);
    let deadline = Instant::now() + grace;
    while pids.iter().any(|&pid| alive(pid)) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    let left: Vec<u32> = pids.iter().copied().filter(|&pid| alive(pid)).collect();
    signal_all(&left, Signal::KILL);
}

/// Sends `signal` to `pids` (as xtask does; a PID already gone is skipped).
fn signal_all(pids: &[u32], signal: Signal) {
    for pid in pids
        .iter()
        .filter_map(|&pid| Pid::from_raw(pid.try_into().ok()?))
    {
        let _ = kill_process(pid, signal);
    }
}

/// Whether `pid` still runs: it exists and is not a zombie waiting for this
/// process to reap it.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat.rsplit_once(") ")?.1.chars().next()?;
            Some(state != 'Z' && state != 'X')
        })
        .unwrap_or(false)
}

#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    #[error("cannot start {name} ({program}): {source}")]
    Spawn {
        name: String,
        program: String,
        source: std::io::Error,
    },
    #[error("{name} exited ({status}) before printing its listening line; see {log}")]
    Exited {
        name: String,
        status: String,
        log: String,
    },
    #[error("{name} printed no listening line within {timeout:?}; see {log}")]
    Silent {
        name: String,
        timeout: Duration,
        log: String,
    },
    #[error("{name} listening line {line:?} has no `{key}=IP:PORT`")]
    MissingKey {
        name: String,
        line: String,
        key: String,
    },
}

/// Polls `check` every 20 ms until it says ready (`Ok`), `child` exits, or
/// `bound` passes. `check` returns why it is not ready yet, which the
/// error repeats after the bound; an exit is reported with its status.
pub fn poll_ready(
    child: &mut Child,
    bound: Duration,
    mut check: impl FnMut() -> Result<(), String>,
) -> Result<(), String> {
    let deadline = Instant::now() + bound;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited with {status}"));
        }
        let last = match check() {
            Ok(()) => return Ok(()),
            Err(why) => why,
        };
        if Instant::now() >= deadline {
            return Err(format!("not ready within {bound:?} (last: {last})"));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A running server and the addresses from its `listening` line.
pub struct Server {
    pub name: String,
    pub child: Child,
    pub addrs: BTreeMap<String, SocketAddr>,
}

impl Server {
    /// Spawns `command` with stderr to `log`, waits (bounded) for its
    /// `listening` line and parses it.
    pub fn start(name: &str, mut command: Command, log: &Path) -> Result<Server, ChildError> {
        let log_name = log.display().to_string();
        let stderr = File::create(log)
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null());
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|source| ChildError::Spawn {
                name: name.to_string(),
                program: format!("{command:?}"),
                source,
            })?;
        started(&child);
        let (tx, rx) = mpsc::channel();
        if let Some(stdout) = child.stdout.take() {
            thread::spawn(move || {
                let mut sent = false;
                // Keep draining after the first line so the child never blocks.
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if !sent && line.contains(" listening ") {
                        sent = tx.send(line).is_ok();
                    }
                }
            });
        }
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(line) => {
                    let addrs = parse_listening(&line);
                    return Ok(Server {
                        name: name.to_string(),
                        child,
                        addrs,
                    });
                }
                Err(mpsc::RecvTimeoutError::Timeout)
                | Err(mpsc::RecvTimeoutError::Disconnected) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        return Err(ChildError::Exited {
                            name: name.to_string(),
                            status: status.to_string(),
                            log: log_name,
                        });
                    }
                    if Instant::now() >= deadline {
                        stop_child(&mut child);
                        return Err(ChildError::Silent {
                            name: name.to_string(),
                            timeout: STARTUP_TIMEOUT,
                            log: log_name,
                        });
                    }
                }
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The address printed as `key=IP:PORT`.
    pub fn addr(&self, key: &str) -> Result<SocketAddr, ChildError> {
        self.addrs
            .get(key)
            .copied()
            .ok_or_else(|| ChildError::MissingKey {
                name: self.name.clone(),
                line: format!("{:?}", self.addrs),
                key: key.to_string(),
            })
    }

    pub fn stop(mut self) {
        stop_child(&mut self.child);
    }
}

/// A server is never left running by a bench that returns early with an
/// error or panics: it stops when dropped (at once if already stopped).
impl Drop for Server {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// SIGTERM, at most [`STOP_TIMEOUT`] for it to exit, then SIGKILL; reaped.
pub fn stop_child(child: &mut Child) {
    RUNNING
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&child.id());
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    stop_all(&[child.id()], STOP_TIMEOUT);
    let _ = child.wait();
}

/// `name listening k=IP:PORT k=IP:PORT` -> {k: addr}; words that are not
/// `key=address` are ignored.
pub fn parse_listening(line: &str) -> BTreeMap<String, SocketAddr> {
    line.split_whitespace()
        .filter_map(|word| {
            let (key, value) = word.split_once('=')?;
            Some((key.to_string(), value.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_ready_reports_an_exit_with_its_status_and_a_timeout_with_the_last_reason() {
        let mut exits = Command::new("sh")
            .args(["-c", "exit 3"])
            .spawn()
            .expect("sh");
        let started = Instant::now();
        let err = poll_ready(&mut exits, Duration::from_secs(10), || {
            Err("not yet".to_string())
        })
        .expect_err("the child exited");
        assert!(err.contains("exited with exit status: 3"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5), "not the bound");

        let mut sleeps = Command::new("sleep").arg("30").spawn().expect("sleep");
        let never = poll_ready(&mut sleeps, Duration::from_millis(100), || {
            Err("503".to_string())
        });
        let mut calls = 0;
        let ready = poll_ready(&mut sleeps, Duration::from_secs(10), || {
            calls += 1;
            if calls < 3 {
                Err("starting".to_string())
            } else {
                Ok(())
            }
        });
        // Stopped before any assertion, so a failure leaves nothing running.
        stop_child(&mut sleeps);
        let err = never.expect_err("never ready");
        assert!(err.contains("not ready within 100ms (last: 503)"), "{err}");
        assert_eq!(ready, Ok(()));
        assert_eq!(calls, 3);
    }

    #[test]
    fn a_server_dropped_without_being_stopped_is_stopped() {
        let dir = std::env::temp_dir().join(format!("bench-child-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut command = Command::new("sh");
        command.args([
            "-c",
            "echo 'sleeper listening at=127.0.0.1:9'; exec sleep 30",
        ]);
        let server = Server::start("sleeper", command, &dir.join("sleeper.log")).expect("start");
        let pid = server.pid();
        let started = Instant::now();
        drop(server);
        let alive = Path::new(&format!("/proc/{pid}")).exists();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            !alive,
            "process {pid} still there after its server was dropped"
        );
        assert!(
            started.elapsed() < STOP_TIMEOUT,
            "stopped by SIGTERM, not the bound"
        );
    }

    #[test]
    fn servers_are_stopped_at_once_even_those_ignoring_sigterm() {
        let spawn = |script: &str| Command::new("sh").args(["-c", script]).spawn().expect("sh");
        let mut polite = spawn("exec sleep 30");
        let mut stubborn = spawn("trap '' TERM; while :; do sleep 1; done");
        // Let the shell set its trap before it is signalled.
        thread::sleep(Duration::from_millis(200));
        let started_at = Instant::now();
        stop_all(&[polite.id(), stubborn.id()], Duration::from_millis(500));
        // Bounded: a child still running after 5 s is killed and fails the test.
        let ended = |child: &mut Child| loop {
            match child.try_wait() {
                Ok(Some(status)) => return Some(status),
                _ if started_at.elapsed() > Duration::from_secs(5) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return None;
                }
                _ => thread::sleep(Duration::from_millis(20)),
            }
        };
        let (polite_status, stubborn_status) = (ended(&mut polite), ended(&mut stubborn));
        use std::os::unix::process::ExitStatusExt;
        let signal = |status: Option<std::process::ExitStatus>| status.and_then(|s| s.signal());
        assert_eq!(signal(polite_status), Some(15), "SIGTERM first");
        assert_eq!(signal(stubborn_status), Some(9), "SIGKILL after the grace");
    }

    #[test]
    fn a_started_server_is_registered_until_stopped() {
        let mut child = Command::new("sleep").arg("30").spawn().expect("sleep");
        started(&child);
        let pid = child.id();
        let registered = || {
            RUNNING
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&pid)
        };
        assert!(registered(), "not registered when started");
        stop_child(&mut child);
        assert!(!registered(), "still registered once stopped");
    }

    #[test]
    fn listening_lines_parse() {
        let addrs =
            parse_listening("probegate listening public=127.0.0.1:4242 admin=127.0.0.1:4243");
        assert_eq!(addrs["public"], "127.0.0.1:4242".parse().unwrap());
        assert_eq!(addrs["admin"], "127.0.0.1:4243".parse().unwrap());
        let addrs = parse_listening("uploader listening thrift=[::1]:9 admin=nowhere");
        assert_eq!(addrs["thrift"], "[::1]:9".parse().unwrap());
        assert!(!addrs.contains_key("admin"));
    }
}
