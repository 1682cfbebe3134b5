//! Patch throughput against fast_rsync's apply, on the same change.

mod common;

use std::hint::black_box;
use std::io::Cursor;

use common::{LEN, fast_rsync_options, random, scattered_changes, seeded};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use wasmover_block::{Limits, Signature, delta, patch};

fn patches(c: &mut Criterion) {
    let old = random(LEN, 1);
    let new = scattered_changes(&old, 2);
    let ours = Signature::compute(&old[..], LEN as u64, &seeded(None)).unwrap();
    let mut our_delta = Vec::new();
    delta(&ours, &new[..], &mut our_delta).unwrap();
    let theirs = fast_rsync::Signature::calculate(&old, fast_rsync_options());
    let mut their_delta = Vec::new();
    fast_rsync::diff(&theirs.index(), &new, &mut their_delta).unwrap();

    let mut group = c.benchmark_group("patch/1% scattered 4 KiB");
    group
        .throughput(Throughput::Bytes(LEN as u64))
        .sample_size(10);
    let mut out = Vec::with_capacity(LEN);
    group.bench_function(BenchmarkId::new("wasmover", LEN), |b| {
        b.iter(|| {
            out.clear();
            patch(
                Cursor::new(&old),
                black_box(&our_delta[..]),
                &mut out,
                &Limits::default(),
            )
            .unwrap()
        })
    });
    group.bench_function(BenchmarkId::new("fast_rsync", LEN), |b| {
        b.iter(|| {
            out.clear();
            fast_rsync::apply(&old, black_box(&their_delta), &mut out).unwrap();
        })
    });
    group.finish();
}

criterion_group!(benches, patches);
criterion_main!(benches);
