//! The run: build the servers, set up the machine, then for each workload
//! and each repetition start every target afresh (each with its own
//! backend), measure them (taking turns slice by slice where every client
//! is served, else one after the other; rotating who starts and goes first,
//! so drifts hit all alike), stop them, and finally print, write and draw
//! the results.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result};

use crate::client::Writes;
use crate::deploy::{Backend, Deployment, Env, Target};
use crate::load::Call;
use crate::machine::Machine;
use crate::measure::{self, calls_rep, idle_rep, incident_rep, interleaved_calls_rep};
use crate::options::{Command as Role, Options};
use crate::report::{self, Record};
use crate::upload_call::EncodedUpload;
use crate::{answerer, answerer_uring, chart, goals, haproxy, payload, probes, responder};

/// What a workload does.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// Closed loop: clients, and the upload size (none: ping).
    Calls {
        clients: usize,
        upload: Option<usize>,
    },
    /// One ping client while probes arrive.
    Storm,
    /// Silent connections held.
    Idle,
    /// The incident replay, all targets at once.
    Incident,
}

#[derive(Debug, Clone, Copy)]
struct Workload {
    name: &'static str,
    description: &'static str,
    backend: Backend,
    kind: Kind,
    /// probegate's `first_byte` and HAProxy's inspect delay.
    first_byte: Duration,
    /// Whether the `answerer` target runs it (the closed-loop ping workloads
    /// whose proxy CPU per call has a goal).
    answerer: bool,
    /// Whether `haproxy-splice` runs it (the uploads, where HAProxy's best
    /// moves bodies with `splice`; for small calls that only adds system
    /// calls).
    splice: bool,
}

/// probegate's default `timeouts.first_byte`, used as HAProxy's inspect
/// delay too.
const FIRST_BYTE: Duration = haproxy::INSPECT_DELAY;
/// For the idle clients: long enough that connections opened in a burst
/// (some after a SYN retransmission) are all still held when measured.
const IDLE_FIRST_BYTE: Duration = Duration::from_secs(30);

const WORKLOADS: [Workload; 9] = [
    Workload {
        name: "ping-1",
        description: "ping, 1 connection, closed loop; responder backend, 64 workers",
        backend: Backend::Responder { workers: 64 },
        kind: Kind::Calls { clients: 1, upload: None },
        first_byte: FIRST_BYTE,
        answerer: true,
        splice: false,
    },
    Workload {
        name: "ping-32",
        description: "ping, 32 connections, closed loop; responder backend, 64 workers",
        backend: Backend::Responder { workers: 64 },
        kind: Kind::Calls { clients: 32, upload: None },
        first_byte: FIRST_BYTE,
        answerer: true,
        splice: false,
    },
    Workload {
        name: "ping-32-w10",
        description: "ping, 32 connections, closed loop; responder backend, 10 workers (who gets served?)",
        backend: Backend::Responder { workers: 10 },
        kind: Kind::Calls { clients: 32, upload: None },
        first_byte: FIRST_BYTE,
        answerer: false,
        splice: false,
    },
    Workload {
        name: "upload-64k",
        description: "upload of a 64 KiB PNG, 4 connections; real uploader (fs storage), 64 workers",
        backend: Backend::Uploader { workers: 64, read_timeout: "60s" },
        kind: Kind::Calls { clients: 4, upload: Some(64 * 1024) },
        first_byte: FIRST_BYTE,
        answerer: false,
        splice: true,
    },
    Workload {
        name: "upload-1m",
        description: "upload of a 1 MiB PNG, 4 connections; real uploader (fs storage), 64 workers",
        backend: Backend::Uploader { workers: 64, read_timeout: "60s" },
        kind: Kind::Calls { clients: 4, upload: Some(1024 * 1024) },
        first_byte: FIRST_BYTE,
        answerer: false,
        splice: true,
    },
    Workload {
        name: "upload-1m-nostore",
        description: "upload of a 1 MiB PNG, 4 connections; responder backend (no storage), 64 workers: the proxies' data path alone",
        backend: Backend::Responder { workers: 64 },
        kind: Kind::Calls {
            clients: 4,
            upload: Some(1024 * 1024),
        },
        first_byte: FIRST_BYTE,
        answerer: false,
        splice: true,
    },
    Workload {
        name: "probe-storm",
        description: "ping, 1 connection, while RST/FIN/HTTP probes arrive at --probe-rate, each storm window right after one without probes on the same servers; responder, 64 workers",
        backend: Backend::Responder { workers: 64 },
        kind: Kind::Storm,
        first_byte: FIRST_BYTE,
        answerer: false,
        splice: false,
    },
    Workload {
        name: "idle-clients",
        description: "--idle-clients silent connections held; responder, 64 workers",
        backend: Backend::Responder { workers: 64 },
        kind: Kind::Idle,
        first_byte: IDLE_FIRST_BYTE,
        answerer: false,
        splice: false,
    },
    Workload {
        name: "incident",
        description: "10 silent conns + RST probe every 2 s, real ping every 200 ms (1 s bound); uploader, 10 workers, read_timeout 0s",
        backend: Backend::Uploader { workers: 10, read_timeout: "0s" },
        kind: Kind::Incident,
        first_byte: FIRST_BYTE,
        answerer: false,
        splice: false,
    },
];

/// Refuses a `--targets` or `--workloads` name that matches nothing, which
/// would otherwise leave a run measuring less than asked without a word.
fn check_filters(options: &Options) -> Result<()> {
    let targets: Vec<&str> = Target::ALL.iter().map(|t| t.name()).collect();
    let workloads: Vec<&str> = WORKLOADS.iter().map(|w| w.name).collect();
    for (flag, asked, known) in [
        ("--targets", &options.targets, &targets),
        ("--workloads", &options.workloads, &workloads),
    ] {
        if let Some(unknown) = asked.iter().find(|a| !known.contains(&a.as_str())) {
            anyhow::bail!(
                "{flag}: no such name {unknown:?}; the names are {}",
                known.join(", ")
            );
        }
    }
    Ok(())
}

pub fn main(options: Options) -> Result<()> {
    match &options.command {
        Some(Role::Responder { workers }) => return responder::run(*workers).context("responder"),
        Some(Role::Answerer { io_uring: false }) => return answerer::run().context("answerer"),
        Some(Role::Answerer { io_uring: true }) => {
            return answerer_uring::run().context("answerer-uring");
        }
        Some(Role::Report { jsonl, svg }) => return rereport(jsonl, svg.as_deref()),
        Some(Role::Load {
            addr,
            clients,
            secs,
            upload,
        }) => {
            let _held = hold_latency_for(&options);
            return external_load(*addr, *clients, *secs, *upload, options.client_writes);
        }
        Some(Role::Storm { addr, rate, secs }) => {
            let _held = hold_latency_for(&options);
            external_storm(*addr, *rate, *secs);
            return Ok(());
        }
        None => {}
    }
    check_filters(&options)?;
    crate::child::stop_servers_on_signals().context("handling SIGTERM and SIGINT")?;
    let root = workspace_root();
    let out = options
        .out
        .clone()
        .unwrap_or_else(|| root.join("bench/out"));
    let work_dir = out.join("run");
    let _ = std::fs::remove_dir_all(&work_dir);
    std::fs::create_dir_all(&work_dir)
        .with_context(|| format!("creating {}", work_dir.display()))?;

    // Pin before any thread exists, so every load thread inherits CPU 0.
    let machine = Machine::setup(!options.no_pin, !options.no_latency_hold);
    let bin_dir = options
        .bin_dir
        .clone()
        .unwrap_or_else(|| root.join("target/release"));
    if !options.no_build {
        build(&root);
    }
    let mut notes = machine.notes.clone();
    let haproxy_version = match haproxy::version() {
        Ok(v) => {
            notes.push(format!("haproxy: {v}"));
            Some(v)
        }
        Err(e) => {
            notes.push(format!("haproxy: SKIPPED ({e})"));
            None
        }
    };
    notes.push(format!(
        "mode: {}, {} repetition(s), {:.1} s windows, probe storm {}/s, {} idle clients; servers log at RUST_LOG=warn",
        if options.quick { "quick" } else { "full" },
        options.reps(),
        options.window().as_secs_f64(),
        options.probe_rate,
        options.idle_clients
    ));
    notes.push(format!(
        "turns: where every client is served, each target's window is {} slice(s) of {:.1} s; round after round every target runs one slice while the others' clients wait connected ({:.1} s warm-up before each later slice), so a phase of the VM falls on all alike",
        measure::slices_in(options.window()),
        measure::slice_of(options.window()).as_secs_f64(),
        measure::SLICE_WARMUP.as_secs_f64()
    ));
    notes.push(format!(
        "client: {}; uploads encoded once, copied once per call (into the kernel)",
        options.client_writes.describe()
    ));
    notes.push(format!("responder: {}", responder::describe_io()));
    notes.push(format!(
        "uploader: sets its allocator up itself at start: {} (uploader::malloc)",
        uploader::malloc::describe()
    ));
    notes.push(
        "disk: `sync` before each workload, so one workload's writeback does not load the next"
            .to_string(),
    );

    let targets: Vec<Target> = Target::ALL
        .into_iter()
        .filter(|t| options.wants_target(t.name()))
        .filter(|t| haproxy_version.is_some() || t.haproxy_mode().is_none())
        .collect();
    let probegate_bin = bin_dir.join("probegate");
    let uploader_bin = bin_dir.join("uploader");
    let targets: Vec<Target> = if probegate_bin.exists() {
        targets
    } else {
        notes.push(format!(
            "probegate: SKIPPED (no binary at {}; run `cargo build --release -p probegate`)",
            probegate_bin.display()
        ));
        targets
            .into_iter()
            .filter(|t| *t != Target::Probegate)
            .collect()
    };
    let answerers_run = WORKLOADS
        .iter()
        .any(|w| w.answerer && options.wants_workload(w.name));
    for (target, description) in [
        (Target::Answerer, crate::deploy::ANSWERER_DESCRIPTION),
        (
            Target::AnswererUring,
            crate::deploy::ANSWERER_URING_DESCRIPTION,
        ),
    ] {
        if answerers_run && targets.contains(&target) {
            notes.push(description.to_string());
        }
    }
    let splicing_runs = WORKLOADS
        .iter()
        .any(|w| w.splice && options.wants_workload(w.name));
    if splicing_runs && targets.contains(&Target::HaproxySplice) {
        notes.push(crate::deploy::HAPROXY_SPLICE_DESCRIPTION.to_string());
    }
    if !uploader_bin.exists() {
        notes.push(format!(
            "uploader: workloads that need it are SKIPPED (no binary at {}; run `cargo build --release -p uploader`)",
            uploader_bin.display()
        ));
    }
    println!("probegate-bench");
    for n in &notes {
        println!("  {n}");
    }
    let env = Env {
        machine: &machine,
        bench_exe: std::env::current_exe().context("locating this binary")?,
        bin_dir: bin_dir.clone(),
        work_dir: work_dir.clone(),
        seq: AtomicU32::new(0),
    };
    let mut records: Vec<Record> = Vec::new();
    let mut skipped: Vec<String> = Vec::new();
    for workload in WORKLOADS.iter().filter(|w| options.wants_workload(w.name)) {
        if matches!(workload.backend, Backend::Uploader { .. }) && !uploader_bin.exists() {
            skipped.push(format!(
                "{}: skipped: the uploader is not built",
                workload.name
            ));
            continue;
        }
        eprintln!("bench: {} ...", workload.name);
        settle_disk();
        let wanted: Vec<Target> = targets
            .iter()
            .copied()
            .filter(|t| workload.answerer || !t.answers_itself())
            .filter(|t| workload.splice || *t != Target::HaproxySplice)
            .collect();
        let call = match workload.kind {
            Kind::Calls {
                upload: Some(size), ..
            } => match payload::png_of_size(size) {
                Ok(png) => Call::Upload(Arc::new(EncodedUpload::new(&png))),
                Err(e) => {
                    skipped.push(format!("{}: failed: {e:#}", workload.name));
                    continue;
                }
            },
            _ => Call::Ping,
        };
        for rep in 0..options.reps() {
            let deployments = deploy(&env, workload, &rotated(&wanted, rep), &mut skipped);
            let outcome = run_rep(
                workload,
                &deployments,
                &call,
                rep,
                &options,
                &machine,
                &records,
            );
            // Stopped in parallel: each waits for its processes to exit.
            thread::scope(|s| {
                for d in deployments {
                    s.spawn(move || d.stop());
                }
            });
            match outcome {
                Ok(mut r) => records.append(&mut r),
                Err(e) => {
                    skipped.push(format!("{}: failed: {e:#}", workload.name));
                    break;
                }
            }
        }
    }

    let summaries = report::summarize(&records);
    let verdicts = print_results(&summaries, &skipped);
    let run = serde_json::json!({
        "quick": options.quick,
        "reps": options.reps(),
        "window_s": options.window().as_secs_f64(),
        "probe_rate": options.probe_rate,
        "idle_clients": options.idle_clients,
        "client_writes": options.client_writes.name(),
        "notes": notes,
        "skipped": skipped,
        "goals": verdicts,
        "git": git_head(&root),
        "unix_time": SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
    });
    let jsonl = out.join("results.jsonl");
    report::write_jsonl(&jsonl, &run, &records, &summaries)
        .with_context(|| format!("writing {}", jsonl.display()))?;
    let svg = out.join("bench.svg");
    let subtitle = format!(
        "{} run, {} rep(s) x {:.0} s, git {}",
        if options.quick { "quick" } else { "full" },
        options.reps(),
        options.window().as_secs_f64(),
        git_head(&root)
    );
    if let Err(e) = chart::draw(&svg, &summaries, &subtitle) {
        eprintln!("bench: chart not drawn: {e}");
    }
    println!(
        "\nresults: {} ; chart: {} ; server logs: {}",
        jsonl.display(),
        svg.display(),
        work_dir.display()
    );
    Ok(())
}

/// Bound on waiting for the page cache to be written out between workloads.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Writes out dirty pages (`sync`) before a workload starts, so that the
/// storage workloads' writeback does not run on the server CPU during the
/// next workload's windows (it made the responder behind a proxy 30–50 %
/// slower per 1 MiB upload right after `upload-1m`). Bounded; a `sync`
/// that does not finish in time only leaves a note on stderr.
fn settle_disk() {
    let (done, finished) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let _ = done.send(Command::new("sync").status());
    });
    match finished.recv_timeout(SETTLE_TIMEOUT) {
        Ok(Ok(status)) if status.success() => {}
        Ok(Ok(status)) => eprintln!("bench: sync exited with {status}"),
        Ok(Err(e)) => eprintln!("bench: cannot run sync: {e}"),
        Err(_) => eprintln!("bench: sync did not finish within {SETTLE_TIMEOUT:?}"),
    }
}

/// `/dev/cpu_dma_latency` held for a hand-run `load` or `storm`, as a full
/// run holds it (unless `--no-latency-hold`), said on stderr.
fn hold_latency_for(options: &Options) -> Option<std::fs::File> {
    let (held, note) = crate::machine::latency_hold(!options.no_latency_hold);
    eprintln!("{note}");
    held
}

/// `probegate-bench load ADDR`: closed-loop calls at a server the bench did
/// not start; no CPU sampling (the caller knows its process).
fn external_load(
    addr: SocketAddr,
    clients: usize,
    secs: f64,
    upload: Option<usize>,
    writes: Writes,
) -> Result<()> {
    struct NoHooks;
    impl crate::load::Window for NoHooks {
        fn opened(&mut self) {}
        fn closed(&mut self) {}
    }
    let call = match upload {
        Some(size) => Call::Upload(Arc::new(EncodedUpload::new(&payload::png_of_size(size)?))),
        None => Call::Ping,
    };
    let window = std::time::Duration::from_secs_f64(secs);
    let warmup = std::time::Duration::from_millis(300);
    let outcome = crate::load::run(addr, clients, &call, writes, warmup, window, &mut NoHooks);
    let s = outcome.window.as_secs_f64();
    let pct = |q| crate::stats::percentile(&outcome.latencies_ns, q).map(|ns| ns as f64 / 1000.0);
    println!(
        "{addr}: {} calls in {s:.2} s = {:.0} calls/s, p50 {:.1} µs, p99 {:.1} µs, {} errors, {}/{} clients served{}",
        outcome.calls,
        outcome.calls as f64 / s,
        pct(0.5).unwrap_or(f64::NAN),
        pct(0.99).unwrap_or(f64::NAN),
        outcome.errors,
        outcome.per_client.iter().filter(|c| **c > 0).count(),
        clients,
        outcome
            .first_error
            .map(|e| format!("; first error: {e}"))
            .unwrap_or_default()
    );
    Ok(())
}

fn external_storm(addr: SocketAddr, rate: u32, secs: f64) {
    let storm = probes::Storm::start(addr, rate, crate::measure::STORM_THREADS, false);
    std::thread::sleep(std::time::Duration::from_secs_f64(secs));
    let outcome = storm.stop();
    println!(
        "{addr}: {} probes in {:.2} s = {:.0}/s (RST {}, FIN {}, HTTP {} of which {} answered 200), {} connects failed, {} missed the schedule",
        outcome.total(),
        outcome.elapsed.as_secs_f64(),
        outcome.rate(),
        outcome.sent[0],
        outcome.sent[1],
        outcome.sent[2],
        outcome.http_ok,
        outcome.connect_failed,
        outcome.missed
    );
}

/// Prints every workload's table, the goals and the skipped parts; returns
/// the goal lines.
fn print_results(summaries: &[report::Summary], skipped: &[String]) -> Vec<String> {
    for w in WORKLOADS.iter() {
        let rows: Vec<_> = summaries.iter().filter(|s| s.workload == w.name).collect();
        if !rows.is_empty() {
            print!("{}", report::table(w.name, w.description, &rows));
        }
    }
    let verdicts = goals::check(summaries);
    if !verdicts.is_empty() {
        println!("\n== the issue's targets, measured in this run");
        for v in &verdicts {
            println!("  {v}");
        }
    }
    for s in skipped {
        println!("  skipped: {s}");
    }
    verdicts
}

/// `probegate-bench report results.jsonl`: the tables and the chart again,
/// from a finished run.
fn rereport(jsonl: &Path, svg: Option<&Path>) -> Result<()> {
    let (run, records) =
        report::read_jsonl(jsonl).with_context(|| format!("reading {}", jsonl.display()))?;
    if let Some(notes) = run["notes"].as_array() {
        for n in notes.iter().filter_map(|n| n.as_str()) {
            println!("  {n}");
        }
    }
    let skipped: Vec<String> = run["skipped"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let summaries = report::summarize(&records);
    print_results(&summaries, &skipped);
    let svg = svg
        .map(Path::to_path_buf)
        .unwrap_or_else(|| jsonl.with_extension("svg"));
    let subtitle = format!(
        "{} run, {} rep(s) x {} s, git {}",
        if run["quick"].as_bool().unwrap_or(false) {
            "quick"
        } else {
            "full"
        },
        run["reps"].as_u64().unwrap_or(0),
        run["window_s"].as_f64().unwrap_or(0.0),
        run["git"].as_str().unwrap_or("unknown")
    );
    chart::draw(&svg, &summaries, &subtitle)
        .map_err(|e| anyhow::anyhow!("drawing {}: {e}", svg.display()))?;
    println!("\nchart: {}", svg.display());
    Ok(())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `cargo build --release -p uploader -p probegate`; a failure is reported
/// and the run goes on with whatever binaries exist (their targets are
/// skipped if they cannot start).
fn build(root: &Path) {
    eprintln!("bench: cargo build --release -p uploader -p probegate");
    let status = nested_cargo::command()
        .current_dir(root)
        .args(["build", "--release", "-p", "uploader", "-p", "probegate"])
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => eprintln!("bench: cargo build failed ({s}); using the binaries already built"),
        Err(e) => eprintln!("bench: cannot run cargo ({e}); using the binaries already built"),
    }
}

fn git_head(root: &Path) -> String {
    Command::new("git")
        .current_dir(root)
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

/// Starts `targets` for one repetition of `workload`, in that order, each
/// with its own backend. A target that does not start is noted in
/// `skipped` (once, however many repetitions it fails) and left out.
fn deploy(
    env: &Env,
    workload: &Workload,
    targets: &[Target],
    skipped: &mut Vec<String>,
) -> Vec<Deployment> {
    let mut deployments = Vec::new();
    for &t in targets {
        match Deployment::start(env, t, workload.backend, workload.first_byte) {
            Ok(d) => deployments.push(d),
            Err(e) => {
                let msg = format!("{}: {} skipped: {e:#}", workload.name, t.name());
                eprintln!("bench: {msg}");
                if !skipped.contains(&msg) {
                    skipped.push(msg);
                }
            }
        }
    }
    deployments
}

/// `targets` starting at the `rep`-th (wrapping): each repetition starts
/// and measures a different target first, so that neither the order of
/// starting nor a drift within a repetition favours one target.
fn rotated(targets: &[Target], rep: u32) -> Vec<Target> {
    let mut order = targets.to_vec();
    if !order.is_empty() {
        let first = rep as usize % order.len();
        order.rotate_left(first);
    }
    order
}

/// One repetition of `workload` on freshly started `deployments`, measured
/// in their order: closed-loop workloads whose backend serves every client
/// in turns of about a second each (`interleaved_calls_rep`), the others one
/// target after the other. Deployed afresh for each repetition, so that
/// what a deployment draws with its backend connections (bench/README.md,
/// twelfth round) is a new draw each time instead of holding for every
/// repetition; and the incident replays against a backend none of whose
/// workers an earlier replay pinned.
fn run_rep(
    workload: &Workload,
    deployments: &[Deployment],
    call: &Call,
    rep: u32,
    options: &Options,
    machine: &Machine,
    earlier: &[Record],
) -> Result<Vec<Record>> {
    if let Kind::Incident = workload.kind {
        return Ok(incident_rep(workload.name, deployments, options, rep));
    }
    if let Kind::Calls { clients, .. } = workload.kind {
        if workload.backend.workers() >= clients {
            return Ok(interleaved_calls_rep(
                workload.name,
                deployments,
                options,
                machine,
                rep,
                clients,
                call,
            ));
        }
    }
    let mut records = Vec::new();
    for d in deployments {
        let record = match workload.kind {
            // A backend with fewer workers than clients (who gets served?):
            // one target after the other, since the unserved clients of a
            // proxy passing connections through never park between slices.
            Kind::Calls { clients, .. } => {
                calls_rep(workload.name, d, options, machine, rep, clients, call, None)
            }
            Kind::Storm => {
                // The same servers without the storm, just before: the
                // p99 the storm's is compared with comes from the same
                // minute of the run, so a drift of the VM between
                // workloads (it switches phase) does not move the ratio.
                // After a pause: the window before was another target's
                // storm, whose thousands of closed connections would
                // otherwise still be torn down in this one.
                thread::sleep(crate::measure::COOL_DOWN);
                let calm = calls_rep(workload.name, d, options, machine, rep, 1, call, None);
                let mut r = calls_rep(
                    workload.name,
                    d,
                    options,
                    machine,
                    rep,
                    1,
                    call,
                    Some(options.probe_rate),
                );
                compare_with_calm(&mut r, &calm);
                count_conns_over_calm(&mut r, &calm, earlier, d.target);
                r
            }
            Kind::Idle => idle_rep(workload.name, d, options, rep),
            Kind::Incident => unreachable!("handled above"),
        };
        records.push(record);
    }
    Ok(records)
}

/// A storm window's p99 over the p99 of the window without the storm run
/// just before it on the same servers (`p99_no_storm_us`, and their ratio
/// `p99_vs_no_storm`, which the storm goal judges).
fn compare_with_calm(storm: &mut Record, calm: &Record) {
    let Some(base) = calm.metrics.get("p99_us").copied().filter(|b| *b > 0.0) else {
        return;
    };
    storm.metrics.insert("p99_no_storm_us".to_string(), base);
    if let Some(p99) = storm.metrics.get("p99_us").copied() {
        storm
            .metrics
            .insert("p99_vs_no_storm".to_string(), p99 / base);
    }
}

/// The backend connections a storm window brought beyond the most seen in
/// a window without probes on the same target (`backend_conns_over_no_storm`,
/// never below none): the calm window just before it, and `ping-1`'s
/// windows earlier in the run. The proxy's own new backend connections
/// happen without a storm too: probegate opens a second pooled connection
/// when a health check finds the first one busy, and again after
/// `pool_idle` closed it, so a calm window sees 0 or 1. The responder's
/// count of connections without a call says directly what probes brought;
/// this is the judge for backends that do not count those.
fn count_conns_over_calm(storm: &mut Record, calm: &Record, earlier: &[Record], target: Target) {
    let key = "backend_conns_accepted";
    let ping_1 = earlier
        .iter()
        .filter(|r| r.workload == "ping-1" && r.target == target.name());
    let most = std::iter::once(calm)
        .chain(ping_1)
        .filter_map(|r| r.metrics.get(key).copied())
        .reduce(f64::max);
    if let (Some(most), Some(conns)) = (most, storm.metrics.get(key).copied()) {
        storm.metrics.insert(
            "backend_conns_over_no_storm".to_string(),
            (conns - most).max(0.0),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// One window of `workload` on `target`, with `key` measured at
    /// `value` (or not measured).
    fn window(workload: &str, target: &str, key: &str, value: Option<f64>) -> Record {
        Record {
            workload: workload.to_string(),
            shape: report::Shape::Storm,
            target: target.to_string(),
            rep: 0,
            metrics: value.map(|v| (key.to_string(), v)).into_iter().collect(),
            notes: vec![],
        }
    }

    #[test]
    fn the_storm_p99_is_compared_with_the_window_just_before_it() {
        let window = |p99| window("probe-storm", "probegate", "p99_us", p99);
        let mut storm = window(Some(110.0));
        compare_with_calm(&mut storm, &window(Some(55.0)));
        assert_eq!(storm.metrics.get("p99_no_storm_us"), Some(&55.0));
        assert_eq!(storm.metrics.get("p99_vs_no_storm"), Some(&2.0));
        // No calm p99 (no call answered): no ratio, rather than a made-up one.
        let mut storm = window(Some(110.0));
        compare_with_calm(&mut storm, &window(None));
        assert!(!storm.metrics.contains_key("p99_vs_no_storm"));
    }

    #[test]
    fn the_storms_backend_connections_are_judged_against_the_most_without_probes() {
        let window =
            |workload, target, conns| window(workload, target, "backend_conns_accepted", conns);
        let over = |calm: Option<f64>, earlier: &[Record]| {
            let mut storm = window("probe-storm", "probegate", Some(3.0));
            let calm = window("probe-storm", "probegate", calm);
            count_conns_over_calm(&mut storm, &calm, earlier, Target::Probegate);
            storm.metrics.get("backend_conns_over_no_storm").copied()
        };
        // The calm window alone is a baseline: no ping-1 needed in the run.
        assert_eq!(over(Some(1.0), &[]), Some(2.0));
        // The most of the calm window and probegate's ping-1 windows; other
        // targets' and workloads' windows do not count.
        let earlier = [
            window("ping-1", "probegate", Some(2.0)),
            window("ping-1", "haproxy-tcp", Some(64.0)),
            window("ping-32", "probegate", Some(64.0)),
        ];
        assert_eq!(over(Some(1.0), &earlier), Some(1.0));
        assert_eq!(over(None, &earlier), Some(1.0));
        // Never below none, and nothing to judge without any baseline.
        assert_eq!(over(Some(5.0), &[]), Some(0.0));
        assert_eq!(over(None, &[]), None);
    }

    #[test]
    fn each_repetition_starts_and_measures_another_target_first() {
        let targets = [Target::Direct, Target::HaproxyInspect, Target::Probegate];
        let firsts: Vec<Target> = (0..3).map(|rep| rotated(&targets, rep)[0]).collect();
        assert_eq!(
            firsts, targets,
            "every target first once in three repetitions"
        );
        assert_eq!(
            rotated(&targets, 4),
            [Target::HaproxyInspect, Target::Probegate, Target::Direct],
            "the cycle keeps the targets' order and wraps"
        );
        assert!(rotated(&[], 2).is_empty());
    }

    #[test]
    fn unknown_target_or_workload_names_are_refused_with_the_known_ones() {
        let parse = |args: &[&str]| {
            let options =
                Options::try_parse_from([&["probegate-bench"], args].concat()).expect("parses");
            check_filters(&options).map_err(|e| e.to_string())
        };
        assert!(parse(&["--targets", "probegate,answerer-uring"]).is_ok());
        assert!(parse(&["--workloads", "ping-1,incident"]).is_ok());
        let target = parse(&["--targets", "probegate,haproxy"]).expect_err("no such target");
        assert!(
            target.contains("--targets: no such name \"haproxy\"")
                && target.contains(
                    "haproxy-inspect, haproxy-splice, probegate, answerer, answerer-uring"
                ),
            "{target}"
        );
        let workload = parse(&["--workloads", "ping-64"]).expect_err("no such workload");
        assert!(
            workload.contains("--workloads: no such name \"ping-64\"")
                && workload.contains("ping-32-w10"),
            "{workload}"
        );
    }
}
