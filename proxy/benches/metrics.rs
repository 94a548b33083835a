//! Benchmarks of the metrics work probegate does for every request: as the
//! request path does it (`RequestMetrics`, every series resolved once at
//! start and indexed by method and outcome), next to looking the label
//! series up on every call (what `with_label_values` costs, the way the
//! request path worked before).
//!
//! One request in request mode updates: `probegate_requests_total{method,
//! outcome}`, `probegate_request_seconds{method}`, `probegate_bytes_total`
//! in both directions, and the backend's in-flight gauge (up and down).
//! Run with `cargo bench -p probegate --bench metrics`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use probegate::upstream::metrics::{method_index, Outcome, BACKEND_TO_CLIENT, CLIENT_TO_BACKEND};
use probegate::upstream::UpstreamMetrics;
use prometheus::Registry;

const BACKEND: &str = "127.0.0.1:9090";

fn metrics() -> UpstreamMetrics {
    UpstreamMetrics::new(&Registry::new(), &[BACKEND.to_string()])
        .expect("metric families register on a fresh registry")
}

/// The label a method name maps to (bounded to the IDL's methods), as the
/// request path computes it per call.
fn method_label(name: &str) -> &'static str {
    uploader_idl::METHOD_NAMES
        .iter()
        .copied()
        .find(|m| *m == name)
        .unwrap_or("other")
}

fn bench_per_request(c: &mut Criterion) {
    let mut group = c.benchmark_group("metrics_per_request");
    let m = metrics();
    let in_flight = m.backend_requests_in_flight.with_label_values(&[BACKEND]);
    group.bench_function("label_lookups_per_call", |b| {
        b.iter(|| {
            let method = method_label(black_box("ping"));
            in_flight.inc();
            m.bytes_total
                .with_label_values(&[CLIENT_TO_BACKEND])
                .inc_by(black_box(41));
            in_flight.dec();
            m.requests_total.with_label_values(&[method, "reply"]).inc();
            m.request_seconds
                .with_label_values(&[method])
                .observe(black_box(0.000_05));
            m.bytes_total
                .with_label_values(&[BACKEND_TO_CLIENT])
                .inc_by(black_box(33));
        })
    });

    let m = metrics();
    let in_flight = m.backend_requests_in_flight.with_label_values(&[BACKEND]);
    group.bench_function("request_path", |b| {
        b.iter(|| {
            let method = method_index(black_box("ping"));
            in_flight.inc();
            m.request.to_backend.inc_by(black_box(41));
            in_flight.dec();
            m.request.count(method, Outcome::Reply);
            m.request.observe_seconds(method, black_box(0.000_05));
            m.request.to_client.inc_by(black_box(33));
        })
    });
    group.finish();
}

fn bench_clock(c: &mut Criterion) {
    // Each request reads the clock at least twice (start, elapsed).
    c.bench_function("instant_now_elapsed", |b| {
        b.iter(|| {
            let t = std::time::Instant::now();
            black_box(t.elapsed().as_secs_f64())
        })
    });
}

criterion_group!(benches, bench_per_request, bench_clock);
criterion_main!(benches);
