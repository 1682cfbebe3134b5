//! Signature throughput against fast_rsync, in one group, on seeded data.

mod common;

use std::hint::black_box;

use common::{LEN, fast_rsync_options, random, seeded};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use wasmover_block::Signature;

fn signature(c: &mut Criterion) {
    let old = random(LEN, 1);
    let mut group = c.benchmark_group("signature");
    group
        .throughput(Throughput::Bytes(LEN as u64))
        .sample_size(10);
    group.bench_function(BenchmarkId::new("wasmover", LEN), |b| {
        b.iter(|| Signature::compute(black_box(&old[..]), LEN as u64, &seeded(None)).unwrap())
    });
    group.bench_function(BenchmarkId::new("wasmover-4k", LEN), |b| {
        let opts = seeded(Some(4096));
        b.iter(|| Signature::compute(black_box(&old[..]), LEN as u64, &opts).unwrap())
    });
    group.bench_function(BenchmarkId::new("fast_rsync", LEN), |b| {
        b.iter(|| fast_rsync::Signature::calculate(black_box(&old), fast_rsync_options()))
    });
    group.finish();
}

criterion_group!(benches, signature);
criterion_main!(benches);
