//! Reading a server's Prometheus `/metrics` page in tests.
//!
//! Tests assert on what an operator would see, so they scrape the real text
//! exposition from the admin listener. A series is named the way one writes
//! it in PromQL, `name{label="v",other="w"}`; label order does not matter.

use std::collections::BTreeMap;
use std::net::SocketAddr;

/// One scrape of `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Series key (name + sorted labels) -> value.
    series: BTreeMap<SeriesKey, f64>,
    /// Metric families declared by `# TYPE` lines.
    families: Vec<String>,
    /// The raw text, for failure messages.
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct SeriesKey {
    name: String,
    labels: Vec<(String, String)>,
}

impl Metrics {
    /// Fetches and parses `http://admin/metrics`; panics when the page cannot
    /// be fetched (a test asking for metrics needs them).
    pub fn scrape(admin: SocketAddr) -> Metrics {
        let resp = crate::http::get(admin, "/metrics")
            .unwrap_or_else(|e| panic!("scraping http://{admin}/metrics: {e:#}"));
        assert!(
            resp.status.is_success(),
            "http://{admin}/metrics answered {}: {}",
            resp.status,
            resp.text()
        );
        Metrics::parse(&resp.text())
    }

    /// Parses the Prometheus text format.
    pub fn parse(text: &str) -> Metrics {
        let mut metrics = Metrics {
            text: text.to_string(),
            ..Metrics::default()
        };
        for line in text.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                if let Some(name) = rest.split_whitespace().next() {
                    metrics.families.push(name.to_string());
                }
                continue;
            }
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let (Some(key), Ok(value)) = (parse_series(series), parse_value(value)) else {
                continue;
            };
            metrics.series.insert(key, value);
        }
        metrics
    }

    /// The value of one series, or `None` when that exact series is absent.
    /// Panics when `query` is malformed.
    pub fn get_opt(&self, query: &str) -> Option<f64> {
        let key = parse_series(query).unwrap_or_else(|| panic!("bad metric query {query:?}"));
        self.series.get(&key).copied()
    }

    /// The value of one series. A labelled series of a declared family that
    /// has not been observed yet reads as 0 (a counter nobody incremented);
    /// a family the server does not declare at all panics, so a misspelt
    /// name fails the test instead of reading 0.
    pub fn get(&self, query: &str) -> f64 {
        if let Some(v) = self.get_opt(query) {
            return v;
        }
        let key = parse_series(query).unwrap_or_else(|| panic!("bad metric query {query:?}"));
        assert!(
            self.declares(&key.name),
            "metric {:?} is not exposed; the page was:\n{}",
            key.name,
            self.text
        );
        0.0
    }

    /// The sum over every series of `name` whose labels include all of
    /// `labels` (e.g. all outcomes of `uploader_uploads_total`).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        assert!(
            self.declares(name),
            "metric {name:?} is not exposed; the page was:\n{}",
            self.text
        );
        self.series
            .iter()
            .filter(|(k, _)| {
                k.name == name
                    && labels
                        .iter()
                        .all(|(ln, lv)| k.labels.iter().any(|(n, v)| n == ln && v == lv))
            })
            .map(|(_, v)| v)
            .sum()
    }

    /// Whether a `# TYPE` line declares `name` (or its histogram family,
    /// for `_bucket`/`_sum`/`_count`).
    pub fn declares(&self, name: &str) -> bool {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        self.families.iter().any(|f| f == name || f == base)
    }
}

/// One series of one scrape: `metric(admin, "uploader_uploads_total{outcome=\"ok\"}")`.
pub fn metric(admin: SocketAddr, query: &str) -> f64 {
    Metrics::scrape(admin).get(query)
}

fn parse_series(s: &str) -> Option<SeriesKey> {
    let s = s.trim();
    let (name, labels) = match s.find('{') {
        None => (s, Vec::new()),
        Some(i) => {
            let inner = s[i + 1..].strip_suffix('}')?;
            (&s[..i], parse_labels(inner)?)
        }
    };
    if name.is_empty() {
        return None;
    }
    let mut labels = labels;
    labels.sort();
    Some(SeriesKey {
        name: name.to_string(),
        labels,
    })
}

fn parse_labels(mut s: &str) -> Option<Vec<(String, String)>> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start_matches([',', ' ']);
        if s.is_empty() {
            return Some(labels);
        }
        let eq = s.find('=')?;
        let name = s[..eq].trim().to_string();
        let rest = s[eq + 1..].strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                other => value.push(other),
            }
        };
        labels.push((name, value));
        s = &rest[end + 1..];
    }
}

fn parse_value(s: &str) -> Result<f64, std::num::ParseFloatError> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        other => other.parse(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"# HELP uploader_uploads_total Uploads by outcome.
# TYPE uploader_uploads_total counter
uploader_uploads_total{outcome="ok"} 3
uploader_uploads_total{outcome="empty"} 1
# TYPE uploader_workers_busy gauge
uploader_workers_busy 2
# TYPE uploader_storage_seconds histogram
uploader_storage_seconds_bucket{le="0.005"} 1
uploader_storage_seconds_bucket{le="+Inf"} 4
uploader_storage_seconds_sum 0.25
uploader_storage_seconds_count 4
# TYPE probegate_probes_total counter
probegate_probes_total{ending="rst",source="aliyun"} 7
probegate_probes_total{ending="fin",source="x \"q\""} 2
"#;

    #[test]
    fn reads_series_in_any_label_order() {
        let m = Metrics::parse(PAGE);
        assert_eq!(m.get(r#"uploader_uploads_total{outcome="ok"}"#), 3.0);
        assert_eq!(m.get("uploader_workers_busy"), 2.0);
        assert_eq!(
            m.get(r#"probegate_probes_total{source="aliyun",ending="rst"}"#),
            7.0
        );
        assert_eq!(
            m.get(r#"probegate_probes_total{ending="fin",source="x \"q\""}"#),
            2.0
        );
        assert_eq!(m.get(r#"uploader_storage_seconds_bucket{le="+Inf"}"#), 4.0);
        assert_eq!(m.get("uploader_storage_seconds_count"), 4.0);
    }

    #[test]
    fn unseen_series_is_zero_and_unknown_family_panics() {
        let m = Metrics::parse(PAGE);
        assert_eq!(m.get(r#"uploader_uploads_total{outcome="too_large"}"#), 0.0);
        assert_eq!(m.sum("uploader_uploads_total", &[]), 4.0);
        assert_eq!(
            m.sum("probegate_probes_total", &[("source", "aliyun")]),
            7.0
        );
        let missing = std::panic::catch_unwind(|| m.get("uploader_nonexistent_total"));
        assert!(missing.is_err());
    }
}
