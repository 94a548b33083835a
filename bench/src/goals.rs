//! The targets, checked against this run's medians and said plainly:
//! met, missed (with the measured gap), or not measured.
//!
//! "HAProxy" means the better of its two configurations for each number
//! (the higher calls/s, the lower CPU per call, the lower latency), so a
//! target is never met by picking the weaker reference.

use crate::deploy::Target;
use crate::report::Summary;

fn get(summaries: &[Summary], workload: &str, target: Target, key: &str) -> Option<f64> {
    summaries
        .iter()
        .find(|s| s.workload == workload && s.target == target.name())?
        .metrics
        .get(key)
        .map(|s| s.median)
}

/// The best HAProxy value of `key` for `workload`: max when higher is
/// better, min otherwise.
fn best_haproxy(summaries: &[Summary], workload: &str, key: &str, higher: bool) -> Option<f64> {
    let values = [Target::HaproxyTcp, Target::HaproxyInspect]
        .into_iter()
        .filter_map(|t| get(summaries, workload, t, key));
    if higher {
        values.reduce(f64::max)
    } else {
        values.reduce(f64::min)
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "MET   "
    } else {
        "MISSED"
    }
}

/// One line per target of the issue that this run measured.
pub fn check(s: &[Summary]) -> Vec<String> {
    let pg = Target::Probegate;
    let mut out = Vec::new();

    if let (Some(passed), Some(pings)) = (
        get(s, "incident", pg, "pings_passed"),
        get(s, "incident", pg, "pings"),
    ) {
        let others: Vec<String> = [Target::Direct, Target::HaproxyTcp, Target::HaproxyInspect]
            .into_iter()
            .filter_map(|t| {
                Some(format!(
                    "{} {:.0}/{:.0}",
                    t.name(),
                    get(s, "incident", t, "pings_passed")?,
                    get(s, "incident", t, "pings")?
                ))
            })
            .collect();
        out.push(format!(
            "{} incident replay: probegate passed {passed:.0}/{pings:.0} real pings (goal: all); {}",
            verdict(pings > 0.0 && passed >= pings),
            others.join(", ")
        ));
    }

    if let (Some(p), Some(h)) = (
        get(s, "ping-32", pg, "calls_per_s"),
        best_haproxy(s, "ping-32", "calls_per_s", true),
    ) {
        out.push(format!(
            "{} ping-32 calls/s: probegate {p:.0} = {:.2}× HAProxy's best {h:.0} (goal ≥ 1.5×)",
            verdict(p >= 1.5 * h),
            p / h
        ));
    }
    for w in ["ping-32", "ping-1"] {
        if let (Some(p), Some(h)) = (
            get(s, w, pg, "proxy_cpu_us_per_call"),
            best_haproxy(s, w, "proxy_cpu_us_per_call", false),
        ) {
            out.push(format!(
                "{} {w} proxy CPU/call: probegate {p:.1} µs = {:.2}× HAProxy's best {h:.1} µs (goal ≤ 0.5×)",
                verdict(p <= 0.5 * h),
                p / h
            ));
        }
    }
    if let (Some(served), Some(clients)) = (
        get(s, "ping-32-w10", pg, "clients_served"),
        get(s, "ping-32-w10", pg, "clients"),
    ) {
        let h = best_haproxy(s, "ping-32-w10", "clients_served", true);
        out.push(format!(
            "{} ping-32-w10: probegate served {served:.0}/{clients:.0} clients (goal: all){}",
            verdict(served >= clients),
            h.map(|h| format!("; HAProxy {h:.0}/{clients:.0}"))
                .unwrap_or_default()
        ));
    }
    if let (Some(p), Some(d), Some(h)) = (
        get(s, "ping-1", pg, "p50_us"),
        get(s, "ping-1", Target::Direct, "p50_us"),
        best_haproxy(s, "ping-1", "p50_us", false),
    ) {
        out.push(format!(
            "{} ping-1 p50 overhead over direct: probegate +{:.1} µs, HAProxy's best +{:.1} µs (goal: ≤ HAProxy's)",
            verdict(p - d <= h - d),
            p - d,
            h - d
        ));
    }
    for (w, what) in [
        ("upload-1m", "with storage"),
        ("upload-1m-nostore", "data path alone"),
    ] {
        if let (Some(p), Some(h)) = (
            get(s, w, pg, "mb_per_s"),
            best_haproxy(s, w, "mb_per_s", true),
        ) {
            out.push(format!(
                "{} {w} ({what}): probegate {p:.1} MB/s = {:.2}× HAProxy's best {h:.1} MB/s (goal ≥ 1.5×)",
                verdict(p >= 1.5 * h),
                p / h
            ));
        }
    }
    if let Some(conns) = get(s, "probe-storm", pg, "backend_conns_accepted") {
        let over = get(s, "probe-storm", pg, "backend_conns_over_no_storm");
        let sent = get(s, "probe-storm", pg, "probes_sent").unwrap_or(0.0);
        out.push(match over {
            Some(over) => format!(
                "{} probe storm: {conns:.0} backend connections accepted through probegate while {sent:.0} probes arrived, {over:.0} more than the same window without probes (goal: 0 probe connections)",
                verdict(over <= 0.0)
            ),
            // probegate's own connections (pool, health checks) also land
            // in the window: only the excess over ping-1's says anything.
            None => format!(
                "UNKNOWN probe storm: {conns:.0} backend connections accepted through probegate while {sent:.0} probes arrived; without the ping-1 workload in this run there is no window without probes to compare with (goal: 0 probe connections)"
            ),
        });
    }
    if let Some(ratio) = get(s, "probe-storm", pg, "p99_vs_no_storm") {
        out.push(format!(
            "{} probe storm: probegate real-call p99 {ratio:.2}× its value without the storm (goal ≤ 2×)",
            verdict(ratio <= 2.0)
        ));
    }
    if let Some(rss) = get(s, "idle-clients", pg, "proxy_rss_mib") {
        let held = get(s, "idle-clients", pg, "idle_held").unwrap_or(0.0);
        let failed = get(s, "idle-clients", pg, "idle_failed").unwrap_or(0.0);
        let line = if failed > 0.0 {
            format!(
                "PARTIAL idle clients: only {held:.0} of {:.0} connections were accepted in time; probegate RSS {rss:.1} MiB with those (goal ≤ 64 MiB at 10,000)",
                held + failed
            )
        } else {
            format!(
                "{} idle clients: probegate RSS {rss:.1} MiB with {held:.0} held (goal ≤ 64 MiB)",
                verdict(rss <= 64.0)
            )
        };
        out.push(line);
    }
    if let Some(conns) = get(s, "idle-clients", pg, "backend_conns_accepted") {
        out.push(format!(
            "{} idle clients: {conns:.0} new backend connections through probegate (goal: none beyond its pool)",
            verdict(conns <= 64.0)
        ));
    }
    out
}
