//! HAProxy as the reference proxy, in the configurations users would pick
//! for a Thrift backend.
//!
//! - `haproxy-tcp`: plain `mode tcp`. It opens a backend connection the moment
//!   a client connects, which is why it does not fix the incident by itself.
//! - `haproxy-inspect`: its best configuration for this job: it holds each new
//!   connection (`tcp-request inspect-delay`) and connects to the backend only
//!   once the client has sent bytes (`req.len gt 0`); a connection that stays
//!   silent for the whole delay is rejected rather than forwarded (without the
//!   final `reject`, HAProxy would accept it when the delay expires). The delay
//!   equals probegate's default `timeouts.first_byte`.
//! - `haproxy-splice`: `haproxy-inspect` moving the bytes with the kernel's
//!   `splice` through pipes instead of through its buffers (`option
//!   splice-request` and `option splice-response`), what a user forwarding
//!   large uploads would add. Measured alongside for the upload workloads
//!   only: per 1 MiB upload it spent 300–360 µs of CPU against 530–670
//!   without (bench/README.md, tenth round); for small calls forced
//!   splicing only adds pipe system calls.
//!
//! HAProxy prints no listening line, so the bench picks a free loopback port,
//! writes it into the config and polls until the port accepts.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::machine::Machine;

/// How long to wait for HAProxy's frontend to accept after starting it.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Same bound as probegate's default `timeouts.first_byte`.
pub const INSPECT_DELAY: Duration = Duration::from_secs(5);
/// Starting attempts (a freshly picked free port can be taken in between).
const ATTEMPTS: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Tcp,
    Inspect,
    Splice,
}

#[derive(Debug, thiserror::Error)]
pub enum HaproxyError {
    #[error("haproxy is not installed (`haproxy -v` failed: {0}); install Debian's `haproxy` to compare against it")]
    Missing(String),
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("haproxy did not start after {attempts} attempts: {last}; see {log}")]
    Start {
        attempts: u32,
        last: String,
        log: String,
    },
}

/// The version line of the installed HAProxy.
pub fn version() -> Result<String, HaproxyError> {
    let out = Command::new("haproxy")
        .arg("-v")
        .output()
        .map_err(|e| HaproxyError::Missing(e.to_string()))?;
    if !out.status.success() {
        return Err(HaproxyError::Missing(out.status.to_string()));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("haproxy")
        .to_string())
}

/// HAProxy's `maxconn` for a file-descriptor limit: each proxied connection
/// takes two descriptors, plus a few for listeners and logs; splicing adds
/// a pipe (two more) for every fourth connection (HAProxy's default
/// `maxpipes`). HAProxy refuses to start when `maxconn` needs more than the
/// limit allows.
pub fn maxconn_for(nofile: u64, mode: Mode) -> u64 {
    let available = nofile.saturating_sub(100);
    let maxconn = match mode {
        Mode::Tcp | Mode::Inspect => available / 2,
        Mode::Splice => available * 2 / 5,
    };
    maxconn.clamp(100, 30_000)
}

/// The generated configuration.
pub fn config(
    mode: Mode,
    frontend: SocketAddr,
    backend: SocketAddr,
    maxconn: u64,
    inspect_delay: Duration,
) -> String {
    let mut c = String::new();
    let _ = writeln!(c, "global");
    // As much room for idle clients (and their backend connections) as the
    // descriptor limit allows.
    let _ = writeln!(c, "    maxconn {maxconn}");
    let _ = writeln!(c, "defaults");
    let _ = writeln!(c, "    mode tcp");
    if mode == Mode::Splice {
        let _ = writeln!(c, "    option splice-request");
        let _ = writeln!(c, "    option splice-response");
    }
    let _ = writeln!(c, "    timeout connect 1s");
    let _ = writeln!(c, "    timeout client 60s");
    let _ = writeln!(c, "    timeout server 60s");
    let _ = writeln!(c, "frontend fe");
    let _ = writeln!(c, "    bind {frontend}");
    if mode != Mode::Tcp {
        let _ = writeln!(
            c,
            "    tcp-request inspect-delay {}ms",
            inspect_delay.as_millis()
        );
        let _ = writeln!(c, "    tcp-request content accept if {{ req.len gt 0 }}");
        let _ = writeln!(c, "    tcp-request content reject");
    }
    let _ = writeln!(c, "    default_backend be");
    let _ = writeln!(c, "backend be");
    let _ = writeln!(c, "    server s1 {backend}");
    c
}

/// A running HAProxy and the address its frontend listens on.
pub struct Haproxy {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Haproxy {
    /// Writes the config under `dir` and starts HAProxy in the foreground
    /// (`-db`) on the server CPU; returns once the frontend accepts.
    pub fn start(
        machine: &Machine,
        mode: Mode,
        backend: SocketAddr,
        dir: &Path,
        name: &str,
        inspect_delay: Duration,
    ) -> Result<Haproxy, HaproxyError> {
        let log = dir.join(format!("{name}.log"));
        let mut last = String::new();
        for _ in 0..ATTEMPTS {
            let frontend = match free_port() {
                Ok(a) => a,
                Err(e) => {
                    last = format!("no free port: {e}");
                    continue;
                }
            };
            let path = dir.join(format!("{name}.cfg"));
            std::fs::write(
                &path,
                config(
                    mode,
                    frontend,
                    backend,
                    maxconn_for(crate::machine::nofile_limit(), mode),
                    inspect_delay,
                ),
            )
            .map_err(|source| HaproxyError::Write {
                path: path.display().to_string(),
                source,
            })?;
            let stderr = std::fs::File::create(&log)
                .map(Stdio::from)
                .unwrap_or_else(|_| Stdio::null());
            let mut command = machine.server_command(Path::new("haproxy"));
            command
                .arg("-db")
                .arg("-f")
                .arg(&path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr);
            let mut child = match command.spawn() {
                Ok(c) => {
                    crate::child::started(&c);
                    c
                }
                Err(e) => {
                    last = e.to_string();
                    continue;
                }
            };
            match wait_ready(&mut child, frontend) {
                Ok(()) => {
                    return Ok(Haproxy {
                        child,
                        addr: frontend,
                    })
                }
                Err(e) => {
                    last = e;
                    crate::child::stop_child(&mut child);
                }
            }
        }
        Err(HaproxyError::Start {
            attempts: ATTEMPTS,
            last,
            log: log.display().to_string(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stop(mut self) {
        crate::child::stop_child(&mut self.child);
    }
}

/// Like a [`crate::child::Server`], never left running by a bench that
/// returns early or panics.
impl Drop for Haproxy {
    fn drop(&mut self) {
        crate::child::stop_child(&mut self.child);
    }
}

fn free_port() -> std::io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// Polls the frontend until it accepts a connection, the process exits, or
/// the bound expires.
fn wait_ready(child: &mut Child, addr: SocketAddr) -> Result<(), String> {
    crate::child::poll_ready(child, READY_TIMEOUT, || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(200))
            .map(drop)
            .map_err(|e| format!("connect to {addr}: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspect_config_waits_for_bytes_and_rejects_silence() {
        let fe: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let be: SocketAddr = "127.0.0.1:2000".parse().unwrap();
        let tcp = config(Mode::Tcp, fe, be, 9950, INSPECT_DELAY);
        assert!(tcp.contains("maxconn 9950"));
        assert!(tcp.contains("bind 127.0.0.1:1000"));
        assert!(tcp.contains("server s1 127.0.0.1:2000"));
        assert!(!tcp.contains("inspect-delay"));
        let inspect = config(Mode::Inspect, fe, be, 9950, INSPECT_DELAY);
        let accept = inspect
            .find("accept if { req.len gt 0 }")
            .expect("accept rule");
        let reject = inspect
            .find("tcp-request content reject")
            .expect("reject rule");
        assert!(accept < reject, "reject must come after the accept rule");
        assert!(inspect.contains("inspect-delay 5000ms"));
        assert!(!inspect.contains("splice"));
        let splice = config(Mode::Splice, fe, be, 7960, INSPECT_DELAY);
        assert!(splice.contains("option splice-request"));
        assert!(splice.contains("option splice-response"));
        assert!(
            splice.contains("accept if { req.len gt 0 }") && splice.contains("reject"),
            "splicing keeps the inspect rules"
        );
    }

    #[test]
    fn maxconn_fits_the_descriptor_limit() {
        assert_eq!(maxconn_for(20_000, Mode::Tcp), 9950);
        assert_eq!(maxconn_for(20_000, Mode::Inspect), 9950);
        // 7960 connections + 1990 pipes = 19,900 descriptors.
        assert_eq!(maxconn_for(20_000, Mode::Splice), 7960);
        assert_eq!(maxconn_for(1_000_000, Mode::Tcp), 30_000);
        assert_eq!(maxconn_for(50, Mode::Splice), 100);
    }

    #[test]
    fn generated_configs_pass_haproxy_check_when_installed() {
        if version().is_err() {
            eprintln!("haproxy not installed: config check skipped");
            return;
        }
        let dir = std::env::temp_dir().join(format!("bench-haproxy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        for mode in [Mode::Tcp, Mode::Inspect, Mode::Splice] {
            let path = dir.join("check.cfg");
            let fe: SocketAddr = "127.0.0.1:1".parse().unwrap();
            std::fs::write(
                &path,
                config(mode, fe, fe, maxconn_for(20_000, mode), INSPECT_DELAY),
            )
            .expect("write");
            let out = Command::new("haproxy")
                .arg("-c")
                .arg("-f")
                .arg(&path)
                .output()
                .expect("haproxy -c");
            assert!(
                out.status.success(),
                "{mode:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
