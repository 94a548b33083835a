//! Developer tasks for the workspace, run through cargo aliases.
//!
//! `cargo stack` (an alias for `cargo run -p xtask -- stack`) runs the whole
//! local stack in the foreground: the `uploader` backend on local disk and
//! `probegate` in front of it, with the configs in `config/`. It exists so
//! that a new user needs one command and nothing but the Rust toolchain; it
//! builds both binaries, starts them, prints where everything listens and how
//! to try it, and stops both when either exits, on Ctrl-C, and when the
//! stack itself is told to stop (SIGTERM, SIGINT or SIGHUP sent to its
//! process alone, as a supervisor or `kill PID` does). Killed outright
//! (SIGKILL, which no handler sees), it still takes its servers with it:
//! the kernel sends each one SIGTERM (see [`tied_child`]).

#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tied_child::tied_to_this_process;

/// How long a freshly started server may take to print its `listening` line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server gets to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("stack") => stack(&args[1..]),
        _ => {
            eprintln!("usage: cargo stack [--release]   (cargo run -p xtask -- stack)");
            return ExitCode::from(64);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A server started by the stack, with the addresses it printed.
struct Server {
    name: &'static str,
    child: Child,
    listening: String,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn stack(args: &[String]) -> Result<()> {
    let release = args.iter().any(|a| a == "--release");
    if let Some(unknown) = args.iter().find(|a| *a != "--release") {
        bail!("unknown argument {unknown:?}; the only option is --release");
    }
    let root = workspace_root();
    let mut build = nested_cargo::command();
    build
        .current_dir(&root)
        .args(["build", "-p", "uploader", "-p", "probegate"]);
    if release {
        build.arg("--release");
    }
    let status = build.status().context("running cargo build")?;
    if !status.success() {
        bail!("cargo build failed ({status})");
    }
    let bin_dir = root
        .join("target")
        .join(if release { "release" } else { "debug" });
    // Before any server starts, so that no signal can leave one orphaned.
    let stop = stop_on_signals()?;

    let uploader = start(
        "uploader",
        Command::new(bin_dir.join("uploader"))
            .current_dir(&root)
            .args(["serve", "--config", "config/uploader.toml"]),
        &stop,
    )?;
    let mut servers = vec![uploader];
    match start(
        "probegate",
        Command::new(bin_dir.join("probegate"))
            .current_dir(&root)
            .args(["--config", "config/probegate.local.toml"]),
        &stop,
    ) {
        Ok(proxy) => servers.push(proxy),
        Err(e) => {
            stop_all(&mut servers);
            return Err(e);
        }
    }
    print_banner(&servers);
    let exited = wait_for_first_exit(&mut servers, &stop);
    stop_all(&mut servers);
    match exited {
        // Ctrl-C reaches the whole foreground process group: both servers
        // exit 0 on SIGINT, and that is a clean stop.
        Exit::Server(name, status) if !status.success() => bail!("{name} exited with {status}"),
        _ => Ok(()),
    }
}

/// A flag raised by SIGTERM, SIGINT or SIGHUP, which then no longer end
/// this process at once: it stops the servers first. A second such signal
/// ends it at once (exit status 128 + the signal), for a stop that hangs.
fn stop_on_signals() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ] {
        // In this order: the first signal finds the flag down and only
        // raises it; the second finds it raised and exits.
        signal_hook::flag::register_conditional_shutdown(signal, 128 + signal, Arc::clone(&stop))
            .and_then(|_| signal_hook::flag::register(signal, Arc::clone(&stop)))
            .with_context(|| format!("installing a handler for signal {signal}"))?;
    }
    Ok(stop)
}

/// Why the stack stops.
#[derive(Debug)]
enum Exit {
    /// This server exited first, so.
    Server(&'static str, std::process::ExitStatus),
    /// The stack was told to stop.
    Signal,
    /// A server's state could not be read.
    Unknown,
}

/// Spawns a server and waits (bounded, and no longer once `stop` is
/// raised) for its `listening` line on stdout; its logs stay on the
/// terminal through the inherited stderr.
fn start(name: &'static str, command: &mut Command, stop: &AtomicBool) -> Result<Server> {
    let mut child = tied_to_this_process(command)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {name} ({command:?})"))?;
    let stdout = child.stdout.take().context("child stdout")?;
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains(" listening ") {
                let _ = tx.send(line);
            } else {
                println!("{line}");
            }
        }
    });
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(listening) => {
                return Ok(Server {
                    name,
                    child,
                    listening,
                })
            }
            Err(mpsc::RecvTimeoutError::Timeout)
                if Instant::now() < deadline && !stop.load(Ordering::Relaxed) => {}
            Err(e) => {
                let _ = child.kill();
                let status = child.wait().ok();
                if stop.load(Ordering::Relaxed) {
                    bail!("stopped by a signal while {name} was starting");
                }
                match (e, status) {
                    (mpsc::RecvTimeoutError::Disconnected, Some(status)) => bail!(
                        "{name} exited ({status}) before reporting its listening addresses; see its log above"
                    ),
                    _ => bail!(
                        "{name} did not report its listening addresses within {STARTUP_TIMEOUT:?}; see its log above"
                    ),
                }
            }
        }
    }
}

fn print_banner(servers: &[Server]) {
    println!();
    for server in servers {
        println!("  {}", server.listening);
    }
    let public = servers
        .iter()
        .find_map(|s| field(&s.listening, "public="))
        .unwrap_or("127.0.0.1:9455");
    let proxy_admin = servers
        .iter()
        .find(|s| s.name == "probegate")
        .and_then(|s| field(&s.listening, "admin="))
        .unwrap_or("127.0.0.1:9456");
    println!();
    println!("  upload:  cargo run -q -p uploader -- upload photo.jpg --server {public}");
    println!("  health:  curl -I http://{public}/health");
    println!("  metrics: curl http://{proxy_admin}/metrics");
    println!("  Ctrl-C stops both.");
    println!();
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace().find_map(|w| w.strip_prefix(key))
}

/// Blocks until one of the servers exits or `stop` is raised.
fn wait_for_first_exit(servers: &mut [Server], stop: &AtomicBool) -> Exit {
    loop {
        for server in servers.iter_mut() {
            match server.child.try_wait() {
                Ok(Some(status)) => return Exit::Server(server.name, status),
                Ok(None) => {}
                Err(_) => return Exit::Unknown,
            }
        }
        if stop.load(Ordering::Relaxed) {
            return Exit::Signal;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Asks every server still running to stop (SIGTERM), and kills those that
/// do not exit within `STOP_TIMEOUT`.
fn stop_all(servers: &mut [Server]) {
    for server in servers.iter_mut() {
        if matches!(server.child.try_wait(), Ok(None)) {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_child(&server.child),
                rustix::process::Signal::TERM,
            );
        }
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    for server in servers.iter_mut() {
        if !gone_by(&mut server.child, deadline) {
            eprintln!(
                "xtask: {} did not stop in {STOP_TIMEOUT:?}; killing it",
                server.name
            );
            let _ = server.child.kill();
            let _ = server.child.wait();
        }
    }
}

/// Waits until `child` has exited (or can no longer be asked), at most
/// until `deadline`; says whether it is gone.
fn gone_by(child: &mut Child, deadline: Instant) -> bool {
    while matches!(child.try_wait(), Ok(None)) {
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sleeper(name: &'static str) -> Server {
        Server {
            name,
            child: Command::new("sleep").arg("30").spawn().expect("sleep"),
            listening: String::new(),
        }
    }

    #[test]
    fn a_signal_to_the_stack_alone_stops_every_server() {
        let stop = stop_on_signals().expect("handlers");
        let mut servers = vec![sleeper("uploader"), sleeper("probegate")];
        // What `kill PID` does to the stack: its servers do not get it.
        signal_hook::low_level::raise(signal_hook::consts::SIGTERM).expect("raise");
        let exit = wait_for_first_exit(&mut servers, &stop);
        assert!(matches!(exit, Exit::Signal), "{exit:?}");
        stop_all(&mut servers);
        for server in &mut servers {
            let status = server.child.try_wait().expect("wait");
            assert!(status.is_some(), "{} still running", server.name);
        }
    }

    /// Starts `command` as the uploader, which must fail at once (well
    /// before the startup timeout) with an error containing `expected`.
    fn start_fails_at_once(command: &mut Command, stop: bool, expected: &str) {
        let started = Instant::now();
        let err = start("uploader", command, &AtomicBool::new(stop))
            .err()
            .expect("the server is not started");
        assert!(err.to_string().contains(expected), "{err}");
        assert!(
            started.elapsed() < STARTUP_TIMEOUT,
            "waited {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_signal_while_a_server_starts_stops_it_without_waiting_out_the_startup_timeout() {
        // A server that never listens, with the stop flag raised.
        start_fails_at_once(
            Command::new("sleep").arg("30"),
            true,
            "stopped by a signal while uploader was starting",
        );
    }

    #[test]
    fn a_server_that_exits_while_starting_is_reported_with_its_status_at_once() {
        start_fails_at_once(
            Command::new("sh").args(["-c", "exit 3"]),
            false,
            "uploader exited (exit status: 3) before reporting",
        );
    }
}
