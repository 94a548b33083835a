//! HAProxy as the reference: its best configuration for each number, in
//! the run and in each repetition, and probegate's ratio to it judged
//! repetition by repetition.

use super::lookup::{best, find, get, in_rep, reps};
use crate::deploy::Target;
use crate::report::Summary;
use crate::stats::Spread;

/// The HAProxy configurations the bench runs, whichever is best being the
/// reference.
pub(super) const HAPROXY: [Target; 3] = [
    Target::HaproxyTcp,
    Target::HaproxyInspect,
    Target::HaproxySplice,
];

/// The HAProxy configuration with the best median of `key` for `workload`
/// (see [`best`]), and that median.
pub(super) fn best_haproxy_target(
    s: &[Summary],
    workload: &str,
    key: &str,
    higher: bool,
) -> Option<(Target, f64)> {
    let medians = HAPROXY
        .into_iter()
        .filter_map(|t| Some((t, get(s, workload, t, key)?)));
    best(medians, higher)
}

/// The best HAProxy median of `key` for `workload` (see [`best_haproxy_target`]).
pub(super) fn best_haproxy(s: &[Summary], workload: &str, key: &str, higher: bool) -> Option<f64> {
    best_haproxy_target(s, workload, key, higher).map(|(_, value)| value)
}

/// The HAProxy configurations that measured `key` in `workload` in this
/// run, in any repetition.
pub(super) fn haproxy_measuring(s: &[Summary], workload: &str, key: &str) -> Vec<Target> {
    HAPROXY
        .into_iter()
        .filter(|&t| reps(s, workload, t, key).is_some())
        .collect()
}

/// The HAProxy configurations that ran `workload` in this run, whatever
/// they measured.
pub(super) fn haproxy_in_run(s: &[Summary], workload: &str) -> Vec<Target> {
    HAPROXY
        .into_iter()
        .filter(|&t| find(s, workload, t).is_some())
        .collect()
}

/// HAProxy's best configuration by `key` in repetition `rep` of `workload`
/// (see [`best`]), and its value there, taken over every one of `measured`
/// (the configurations measured in the run) or none: `None` when one of
/// them is missing from the repetition, so the weaker one alone is never
/// the reference.
pub(super) fn best_haproxy_in_rep(
    s: &[Summary],
    workload: &str,
    measured: &[Target],
    key: &str,
    rep: u32,
    higher: bool,
) -> Option<(Target, f64)> {
    let values: Option<Vec<(Target, f64)>> = measured
        .iter()
        .map(|&t| Some((t, in_rep(s, workload, t, key, rep)?)))
        .collect();
    best(values?.into_iter(), higher)
}

/// `each(rep, value)` for each repetition in which probegate measured `key`
/// in `workload`, with its value there, in repetition order (empty if it
/// never did): the walk behind every per-repetition list of the verdicts.
pub(super) fn per_probegate_rep(
    s: &[Summary],
    workload: &str,
    key: &str,
    each: impl Fn(u32, f64) -> Option<f64>,
) -> Vec<Option<f64>> {
    reps(s, workload, Target::Probegate, key).map_or_else(Vec::new, |probegate| {
        probegate.iter().map(|(&rep, &p)| each(rep, p)).collect()
    })
}

/// probegate's `key` over HAProxy's best in the same repetition, for each
/// repetition probegate measured, in repetition order: `None` where the
/// ratio cannot be taken (a configuration of HAProxy that measured `key`
/// in the run is missing from that repetition, or a value is not
/// positive), which counts as a miss. Targets run in the same repetition,
/// a few windows apart, so a drift of the VM between repetitions (it
/// switches between a slower and a faster phase) hits both sides of each
/// ratio alike, where the ratio of the medians can pair a fast-phase
/// HAProxy with a slow-phase probegate.
pub(super) fn per_rep_vs_best_haproxy(
    s: &[Summary],
    workload: &str,
    key: &str,
    higher: bool,
) -> Vec<Option<f64>> {
    let haproxy = haproxy_measuring(s, workload, key);
    if haproxy.is_empty() {
        return Vec::new();
    }
    per_probegate_rep(s, workload, key, |rep, p| {
        let (_, best) = best_haproxy_in_rep(s, workload, &haproxy, key, rep, higher)?;
        let ratio = p / best;
        (best > 0.0 && ratio.is_finite()).then_some(ratio)
    })
}

/// A ratio goal against HAProxy's best: met when a strict majority of the
/// repetitions meet it, each against HAProxy in the same repetition (with
/// one repetition, or none paired, on the medians' ratio `of_medians`), and
/// the words that say so, including when the medians' ratio disagrees.
pub(super) fn judged_ratio(
    s: &[Summary],
    workload: &str,
    key: &str,
    higher: bool,
    of_medians: f64,
    meets: impl Fn(f64) -> bool,
) -> (bool, String) {
    let per_rep = per_rep_vs_best_haproxy(s, workload, key, higher);
    let paired: Vec<f64> = per_rep.iter().flatten().copied().collect();
    let (Some(spread), true) = (Spread::of(&paired), per_rep.len() > 1) else {
        return (meets(of_medians), String::new());
    };
    let met = per_rep.iter().flatten().filter(|r| meets(**r)).count();
    let judged = 2 * met > per_rep.len();
    let each = ratios_text(&per_rep);
    let disagree = if judged == meets(of_medians) {
        String::new()
    } else {
        format!(", ON THE LINE: the medians' ratio, {of_medians:.3}×, says otherwise")
    };
    (
        judged,
        format!(
            "; per repetition, against HAProxy's best in the same repetition: {} (median {:.3}×), {met} of {} meeting the goal{disagree}",
            each,
            spread.median,
            per_rep.len(),
        ),
    )
}

/// Ratios as the verdict lines print them, in order: "1.52×, n/a, 1.48×"
/// (`None`: a ratio that could not be taken).
pub(super) fn ratios_text(ratios: &[Option<f64>]) -> String {
    ratios
        .iter()
        .map(|r| r.map_or("n/a".to_string(), |r| format!("{r:.2}×")))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn verdict(ok: bool) -> &'static str {
    if ok {
        "MET   "
    } else {
        "MISSED"
    }
}
