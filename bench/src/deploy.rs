//! One target of the comparison, started with a backend of its own.
//!
//! Every target gets its own backend process so that they never share worker
//! threads: probegate keeps a pool of backend connections open between
//! windows, and on a shared 10-worker backend that pool would starve the next
//! target. All servers run on the server CPU (`taskset -c 1`), with configs
//! generated here using port 0 and the addresses read back from their
//! `listening` lines.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result};

use crate::child::Server;
use crate::haproxy::{self, Haproxy};
use crate::machine::Machine;
use crate::scrape;

/// Source range the probe clients bind to; probegate is told it is the load
/// balancer's health-check range.
pub const PROBE_RANGE: &str = "127.100.0.0/16";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    Direct,
    HaproxyTcp,
    HaproxyInspect,
    /// haproxy-inspect splicing bodies through pipes (haproxy.rs). Upload
    /// workloads only.
    HaproxySplice,
    Probegate,
    /// No backend: probegate's runtime answering every call itself
    /// (answerer.rs), the reference floor of a proxy's CPU per call. Ping
    /// workloads only.
    Answerer,
    /// The same answers on io_uring (answerer_uring.rs): the floor on a
    /// runtime with fewer system calls per reply.
    AnswererUring,
}

impl Target {
    pub const ALL: [Target; 7] = [
        Target::Direct,
        Target::HaproxyTcp,
        Target::HaproxyInspect,
        Target::HaproxySplice,
        Target::Probegate,
        Target::Answerer,
        Target::AnswererUring,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::HaproxyTcp => "haproxy-tcp",
            Target::HaproxyInspect => "haproxy-inspect",
            Target::HaproxySplice => "haproxy-splice",
            Target::Probegate => "probegate",
            Target::Answerer => "answerer",
            Target::AnswererUring => "answerer-uring",
        }
    }

    /// Whether it answers calls itself, with no backend: its speed is no
    /// proxy's, only its CPU per call means something (as a floor).
    pub fn answers_itself(self) -> bool {
        matches!(self, Target::Answerer | Target::AnswererUring)
    }

    /// HAProxy's configuration, for the HAProxy targets.
    pub fn haproxy_mode(self) -> Option<haproxy::Mode> {
        match self {
            Target::HaproxyTcp => Some(haproxy::Mode::Tcp),
            Target::HaproxyInspect => Some(haproxy::Mode::Inspect),
            Target::HaproxySplice => Some(haproxy::Mode::Splice),
            _ => None,
        }
    }

    /// Whether its "proxy" CPU is measured: the proxies', and the answerer's
    /// own (it stands where a proxy would).
    pub fn is_proxy(self) -> bool {
        self != Target::Direct
    }
}

/// What the answerer targets are, for the bench's output.
pub const ANSWERER_DESCRIPTION: &str = "answerer: no backend; probegate's runtime (tokio over epoll, pinned like the proxies) answers each call itself, so its CPU per call is what a proxy's client side alone costs on this runtime, the reference floor of the CPU verdicts (ping workloads only)";
pub const HAPROXY_SPLICE_DESCRIPTION: &str = "haproxy-splice: haproxy-inspect with `option splice-request` and `option splice-response` (bodies moved by splice through HAProxy's pipes), upload workloads only; the upload goals take HAProxy's best of its three configurations";
pub const ANSWERER_URING_DESCRIPTION: &str = "answerer-uring: the answerer's work on one io_uring (multishot accept and receive into provided buffers, one submission for many replies), pinned alike: the floor on a runtime with fewer system calls per reply";

/// Which backend a workload needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The in-bench responder (no storage): proxy overhead.
    Responder { workers: usize },
    /// The real uploader on local disk, with its read timeout (`"0s"` = none,
    /// as in the incident).
    Uploader {
        workers: usize,
        read_timeout: &'static str,
    },
}

impl Backend {
    pub fn workers(self) -> usize {
        match self {
            Backend::Responder { workers } | Backend::Uploader { workers, .. } => workers,
        }
    }
}

/// What starting servers needs: where binaries are and where files go.
pub struct Env<'a> {
    pub machine: &'a Machine,
    /// This binary, started again as `responder`.
    pub bench_exe: PathBuf,
    /// Where `uploader` and `probegate` are.
    pub bin_dir: PathBuf,
    /// Configs, logs and the uploader's storage.
    pub work_dir: PathBuf,
    /// Makes every generated file name unique within the run.
    pub seq: AtomicU32,
}

impl Env<'_> {
    fn next_name(&self, what: &str) -> String {
        format!("{what}-{}", self.seq.fetch_add(1, Ordering::Relaxed))
    }

    fn server_env(&self, command: &mut std::process::Command) {
        // Logging at info on every request would be measured as proxy cost.
        command.env("RUST_LOG", "warn");
    }
}

enum Proxy {
    Haproxy(Haproxy),
    Probegate(Server),
    /// The answerer, measured where a proxy would be.
    Answerer(Server),
}

/// A backend's connection counters at one moment (`None`: not readable, or
/// not counted by this backend).
#[derive(Debug, Clone, Copy, Default)]
pub struct BackendCounts {
    pub accepted: Option<f64>,
    pub without_calls: Option<f64>,
}

impl BackendCounts {
    /// What was counted between `earlier` and `self`.
    pub fn since(self, earlier: BackendCounts) -> BackendCounts {
        let diff = |now: Option<f64>, then: Option<f64>| Some(now? - then?);
        BackendCounts {
            accepted: diff(self.accepted, earlier.accepted),
            without_calls: diff(self.without_calls, earlier.without_calls),
        }
    }
}

/// A running target: its backend (none for the answerer), its proxy (none for
/// direct) and the address clients connect to.
pub struct Deployment {
    pub target: Target,
    pub backend_kind: Backend,
    backend: Option<Server>,
    backend_metrics: Option<SocketAddr>,
    proxy: Option<Proxy>,
    /// Where clients connect.
    pub addr: SocketAddr,
    storage: Option<PathBuf>,
}

impl Deployment {
    /// `first_byte` is both probegate's `timeouts.first_byte` and HAProxy's
    /// inspect delay: how long a silent connection is held.
    pub fn start(
        env: &Env,
        target: Target,
        backend_kind: Backend,
        first_byte: Duration,
    ) -> Result<Deployment> {
        if target.answers_itself() {
            let (answerer, addr) = start_answerer(env, target)?;
            return Ok(Deployment {
                target,
                backend_kind,
                backend: None,
                backend_metrics: None,
                addr,
                proxy: Some(Proxy::Answerer(answerer)),
                storage: None,
            });
        }
        let (backend, thrift, metrics, storage) = start_backend(env, backend_kind)?;
        let (proxy, addr) = match target {
            Target::Direct => (None, thrift),
            Target::Answerer | Target::AnswererUring => {
                unreachable!("started above, without a backend")
            }
            Target::HaproxyTcp | Target::HaproxyInspect | Target::HaproxySplice => {
                let mode = target.haproxy_mode().expect("an HAProxy target");
                let name = env.next_name(target.name());
                match Haproxy::start(env.machine, mode, thrift, &env.work_dir, &name, first_byte) {
                    Ok(h) => {
                        let addr = h.addr;
                        (Some(Proxy::Haproxy(h)), addr)
                    }
                    Err(e) => {
                        backend.stop();
                        return Err(e.into());
                    }
                }
            }
            Target::Probegate => match start_probegate(env, thrift, backend_kind, first_byte) {
                Ok((s, addr)) => (Some(Proxy::Probegate(s)), addr),
                Err(e) => {
                    backend.stop();
                    return Err(e);
                }
            },
        };
        Ok(Deployment {
            target,
            backend_kind,
            backend: Some(backend),
            backend_metrics: Some(metrics),
            proxy,
            addr,
            storage,
        })
    }

    pub fn proxy_pid(&self) -> Option<u32> {
        match &self.proxy {
            None => None,
            Some(Proxy::Haproxy(h)) => Some(h.pid()),
            Some(Proxy::Probegate(s) | Proxy::Answerer(s)) => Some(s.pid()),
        }
    }

    pub fn backend_pid(&self) -> Option<u32> {
        self.backend.as_ref().map(Server::pid)
    }

    /// The backend's connection counters, from one fetch of its page: the
    /// connections it accepted and, for the responder, those that ended
    /// without a call.
    pub fn backend_counts(&self) -> BackendCounts {
        let page = self
            .backend_metrics
            .and_then(|addr| scrape::metrics_page(addr).ok())
            .unwrap_or_default();
        BackendCounts {
            accepted: scrape::sample(&page, scrape::ACCEPTED),
            without_calls: scrape::sample(&page, scrape::WITHOUT_CALLS),
        }
    }

    pub fn stop(self) {
        match self.proxy {
            Some(Proxy::Haproxy(h)) => h.stop(),
            Some(Proxy::Probegate(s) | Proxy::Answerer(s)) => s.stop(),
            None => {}
        }
        if let Some(backend) = self.backend {
            backend.stop();
        }
        if let Some(dir) = self.storage {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

type Started = (Server, SocketAddr, SocketAddr, Option<PathBuf>);

fn start_backend(env: &Env, kind: Backend) -> Result<Started> {
    match kind {
        Backend::Responder { workers } => {
            let name = env.next_name("responder");
            let mut command = env.machine.server_command(&env.bench_exe);
            command
                .arg("responder")
                .arg("--workers")
                .arg(workers.to_string());
            let server = Server::start(&name, command, &log_path(&env.work_dir, &name))?;
            let thrift = server.addr("thrift")?;
            let admin = server.addr("admin")?;
            Ok((server, thrift, admin, None))
        }
        Backend::Uploader {
            workers,
            read_timeout,
        } => {
            let name = env.next_name("uploader");
            let storage = env.work_dir.join(format!("{name}-data"));
            std::fs::create_dir_all(&storage)
                .with_context(|| format!("creating {}", storage.display()))?;
            let config = env.work_dir.join(format!("{name}.toml"));
            std::fs::write(&config, uploader_config(workers, read_timeout, &storage))
                .with_context(|| format!("writing {}", config.display()))?;
            let program = env.bin_dir.join("uploader");
            let mut command = env.machine.server_command(&program);
            command.arg("serve").arg("--config").arg(&config);
            env.server_env(&mut command);
            let server = Server::start(&name, command, &log_path(&env.work_dir, &name))?;
            let thrift = server.addr("thrift")?;
            let admin = server.addr("admin")?;
            Ok((server, thrift, admin, Some(storage)))
        }
    }
}

/// One of the answerers and the address it answers on.
fn start_answerer(env: &Env, target: Target) -> Result<(Server, SocketAddr)> {
    let name = env.next_name(target.name());
    let mut command = env.machine.server_command(&env.bench_exe);
    command.arg("answerer");
    if target == Target::AnswererUring {
        command.arg("--io-uring");
    }
    let answerer = Server::start(&name, command, &log_path(&env.work_dir, &name))?;
    match answerer.addr("thrift") {
        Ok(addr) => Ok((answerer, addr)),
        Err(e) => {
            answerer.stop();
            Err(e.into())
        }
    }
}

fn start_probegate(
    env: &Env,
    backend: SocketAddr,
    kind: Backend,
    first_byte: Duration,
) -> Result<(Server, SocketAddr)> {
    let name = env.next_name("probegate");
    let config = env.work_dir.join(format!("{name}.toml"));
    std::fs::write(&config, probegate_config(backend, kind, first_byte))
        .with_context(|| format!("writing {}", config.display()))?;
    let program = env.bin_dir.join("probegate");
    let mut command = env.machine.server_command(&program);
    command.arg("--config").arg(&config);
    env.server_env(&mut command);
    let mut server = Server::start(&name, command, &log_path(&env.work_dir, &name))?;
    let ready = server
        .addr("admin")
        .map_err(anyhow::Error::from)
        .and_then(|admin| wait_ready(&mut server, admin))
        .and_then(|()| Ok(server.addr("public")?));
    match ready {
        Ok(public) => Ok((server, public)),
        Err(e) => {
            server.stop();
            Err(e.context(format!("{name} did not become ready")))
        }
    }
}

/// How long probegate may take to mark its backend up after it starts.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Waits until probegate's admin `/ready` says 200 (a backend is up): a
/// workload that starts right after probegate would otherwise have its
/// first calls refused with "no backend up" before the first health check.
fn wait_ready(server: &mut Server, admin: SocketAddr) -> Result<()> {
    crate::child::poll_ready(&mut server.child, READY_TIMEOUT, || {
        match scrape::ready(admin) {
            Ok(true) => Ok(()),
            Ok(false) => Err("503".to_string()),
            Err(e) => Err(e.to_string()),
        }
    })
    .map_err(|why| anyhow::anyhow!("GET http://{admin}/ready: {why}; see its log"))
}

fn log_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.log"))
}

/// The uploader's config: loopback, framed binary, fs storage in `root`.
pub fn uploader_config(workers: usize, read_timeout: &str, root: &Path) -> String {
    let mut c = String::new();
    let _ = writeln!(c, "[server]");
    let _ = writeln!(c, "listen = \"127.0.0.1:0\"");
    let _ = writeln!(c, "workers = {workers}");
    let _ = writeln!(c, "read_timeout = \"{read_timeout}\"");
    let _ = writeln!(c, "write_timeout = \"60s\"");
    let _ = writeln!(c, "protocol = \"binary\"");
    let _ = writeln!(c, "transport = \"framed\"");
    let _ = writeln!(c, "max_upload_bytes = {}", 10 * 1024 * 1024);
    let _ = writeln!(c, "[admin]");
    let _ = writeln!(c, "listen = \"127.0.0.1:0\"");
    let _ = writeln!(c, "[storage]");
    let _ = writeln!(c, "kind = \"fs\"");
    let _ = writeln!(c, "root = {:?}", root.display().to_string());
    let _ = writeln!(c, "public_base_url = \"http://127.0.0.1/\"");
    let _ = writeln!(c, "key_prefix = \"bench\"");
    c
}

/// probegate's config: request-level dispatch to one backend with as many
/// slots as it has workers, the bench's probe range, and limits that let
/// 10,000 idle clients in. Other keys keep their defaults.
pub fn probegate_config(backend: SocketAddr, kind: Backend, first_byte: Duration) -> String {
    let mut c = String::new();
    let _ = writeln!(c, "[listen]");
    let _ = writeln!(c, "public = \"127.0.0.1:0\"");
    let _ = writeln!(c, "admin = \"127.0.0.1:0\"");
    let _ = writeln!(c, "[[backends]]");
    let _ = writeln!(c, "address = \"{backend}\"");
    let _ = writeln!(c, "max_connections = {}", kind.workers());
    if let Backend::Uploader { read_timeout, .. } = kind {
        if humantime_nonzero(read_timeout) {
            let _ = writeln!(c, "read_timeout = \"{read_timeout}\"");
        }
    }
    let _ = writeln!(c, "[probes]");
    let _ = writeln!(c, "sources = [\"{PROBE_RANGE}\"]");
    let _ = writeln!(c, "[timeouts]");
    let _ = writeln!(c, "first_byte = \"{}ms\"", first_byte.as_millis());
    let _ = writeln!(c, "[limits]");
    let _ = writeln!(c, "max_client_connections = 30000");
    let _ = writeln!(c, "[forwarding]");
    let _ = writeln!(c, "mode = \"request\"");
    // No load balancer to drain from: stop at once between workloads.
    let _ = writeln!(c, "[shutdown]");
    let _ = writeln!(c, "drain_grace = \"0s\"");
    let _ = writeln!(c, "timeout = \"2s\"");
    c
}

/// Whether a duration written like `"0s"` / `"60s"` is non-zero.
fn humantime_nonzero(text: &str) -> bool {
    text.trim_start_matches('0')
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_since_an_earlier_reading_need_both_readings() {
        let earlier = BackendCounts {
            accepted: Some(10.0),
            without_calls: None,
        };
        let now = BackendCounts {
            accepted: Some(13.0),
            without_calls: Some(2.0),
        };
        let since = now.since(earlier);
        assert_eq!(since.accepted, Some(3.0));
        assert_eq!(since.without_calls, None, "not counted at the start");
    }

    #[test]
    fn probegate_config_matches_the_backend() {
        let be: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let c = probegate_config(
            be,
            Backend::Responder { workers: 64 },
            haproxy::INSPECT_DELAY,
        );
        assert!(c.contains("address = \"127.0.0.1:7000\""));
        assert!(c.contains("max_connections = 64"));
        assert!(c.contains("sources = [\"127.100.0.0/16\"]"));
        assert!(!c.contains("read_timeout"));
        let c = probegate_config(
            be,
            Backend::Uploader {
                workers: 10,
                read_timeout: "60s",
            },
            haproxy::INSPECT_DELAY,
        );
        assert!(c.contains("read_timeout = \"60s\""));
        let c = probegate_config(
            be,
            Backend::Uploader {
                workers: 10,
                read_timeout: "0s",
            },
            haproxy::INSPECT_DELAY,
        );
        assert!(!c.contains("read_timeout"), "0s means none: {c}");
    }

    #[test]
    fn generated_configs_pass_the_servers_own_validation() {
        let be: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        for kind in [
            Backend::Responder { workers: 64 },
            Backend::Uploader {
                workers: 10,
                read_timeout: "0s",
            },
            Backend::Uploader {
                workers: 64,
                read_timeout: "60s",
            },
        ] {
            let text = probegate_config(be, kind, haproxy::INSPECT_DELAY);
            if let Err(e) = probegate::config::Config::parse(&text) {
                panic!("probegate rejects {text}: {e}");
            }
        }
        for timeout in ["0s", "60s"] {
            let text = uploader_config(10, timeout, Path::new("/tmp/bench-data"));
            if let Err(e) = uploader::config::Config::parse(&text) {
                panic!("uploader rejects {text}: {e}");
            }
        }
    }

    #[test]
    fn durations_zero_or_not() {
        assert!(!humantime_nonzero("0s"));
        assert!(!humantime_nonzero("00ms"));
        assert!(humantime_nonzero("60s"));
        assert!(humantime_nonzero("10s"));
    }
}
