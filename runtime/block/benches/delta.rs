//! Delta throughput against fast_rsync, one group per kind of change:
//! the one-pass streaming delta, and the refined delta as the host runs
//! it for large files (rounds computed in memory, finer signatures of the
//! basis included in the time).

mod common;

use std::hint::black_box;

use common::{LEN, fast_rsync_options, random, scattered_changes, seeded};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::io::Cursor;

use wasmover_block::{Answer, Plan, RefineOptions, Signature, delta};

fn deltas(c: &mut Criterion) {
    let old = random(LEN, 1);
    let cases = [
        ("unchanged", old.clone()),
        ("1% scattered 4 KiB", scattered_changes(&old, 2)),
        ("nothing matches", random(LEN, 3)),
    ];
    let ours = Signature::compute(&old[..], LEN as u64, &seeded(None)).unwrap();
    let theirs = fast_rsync::Signature::calculate(&old, fast_rsync_options());
    let index = theirs.index();
    for (name, new) in &cases {
        let mut group = c.benchmark_group(format!("delta/{name}"));
        group
            .throughput(Throughput::Bytes(LEN as u64))
            .sample_size(10);
        group.bench_function(BenchmarkId::new("wasmover", LEN), |b| {
            b.iter(|| {
                let mut out = Vec::with_capacity(LEN / 8);
                delta(&ours, black_box(&new[..]), &mut out).unwrap()
            })
        });
        group.bench_function(BenchmarkId::new("wasmover-refined", LEN), |b| {
            b.iter(|| {
                let mut plan = Plan::new(&ours, black_box(&new[..])).unwrap();
                while let Some(request) = plan.refinement(&RefineOptions::default()) {
                    let fine =
                        Answer::compute(Cursor::new(&old), LEN as u64, &request, 0x5EED).unwrap();
                    plan.refine(&fine, Cursor::new(new)).unwrap();
                }
                let mut out = Vec::with_capacity(LEN / 8);
                plan.write(Cursor::new(new), &mut out).unwrap()
            })
        });
        group.bench_function(BenchmarkId::new("fast_rsync", LEN), |b| {
            b.iter(|| {
                let mut out = Vec::with_capacity(LEN / 8);
                fast_rsync::diff(&index, black_box(new), &mut out).unwrap();
                out
            })
        });
        group.finish();
    }
}

criterion_group!(benches, deltas);
criterion_main!(benches);
