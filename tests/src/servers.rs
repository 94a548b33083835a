//! The two servers of the workspace, started from a config builder.
//!
//! [`Uploader`] and [`Probegate`] own a scratch directory (config file,
//! stderr log, and for the backend in fs mode its stored objects) and a
//! [`ServerProcess`]; they deref to it for `sigterm()`, `wait_exit()`,
//! `kill()` and the log. Both are killed on drop.

use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::binaries::binary;
use crate::config::{ProbegateConfig, UploaderConfig};
use crate::process::{run_to_exit, Finished, Launch, ServerProcess, StartError};
use crate::tempdir::TempDir;

/// How long a server that is expected to exit (a config error) may run.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

/// The `uploader` backend, started with `uploader serve --config FILE`.
#[derive(Debug)]
pub struct Uploader {
    process: ServerProcess,
    config: UploaderConfig,
    dir: Arc<TempDir>,
}

impl Uploader {
    /// Starts the backend and waits for `uploader listening thrift=.. admin=..`.
    pub fn start(config: impl Into<UploaderConfig>) -> Uploader {
        Uploader::try_start(config).unwrap_or_else(|e| panic!("uploader did not start: {e}"))
    }

    pub fn try_start(config: impl Into<UploaderConfig>) -> Result<Uploader, StartError> {
        let dir = Arc::new(TempDir::new("uploader"));
        Uploader::start_in(config.into(), dir)
    }

    fn start_in(mut config: UploaderConfig, dir: Arc<TempDir>) -> Result<Uploader, StartError> {
        if config.storage_kind() == "fs" {
            let root = dir.join("data").display().to_string();
            config.toml.set_default("storage.root", root);
        }
        let launch = uploader_launch(&config, dir.path().to_path_buf());
        let process = ServerProcess::try_start(&launch)?;
        Ok(Uploader {
            process,
            config,
            dir,
        })
    }

    /// The Thrift listener.
    pub fn thrift_addr(&self) -> SocketAddr {
        self.process.addr("thrift")
    }

    /// The admin (HTTP) listener: `/metrics`, `/live`, `/ready`, fs objects.
    pub fn admin_addr(&self) -> SocketAddr {
        self.process.addr("admin")
    }

    /// The config the server runs with (with the defaults filled in).
    pub fn config(&self) -> &UploaderConfig {
        &self.config
    }

    /// The fs storage root, in fs mode.
    pub fn data_dir(&self) -> Option<PathBuf> {
        if self.config.storage_kind() == "fs" {
            self.config.toml.get_str("storage.root").map(PathBuf::from)
        } else {
            None
        }
    }

    /// The scratch directory of this server.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Kills the server and starts it again on the same addresses with the
    /// same config and data (for "the backend comes back" tests).
    pub fn restart(&mut self) {
        let config = self
            .config
            .clone()
            .listen(self.thrift_addr())
            .admin_listen(self.admin_addr());
        self.process.kill();
        let fresh = Uploader::start_in(config, Arc::clone(&self.dir))
            .unwrap_or_else(|e| panic!("uploader did not restart: {e}"));
        *self = fresh;
    }
}

fn uploader_launch(config: &UploaderConfig, dir: PathBuf) -> Launch {
    Launch {
        name: "uploader".to_string(),
        program: binary("uploader"),
        args: vec!["serve".to_string()],
        config: config.toml.to_toml(),
        env: config.env.clone(),
        dir,
    }
}

impl Deref for Uploader {
    type Target = ServerProcess;
    fn deref(&self) -> &ServerProcess {
        &self.process
    }
}

impl DerefMut for Uploader {
    fn deref_mut(&mut self) -> &mut ServerProcess {
        &mut self.process
    }
}

/// The `probegate` proxy, started with `probegate --config FILE`.
#[derive(Debug)]
pub struct Probegate {
    process: ServerProcess,
    config: ProbegateConfig,
    _dir: TempDir,
}

impl Probegate {
    /// Starts the proxy and waits for `probegate listening public=.. admin=..`.
    pub fn start(config: impl Into<ProbegateConfig>) -> Probegate {
        Probegate::try_start(config).unwrap_or_else(|e| panic!("probegate did not start: {e}"))
    }

    pub fn try_start(config: impl Into<ProbegateConfig>) -> Result<Probegate, StartError> {
        let config = config.into();
        let dir = TempDir::new("probegate");
        let launch = probegate_launch(&config, dir.path().to_path_buf());
        let process = ServerProcess::try_start(&launch)?;
        Ok(Probegate {
            process,
            config,
            _dir: dir,
        })
    }

    /// The port the load balancer and clients use.
    pub fn public_addr(&self) -> SocketAddr {
        self.process.addr("public")
    }

    /// `/metrics`, `/live`, `/ready`, `/status`.
    pub fn admin_addr(&self) -> SocketAddr {
        self.process.addr("admin")
    }

    pub fn config(&self) -> &ProbegateConfig {
        &self.config
    }

    /// `probegate_backend_up` for `backend`: 1.0 while probegate counts it up.
    pub fn backend_up(&self, backend: SocketAddr) -> f64 {
        crate::metrics::metric(
            self.admin_addr(),
            &format!("probegate_backend_up{{backend=\"{backend}\"}}"),
        )
    }

    /// Waits, at most `timeout`, until probegate counts each of `backends` up.
    pub fn wait_backends_up(&self, backends: &[SocketAddr], timeout: Duration) {
        for backend in backends {
            crate::wait::wait_until(timeout, "probegate to see the backend up", || {
                self.backend_up(*backend) == 1.0
            });
        }
    }

    /// Runs `probegate` with this config and expects it to exit by itself.
    pub fn run_expecting_exit(config_text: &str) -> Finished {
        let dir = TempDir::new("probegate-exit");
        let mut launch = probegate_launch(&ProbegateConfig::new(), dir.path().to_path_buf());
        launch.config = config_text.to_string();
        run_to_exit(&launch, EXIT_TIMEOUT)
    }
}

fn probegate_launch(config: &ProbegateConfig, dir: PathBuf) -> Launch {
    Launch {
        name: "probegate".to_string(),
        program: binary("probegate"),
        args: Vec::new(),
        config: config.toml.to_toml(),
        env: config.env.clone(),
        dir,
    }
}

/// The usual end-to-end set-up: an uploader with two workers, and probegate
/// in front of it with two slots and whatever `configure` adds, returned
/// once probegate counts the backend up (within `timeout`).
pub fn probegate_in_front(
    configure: impl FnOnce(ProbegateConfig) -> ProbegateConfig,
    timeout: Duration,
) -> (Uploader, Probegate) {
    let backend = Uploader::start(UploaderConfig::new().workers(2));
    let proxy = Probegate::start(configure(
        ProbegateConfig::new().backend(backend.thrift_addr(), 2),
    ));
    proxy.wait_backends_up(&[backend.thrift_addr()], timeout);
    (backend, proxy)
}

impl Deref for Probegate {
    type Target = ServerProcess;
    fn deref(&self) -> &ServerProcess {
        &self.process
    }
}

impl DerefMut for Probegate {
    fn deref_mut(&mut self) -> &mut ServerProcess {
        &mut self.process
    }
}
