//! A server binary running as a child process for the length of a test.
//!
//! [`ServerProcess`] writes the config to the test's scratch directory, starts
//! the binary with `--config`, sends its stderr to a log file and waits (with a
//! deadline) for the one `<name> listening key=IP:PORT ...` line every server
//! prints on stdout once all its listeners are bound. The child is killed when
//! the value is dropped, and when a test panics the tail of its log is printed
//! so the failure explains itself. Its CPU time and open descriptors are read
//! from `/proc`, and [`spin_for_ticks`] gives the CPU a busy process would
//! have got alongside, the yardstick for "not spinning".

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a server may take to print its `listening` line.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// How many lines of a server's stderr are shown when something fails.
const TAIL_LINES: usize = 60;

/// Everything needed to start one server.
#[derive(Debug, Clone)]
pub struct Launch {
    /// A short name used in messages and file names, e.g. `uploader`.
    pub name: String,
    /// The executable, usually from [`crate::binary`].
    pub program: PathBuf,
    /// Arguments before `--config FILE`, e.g. `["serve"]`.
    pub args: Vec<String>,
    /// The TOML text written to the config file.
    pub config: String,
    /// Extra environment variables for the child (e.g. OSS credentials).
    pub env: Vec<(String, String)>,
    /// Where the config file and the stderr log are written.
    pub dir: PathBuf,
}

/// Why a server did not come up.
#[derive(Debug)]
pub struct StartError {
    /// What went wrong, in words.
    pub reason: String,
    /// The exit status, when the child exited on its own.
    pub status: Option<ExitStatus>,
    /// The child's complete stderr.
    pub stderr: String,
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (exit status: {:?})\n--- stderr tail ---\n{}",
            self.reason,
            self.status,
            tail(&self.stderr, TAIL_LINES)
        )
    }
}

/// A running server. Killed on drop.
#[derive(Debug)]
pub struct ServerProcess {
    name: String,
    child: Child,
    log_path: PathBuf,
    config_path: PathBuf,
    listening: String,
    addrs: BTreeMap<String, SocketAddr>,
    /// Lines the server printed on stdout after the `listening` line.
    stdout_rest: Arc<Mutex<Vec<String>>>,
    exit: Option<ExitStatus>,
}

impl ServerProcess {
    /// Starts the server and waits for its `listening` line; panics with the
    /// stderr tail when it does not come within [`STARTUP_TIMEOUT`].
    pub fn start(launch: &Launch) -> ServerProcess {
        ServerProcess::try_start(launch)
            .unwrap_or_else(|e| panic!("{} did not start: {e}", launch.name))
    }

    /// Like [`ServerProcess::start`], returning the failure instead.
    pub fn try_start(launch: &Launch) -> Result<ServerProcess, StartError> {
        let config_path = launch.dir.join(format!("{}.toml", launch.name));
        std::fs::write(&config_path, &launch.config).map_err(|e| StartError {
            reason: format!("cannot write {}: {e}", config_path.display()),
            status: None,
            stderr: String::new(),
        })?;
        let log_path = launch.dir.join(format!("{}.stderr.log", launch.name));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| StartError {
                reason: format!("cannot open {}: {e}", log_path.display()),
                status: None,
                stderr: String::new(),
            })?;
        let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        let mut command = Command::new(&launch.program);
        command
            .args(&launch.args)
            .arg("--config")
            .arg(&config_path)
            .current_dir(&launch.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "info,uploader=debug,probegate=debug");
        }
        for (k, v) in &launch.env {
            command.env(k, v);
        }
        let mut child = command.spawn().map_err(|e| StartError {
            reason: format!("cannot spawn {}: {e}", launch.program.display()),
            status: None,
            stderr: String::new(),
        })?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        let stdout_rest = Arc::new(Mutex::new(Vec::new()));
        let rest = Arc::clone(&stdout_rest);
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !sent && line.contains(" listening ") {
                    sent = true;
                    let _ = tx.send(line);
                } else if let Ok(mut rest) = rest.lock() {
                    rest.push(line);
                }
            }
        });
        let read_log = |path: &Path| read_from(path, log_start);
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let listening = loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(line) => break line,
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    let status = child.wait().ok();
                    return Err(StartError {
                        reason: format!("no `listening` line within {STARTUP_TIMEOUT:?}"),
                        status,
                        stderr: read_log(&log_path),
                    });
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // stdout closed without the line: the child is exiting.
                    let status = wait_deadline(&mut child, Duration::from_secs(10));
                    if status.is_none() {
                        let _ = child.kill();
                        let _ = child.wait();
                    }
                    return Err(StartError {
                        reason: "closed stdout without a `listening` line".to_string(),
                        status,
                        stderr: read_log(&log_path),
                    });
                }
            }
        };
        let addrs = parse_listening(&listening).map_err(|reason| StartError {
            reason,
            status: None,
            stderr: read_log(&log_path),
        })?;
        Ok(ServerProcess {
            name: launch.name.clone(),
            child,
            log_path,
            config_path,
            listening,
            addrs,
            stdout_rest,
            exit: None,
        })
    }

    /// The address printed as `key=IP:PORT` on the `listening` line.
    pub fn addr(&self, key: &str) -> SocketAddr {
        *self.addrs.get(key).unwrap_or_else(|| {
            panic!(
                "{}: no `{key}=` address in its line {:?}",
                self.name, self.listening
            )
        })
    }

    /// The whole `listening` line.
    pub fn listening_line(&self) -> &str {
        &self.listening
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process's resident memory (`VmRSS`), in KiB. Panics when it
    /// cannot be read, so that a memory assertion never passes unchecked.
    pub fn rss_kib(&self) -> u64 {
        let pid = self.pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
    }

    /// Descriptors the process holds open now (`/proc/PID/fd`). Panics
    /// when they cannot be read.
    pub fn open_fds(&self) -> u64 {
        let pid = self.pid();
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap_or_else(|e| panic!("/proc/{pid}/fd: {e}"))
            .count() as u64
    }

    /// CPU time the process has used (utime + stime), in clock ticks
    /// (USER_HZ, 100 per second on Linux). Panics when it cannot be read.
    pub fn cpu_ticks(&self) -> u64 {
        cpu_ticks_in(&format!("/proc/{}/stat", self.pid()))
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Everything the server has written to stderr so far.
    pub fn stderr(&self) -> String {
        read_from(&self.log_path, 0)
    }

    /// Lines printed on stdout after the `listening` line.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout_rest
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }

    /// Sends SIGTERM (through `kill -TERM`, so no unsafe code is needed).
    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Sends SIGINT.
    pub fn sigint(&self) {
        self.signal("INT");
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap_or_else(|e| panic!("cannot run `kill -{name}`: {e}"));
        assert!(
            status.success(),
            "`kill -{name} {}` failed: {status}",
            self.child.id()
        );
    }

    /// Waits for the server to exit; panics (with the stderr tail) when it is
    /// still running after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(status) = self.exit {
            return status;
        }
        match wait_deadline(&mut self.child, timeout) {
            Some(status) => {
                self.exit = Some(status);
                status
            }
            None => panic!(
                "{} still running {timeout:?} after being asked to stop\n--- stderr tail ---\n{}",
                self.name,
                tail(&self.stderr(), TAIL_LINES)
            ),
        }
    }

    /// Whether the process has exited (without waiting).
    pub fn has_exited(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if self.has_exited().is_none() {
            let _ = self.child.kill();
            self.exit = self.child.wait().ok();
        }
    }

    /// Prints the last lines of the server's stderr to the test output.
    pub fn print_log_tail(&self) {
        eprintln!(
            "--- {} (pid {}) stderr tail, {} ---\n{}",
            self.name,
            self.child.id(),
            self.log_path.display(),
            tail(&self.stderr(), TAIL_LINES)
        );
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_log_tail();
        }
        self.kill();
    }
}

/// The result of running a binary that is expected to exit by itself (a
/// config error, a CLI command).
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `launch` to completion, killing it (and panicking) after `timeout`.
/// Used for config errors, which must exit before binding anything.
pub fn run_to_exit(launch: &Launch, timeout: Duration) -> Finished {
    let config_path = launch.dir.join(format!("{}.toml", launch.name));
    std::fs::write(&config_path, &launch.config)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", config_path.display()));
    let stdout_path = launch.dir.join(format!("{}.stdout.log", launch.name));
    let stderr_path = launch.dir.join(format!("{}.stderr.log", launch.name));
    let open = |p: &Path| File::create(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let mut command = Command::new(&launch.program);
    command
        .args(&launch.args)
        .arg("--config")
        .arg(&config_path)
        .current_dir(&launch.dir)
        .stdin(Stdio::null())
        .stdout(open(&stdout_path))
        .stderr(open(&stderr_path));
    for (k, v) in &launch.env {
        command.env(k, v);
    }
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", launch.program.display()));
    let status = match wait_deadline(&mut child, timeout) {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{} still running after {timeout:?} (expected it to exit)\n--- stderr ---\n{}",
                launch.name,
                read_from(&stderr_path, 0)
            );
        }
    };
    Finished {
        status,
        stdout: read_from(&stdout_path, 0),
        stderr: read_from(&stderr_path, 0),
    }
}

/// Parses `name listening k1=IP:PORT k2=IP:PORT`.
pub fn parse_listening(line: &str) -> Result<BTreeMap<String, SocketAddr>, String> {
    let mut addrs = BTreeMap::new();
    for word in line.split_whitespace() {
        if let Some((key, value)) = word.split_once('=') {
            let addr = value
                .parse::<SocketAddr>()
                .map_err(|e| format!("bad address {value:?} for {key} in {line:?}: {e}"))?;
            addrs.insert(key.to_string(), addr);
        }
    }
    if addrs.is_empty() {
        return Err(format!("no key=IP:PORT in listening line {line:?}"));
    }
    Ok(addrs)
}

fn wait_deadline(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => return None,
        }
    }
}

fn read_from(path: &Path, offset: u64) -> String {
    let mut text = String::new();
    if let Ok(mut file) = File::open(path) {
        if file.seek(SeekFrom::Start(offset)).is_ok() {
            let mut bytes = Vec::new();
            let _ = file.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
    }
    text
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// utime + stime, in clock ticks, from a `/proc/.../stat` file.
fn cpu_ticks_in(path: &str) -> u64 {
    let stat = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    // Fields after the parenthesised command name; utime and stime are
    // the 14th and 15th of the whole line.
    let fields: Vec<&str> = stat
        .rfind(')')
        .map(|end| stat[end + 1..].split_whitespace().collect())
        .unwrap_or_default();
    let field = |i: usize| -> u64 {
        fields
            .get(i)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no field {} in {path}", i + 3))
    };
    field(11) + field(12)
}

/// Spins on a thread of its own until it has had `ticks` of CPU (or for
/// `at_most`, on a host too busy to give it that many), and returns the
/// ticks it had: what a process busy all along would have got beside this
/// one, however loaded the host. The yardstick for "that process is not
/// spinning", with enough ticks that one tick of rounding does not decide.
pub fn spin_for_ticks(ticks: u64, at_most: Duration) -> u64 {
    std::thread::spawn(move || {
        let end = Instant::now() + at_most;
        let mut next_look = Instant::now();
        loop {
            let now = Instant::now();
            if now >= next_look {
                let had = cpu_ticks_in("/proc/thread-self/stat");
                if had >= ticks || now >= end {
                    return had;
                }
                next_look = now + Duration::from_millis(5);
            }
            std::hint::spin_loop();
        }
    })
    .join()
    .expect("the spinning thread")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_listening_lines() {
        let a = parse_listening("uploader listening thrift=127.0.0.1:4000 admin=127.0.0.1:4001")
            .unwrap();
        assert_eq!(a["thrift"], "127.0.0.1:4000".parse().unwrap());
        assert_eq!(a["admin"], "127.0.0.1:4001".parse().unwrap());
        let p = parse_listening("probegate listening public=[::1]:9 admin=127.0.0.1:10").unwrap();
        assert_eq!(p["public"], "[::1]:9".parse().unwrap());
        assert!(parse_listening("uploader listening").is_err());
        assert!(parse_listening("uploader listening thrift=nope").is_err());
    }

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }
}
