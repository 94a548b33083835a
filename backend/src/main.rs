//! The `uploader` binary: `serve` runs the service; `upload` and `ping` are
//! its command-line client. Everything substantial lives in the library.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use uploader::cli::{self, Target};
use uploader::client::{Flavor, Protocol, Transport};
use uploader::config::{Config, StorageKind};
use uploader::storage::{OssCredentials, Storage};

/// Exit status for an unusable configuration (BSD `EX_CONFIG`-style 64,
/// `EX_USAGE`), before any port is bound.
const EXIT_CONFIG: u8 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "uploader",
    version,
    about = "Thrift image-upload service and client"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service.
    Serve {
        /// The TOML config file (see config/uploader.toml).
        #[arg(long)]
        config: PathBuf,
    },
    /// Upload image files; prints one URL per stored file.
    Upload {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        target: TargetArgs,
        /// Declare the content type (the server checks it against the bytes);
        /// by default the server detects it.
        #[arg(long)]
        content_type: Option<String>,
    },
    /// Check that the service answers; prints "pong".
    Ping {
        #[command(flatten)]
        target: TargetArgs,
    },
}

#[derive(Debug, Args)]
struct TargetArgs {
    /// HOST:PORT of the uploader or of probegate in front of it.
    #[arg(long, default_value = "127.0.0.1:9090")]
    server: String,
    #[arg(long, default_value = "binary")]
    protocol: Protocol,
    #[arg(long, default_value = "framed")]
    transport: Transport,
    /// Bound on connecting and on each call, e.g. "30s"; "0s" means none.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

impl TargetArgs {
    fn target(&self) -> Target {
        Target {
            server: self.server.clone(),
            flavor: Flavor::new(self.transport, self.protocol),
            timeout: self.timeout,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (out, err) = (&mut std::io::stdout(), &mut std::io::stderr());
    match cli.command {
        Command::Serve { config } => serve(&config),
        Command::Upload {
            files,
            target,
            content_type,
        } => exit(cli::upload(
            &target.target(),
            &files,
            content_type.as_deref(),
            out,
            err,
        )),
        Command::Ping { target } => exit(cli::ping(&target.target(), out, err)),
    }
}

fn exit(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn serve(path: &std::path::Path) -> ExitCode {
    // Before any worker allocates (see uploader::malloc).
    let buffers_kept = uploader::malloc::keep_large_buffers_in_heap();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    if buffers_kept {
        tracing::debug!("allocator: {}", uploader::malloc::describe());
    } else {
        tracing::warn!("allocator: the C library refused fixed malloc thresholds, so large upload buffers may be mapped and faulted in anew for each call; uploads cost more CPU, nothing else changes");
    }

    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("uploader: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let credentials = match config.storage.kind {
        StorageKind::Oss => match OssCredentials::from_env() {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("uploader: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
        StorageKind::Fs => None,
    };
    let mut storage = match Storage::new(&config.storage, credentials) {
        Ok(storage) => storage,
        Err(e) => {
            eprintln!("uploader: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("uploader-io")
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("uploader: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let shutdown =
            shutdown_signal().map_err(|e| format!("cannot install signal handlers: {e}"))?;
        let thrift = std::net::TcpListener::bind(config.server.listen.0).map_err(|e| {
            format!(
                "cannot listen on server.listen = {}: {e}",
                config.server.listen.0
            )
        })?;
        let admin = tokio::net::TcpListener::bind(config.admin.listen.0)
            .await
            .map_err(|e| {
                format!(
                    "cannot listen on admin.listen = {}: {e}",
                    config.admin.listen.0
                )
            })?;
        let thrift_addr = thrift.local_addr().map_err(|e| e.to_string())?;
        let admin_addr = admin.local_addr().map_err(|e| e.to_string())?;
        storage.use_admin_addr(admin_addr);

        let mut stdout = std::io::stdout().lock();
        writeln!(
            stdout,
            "uploader listening thrift={thrift_addr} admin={admin_addr}"
        )
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("cannot write to stdout: {e}"))?;
        drop(stdout);

        uploader::server::run(&config, storage, thrift, admin, shutdown)
            .await
            .map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => {
            tracing::info!("stopped");
            // Workers blocked in reads are abandoned rather than joined: the
            // process ends here, and so do they.
            std::process::exit(0);
        }
        Err(e) => {
            eprintln!("uploader: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Installs the SIGTERM and SIGINT handlers now (so that a signal arriving
/// any time after this returns stops the server cleanly, including right
/// after the listening line) and returns a future completing on either.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
            _ = interrupt.recv() => tracing::info!("SIGINT received"),
        }
    })
}
