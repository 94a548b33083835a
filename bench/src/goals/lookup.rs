//! Reading this run's summaries: one target's median or one repetition's
//! value of a metric, and the best of several.

use crate::deploy::Target;
use crate::report::Summary;

/// This run's summary of `target` in `workload`, if it measured them.
pub(super) fn find<'a>(s: &'a [Summary], workload: &str, target: Target) -> Option<&'a Summary> {
    s.iter()
        .find(|x| x.workload == workload && x.target == target.name())
}

/// The median of `key` for `target` in `workload`.
pub(super) fn get(s: &[Summary], workload: &str, target: Target, key: &str) -> Option<f64> {
    find(s, workload, target)?
        .metrics
        .get(key)
        .map(|m| m.median)
}

/// `key` of `target` in `workload`, repetition by repetition.
pub(super) fn reps<'a>(
    s: &'a [Summary],
    workload: &str,
    target: Target,
    key: &str,
) -> Option<&'a std::collections::BTreeMap<u32, f64>> {
    find(s, workload, target)?.by_rep.get(key)
}

/// `key` of `target` in `workload`, as measured in repetition `rep`.
pub(super) fn in_rep(
    s: &[Summary],
    workload: &str,
    target: Target,
    key: &str,
    rep: u32,
) -> Option<f64> {
    reps(s, workload, target, key)?.get(&rep).copied()
}

/// Which numbers a reckoning reads: the run's medians, or one repetition's,
/// so that the same formula gives both the headline figure and the
/// per-repetition ones.
#[derive(Debug, Clone, Copy)]
pub(super) enum At {
    Median,
    Rep(u32),
}

/// `key` of `target` in `workload`, read `at` the medians or one
/// repetition (see [`get`] and [`in_rep`]).
pub(super) fn value(
    s: &[Summary],
    workload: &str,
    target: Target,
    key: &str,
    at: At,
) -> Option<f64> {
    match at {
        At::Median => get(s, workload, target, key),
        At::Rep(rep) => in_rep(s, workload, target, key, rep),
    }
}

/// The largest value of `key` over the repetitions of `workload` on
/// `target`.
pub(super) fn worst_rep(s: &[Summary], workload: &str, target: Target, key: &str) -> Option<f64> {
    reps(s, workload, target, key)?
        .values()
        .copied()
        .max_by(f64::total_cmp)
}

/// The best of `candidates` by their value: the highest when `higher` is
/// better, the lowest otherwise.
pub(super) fn best<T>(
    candidates: impl Iterator<Item = (T, f64)>,
    higher: bool,
) -> Option<(T, f64)> {
    if higher {
        candidates.max_by(|a, b| a.1.total_cmp(&b.1))
    } else {
        candidates.min_by(|a, b| a.1.total_cmp(&b.1))
    }
}
