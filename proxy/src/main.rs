//! The `probegate` binary: arguments, logging, config, bind, run.
//!
//! Config problems exit with status 64 before any port is bound; the line
//! `probegate listening public=.. admin=..` on stdout tells scripts and tests
//! where it listens (port 0 in the config picks a free port).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use probegate::config::{Config, ForwardingMode, Threads};
use probegate::listeners::public::bind_public;
use probegate::runtime::{self, Scheduler};
use probegate::server;
use probegate::shutdown::Signals;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// Exit status for configuration errors (EX_CONFIG would be 78; the project
/// contract is EX_USAGE = 64 for every bad config).
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    name = "probegate",
    version,
    about = "Health-check-aware edge proxy for Thrift services"
)]
struct Args {
    /// The TOML config file (see config/probegate.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Parse and validate a config file, print a summary, and exit.
    CheckConfig {
        /// The TOML config file.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    match args.command {
        Some(Command::CheckConfig { file }) => check_config(&file),
        None => match args.config {
            Some(file) => serve(&file),
            None => {
                eprintln!("probegate: --config FILE is required (or: probegate check-config FILE)");
                ExitCode::from(EXIT_CONFIG)
            }
        },
    }
}

fn load(file: &Path) -> Result<Config, ExitCode> {
    Config::load(file).map_err(|e| {
        eprintln!("probegate: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn check_config(file: &Path) -> ExitCode {
    let config = match load(file) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let forwarding = &config.forwarding;
    let mode = match forwarding.mode {
        ForwardingMode::Connection => "connection".to_string(),
        ForwardingMode::Request if forwarding.pipelining() => {
            format!(
                "request (pipelining {} up to {} per connection, lingering {})",
                forwarding.pipeline_methods.join(", "),
                forwarding.pipeline_depth,
                humantime::format_duration(forwarding.pipeline_linger.get())
            )
        }
        ForwardingMode::Request => "request".to_string(),
    };
    let mode = if forwarding.pipe_large_calls || forwarding.mode == ForwardingMode::Connection {
        mode
    } else {
        format!("{mode}, large calls through memory (pipe_large_calls = false)")
    };
    let slots: usize = config.backends.iter().map(|b| b.max_connections).sum();
    println!(
        "ok: {} backend(s) with {slots} slot(s), {} probe source(s), forwarding by {mode}, public {}, admin {}, runtime {}",
        config.backends.len(),
        config.probes.sources.len(),
        config.listen.public,
        config.listen.admin,
        runtime_summary(config.runtime.threads),
    );
    ExitCode::SUCCESS
}

/// What `runtime.threads` gives on this machine, and why.
fn runtime_summary(threads: Threads) -> String {
    let scheduler = Scheduler::for_threads(threads, runtime::available_cpus);
    match threads {
        Threads::Auto => format!("{scheduler}, one per available CPU"),
        Threads::Count(_) => format!("{scheduler}, as runtime.threads says"),
    }
}

fn serve(file: &Path) -> ExitCode {
    let config = match load(file) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let (runtime, scheduler) = match runtime::build(config.runtime.threads) {
        Ok(built) => built,
        Err(e) => {
            eprintln!("probegate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(runtime = %scheduler, "runtime started");
    runtime.block_on(async move {
        // Before the listening line, so a signal right after it is handled.
        let mut signals = match Signals::install() {
            Ok(signals) => signals,
            Err(e) => {
                eprintln!("probegate: cannot install signal handlers: {e}");
                return ExitCode::FAILURE;
            }
        };
        let public = match bind_public(config.listen.public, config.listen.backlog) {
            Ok(l) => l,
            Err(e) => {
                eprintln!(
                    "probegate: cannot bind listen.public = {}: {e}",
                    config.listen.public
                );
                return ExitCode::FAILURE;
            }
        };
        let admin = match TcpListener::bind(config.listen.admin).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!(
                    "probegate: cannot bind listen.admin = {}: {e}",
                    config.listen.admin
                );
                return ExitCode::FAILURE;
            }
        };
        let (Ok(public_addr), Ok(admin_addr)) = (public.local_addr(), admin.local_addr()) else {
            eprintln!("probegate: bound sockets have no local address");
            return ExitCode::FAILURE;
        };
        let mut stdout = std::io::stdout();
        let _ = writeln!(
            stdout,
            "probegate listening public={public_addr} admin={admin_addr}"
        );
        let _ = stdout.flush();
        let (stop_tx, stop_rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            loop {
                let signal = signals.recv().await;
                if stop_tx.send(signal).await.is_err() {
                    return;
                }
            }
        });
        match server::run(config, public, admin, stop_rx).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("probegate: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
