//! What the goal for uploads *to storage* leaves probegate to spend, said in
//! the verdict line of every run that measured it.
//!
//! When the server CPU is saturated behind probegate and behind HAProxy,
//! uploads/s is the inverse of proxy + uploader CPU per upload, so "1.5×
//! HAProxy's MB/s" is a budget: probegate and the uploader behind it may
//! spend at most HAProxy's and its uploader's CPU per upload over 1.5. The
//! uploader alone (going direct) spends most of that budget on its own, on
//! work no proxy can take off it (it hashes and stores every byte). The
//! line gives the budget, what the uploader leaves of it, and what probegate
//! spends with storage and on the data path alone (`upload-1m-nostore`,
//! where no uploader shares the CPU), so a miss can be read as "probegate
//! too dear" or "no proxy fits".

use super::floors::{saturated_against_best_haproxy, server_cpu_per_call};
use super::lookup::{get, At};
use super::THROUGHPUT_GOAL;
use crate::deploy::Target;
use crate::report::Summary;

/// The workload judged, and the one that measures the same proxy without
/// storage behind it.
pub(super) const WITH_STORAGE: &str = "upload-1m";
const DATA_PATH: &str = "upload-1m-nostore";

/// The words appended to the upload-1m verdict line, or `None` when the run
/// lacks a number it needs or a server CPU was not saturated (then CPU per
/// upload does not set uploads/s, and there is no budget to speak of).
pub(super) fn explain(s: &[Summary]) -> Option<String> {
    let w = WITH_STORAGE;
    let (haproxy, p_busy, h_busy) = saturated_against_best_haproxy(s, w, "mb_per_s")?;
    let haproxy_cost = server_cpu_per_call(s, w, haproxy, At::Median)?;
    let budget = haproxy_cost / THROUGHPUT_GOAL;
    let probegate = get(s, w, Target::Probegate, "proxy_cpu_us_per_call")?;
    let behind = get(s, w, Target::Probegate, "backend_cpu_us_per_call")?;
    let direct = get(s, w, Target::Direct, "backend_cpu_us_per_call")?;
    let left = budget - direct;
    let leaves = if left > 0.0 {
        format!("which leaves {left:.0} µs for the proxy")
    } else {
        "which leaves nothing for the proxy".to_string()
    };
    let data_path = get(s, DATA_PATH, Target::Probegate, "proxy_cpu_us_per_call")
        .map(|d| format!(", {d:.0} µs on the data path alone ({DATA_PATH})"))
        .unwrap_or_default();
    Some(format!(
        "; the server CPU was {:.0} % busy behind probegate and {:.0} % behind HAProxy, so uploads/s is the inverse of proxy + uploader CPU per upload: {THROUGHPUT_GOAL}× needs probegate and its uploader to spend at most {budget:.0} µs per upload, the uploader alone spends {direct:.0} µs going direct (a proxy costing nothing would reach {:.2}×), {leaves}; probegate spent {probegate:.0} µs with storage (its uploader {behind:.0} µs){data_path}",
        100.0 * p_busy,
        100.0 * h_busy,
        haproxy_cost / direct,
    ))
}

#[cfg(test)]
mod tests {
    use super::super::check;
    use super::super::tests::{cpu, line, summary};
    use crate::deploy::Target;

    /// A run of the upload workloads: (uploads/s, proxy µs, uploader µs)
    /// per target with storage, and probegate's proxy µs without.
    fn run(probegate: (f64, f64, f64)) -> Vec<crate::report::Summary> {
        let with = |target, (calls, proxy, backend): (f64, f64, f64)| {
            let mut metrics = cpu(calls, proxy, backend).to_vec();
            metrics.push(("mb_per_s", calls * 1.048576));
            summary("upload-1m", target, &metrics)
        };
        vec![
            with(Target::Direct, (1100.0, 0.0, 890.0)),
            with(Target::HaproxyTcp, (620.0, 510.0, 1040.0)),
            with(Target::HaproxyInspect, (600.0, 520.0, 1050.0)),
            with(Target::Probegate, probegate),
            summary(
                "upload-1m-nostore",
                Target::Probegate,
                &[("proxy_cpu_us_per_call", 247.0)],
            ),
        ]
    }

    #[test]
    fn a_saturated_run_gives_the_budget_and_what_the_uploader_leaves_of_it() {
        // 620 x 1550 us = 96 %, 660 x 1500 us = 99 %; budget 1550 / 1.5.
        let lines = check(&run((660.0, 300.0, 1200.0)));
        let upload = line(&lines, "upload-1m (with storage)");
        assert!(upload.starts_with("MISSED"), "{upload}");
        assert!(
            upload.contains("99 % busy behind probegate and 96 % behind HAProxy")
                && upload.contains("at most 1033 µs per upload, the uploader alone spends 890 µs going direct (a proxy costing nothing would reach 1.74×), which leaves 143 µs for the proxy; probegate spent 300 µs with storage (its uploader 1200 µs), 247 µs on the data path alone (upload-1m-nostore)"),
            "{upload}"
        );
    }

    #[test]
    fn no_budget_is_claimed_when_a_server_cpu_had_time_to_spare() {
        // 500 x 1500 us = 75 %: uploads/s was not set by CPU per upload.
        let lines = check(&run((500.0, 300.0, 1200.0)));
        let upload = line(&lines, "upload-1m (with storage)");
        assert!(
            !upload.contains("busy") && !upload.contains("going direct"),
            "{upload}"
        );
    }

    #[test]
    fn an_uploader_dearer_than_the_budget_leaves_nothing() {
        let mut s = run((660.0, 300.0, 1200.0));
        s.retain(|x| x.target != "direct");
        s.push(summary(
            "upload-1m",
            Target::Direct,
            &cpu(900.0, 0.0, 1100.0),
        ));
        let lines = check(&s);
        let upload = line(&lines, "upload-1m (with storage)");
        assert!(
            upload.contains("which leaves nothing for the proxy"),
            "{upload}"
        );
    }
}
