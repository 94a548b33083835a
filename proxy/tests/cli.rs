//! The `probegate` binary's command line: config errors exit 64 before any
//! port is bound, `check-config` validates, and a valid config prints the
//! listening line. (This file also makes `cargo test` build the binary that
//! the end-to-end tests in `tests/` run.)

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

fn probegate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_probegate"))
}

fn write_config(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("probegate-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("probegate.toml");
    let mut file = std::fs::File::create(&path).expect("create config");
    file.write_all(text.as_bytes()).expect("write config");
    path
}

const BACKEND: &str = "[[backends]]\naddress = \"127.0.0.1:9\"\n";

#[test]
fn bad_configs_exit_64_naming_key_and_value() {
    let cases = [
        (
            "unknown_key",
            format!("{BACKEND}[listen]\npublik = \"x\"\n"),
            vec!["publik"],
        ),
        (
            "bad_duration",
            format!("{BACKEND}[timeouts]\nidle = \"soon\"\n"),
            vec!["idle", "soon"],
        ),
        (
            "bad_address",
            format!("{BACKEND}[listen]\npublic = \"here:there\"\n"),
            vec!["public", "here:there"],
        ),
        (
            "bad_cidr",
            format!("{BACKEND}[clients]\ndeny = [\"10.0.0.0/33\"]\n"),
            vec!["deny", "10.0.0.0/33"],
        ),
        (
            "zero_slots",
            "[[backends]]\naddress = \"127.0.0.1:9\"\nmax_connections = 0\n".to_string(),
            vec!["backends[0].max_connections"],
        ),
        (
            "no_backend",
            "[listen]\npublic = \"127.0.0.1:0\"\n".to_string(),
            vec!["backends"],
        ),
        (
            "bad_pipes",
            format!("{BACKEND}[forwarding]\npipe_large_calls = \"no\"\n"),
            vec!["pipe_large_calls", "no"],
        ),
        (
            "zero_threads",
            format!("{BACKEND}[runtime]\nthreads = 0\n"),
            vec!["runtime.threads", "= 0", "\"auto\""],
        ),
        (
            "too_many_threads",
            format!("{BACKEND}[runtime]\nthreads = 5000\n"),
            vec!["runtime.threads", "= 5000", "1024"],
        ),
        (
            "fraction_threads",
            format!("{BACKEND}[runtime]\nthreads = 1.5\n"),
            vec!["runtime.threads", "1.5", "\"auto\""],
        ),
        (
            "word_threads",
            format!("{BACKEND}[runtime]\nthreads = \"many\"\n"),
            vec!["runtime.threads", "\"many\"", "\"auto\""],
        ),
    ];
    for (name, text, needles) in cases {
        let path = write_config(name, &text);
        for args in [
            vec!["--config".to_string(), path.display().to_string()],
            vec!["check-config".to_string(), path.display().to_string()],
        ] {
            let output = probegate().args(&args).output().expect("runs");
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(64), "{name} {args:?}: {stderr}");
            assert!(
                output.stdout.is_empty(),
                "{name}: nothing bound, nothing printed"
            );
            for needle in &needles {
                assert!(
                    stderr.contains(needle),
                    "{name}: {stderr:?} should name {needle:?}"
                );
            }
        }
    }
}

/// `probegate check-config path`, which must succeed: its stdout.
fn checked_ok(path: &std::path::Path) -> String {
    let output = probegate()
        .arg("check-config")
        .arg(path)
        .output()
        .expect("runs");
    assert!(
        output.status.success(),
        "{}: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn check_config_accepts_the_shipped_configs() {
    for file in ["probegate.toml", "probegate.local.toml"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../config")
            .join(file);
        let stdout = checked_ok(&path);
        assert!(stdout.starts_with("ok:"), "{file}: {stdout}");
        assert!(
            stdout.contains(
                "forwarding by request (pipelining ping up to 32 per connection, lingering 1ms)"
            ),
            "{file}: {stdout}"
        );
    }
}

#[test]
fn check_config_says_when_large_calls_go_through_memory() {
    let path = write_config(
        "no_pipes",
        &format!("{BACKEND}[forwarding]\npipe_large_calls = false\n"),
    );
    let stdout = checked_ok(&path);
    assert!(
        stdout.contains("large calls through memory (pipe_large_calls = false)"),
        "{stdout}"
    );
}

#[test]
fn check_config_says_which_runtime_the_threads_give() {
    for (threads, expected) in [
        (
            "1",
            "runtime 1 thread (current-thread scheduler), as runtime.threads says",
        ),
        (
            "3",
            "runtime 3 threads (multi-thread scheduler), as runtime.threads says",
        ),
    ] {
        let path = write_config(
            &format!("threads_{threads}"),
            &format!("{BACKEND}[runtime]\nthreads = {threads}\n"),
        );
        let stdout = checked_ok(&path);
        assert!(stdout.contains(expected), "threads = {threads}: {stdout}");
    }
    // "auto" counts the CPUs the process may run on: pinned to one, it
    // runs on one thread.
    let path = write_config(
        "threads_auto",
        &format!("{BACKEND}[runtime]\nthreads = \"auto\"\n"),
    );
    let pinned = Command::new("taskset")
        .args(["-c", &first_allowed_cpu()])
        .arg(env!("CARGO_BIN_EXE_probegate"))
        .arg("check-config")
        .arg(&path)
        .output()
        .expect("taskset (util-linux) runs");
    let stdout = String::from_utf8_lossy(&pinned.stdout);
    assert!(
        pinned.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&pinned.stderr)
    );
    assert!(
        stdout.contains("runtime 1 thread (current-thread scheduler), one per available CPU"),
        "{stdout}"
    );
}

/// The first CPU this process may run on (`Cpus_allowed_list` in
/// `/proc/self/status`, e.g. `0-1` or `2,5`), to pin a child to one CPU
/// that the test is allowed to use.
fn first_allowed_cpu() -> String {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let list = status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
        .expect("Cpus_allowed_list in /proc/self/status");
    list.trim()
        .split([',', '-'])
        .next()
        .expect("at least one allowed CPU")
        .to_string()
}

/// A probegate child that is killed if a test fails before it exits, so a
/// failed assertion never leaves a server running.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl std::ops::Deref for Running {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

/// Starts probegate with a config listening on port 0 and the given
/// `[shutdown]` grace; returns the child (stderr piped) and its listening line.
fn start_serving(name: &str, drain_grace: &str) -> (Running, String) {
    let path = write_config(
        name,
        &format!("[listen]\npublic = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n{BACKEND}[shutdown]\ndrain_grace = \"{drain_grace}\"\ntimeout = \"1s\"\n"),
    );
    let mut child = Running(
        probegate()
            .arg("--config")
            .arg(&path)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawns"),
    );
    // Read on a thread, so a probegate that never prints its line fails the
    // test after a bound instead of hanging it (the guard then kills it).
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("probegate prints its listening line within 10 s");
    (child, line)
}

fn signal(child: &std::process::Child, name: &str) {
    let status = Command::new("kill")
        .args([name, &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {name}");
}

/// Waits (bounded) for the child to exit and asserts it exits 0.
fn assert_exits_zero_within(child: &mut std::process::Child, limit: Duration, what: &str) {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert_eq!(status.code(), Some(0), "{what}: exit status");
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: no exit within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn valid_config_prints_the_listening_line_and_stops_on_sigterm() {
    let (mut child, line) = start_serving("valid", "0s");
    assert!(
        line.starts_with("probegate listening public=127.0.0.1:"),
        "{line:?}"
    );
    assert!(line.contains(" admin=127.0.0.1:"), "{line:?}");
    signal(&child, "-TERM");
    assert_exits_zero_within(&mut child, Duration::from_secs(10), "SIGTERM");
}

#[test]
fn a_second_signal_ends_the_drain_grace() {
    // A 60 s grace: without the second signal this test would time out.
    let (mut child, line) = start_serving("second_signal", "60s");
    assert!(line.starts_with("probegate listening"), "{line:?}");
    let stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if line.contains("draining") {
                let _ = tx.send(());
            }
        }
    });
    signal(&child, "-TERM");
    rx.recv_timeout(Duration::from_secs(10))
        .expect("probegate logs that it is draining");
    signal(&child, "-INT");
    assert_exits_zero_within(
        &mut child,
        Duration::from_secs(10),
        "a second signal during a 60 s drain grace",
    );
}
