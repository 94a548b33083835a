//! probegate's connection limits and its config checking, end to end
//! (issue 3).
//!
//! `limits.max_connections_per_source`: one address opening too many
//! connections has the extra ones closed and counted while another address
//! is still served. `limits.max_client_connections`: past it new
//! connections are refused (accepted and closed at once) and counted, and
//! served again once a place frees up. `probegate check-config` and
//! `probegate --config` on good and bad files: "ok ..." and exit 0, or exit
//! 64 naming the key and the value before anything is bound. And the limit
//! no config sets: out of file descriptors, probegate pauses accepting
//! instead of spinning, and serves again once descriptors free up.

use std::io::{ErrorKind, Read};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::net::connect_from;
use e2e::process::spin_for_ticks;
use e2e::{
    metric, probegate_in_front, wait_until, Metrics, Probegate, Protocol, TempDir, ThriftClient,
    Transport,
};
use thrift::protocol::{TBinaryInputProtocol, TBinaryOutputProtocol};
use thrift::transport::{TFramedReadTransport, TFramedWriteTransport};
use uploader_idl::{TUploaderSyncClient, UploaderSyncClient};

/// Bound on anything that should happen promptly.
const PROMPT: Duration = Duration::from_secs(15);
/// Exit status of every config error.
const EXIT_CONFIG: i32 = 64;

type RawClient = UploaderSyncClient<
    TBinaryInputProtocol<TFramedReadTransport<TcpStream>>,
    TBinaryOutputProtocol<TFramedWriteTransport<TcpStream>>,
>;

/// The generated Rust client (framed, strict binary) connected from `source`.
fn client_from(source: &str, target: SocketAddr) -> RawClient {
    try_client_from(source, target).expect("connect")
}

/// Like [`client_from`]; a connection the server resets at once may already
/// fail here.
fn try_client_from(source: &str, target: SocketAddr) -> std::io::Result<RawClient> {
    let ip: IpAddr = source.parse().expect("test address");
    let stream = connect_from(ip, target, PROMPT)?;
    stream.set_read_timeout(Some(PROMPT))?;
    stream.set_write_timeout(Some(PROMPT))?;
    let read = stream.try_clone()?;
    Ok(UploaderSyncClient::new(
        TBinaryInputProtocol::new(TFramedReadTransport::new(read), true),
        TBinaryOutputProtocol::new(TFramedWriteTransport::new(stream), true),
    ))
}

fn rejected(admin: SocketAddr, reason: &str) -> f64 {
    metric(
        admin,
        &format!("probegate_rejected_total{{reason=\"{reason}\"}}"),
    )
}

fn active_thrift(admin: SocketAddr) -> f64 {
    metric(admin, "probegate_connections_active{class=\"thrift\"}")
}

/// Expects a connection to be closed by the server promptly, without a
/// byte. A reset that arrives while connecting already counts.
fn expect_closed_at_once(connected: std::io::Result<TcpStream>, what: &str) {
    let mut stream = match connected {
        Ok(stream) => stream,
        Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
        Err(e) => panic!("{what}: connect failed: {e}"),
    };
    let started = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => {}
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
            ) => {}
        Ok(n) => panic!("{what}: the server sent {:?}", &buf[..n]),
        Err(e) => panic!("{what}: not closed within 5s ({e})"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{what}: closed only after {:?}",
        started.elapsed()
    );
}

#[test]
fn per_source_limit_closes_extra_connections_and_serves_other_sources() {
    const LIMIT: usize = 3;
    let (_backend, proxy) = probegate_in_front(
        |config| {
            config
                .set("limits.max_connections_per_source", LIMIT as i64)
                .set("timeouts.first_byte", "30s")
        },
        PROMPT,
    );
    let (public, admin) = (proxy.public_addr(), proxy.admin_addr());

    // 127.0.0.2 uses its whole allowance with live Thrift clients.
    let mut held: Vec<RawClient> = (0..LIMIT)
        .map(|_| {
            let mut c = client_from("127.0.0.2", public);
            assert_eq!(c.ping().expect("ping within the limit"), "pong");
            c
        })
        .collect();
    wait_until(PROMPT, "the held clients to be live", || {
        active_thrift(admin) == LIMIT as f64
    });

    // Its next connection is closed and counted...
    let extra = connect_from("127.0.0.2".parse().expect("ip"), public, PROMPT);
    expect_closed_at_once(extra, "a connection over the per-source limit");
    wait_until(PROMPT, "per_source_limit to be counted", || {
        rejected(admin, "per_source_limit") == 1.0
    });
    let over = try_client_from("127.0.0.2", public).map_err(|e| e.to_string());
    let call = over.and_then(|mut c| c.ping().map_err(|e| e.to_string()));
    assert!(
        call.is_err(),
        "a call over the per-source limit was served: {call:?}"
    );
    wait_until(PROMPT, "the second refusal to be counted", || {
        rejected(admin, "per_source_limit") == 2.0
    });

    // ...while another source is served, and the held clients still work.
    let mut other = client_from("127.0.0.3", public);
    assert_eq!(other.ping().expect("another source is served"), "pong");
    for c in &mut held {
        assert_eq!(c.ping().expect("held client"), "pong");
    }

    // A freed place can be used again.
    held.pop();
    wait_until(PROMPT, "the closed client to be gone", || {
        active_thrift(admin) == LIMIT as f64
    });
    let mut again = client_from("127.0.0.2", public);
    assert_eq!(again.ping().expect("served once a place is free"), "pong");
    assert_eq!(rejected(admin, "per_source_limit"), 2.0);
}

#[test]
fn past_max_client_connections_new_connections_are_refused_and_counted() {
    const MAX: usize = 3;
    let (_backend, proxy) = probegate_in_front(
        |config| config.set("limits.max_client_connections", MAX as i64),
        PROMPT,
    );
    let (public, admin) = (proxy.public_addr(), proxy.admin_addr());
    let client = || {
        ThriftClient::connect_with(public, Transport::Framed, Protocol::Binary, PROMPT)
            .expect("connect")
    };

    let mut held: Vec<ThriftClient> = (0..MAX)
        .map(|_| {
            let mut c = client();
            assert_eq!(c.ping().expect("ping within the limit"), "pong");
            c
        })
        .collect();
    wait_until(PROMPT, "the held clients to be live", || {
        active_thrift(admin) == MAX as f64
    });

    for i in 1..=2 {
        expect_closed_at_once(
            TcpStream::connect(public),
            "a connection past max_client_connections",
        );
        wait_until(PROMPT, "max_client_connections to be counted", || {
            rejected(admin, "max_client_connections") == f64::from(i)
        });
    }
    // The reset may already fail the connect, or else the call.
    let call = ThriftClient::connect_with(public, Transport::Framed, Protocol::Binary, PROMPT)
        .and_then(|mut c| c.ping());
    assert!(call.is_err(), "a call past the limit was served: {call:?}");
    wait_until(PROMPT, "the refused call to be counted", || {
        rejected(admin, "max_client_connections") == 3.0
    });
    let m = Metrics::scrape(admin);
    assert_eq!(
        m.get("probegate_connections_total{class=\"thrift\"}"),
        MAX as f64
    );

    for c in &mut held {
        assert_eq!(c.ping().expect("held clients are unaffected"), "pong");
    }
    held.pop();
    wait_until(PROMPT, "a place to be freed", || {
        active_thrift(admin) == (MAX - 1) as f64
    });
    assert_eq!(client().ping().expect("served again"), "pong");
}

#[test]
fn out_of_descriptors_accepting_pauses_instead_of_spinning_and_recovers() {
    let (backend, proxy) = probegate_in_front(
        |config| {
            config
                .set("limits.max_connections_per_source", 1000)
                .set("timeouts.first_byte", "30s")
        },
        PROMPT,
    );
    let (public, pid) = (proxy.public_addr(), proxy.pid());

    // A few descriptors more than probegate holds now.
    let open = proxy.open_fds();
    let (mut soft, mut hard) = (0, 0);
    rlimit::prlimit(
        pid as i32,
        rlimit::Resource::NOFILE,
        None,
        Some((&mut soft, &mut hard)),
    )
    .expect("read probegate's descriptor limit");
    assert!(soft > open + 4, "already nearly out: {open} open of {soft}");
    rlimit::prlimit(
        pid as i32,
        rlimit::Resource::NOFILE,
        Some((open + 4, hard)),
        None,
    )
    .expect("lower probegate's descriptor limit");

    // Silent clients: the first few are accepted and held, the rest wait in
    // the backlog while accept fails with EMFILE.
    let silent: Vec<TcpStream> = (0..16)
        .map(|_| TcpStream::connect(public).expect("connect (the kernel completes it)"))
        .collect();
    // At the limit, with connections still waiting, every accept fails
    // (EMFILE): a look at the descriptors, not at the log, which a
    // RUST_LOG setting could silence.
    wait_until(PROMPT, "probegate to run out of descriptors", || {
        proxy.open_fds() >= open + 4
    });
    // Spinning on the waiting connection, probegate would get about as much
    // CPU as a thread that spins alongside (the scheduler shares a CPU
    // evenly between busy threads), however loaded the host; pausing 50 ms
    // after each failed accept, next to none. A quarter leaves room for
    // the little work it does between pauses.
    let before = proxy.cpu_ticks();
    let spinner = spin_for_ticks(50, Duration::from_secs(10));
    let spent = proxy.cpu_ticks() - before;
    assert!(
        spent * 4 <= spinner,
        "probegate used {spent} ticks of CPU while out of descriptors, a thread spinning alongside {spinner}"
    );

    // The clients leave; the limit stays as low as it was.
    drop(silent);
    proxy.wait_backends_up(&[backend.thrift_addr()], PROMPT);
    wait_until(
        PROMPT,
        "a call through probegate to be answered again",
        || {
            try_client_from("127.0.0.1", public)
                .map_err(|e| e.to_string())
                .and_then(|mut c| c.ping().map_err(|e| e.to_string()))
                .is_ok_and(|pong| pong == "pong")
        },
    );
}

/// Runs `probegate check-config FILE` on `text`.
fn check_config(text: &str) -> (Option<i32>, String, String) {
    let dir = TempDir::new("check-config");
    let path = dir.join("probegate.toml");
    std::fs::write(&path, text).expect("write config");
    let out = Command::new(e2e::binary("probegate"))
        .arg("check-config")
        .arg(&path)
        .output()
        .expect("run probegate check-config");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const BACKEND: &str = "[[backends]]\naddress = \"127.0.0.1:9090\"\nmax_connections = 2\n";

#[test]
fn check_config_accepts_a_good_file() {
    let text = format!(
        "{BACKEND}[listen]\npublic = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nproxy_protocol = true\n\
         [probes]\nsources = [\"aliyun\", \"gcp\", \"127.100.0.0/16\"]\n\
         [clients]\nallow = [\"10.0.0.0/8\"]\ndeny = [\"10.9.0.0/16\"]\n\
         [health]\npaths = [\"/health\"]\ninterval = \"2s\"\nrise = 2\nfall = 3\ntcp_follows_backend = true\n\
         [timeouts]\nfirst_byte = \"5s\"\nconnect = \"1s\"\nidle = \"60s\"\nqueue = \"5s\"\n\
         [limits]\nmax_frame_bytes = 16384000\nmax_queue = 100\nmax_client_connections = 1000\nmax_connections_per_source = 10\n\
         [shutdown]\ndrain_grace = \"10s\"\ntimeout = \"30s\"\n"
    );
    let (code, stdout, stderr) = check_config(&text);
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.starts_with("ok"), "{stdout}");

    // The shipped example config is good too.
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/probegate.toml");
    let text =
        std::fs::read_to_string(&shipped).unwrap_or_else(|e| panic!("{}: {e}", shipped.display()));
    let (code, stdout, stderr) = check_config(&text);
    assert_eq!(code, Some(0), "{}: {stdout}{stderr}", shipped.display());
}

#[test]
fn bad_configs_exit_64_naming_the_key_and_the_value() {
    let cases: &[(&str, &[&str])] = &[
        ("[listen]\npublik = \"0.0.0.0:1\"\n", &["publik"]),
        (
            "[timeouts]\nfirst_byte = \"soon\"\n",
            &["first_byte", "soon"],
        ),
        ("[probes]\nsources = [\"azure\"]\n", &["sources", "azure"]),
        (
            "[clients]\ndeny = [\"10.0.0.0/33\"]\n",
            &["deny", "10.0.0.0/33"],
        ),
        (
            "[limits]\nmax_connections_per_source = 0\n",
            &["limits.max_connections_per_source", "0"],
        ),
        (
            "[limits]\nmax_client_connections = 0\n",
            &["limits.max_client_connections", "0"],
        ),
        (
            "[health]\npaths = [\"health\"]\n",
            &["health.paths[0]", "health"],
        ),
        ("[health]\nfall = 0\n", &["health.fall", "0"]),
        (
            "[listen]\nproxy_protocol = \"yes\"\n",
            &["proxy_protocol", "yes"],
        ),
        (
            "[shutdown]\ndrain_grace = \"-1s\"\n",
            &["drain_grace", "-1s"],
        ),
    ];
    for (extra, needles) in cases {
        let text = format!("{BACKEND}{extra}");
        let (code, stdout, stderr) = check_config(&text);
        assert_eq!(
            code,
            Some(EXIT_CONFIG),
            "check-config {extra:?}: {stdout}{stderr}"
        );
        for needle in *needles {
            assert!(
                stderr.contains(needle),
                "check-config {extra:?}: stderr should name {needle:?}: {stderr}"
            );
        }
        // The server refuses the same file before binding anything.
        let run = Probegate::run_expecting_exit(&text);
        assert_eq!(
            run.status.code(),
            Some(EXIT_CONFIG),
            "--config {extra:?}: {}",
            run.stderr
        );
        assert!(
            !run.stdout.contains("listening"),
            "--config {extra:?}: {}",
            run.stdout
        );
        for needle in *needles {
            assert!(
                run.stderr.contains(needle),
                "--config {extra:?}: stderr should name {needle:?}: {}",
                run.stderr
            );
        }
    }

    // No backend at all.
    let (code, _, stderr) = check_config("[listen]\npublic = \"127.0.0.1:0\"\n");
    assert_eq!(code, Some(EXIT_CONFIG), "{stderr}");
    assert!(stderr.contains("backends"), "{stderr}");
    // Not TOML at all, and a file that does not exist.
    let (code, _, stderr) = check_config("[[backends]\naddress = 1");
    assert_eq!(code, Some(EXIT_CONFIG), "{stderr}");
    let missing = Command::new(e2e::binary("probegate"))
        .args(["check-config", "/nonexistent/probegate.toml"])
        .output()
        .expect("run");
    assert_eq!(missing.status.code(), Some(EXIT_CONFIG));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/probegate.toml"));
}
