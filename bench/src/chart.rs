//! The chart the README shows: throughput relative to direct, proxy CPU per
//! call, and the incident replay's pass rate, one bar per target with the
//! repetitions' range as a whisker. SVG through `plotters`, no fonts needed.

use std::path::Path;

use plotters::prelude::*;

use crate::deploy::Target;
use crate::report::{Shape, Summary};
use crate::stats::Spread;

const COLORS: [RGBColor; Target::ALL.len()] = [
    RGBColor(120, 120, 120), // direct
    RGBColor(230, 150, 60),  // haproxy-tcp
    RGBColor(200, 80, 60),   // haproxy-inspect
    RGBColor(150, 40, 40),   // haproxy-splice
    RGBColor(50, 110, 200),  // probegate
    RGBColor(110, 180, 110), // answerer
    RGBColor(150, 110, 190), // answerer-uring
];

/// One bar: target index, median, min, max, and the text shown above it.
type Bar = (usize, f64, f64, f64, String);

/// One group of bars: a label and a bar per target that was measured.
struct Group {
    label: String,
    bars: Vec<Bar>,
}

fn find<'a>(summaries: &'a [Summary], workload: &str, target: Target) -> Option<&'a Summary> {
    summaries
        .iter()
        .find(|s| s.workload == workload && s.target == target.name())
}

fn workloads(summaries: &[Summary], shapes: &[Shape]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for s in summaries {
        if shapes.contains(&s.shape) && !names.contains(&s.workload) {
            names.push(s.workload.clone());
        }
    }
    names
}

/// The metric that says "how fast" for a workload: MB/s for uploads.
fn speed_metric(workload: &str) -> &'static str {
    if workload.starts_with("upload") {
        "mb_per_s"
    } else {
        "calls_per_s"
    }
}

fn relative_groups(summaries: &[Summary]) -> Vec<Group> {
    workloads(summaries, &[Shape::Calls, Shape::Storm])
        .into_iter()
        .filter_map(|w| {
            let key = speed_metric(&w);
            let base = find(summaries, &w, Target::Direct)?
                .metrics
                .get(key)?
                .median;
            if base <= 0.0 {
                return None;
            }
            // The answerers have no backend: their calls/s is no proxy's.
            let bars = Target::ALL
                .iter()
                .enumerate()
                .filter(|(_, t)| !t.answers_itself())
                .filter_map(|(i, t)| {
                    let s: &Spread = find(summaries, &w, *t)?.metrics.get(key)?;
                    let r = s.median / base;
                    Some((i, r, s.min / base, s.max / base, format!("{r:.2}")))
                })
                .collect();
            Some(Group { label: w, bars })
        })
        .collect()
}

fn metric_groups(
    summaries: &[Summary],
    shapes: &[Shape],
    only: fn(&str) -> bool,
    key: &str,
    scale: impl Fn(&Summary) -> f64,
) -> Vec<Group> {
    workloads(summaries, shapes)
        .into_iter()
        .filter(|w| only(w))
        .map(|w| {
            let bars = Target::ALL
                .iter()
                .enumerate()
                .filter_map(|(i, t)| {
                    let summary = find(summaries, &w, *t)?;
                    let k = scale(summary);
                    let s = summary.metrics.get(key)?;
                    let v = s.median * k;
                    Some((i, v, s.min * k, s.max * k, crate::report::fmt_num(v)))
                })
                .collect();
            Group { label: w, bars }
        })
        .filter(|g: &Group| !g.bars.is_empty())
        .collect()
}

fn incident_groups(summaries: &[Summary]) -> Vec<Group> {
    workloads(summaries, &[Shape::Incident])
        .into_iter()
        .map(|w| {
            let bars = Target::ALL
                .iter()
                .enumerate()
                .filter_map(|(i, t)| {
                    let s = find(summaries, &w, *t)?;
                    let pings = s.metrics.get("pings")?.median;
                    let passed = s.metrics.get("pings_passed")?;
                    let pct = |x: f64| if pings > 0.0 { 100.0 * x / pings } else { 0.0 };
                    Some((
                        i,
                        pct(passed.median),
                        pct(passed.min),
                        pct(passed.max),
                        format!("{:.0}/{pings:.0}", passed.median),
                    ))
                })
                .collect();
            Group {
                label: "real pings passed during the incident replay".to_string(),
                bars,
            }
        })
        .collect()
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    y_desc: &str,
    groups: &[Group],
) -> Result<(), String> {
    let top = groups
        .iter()
        .flat_map(|g| g.bars.iter().map(|b| b.3.max(b.1)))
        .fold(0.0f64, f64::max)
        .max(1e-9)
        // Headroom for the value labels and the legend.
        * 1.45;
    let n = groups.len().max(1);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..n as f64, 0.0..top)
        .map_err(|e| e.to_string())?;
    let labels: Vec<String> = groups.iter().map(|g| g.label.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - i as f64 - 0.5).abs() < 0.01 {
                labels.get(i).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc(y_desc)
        .draw()
        .map_err(|e| e.to_string())?;
    let width = 0.8 / Target::ALL.len() as f64;
    for (g, group) in groups.iter().enumerate() {
        for (t, median, min, max, text) in &group.bars {
            let (t, median, min, max) = (*t, *median, *min, *max);
            let x0 = g as f64 + 0.1 + t as f64 * width;
            let color = COLORS[t];
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x0, 0.0), (x0 + width * 0.9, median)],
                    color.filled(),
                )))
                .map_err(|e| e.to_string())?;
            chart
                .draw_series(std::iter::once(Text::new(
                    text.clone(),
                    (x0 + width * 0.2, max.max(median) + top * 0.02),
                    // Upright, a label is wider than its bar and runs into
                    // the next one's.
                    ("sans-serif", 11)
                        .into_font()
                        .transform(FontTransform::Rotate270),
                )))
                .map_err(|e| e.to_string())?;
            if max > min {
                let xm = x0 + width * 0.45;
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        vec![(xm, min), (xm, max)],
                        BLACK.stroke_width(1),
                    )))
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    // The legend names only the targets this panel has bars for.
    let drawn = |t: usize| groups.iter().any(|g| g.bars.iter().any(|b| b.0 == t));
    for (t, target) in Target::ALL.iter().enumerate().filter(|(t, _)| drawn(*t)) {
        chart
            .draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())
            .map_err(|e| e.to_string())?
            .label(target.name())
            .legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 10, y + 5)], COLORS[t].filled())
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Draws the chart to `path` (SVG).
pub fn draw(path: &Path, summaries: &[Summary], subtitle: &str) -> Result<(), String> {
    let root = SVGBackend::new(path, (1100, 1300)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let root = root
        .titled(
            &format!("probegate vs HAProxy 2.6 vs direct — {subtitle}"),
            ("sans-serif", 20),
        )
        .map_err(|e| e.to_string())?;
    let areas = root.split_evenly((4, 1));
    panel(
        &areas[0],
        "throughput relative to direct (calls/s; MB/s for uploads), median and range",
        "× direct",
        &relative_groups(summaries),
    )?;
    panel(
        &areas[1],
        "proxy CPU per call (utime+stime; answerers: no backend, on tokio and io_uring), lower is better",
        "µs per call",
        &metric_groups(
            summaries,
            &[Shape::Calls, Shape::Storm],
            |w| !w.starts_with("upload"),
            "proxy_cpu_us_per_call",
            |_| 1.0,
        ),
    )?;
    panel(
        &areas[2],
        "proxy CPU time per MB uploaded, lower is better",
        "µs per MB",
        &metric_groups(
            summaries,
            &[Shape::Calls],
            |w| w.starts_with("upload"),
            "proxy_cpu_us_per_call",
            |s| {
                s.metrics
                    .get("upload_bytes")
                    .map(|b| 1e6 / b.median.max(1.0))
                    .unwrap_or(0.0)
            },
        ),
    )?;
    panel(
        &areas[3],
        "incident replay: 10 silent connections + RST probes, 10-worker backend without read timeout",
        "% of real pings passed",
        &incident_groups(summaries),
    )?;
    root.present().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{summarize, Record};
    use std::collections::BTreeMap;

    #[test]
    fn draws_an_svg_with_every_target() {
        let mut records = Vec::new();
        for (i, t) in Target::ALL.iter().enumerate() {
            let mut metrics = BTreeMap::from([("calls_per_s".to_string(), 1000.0 + i as f64)]);
            if t.is_proxy() {
                metrics.insert("proxy_cpu_us_per_call".to_string(), 10.0 * i as f64);
            }
            records.push(Record {
                workload: "ping-1".to_string(),
                shape: Shape::Calls,
                target: t.name().to_string(),
                rep: 0,
                metrics,
                notes: vec![],
            });
            records.push(Record {
                workload: "incident".to_string(),
                shape: Shape::Incident,
                target: t.name().to_string(),
                rep: 0,
                metrics: BTreeMap::from([
                    ("pings".to_string(), 30.0),
                    ("pings_passed".to_string(), if i == 3 { 30.0 } else { 0.0 }),
                ]),
                notes: vec![],
            });
        }
        let path = std::env::temp_dir().join(format!("bench-chart-{}.svg", std::process::id()));
        draw(&path, &summarize(&records), "test").expect("draws");
        let svg = std::fs::read_to_string(&path).expect("written");
        let _ = std::fs::remove_file(&path);
        assert!(svg.starts_with("<svg"));
        for t in Target::ALL {
            assert!(svg.contains(t.name()), "legend has {}", t.name());
        }
        assert!(svg.contains("ping-1"));
    }
}
