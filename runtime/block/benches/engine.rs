//! Signature, delta and patch against fast_rsync, in the same groups, on
//! seeded data. The 1 GiB side-by-side with rsync is `benches/compare.sh`.

use std::hint::black_box;
use std::io::Cursor;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use wasmover_block::{Limits, Signature, SignatureOptions, delta, patch};

const LEN: usize = 64 << 20;

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut data = vec![0; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    data
}

/// 1% of the file rewritten in scattered 4 KiB pages.
fn scattered_changes(old: &[u8], seed: u64) -> Vec<u8> {
    let mut new = old.to_vec();
    let mut rng = StdRng::seed_from_u64(seed);
    for _ in 0..old.len() / 4096 / 100 {
        let at = rng.random_range(0..old.len() - 4096);
        rng.fill_bytes(&mut new[at..at + 4096]);
    }
    new
}

fn fast_rsync_options() -> fast_rsync::SignatureOptions {
    fast_rsync::SignatureOptions {
        block_size: 4096,
        crypto_hash_size: 8,
    }
}

fn signature(c: &mut Criterion) {
    let old = random(LEN, 1);
    let mut group = c.benchmark_group("signature");
    group
        .throughput(Throughput::Bytes(LEN as u64))
        .sample_size(10);
    group.bench_function(BenchmarkId::new("wasmover", LEN), |b| {
        b.iter(|| {
            Signature::compute(
                black_box(&old[..]),
                LEN as u64,
                &SignatureOptions::default(),
            )
            .unwrap()
        })
    });
    group.bench_function(BenchmarkId::new("fast_rsync", LEN), |b| {
        b.iter(|| fast_rsync::Signature::calculate(black_box(&old), fast_rsync_options()))
    });
    group.finish();
}

fn deltas(c: &mut Criterion) {
    let old = random(LEN, 1);
    let cases = [
        ("1% changed", scattered_changes(&old, 2)),
        ("nothing matches", random(LEN, 3)),
    ];
    let ours = Signature::compute(&old[..], LEN as u64, &SignatureOptions::default()).unwrap();
    let theirs = fast_rsync::Signature::calculate(&old, fast_rsync_options());
    let index = theirs.index();
    for (name, new) in &cases {
        let mut group = c.benchmark_group(format!("delta/{name}"));
        group
            .throughput(Throughput::Bytes(LEN as u64))
            .sample_size(10);
        group.bench_function("wasmover", |b| {
            b.iter(|| {
                let mut out = Vec::with_capacity(LEN / 8);
                delta(&ours, black_box(&new[..]), &mut out).unwrap()
            })
        });
        group.bench_function("fast_rsync", |b| {
            b.iter(|| {
                let mut out = Vec::with_capacity(LEN / 8);
                fast_rsync::diff(&index, black_box(new), &mut out).unwrap();
                out
            })
        });
        group.finish();
    }
}

fn patches(c: &mut Criterion) {
    let old = random(LEN, 1);
    let new = scattered_changes(&old, 2);
    let ours = Signature::compute(&old[..], LEN as u64, &SignatureOptions::default()).unwrap();
    let mut our_delta = Vec::new();
    delta(&ours, &new[..], &mut our_delta).unwrap();
    let theirs = fast_rsync::Signature::calculate(&old, fast_rsync_options());
    let mut their_delta = Vec::new();
    fast_rsync::diff(&theirs.index(), &new, &mut their_delta).unwrap();

    let mut group = c.benchmark_group("patch/1% changed");
    group
        .throughput(Throughput::Bytes(LEN as u64))
        .sample_size(10);
    group.bench_function("wasmover", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(LEN);
            patch(
                Cursor::new(&old),
                black_box(&our_delta[..]),
                &mut out,
                &Limits::default(),
            )
            .unwrap();
            out
        })
    });
    group.bench_function("fast_rsync", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(LEN);
            fast_rsync::apply(&old, black_box(&their_delta), &mut out).unwrap();
            out
        })
    });
    group.finish();
}

criterion_group!(benches, signature, deltas, patches);
criterion_main!(benches);
