//! The `uploader` binary as an operator meets it: config errors exit 64
//! naming the key and the value; a good config prints the listening line;
//! the client commands print URLs and name failures; SIGTERM exits 0.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_uploader");
const WAIT: Duration = Duration::from_secs(20);

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "uploader-cli-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }

    fn file(&self, name: &str, contents: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).expect("write scratch file");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the binary to completion with a bound; kills it when the bound passes.
fn run(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_remove("OSS_ACCESS_KEY_ID")
        .env_remove("OSS_ACCESS_KEY_SECRET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("spawn uploader");
    let deadline = Instant::now() + WAIT;
    while child.try_wait().expect("poll child").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("uploader {args:?} did not exit within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

#[test]
fn bad_configs_exit_64_naming_key_and_value() {
    let scratch = Scratch::new();
    let cases: &[(&str, &[&str])] = &[
        (
            "[server]\nlisten = \"127.0.0.1:0\"\nworkerz = 4\n",
            &["server.workerz", "4"],
        ),
        (
            "[server]\nread_timeout = \"5 parsecs\"\n",
            &["server.read_timeout", "5 parsecs"],
        ),
        (
            "[server]\nlisten = \"localhost-ish:99999\"\n",
            &["server.listen", "localhost-ish:99999"],
        ),
        (
            "[admin]\nlisten = \"300.1.1.1:80\"\n",
            &["admin.listen", "300.1.1.1:80"],
        ),
        (
            "[admin]\nlisten = \"127.0.0.1\"\n",
            &["admin.listen", "127.0.0.1"],
        ),
        ("[server]\nworkers = 0\n", &["server.workers", "0"]),
        (
            "[storage]\nkind = \"oss\"\nendpoint = \"http://127.0.0.1:9\"\nbucket = \"pics\"\n",
            &["OSS_ACCESS_KEY_ID"],
        ),
    ];
    for (i, (text, needles)) in cases.iter().enumerate() {
        let config = scratch.file(&format!("bad{i}.toml"), text.as_bytes());
        let out = run(&["serve", "--config", &config.to_string_lossy()], &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{text:?}: {stderr}");
        assert!(out.stdout.is_empty(), "nothing may be printed as listening");
        for needle in *needles {
            assert!(
                stderr.contains(needle),
                "{text:?}: {stderr:?} should name {needle:?}"
            );
        }
    }
}

#[test]
fn missing_config_file_is_a_config_error() {
    let out = run(&["serve", "--config", "/nonexistent/uploader.toml"], &[]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/uploader.toml"));
}

/// The running server, killed on drop if the test did not stop it.
struct Serving {
    child: Child,
    thrift: String,
    admin: String,
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(config: &Path) -> Serving {
    let mut child = Command::new(BIN)
        .args(["serve", "--config", &config.to_string_lossy()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = match rx.recv_timeout(WAIT) {
        Ok(line) => line,
        Err(_) => {
            let _ = child.kill();
            panic!("no listening line within {WAIT:?}");
        }
    };
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .unwrap_or_else(|| panic!("{key} missing from {line:?}"))
            .to_string()
    };
    assert!(
        line.starts_with("uploader listening thrift=127.0.0.1:"),
        "{line:?}"
    );
    let (thrift, admin) = (field("thrift="), field("admin="));
    assert!(
        !thrift.ends_with(":0") && !admin.ends_with(":0"),
        "{line:?}"
    );
    Serving {
        child,
        thrift,
        admin,
    }
}

#[test]
fn serves_answers_the_cli_and_stops_on_sigterm() {
    let scratch = Scratch::new();
    let root = scratch.0.join("data");
    let config = scratch.file(
        "ok.toml",
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[storage]\nroot = {:?}\n",
            root.display().to_string()
        )
        .as_bytes(),
    );
    let mut server = serve(&config);

    let ping = run(&["ping", "--server", &server.thrift], &[]);
    assert_eq!(ping.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&ping.stdout), "pong\n");

    let gif = scratch.file(
        "a.gif",
        b"GIF89a\x01\0\x01\0\x80\0\0\0\0\0\xff\xff\xff,\0\0\0\0\x01\0\x01\0\0\x02\x02D\x01\0;",
    );
    let text = scratch.file("notes.txt", b"just some words");
    let up = run(
        &[
            "upload",
            &gif.to_string_lossy(),
            &text.to_string_lossy(),
            "--server",
            &server.thrift,
        ],
        &[],
    );
    let stdout = String::from_utf8_lossy(&up.stdout);
    let stderr = String::from_utf8_lossy(&up.stderr);
    assert_eq!(up.status.code(), Some(1), "one file failed: {stderr}");
    let urls: Vec<&str> = stdout.lines().collect();
    assert_eq!(urls.len(), 1, "{stdout}");
    assert!(
        urls[0].starts_with(&format!("http://{}/objects/images/", server.admin))
            && urls[0].ends_with(".gif"),
        "{stdout}"
    );
    assert!(
        stderr.contains("notes.txt") && stderr.contains("ERROR_INVALID_IMAGE"),
        "{stderr}"
    );
    // The stored object is the file, byte for byte.
    let key = urls[0].split("/objects/").nth(1).expect("key");
    assert_eq!(
        std::fs::read(root.join(key)).expect("stored"),
        std::fs::read(&gif).expect("gif")
    );

    let declared = run(
        &[
            "upload",
            &gif.to_string_lossy(),
            "--server",
            &server.thrift,
            "--content-type",
            "image/png",
        ],
        &[],
    );
    assert_eq!(declared.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&declared.stderr).contains("ERROR_CONTENT_TYPE_MISMATCH"));

    let exit = signal_and_wait(&mut server, "-TERM");
    assert_eq!(exit.code(), Some(0));
}

#[test]
fn unreachable_server_is_a_clear_failure() {
    // A port that was just free: bind, note it, release it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let out = run(
        &[
            "ping",
            "--server",
            &format!("127.0.0.1:{port}"),
            "--timeout",
            "2s",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));
}

/// Sends `signal` with `kill` and waits (bounded) for the exit status.
fn signal_and_wait(server: &mut Serving, signal: &str) -> std::process::ExitStatus {
    let sent = Command::new("kill")
        .args([signal, &server.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(sent.success());
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(exit) = server.child.try_wait().expect("poll") {
            return exit;
        }
        assert!(
            Instant::now() < deadline,
            "no exit within {WAIT:?} of {signal}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
