//! One measurement of one target: a closed-loop window (optionally under a
//! probe storm), an idle-clients hold, or an incident replay; each becomes a
//! `Record` of named metrics.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::thread;
use std::time::Duration;

use crate::deploy::{BackendCounts, Deployment};
use crate::load::{self, Call};
use crate::machine::Machine;
use crate::options::Options;
use crate::procstat::{rss_bytes, CpuMark};
use crate::report::{Record, Shape};
use crate::{haproxy, idle, incident, probes};

/// Threads sending the probe storm.
pub const STORM_THREADS: usize = 2;
/// Settling time after idle clients are opened, before reading RSS.
const IDLE_SETTLE: Duration = Duration::from_millis(500);
/// Pause after closing thousands of connections, so the next window does
/// not pay for their teardown.
pub const COOL_DOWN: Duration = Duration::from_secs(1);

fn new_record(workload: &str, shape: Shape, d: &Deployment, rep: u32) -> Record {
    Record {
        workload: workload.to_string(),
        shape,
        target: d.target.name().to_string(),
        rep,
        metrics: BTreeMap::new(),
        notes: Vec::new(),
    }
}

/// CPU and counter snapshots at the window's edges, summed over a
/// session's windows, plus the storm when there is one (started as the
/// window opens, stopped as it closes).
struct Edges<'a> {
    d: &'a Deployment,
    clk_tck: f64,
    storm_rate: Option<u32>,
    storm: Option<probes::Storm>,
    proxy: Option<CpuMark>,
    backend: Option<CpuMark>,
    counts_before: BackendCounts,
    proxy_cpu_s: Option<f64>,
    backend_cpu_s: Option<f64>,
    /// The bench's own process: the load generator's clients (all that
    /// runs in it during a closed-loop window).
    client: Option<CpuMark>,
    client_cpu_s: Option<f64>,
    counts: BackendCounts,
    storm_outcome: Option<probes::StormOutcome>,
}

impl load::Window for Edges<'_> {
    fn opened(&mut self) {
        self.counts_before = self.d.backend_counts();
        self.proxy = self.d.proxy_pid().and_then(CpuMark::take);
        self.backend = self.d.backend_pid().and_then(CpuMark::take);
        self.client = CpuMark::take(std::process::id());
        if let Some(rate) = self.storm_rate {
            self.storm = Some(probes::Storm::start(self.d.addr, rate, STORM_THREADS, true));
        }
    }

    fn closed(&mut self) {
        let add = |sum: Option<f64>, more: Option<f64>| Some(sum.unwrap_or(0.0) + more?);
        let proxy = self.proxy.and_then(|m| m.seconds_since(self.clk_tck));
        let backend = self.backend.and_then(|m| m.seconds_since(self.clk_tck));
        self.proxy_cpu_s = add(self.proxy_cpu_s, proxy);
        self.backend_cpu_s = add(self.backend_cpu_s, backend);
        let client = self.client.and_then(|m| m.seconds_since(self.clk_tck));
        self.client_cpu_s = add(self.client_cpu_s, client);
        self.storm_outcome = self.storm.take().map(probes::Storm::stop);
        let counts = self.d.backend_counts().since(self.counts_before);
        self.counts = BackendCounts {
            accepted: add(self.counts.accepted, counts.accepted),
            without_calls: add(self.counts.without_calls, counts.without_calls),
        };
    }
}

impl<'a> Edges<'a> {
    fn new(d: &'a Deployment, machine: &Machine, storm_rate: Option<u32>) -> Edges<'a> {
        Edges {
            d,
            clk_tck: machine.clk_tck,
            storm_rate,
            storm: None,
            proxy: None,
            backend: None,
            counts_before: BackendCounts::default(),
            proxy_cpu_s: None,
            backend_cpu_s: None,
            client: None,
            client_cpu_s: None,
            counts: BackendCounts::default(),
            storm_outcome: None,
        }
    }
}

/// The share of one CPU at which the load generator is taken to limit what
/// a closed-loop window measures (the bench pins it to one CPU).
const CLIENT_SATURATED: f64 = 0.95;
/// Said of a target whose window saw the load generator that busy.
fn client_saturated_note() -> String {
    format!(
        "the load generator's CPU was {:.0} % busy or more in a window: there calls/s may be its limit, not this target's (client_cpu_util in results.jsonl)",
        CLIENT_SATURATED * 100.0
    )
}

/// The first warm-up of a session's connections: a fifth of the window,
/// from 0.3 to 1 s.
fn first_warmup(window: Duration) -> Duration {
    (window / 5).clamp(Duration::from_millis(300), Duration::from_secs(1))
}

/// The measured length of one slice when targets take turns.
pub const SLICE: Duration = Duration::from_secs(1);
/// The warm-up before every slice after a session's first: its connections
/// were idle while the other targets took their turns.
pub const SLICE_WARMUP: Duration = Duration::from_millis(200);

/// How many slices of about [`SLICE`] make `window` (at least one).
pub fn slices_in(window: Duration) -> u32 {
    (window.as_secs_f64() / SLICE.as_secs_f64())
        .round()
        .max(1.0) as u32
}

/// The measured length of each of `window`'s slices.
pub fn slice_of(window: Duration) -> Duration {
    window / slices_in(window)
}

/// One repetition of a closed-loop workload on every deployment at once,
/// taking turns: each target's window is cut into [`slices_in`] slices,
/// and round after round every target (in `deployments`' order) runs one
/// slice while the others' clients wait, connected. A phase of the VM
/// (bench/README.md, eleventh round: they move every process's cost per
/// byte together, and last from seconds to minutes) then falls on all
/// targets alike instead of on whichever was measured while it lasted.
pub fn interleaved_calls_rep(
    workload: &str,
    deployments: &[Deployment],
    options: &Options,
    machine: &Machine,
    rep: u32,
    clients: usize,
    call: &Call,
) -> Vec<Record> {
    let window = options.window();
    let (slices, slice) = (slices_in(window), slice_of(window));
    // Each target's clients connect at its first turn, not all at once:
    // a connection silent for `first_byte` (HAProxy's inspect delay) is
    // closed as a probe would be.
    let mut turns: Vec<(Option<load::Session>, Edges<'_>)> = deployments
        .iter()
        .map(|d| (None, Edges::new(d, machine, None)))
        .collect();
    for round in 0..slices {
        let warmup = if round == 0 {
            first_warmup(window)
        } else {
            SLICE_WARMUP
        };
        for (session, edges) in &mut turns {
            session
                .get_or_insert_with(|| {
                    load::Session::start(edges.d.addr, clients, call, options.client_writes)
                })
                .slice(warmup, slice, edges);
        }
    }
    turns
        .into_iter()
        .filter_map(|(session, edges)| Some((session?, edges)))
        .map(|(session, edges)| {
            let outcome = session.finish();
            let mut r = calls_record(workload, Shape::Calls, rep, clients, call, outcome, &edges);
            r.metrics.insert("slices".into(), f64::from(slices));
            r
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
pub fn calls_rep(
    workload: &str,
    d: &Deployment,
    options: &Options,
    machine: &Machine,
    rep: u32,
    clients: usize,
    call: &Call,
    storm_rate: Option<u32>,
) -> Record {
    let shape = if storm_rate.is_some() {
        Shape::Storm
    } else {
        Shape::Calls
    };
    let window = options.window();
    let mut edges = Edges::new(d, machine, storm_rate);
    let outcome = load::run(
        d.addr,
        clients,
        call,
        options.client_writes,
        first_warmup(window),
        window,
        &mut edges,
    );
    calls_record(workload, shape, rep, clients, call, outcome, &edges)
}

/// The record of a closed-loop measurement of `edges.d`: what `outcome`
/// counted, and what `edges` saw of the servers.
fn calls_record(
    workload: &str,
    shape: Shape,
    rep: u32,
    clients: usize,
    call: &Call,
    outcome: load::Outcome,
    edges: &Edges<'_>,
) -> Record {
    let d = edges.d;
    let mut r = new_record(workload, shape, d, rep);
    let secs = outcome.window.as_secs_f64();
    let m = &mut r.metrics;
    m.insert("clients".into(), clients as f64);
    m.insert(
        "clients_served".into(),
        outcome.per_client.iter().filter(|c| **c > 0).count() as f64,
    );
    m.insert("errors".into(), outcome.errors as f64);
    m.insert("calls_per_s".into(), outcome.calls as f64 / secs);
    if let Some(p50) = crate::stats::percentile(&outcome.latencies_ns, 0.50) {
        m.insert("p50_us".into(), p50 as f64 / 1000.0);
    }
    if let Some(p99) = crate::stats::percentile(&outcome.latencies_ns, 0.99) {
        m.insert("p99_us".into(), p99 as f64 / 1000.0);
    }
    if call.bytes() > 0 {
        m.insert(
            "mb_per_s".into(),
            (outcome.calls * call.bytes()) as f64 / secs / 1e6,
        );
        m.insert("upload_bytes".into(), call.bytes() as f64);
    }
    if outcome.calls > 0 {
        if let Some(cpu) = edges.proxy_cpu_s {
            m.insert(
                "proxy_cpu_us_per_call".into(),
                cpu * 1e6 / outcome.calls as f64,
            );
        }
        if let Some(cpu) = edges.backend_cpu_s {
            m.insert(
                "backend_cpu_us_per_call".into(),
                cpu * 1e6 / outcome.calls as f64,
            );
        }
    }
    if let (Some(cpu), Shape::Calls) = (edges.client_cpu_s, shape) {
        m.insert("client_cpu_util".into(), cpu / secs);
        if cpu / secs >= CLIENT_SATURATED {
            r.notes.push(client_saturated_note());
        }
    }
    if let Some(cpu) = edges.proxy_cpu_s {
        m.insert("proxy_cpu_util".into(), cpu / secs);
    }
    if let Some(rss) = d.proxy_pid().and_then(|p| rss_bytes(p).ok()) {
        m.insert("proxy_rss_mib".into(), rss as f64 / (1024.0 * 1024.0));
    }
    if let Some(a) = edges.counts.accepted {
        m.insert("backend_conns_accepted".into(), a);
    }
    if let Some(n) = edges.counts.without_calls {
        m.insert("backend_conns_without_calls".into(), n);
    }
    if let Some(storm) = &edges.storm_outcome {
        m.insert("probes_per_s".into(), storm.rate());
        m.insert("probes_sent".into(), storm.total() as f64);
        m.insert("probes_missed".into(), storm.missed as f64);
        m.insert("probes_connect_failed".into(), storm.connect_failed as f64);
        m.insert("http_probe_ok".into(), storm.http_ok as f64);
    }
    if let Some(e) = outcome.first_error {
        r.notes.push(format!("first error: {e}"));
    }
    r
}

pub fn idle_rep(workload: &str, d: &Deployment, options: &Options, rep: u32) -> Record {
    let mut r = new_record(workload, Shape::Idle, d, rep);
    let counts_before = d.backend_counts();
    let rss_before = d.proxy_pid().and_then(|p| rss_bytes(p).ok());
    let held = idle::open(d.addr, options.idle_clients);
    thread::sleep(IDLE_SETTLE);
    let rss_after = d.proxy_pid().and_then(|p| rss_bytes(p).ok());
    let accepted = d.backend_counts().since(counts_before).accepted;
    let ping = idle::ping_once(d.addr, options.client_writes);
    let m = &mut r.metrics;
    m.insert("idle_held".into(), held.count() as f64);
    m.insert("idle_failed".into(), held.failed as f64);
    m.insert("idle_open_s".into(), held.open_time.as_secs_f64());
    if let Some(rss) = rss_after {
        m.insert("proxy_rss_mib".into(), rss as f64 / (1024.0 * 1024.0));
        if let (Some(before), true) = (rss_before, held.count() > 0) {
            m.insert(
                "proxy_kib_per_conn".into(),
                (rss as f64 - before as f64) / 1024.0 / held.count() as f64,
            );
        }
    }
    if let Some(accepted) = accepted {
        m.insert("backend_conns_accepted".into(), accepted);
    }
    match ping {
        Ok(t) => {
            m.insert("ping_while_held_ms".into(), t.as_secs_f64() * 1000.0);
        }
        Err(e) => r.notes.push(format!("ping while held failed: {e}")),
    }
    held.close();
    if let Some(mode) = d.target.haproxy_mode() {
        let nofile = crate::machine::nofile_limit();
        let maxconn = haproxy::maxconn_for(nofile, mode);
        if (maxconn as usize) <= options.idle_clients {
            r.notes.push(format!(
                "HAProxy's maxconn is {maxconn} here (2 descriptors per connection under RLIMIT_NOFILE {nofile}): clients past it wait in its accept queue"
            ));
        }
    }
    thread::sleep(COOL_DOWN);
    r
}

pub fn incident_rep(
    workload: &str,
    deployments: &[Deployment],
    options: &Options,
    rep: u32,
) -> Vec<Record> {
    let length = options.incident_window();
    let writes = options.client_writes;
    let before: Vec<BackendCounts> = deployments.iter().map(Deployment::backend_counts).collect();
    let addrs: Vec<SocketAddr> = deployments.iter().map(|d| d.addr).collect();
    // Independent targets with their own backends: replayed at once, since
    // what is measured is pass or fail, not speed.
    let replays: Vec<incident::Replay> = thread::scope(|s| {
        let handles: Vec<_> = addrs
            .iter()
            .map(|a| s.spawn(move || incident::replay(*a, length, writes)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    deployments
        .iter()
        .zip(replays)
        .zip(before)
        .map(|((d, replay), before)| {
            let mut r = new_record(workload, Shape::Incident, d, rep);
            let m = &mut r.metrics;
            m.insert("pings".into(), replay.pings as f64);
            m.insert("pings_passed".into(), replay.passed as f64);
            m.insert("silent_held".into(), replay.silent_held as f64);
            m.insert("rst_probes".into(), replay.rst_probes as f64);
            if let Some(accepted) = d.backend_counts().since(before).accepted {
                m.insert("backend_conns_accepted".into(), accepted);
            }
            if let Some(f) = replay.first_failure {
                r.notes.push(format!("first failed ping: {f}"));
            }
            r
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_saturation_note_states_the_threshold_it_is_judged_by() {
        assert!(
            client_saturated_note().contains("CPU was 95 % busy or more"),
            "{}",
            client_saturated_note()
        );
    }

    #[test]
    fn windows_are_cut_into_slices_of_about_a_second() {
        let cut = |secs: f64| {
            let window = Duration::from_secs_f64(secs);
            (slices_in(window), slice_of(window).as_secs_f64())
        };
        assert_eq!(cut(5.0), (5, 1.0));
        assert_eq!(cut(2.0), (2, 1.0));
        // Shorter than a slice: one slice, the whole window.
        assert_eq!(cut(0.2), (1, 0.2));
        // Every slice the same length, the window kept whole.
        let (n, each) = cut(2.6);
        assert_eq!(n, 3);
        assert!((each * f64::from(n) - 2.6).abs() < 1e-6, "{each}");
    }
}
