//! Benchmarks of the Thrift codec on the data path: recognising the first
//! bytes of a connection (`sniff`), finding message boundaries (`delimit`,
//! run on every read of a buffered client) and re-encoding (`transcode`).
//!
//! Messages are written by the generated Uploader client, as clients send
//! them. Run with `cargo bench -p probegate --bench codec`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use probegate::protocols::thrift::testing::upload_call;
use probegate::protocols::thrift::{delimit, sniff, transcode, Flavor};

const MAX: usize = 16_384_000;

/// One `upload` call of `size` bytes of data, as the generated client writes it.
fn upload(flavor: Flavor, size: usize) -> Vec<u8> {
    upload_call(flavor, vec![0x5A; size])
}

fn bench_sniff(c: &mut Criterion) {
    let mut group = c.benchmark_group("sniff");
    let inputs: Vec<(&str, Vec<u8>)> = vec![
        ("framed_binary_call", upload(Flavor::FRAMED_BINARY, 1024)),
        (
            "buffered_compact_call",
            upload(Flavor::BUFFERED_COMPACT, 1024),
        ),
        (
            "http_get",
            b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "tls_client_hello",
            vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc],
        ),
    ];
    for (name, bytes) in &inputs {
        group.bench_with_input(BenchmarkId::from_parameter(name), bytes, |b, bytes| {
            b.iter(|| sniff(black_box(bytes), MAX))
        });
    }
    group.finish();
}

fn bench_delimit(c: &mut Criterion) {
    let mut group = c.benchmark_group("delimit");
    for size in [1024usize, 1 << 20] {
        for flavor in Flavor::ALL {
            let call = upload(flavor, size);
            group.throughput(Throughput::Bytes(call.len() as u64));
            let id = BenchmarkId::new(flavor.to_string(), size);
            group.bench_with_input(id, &call, |b, call| {
                b.iter(|| delimit(flavor, black_box(call), MAX))
            });
        }
    }
    // A buffered upload half received: what each read of a slow client costs.
    let call = upload(Flavor::BUFFERED_BINARY, 1 << 20);
    let half = &call[..call.len() / 2];
    group.throughput(Throughput::Bytes(half.len() as u64));
    group.bench_function("buffered+binary/half_of_1MiB", |b| {
        b.iter(|| delimit(Flavor::BUFFERED_BINARY, black_box(half), MAX))
    });
    group.finish();
}

fn bench_transcode(c: &mut Criterion) {
    let mut group = c.benchmark_group("transcode");
    for size in [1024usize, 1 << 20] {
        for (from, to) in [
            (Flavor::FRAMED_COMPACT, Flavor::FRAMED_BINARY),
            (Flavor::BUFFERED_BINARY, Flavor::FRAMED_COMPACT),
        ] {
            let call = upload(from, size);
            group.throughput(Throughput::Bytes(call.len() as u64));
            let id = BenchmarkId::new(format!("{from}->{to}"), size);
            group.bench_with_input(id, &call, |b, call| {
                b.iter(|| transcode(black_box(call), from, to, MAX))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_sniff, bench_delimit, bench_transcode);
criterion_main!(benches);
