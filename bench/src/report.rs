//! Results: one record per workload, target and repetition; summaries as
//! medians with ranges and ratios against direct and against HAProxy; the
//! table printed on stdout and the JSON lines written to `results.jsonl`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::deploy::Target;
use crate::stats::Spread;

/// The shape of a workload decides which columns its table has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Shape {
    /// Closed-loop calls: throughput, latency, CPU per call.
    Calls,
    /// Calls while probes arrive at a fixed rate.
    Storm,
    /// Silent connections held.
    Idle,
    /// The incident replay.
    Incident,
}

/// One measurement window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub workload: String,
    pub shape: Shape,
    pub target: String,
    pub rep: u32,
    pub metrics: BTreeMap<String, f64>,
    /// Anything that explains a failed or partial measurement.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// All repetitions of one workload on one target.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub workload: String,
    pub shape: Shape,
    pub target: String,
    pub metrics: BTreeMap<String, Spread>,
    /// `<metric>_vs_<target>`: this target's median over that target's.
    pub ratios: BTreeMap<String, f64>,
    /// Each metric's value in each repetition, for comparisons of targets
    /// measured back to back in the same repetition (goals.rs).
    #[serde(skip)]
    pub by_rep: BTreeMap<String, BTreeMap<u32, f64>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Metrics compared across targets, and the targets they are compared with.
const RATIO_METRICS: [&str; 5] = [
    "calls_per_s",
    "mb_per_s",
    "p50_us",
    "p99_us",
    "proxy_cpu_us_per_call",
];

/// Groups records by workload and target (in run order) into summaries.
pub fn summarize(records: &[Record]) -> Vec<Summary> {
    let mut order: Vec<(String, String)> = Vec::new();
    let mut groups: BTreeMap<(String, String), Vec<&Record>> = BTreeMap::new();
    for r in records {
        let key = (r.workload.clone(), r.target.clone());
        if !groups.contains_key(&key) {
            order.push(key.clone());
        }
        groups.entry(key).or_default().push(r);
    }
    let mut summaries: Vec<Summary> = order
        .iter()
        .map(|key| {
            let reps = &groups[key];
            let mut by_rep: BTreeMap<String, BTreeMap<u32, f64>> = BTreeMap::new();
            let mut notes = Vec::new();
            for r in reps {
                for (k, v) in &r.metrics {
                    by_rep.entry(k.clone()).or_default().insert(r.rep, *v);
                }
                for n in &r.notes {
                    if !notes.contains(n) {
                        notes.push(n.clone());
                    }
                }
            }
            Summary {
                workload: key.0.clone(),
                shape: reps[0].shape,
                target: key.1.clone(),
                metrics: by_rep
                    .iter()
                    .filter_map(|(k, reps)| {
                        let values: Vec<f64> = reps.values().copied().collect();
                        Spread::of(&values).map(|s| (k.clone(), s))
                    })
                    .collect(),
                ratios: BTreeMap::new(),
                by_rep,
                notes,
            }
        })
        .collect();
    let medians: BTreeMap<(String, String, String), f64> = summaries
        .iter()
        .flat_map(|s| {
            s.metrics
                .iter()
                .map(move |(k, v)| ((s.workload.clone(), s.target.clone(), k.clone()), v.median))
        })
        .collect();
    // The answerers forward nothing: their speed is no proxy's, only their
    // CPU per call is compared (as floors).
    let answers_itself = |name: &str| {
        Target::ALL
            .iter()
            .any(|t| t.answers_itself() && t.name() == name)
    };
    for s in &mut summaries {
        for metric in RATIO_METRICS {
            let Some(own) = s.metrics.get(metric).map(|v| v.median) else {
                continue;
            };
            for reference in Target::ALL {
                if reference.name() == s.target {
                    continue;
                }
                if metric != "proxy_cpu_us_per_call"
                    && (answers_itself(&s.target) || reference.answers_itself())
                {
                    continue;
                }
                let key = (
                    s.workload.clone(),
                    reference.name().to_string(),
                    metric.to_string(),
                );
                if let Some(base) = medians.get(&key).filter(|b| **b > 0.0) {
                    s.ratios
                        .insert(format!("{metric}_vs_{}", reference.name()), own / base);
                }
            }
        }
    }
    summaries
}

/// A number in a few significant digits: 123k, 12.3k, 123, 12.3, 1.23.
pub fn fmt_num(x: f64) -> String {
    let a = x.abs();
    if !x.is_finite() {
        "-".to_string()
    } else if a >= 100_000.0 {
        format!("{:.0}k", x / 1000.0)
    } else if a >= 10_000.0 {
        format!("{:.1}k", x / 1000.0)
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// Median, and `[min–max]` when repetitions differ.
pub fn fmt_spread(s: Option<&Spread>) -> String {
    match s {
        None => "-".to_string(),
        Some(s) if s.n > 1 && s.min != s.max => {
            format!(
                "{} [{}–{}]",
                fmt_num(s.median),
                fmt_num(s.min),
                fmt_num(s.max)
            )
        }
        Some(s) => fmt_num(s.median),
    }
}

fn fmt_ratio(r: Option<&f64>) -> String {
    r.map(|r| format!("{r:.2}×"))
        .unwrap_or_else(|| "-".to_string())
}

/// One column of a table: header and how to get the cell from a summary.
type Column = (&'static str, fn(&Summary) -> String);

fn metric(s: &Summary, key: &str) -> String {
    fmt_spread(s.metrics.get(key))
}

fn columns(shape: Shape) -> Vec<Column> {
    match shape {
        Shape::Calls => vec![
            ("calls/s", |s| metric(s, "calls_per_s")),
            ("p50 µs", |s| metric(s, "p50_us")),
            ("p99 µs", |s| metric(s, "p99_us")),
            ("MB/s", |s| metric(s, "mb_per_s")),
            ("proxy CPU µs/call", |s| metric(s, "proxy_cpu_us_per_call")),
            // Proxy and backend share the server CPU: when it is saturated,
            // calls/s is the inverse of the two CPU columns' sum.
            ("backend CPU µs/call", |s| {
                metric(s, "backend_cpu_us_per_call")
            }),
            ("proxy RSS MiB", |s| metric(s, "proxy_rss_mib")),
            ("served", |s| {
                match (s.metrics.get("clients_served"), s.metrics.get("clients")) {
                    (Some(a), Some(b)) => format!("{:.0}/{:.0}", a.median, b.median),
                    _ => "-".to_string(),
                }
            }),
            ("calls/s vs direct", |s| {
                fmt_ratio(s.ratios.get("calls_per_s_vs_direct"))
            }),
            ("vs haproxy-tcp", |s| {
                fmt_ratio(s.ratios.get("calls_per_s_vs_haproxy-tcp"))
            }),
            ("vs haproxy-inspect", |s| {
                fmt_ratio(s.ratios.get("calls_per_s_vs_haproxy-inspect"))
            }),
            ("vs haproxy-splice", |s| {
                fmt_ratio(s.ratios.get("calls_per_s_vs_haproxy-splice"))
            }),
            ("CPU vs haproxy-inspect", |s| {
                fmt_ratio(s.ratios.get("proxy_cpu_us_per_call_vs_haproxy-inspect"))
            }),
            ("CPU vs haproxy-splice", |s| {
                fmt_ratio(s.ratios.get("proxy_cpu_us_per_call_vs_haproxy-splice"))
            }),
            ("CPU vs answerer", |s| {
                fmt_ratio(s.ratios.get("proxy_cpu_us_per_call_vs_answerer"))
            }),
            ("CPU vs answerer-uring", |s| {
                fmt_ratio(s.ratios.get("proxy_cpu_us_per_call_vs_answerer-uring"))
            }),
        ],
        Shape::Storm => vec![
            ("probes/s", |s| metric(s, "probes_per_s")),
            ("backend conns in window", |s| {
                metric(s, "backend_conns_accepted")
            }),
            ("over most without storm", |s| {
                metric(s, "backend_conns_over_no_storm")
            }),
            ("of them without a call", |s| {
                metric(s, "backend_conns_without_calls")
            }),
            ("HTTP probes 200", |s| metric(s, "http_probe_ok")),
            ("ping calls/s", |s| metric(s, "calls_per_s")),
            ("no-storm p99 µs", |s| metric(s, "p99_no_storm_us")),
            ("ping p99 µs", |s| metric(s, "p99_us")),
            ("p99 / no-storm p99", |s| metric(s, "p99_vs_no_storm")),
            ("proxy CPU µs/call", |s| metric(s, "proxy_cpu_us_per_call")),
        ],
        Shape::Idle => vec![
            ("held", |s| metric(s, "idle_held")),
            ("not connected", |s| metric(s, "idle_failed")),
            ("opened in s", |s| metric(s, "idle_open_s")),
            ("proxy RSS MiB", |s| metric(s, "proxy_rss_mib")),
            ("KiB per conn", |s| metric(s, "proxy_kib_per_conn")),
            ("backend conns", |s| metric(s, "backend_conns_accepted")),
            ("ping while held ms", |s| metric(s, "ping_while_held_ms")),
        ],
        Shape::Incident => vec![
            ("real pings passed", |s| {
                match (s.metrics.get("pings_passed"), s.metrics.get("pings")) {
                    (Some(a), Some(b)) => format!("{:.0}/{:.0}", a.median, b.median),
                    _ => "-".to_string(),
                }
            }),
            ("silent conns held", |s| metric(s, "silent_held")),
            ("RST probes", |s| metric(s, "rst_probes")),
            ("backend conns", |s| metric(s, "backend_conns_accepted")),
        ],
    }
}

/// The table of one workload, with a note line per target that had one.
pub fn table(workload: &str, description: &str, summaries: &[&Summary]) -> String {
    let Some(first) = summaries.first() else {
        return String::new();
    };
    let cols = columns(first.shape);
    let mut rows: Vec<Vec<String>> = vec![std::iter::once("target".to_string())
        .chain(cols.iter().map(|(h, _)| h.to_string()))
        .collect()];
    for s in summaries {
        rows.push(
            std::iter::once(s.target.clone())
                .chain(cols.iter().map(|(_, f)| f(s)))
                .collect(),
        );
    }
    // Drop columns that are empty for every target.
    let keep: Vec<bool> = (0..rows[0].len())
        .map(|c| c == 0 || rows[1..].iter().any(|r| r[c] != "-"))
        .collect();
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    let _ = writeln!(out, "\n== {workload}: {description}");
    for row in &rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if !keep[c] {
                continue;
            }
            let pad = widths[c] - cell.chars().count();
            if c == 0 {
                let _ = write!(line, "{cell}{}", " ".repeat(pad));
            } else {
                let _ = write!(line, "  {}{cell}", " ".repeat(pad));
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    for s in summaries {
        for n in &s.notes {
            let _ = writeln!(out, "  note [{}]: {n}", s.target);
        }
    }
    out
}

/// Reads back the run header and the records of a `results.jsonl`.
pub fn read_jsonl(path: &Path) -> std::io::Result<(serde_json::Value, Vec<Record>)> {
    let text = std::fs::read_to_string(path)?;
    let mut run = serde_json::Value::Null;
    let mut records = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        match v["kind"].as_str() {
            Some("run") => run = v["run"].clone(),
            Some("rep") => records.push(serde_json::from_value(v)?),
            _ => {}
        }
    }
    Ok((run, records))
}

/// Writes the run header, every record and every summary as JSON lines.
pub fn write_jsonl(
    path: &Path,
    run: &serde_json::Value,
    records: &[Record],
    summaries: &[Summary],
) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "{}", serde_json::json!({"kind": "run", "run": run}))?;
    for r in records {
        let mut v = serde_json::to_value(r)?;
        v["kind"] = "rep".into();
        writeln!(out, "{v}")?;
    }
    for s in summaries {
        let mut v = serde_json::to_value(s)?;
        v["kind"] = "summary".into();
        writeln!(out, "{v}")?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(target: &str, rep: u32, calls: f64, cpu: Option<f64>) -> Record {
        let mut metrics = BTreeMap::from([("calls_per_s".to_string(), calls)]);
        if let Some(cpu) = cpu {
            metrics.insert("proxy_cpu_us_per_call".to_string(), cpu);
        }
        Record {
            workload: "ping-1".to_string(),
            shape: Shape::Calls,
            target: target.to_string(),
            rep,
            metrics,
            notes: vec![],
        }
    }

    #[test]
    fn summaries_take_medians_and_ratios() {
        let records = vec![
            rec("direct", 0, 100.0, None),
            rec("haproxy-inspect", 0, 40.0, Some(30.0)),
            rec("probegate", 0, 80.0, Some(10.0)),
            rec("direct", 1, 120.0, None),
            rec("haproxy-inspect", 1, 60.0, Some(30.0)),
            rec("probegate", 1, 60.0, Some(14.0)),
            rec("direct", 2, 110.0, None),
            rec("haproxy-inspect", 2, 50.0, Some(20.0)),
            rec("probegate", 2, 100.0, Some(12.0)),
        ];
        let s = summarize(&records);
        let names: Vec<_> = s.iter().map(|s| s.target.as_str()).collect();
        assert_eq!(names, ["direct", "haproxy-inspect", "probegate"]);
        let pg = &s[2];
        assert_eq!(pg.metrics["calls_per_s"].median, 80.0);
        assert_eq!(pg.metrics["calls_per_s"].min, 60.0);
        assert!((pg.ratios["calls_per_s_vs_direct"] - 80.0 / 110.0).abs() < 1e-9);
        assert!((pg.ratios["calls_per_s_vs_haproxy-inspect"] - 80.0 / 50.0).abs() < 1e-9);
        assert!((pg.ratios["proxy_cpu_us_per_call_vs_haproxy-inspect"] - 12.0 / 30.0).abs() < 1e-9);
        assert!(!pg.ratios.contains_key("calls_per_s_vs_haproxy-tcp"));
        let t = table("ping-1", "one connection", &s.iter().collect::<Vec<_>>());
        assert!(t.contains("80.0 [60.0–100]"), "{t}");
        assert!(!t.contains("MB/s"), "empty columns are dropped: {t}");
    }

    #[test]
    fn the_answerers_are_compared_by_cpu_only() {
        let records = vec![
            rec("direct", 0, 100.0, None),
            rec("probegate", 0, 50.0, Some(20.0)),
            rec("answerer", 0, 95.0, Some(10.0)),
            rec("answerer-uring", 0, 97.0, Some(8.0)),
        ];
        let s = summarize(&records);
        let (pg, answerer, uring) = (&s[1], &s[2], &s[3]);
        assert!((pg.ratios["proxy_cpu_us_per_call_vs_answerer"] - 2.0).abs() < 1e-9);
        assert!((pg.ratios["proxy_cpu_us_per_call_vs_answerer-uring"] - 2.5).abs() < 1e-9);
        assert!(!pg.ratios.contains_key("calls_per_s_vs_answerer"));
        assert!(!pg.ratios.contains_key("calls_per_s_vs_answerer-uring"));
        assert!(!answerer.ratios.contains_key("calls_per_s_vs_direct"));
        assert!(!uring.ratios.contains_key("calls_per_s_vs_direct"));
        assert!(!uring.ratios.contains_key("calls_per_s_vs_answerer"));
        assert!((answerer.ratios["proxy_cpu_us_per_call_vs_probegate"] - 0.5).abs() < 1e-9);
        assert!((uring.ratios["proxy_cpu_us_per_call_vs_answerer"] - 0.8).abs() < 1e-9);
    }

    #[test]
    fn jsonl_round_trips() {
        let records = vec![
            rec("direct", 0, 100.0, None),
            rec("probegate", 0, 90.0, Some(9.0)),
        ];
        let path = std::env::temp_dir().join(format!("bench-rt-{}.jsonl", std::process::id()));
        let run = serde_json::json!({"quick": true});
        write_jsonl(&path, &run, &records, &summarize(&records)).expect("write");
        let (run_back, back) = read_jsonl(&path).expect("read");
        let _ = std::fs::remove_file(&path);
        assert_eq!(run_back, run);
        assert_eq!(back.len(), 2);
        assert_eq!(back[1].target, "probegate");
        assert_eq!(back[1].metrics["proxy_cpu_us_per_call"], 9.0);
    }

    #[test]
    fn numbers_keep_three_digits() {
        assert_eq!(fmt_num(123_456.0), "123k");
        assert_eq!(fmt_num(12_345.0), "12.3k");
        assert_eq!(fmt_num(123.4), "123");
        assert_eq!(fmt_num(12.34), "12.3");
        assert_eq!(fmt_num(1.234), "1.23");
        assert_eq!(fmt_num(f64::NAN), "-");
    }
}
