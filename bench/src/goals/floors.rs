//! What bounds a goal from outside probegate: the answerers' CPU per call
//! (the floor a proxy's client side costs), whether the server CPU was
//! saturated (so calls/s follows CPU per call), and the ceiling a proxy at
//! the floor would reach.

use super::lookup::{get, value, At};
use super::reference::{
    best_haproxy_in_rep, best_haproxy_target, haproxy_in_run, per_probegate_rep, ratios_text,
};
use crate::deploy::Target;
use crate::report::Summary;

/// The reference floor of a proxy's CPU per call in `workload`, from an
/// answerer target measured in this run (`Target::Answerer` on probegate's
/// runtime, `Target::AnswererUring` on io_uring: the client side alone, no
/// backend), read `at` the medians or one repetition. With 32 connections
/// calls to the backend can share system calls, so the floor is the client
/// side alone, as measured; with one, every call also costs a receive, a
/// send and a wake-up on the backend side, which is taken to cost as much
/// again (an estimate: twice the measurement).
pub(super) fn floor_at(s: &[Summary], workload: &str, answerer: Target, at: At) -> Option<f64> {
    Some(floor_sides(workload) * value(s, workload, answerer, "proxy_cpu_us_per_call", at)?)
}

/// How many times the answerer's cost the floor of `workload` is taken to
/// be (see [`floor_at`]).
pub(super) fn floor_sides(workload: &str) -> f64 {
    if workload == "ping-1" {
        2.0
    } else {
        1.0
    }
}

/// The floor of [`floor_at`] from the medians, and how it was reckoned.
pub(super) fn floor(s: &[Summary], workload: &str, answerer: Target) -> Option<(f64, String)> {
    let client_side = get(s, workload, answerer, "proxy_cpu_us_per_call")?;
    let name = answerer.name();
    let why = if floor_sides(workload) > 1.0 {
        format!("estimated as twice the {name}'s {client_side:.1} µs, one side each")
    } else {
        format!("the {name}'s, the client side without any backend")
    };
    Some((floor_sides(workload) * client_side, why))
}

/// probegate's CPU per call over the floor on probegate's runtime, for each
/// repetition, each from that repetition's numbers: the medians can pair an
/// answerer measured in the VM's faster phase with a probegate measured in
/// its slower one. Empty with fewer than two repetitions.
pub(super) fn floor_ratio_per_rep(s: &[Summary], workload: &str) -> Vec<Option<f64>> {
    let per_rep = per_probegate_rep(s, workload, "proxy_cpu_us_per_call", |rep, p| {
        let floor = floor_at(s, workload, Target::Answerer, At::Rep(rep))?;
        (floor > 0.0).then(|| p / floor)
    });
    if per_rep.len() < 2 {
        return Vec::new();
    }
    per_rep
}

/// CPU per call, in µs, of `target`'s proxy and backend together, read
/// `at` the medians or one repetition.
pub(super) fn server_cpu_per_call(
    s: &[Summary],
    workload: &str,
    target: Target,
    at: At,
) -> Option<f64> {
    Some(
        value(s, workload, target, "proxy_cpu_us_per_call", at)?
            + value(s, workload, target, "backend_cpu_us_per_call", at)?,
    )
}

/// Share of one CPU that `target`'s proxy and backend used per second of
/// `workload`: calls/s times their CPU per call (medians).
pub(super) fn server_cpu_busy(s: &[Summary], workload: &str, target: Target) -> Option<f64> {
    Some(
        get(s, workload, target, "calls_per_s")?
            * server_cpu_per_call(s, workload, target, At::Median)?
            / 1e6,
    )
}

/// Busy share of the server CPU above which calls/s is taken to be set by
/// CPU per call.
pub(super) const SATURATED: f64 = 0.95;

/// HAProxy's best configuration in `workload` by `key` (higher is
/// better), with the busy shares of the server CPU behind probegate and
/// behind it, when both are saturated: only then is calls/s the inverse of
/// proxy + backend CPU per call, so that a ceiling or a budget can be
/// reckoned from CPU per call. `None` otherwise, or when a number is
/// missing.
pub(super) fn saturated_against_best_haproxy(
    s: &[Summary],
    workload: &str,
    key: &str,
) -> Option<(Target, f64, f64)> {
    let (haproxy, _) = best_haproxy_target(s, workload, key, true)?;
    let p_busy = server_cpu_busy(s, workload, Target::Probegate)?;
    let h_busy = server_cpu_busy(s, workload, haproxy)?;
    (p_busy.min(h_busy) >= SATURATED).then_some((haproxy, p_busy, h_busy))
}

/// What a proxy costing only `answerer`'s CPU (with probegate's backend
/// cost) would reach against HAProxy's `haproxy` configuration when the
/// server CPU is saturated (see [`ping32_ceiling`]): HAProxy's proxy +
/// backend CPU per call over the answerer's + probegate's backend's, read
/// `at` the medians or one repetition.
pub(super) fn ceiling(
    s: &[Summary],
    workload: &str,
    haproxy: Target,
    answerer: Target,
    at: At,
) -> Option<f64> {
    let cpu = |target, key| value(s, workload, target, key, at);
    let floor = cpu(answerer, "proxy_cpu_us_per_call")?;
    let p_backend = cpu(Target::Probegate, "backend_cpu_us_per_call")?;
    Some(server_cpu_per_call(s, workload, haproxy, at)? / (floor + p_backend))
}

/// When the server CPU is saturated behind both probegate and HAProxy's
/// faster configuration, calls/s is the inverse of proxy + backend CPU per
/// call, and the ratio a proxy costing only the answerer's CPU would reach
/// (with probegate's backend cost) bounds what a proxy on this runtime
/// could show in this run; the io_uring answerer's, what one on io_uring
/// could.
pub(super) fn ping32_ceiling(s: &[Summary]) -> Option<String> {
    let w = "ping-32";
    let (haproxy, p_busy, h_busy) = saturated_against_best_haproxy(s, w, "calls_per_s")?;
    let reach = |answerer| ceiling(s, w, haproxy, answerer, At::Median);
    let uring = reach(Target::AnswererUring)
        .map(|r| format!(", one costing only the io_uring answerer's {r:.2}×"))
        .unwrap_or_default();
    let per_rep = ceiling_per_rep(s, w);
    let per_rep = if per_rep.len() > 1 {
        format!(
            " (per repetition, against HAProxy's best in the same repetition: {})",
            ratios_text(&per_rep)
        )
    } else {
        String::new()
    };
    Some(format!(
        "; the server CPU was {:.0} % busy behind probegate and {:.0} % behind HAProxy, so calls/s is the inverse of proxy + backend CPU per call: a proxy costing only the answerer's CPU would reach {:.2}×{per_rep}{uring}",
        100.0 * p_busy,
        100.0 * h_busy,
        reach(Target::Answerer)?
    ))
}

/// The ceiling of [`ping32_ceiling`] for each repetition probegate
/// measured, each from the numbers of that repetition (HAProxy's best
/// configuration in it, the answerer's cost and probegate's backend cost in
/// it), so it lines up with the per-repetition verdict; `None` where one is
/// missing. HAProxy's best is taken over every configuration that ran the
/// workload, or none: never the weaker one alone. That is a touch stricter
/// than the verdict, which counts only the configurations that measured
/// calls/s: one that ran without measuring it leaves every ceiling here
/// untaken while the verdict is judged against the other.
pub(super) fn ceiling_per_rep(s: &[Summary], workload: &str) -> Vec<Option<f64>> {
    let in_run = haproxy_in_run(s, workload);
    per_probegate_rep(s, workload, "calls_per_s", |rep, _| {
        let (haproxy, _) = best_haproxy_in_rep(s, workload, &in_run, "calls_per_s", rep, true)?;
        ceiling(s, workload, haproxy, Target::Answerer, At::Rep(rep))
    })
}
