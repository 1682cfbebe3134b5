//! A brief mutation fuzzer that runs with the ordinary tests (CI has no
//! nightly toolchain for `cargo fuzz`): the seeds and the kept corpus of
//! every target in `fuzz/`, mutated by a seeded generator, fed to the same
//! fuzzing bodies the `fuzz/` targets call. Deterministic for a seed, so a
//! failure names the input that reproduces it.
//!
//! `WASMOVER_FUZZ_ITERATIONS` (default 5000 per target) and
//! `WASMOVER_FUZZ_SEED` run it longer or elsewhere.

use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wasmover_block::fuzzing;

/// Values that tend to sit on boundaries of lengths, counts and offsets.
const INTERESTING: [u64; 8] = [0, 1, 0x7f, 0xff, 0xffff, 0x7fff_ffff, 0xffff_ffff, u64::MAX];

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The seeds of `target` and its kept corpus.
fn inputs(target: &str) -> Vec<Vec<u8>> {
    let mut inputs: Vec<Vec<u8>> = fuzzing::seeds()
        .into_iter()
        .filter(|(t, _, _)| *t == target)
        .map(|(_, _, bytes)| bytes)
        .collect();
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    if let Ok(entries) = std::fs::read_dir(corpus) {
        for entry in entries.flatten() {
            inputs.push(std::fs::read(entry.path()).expect("corpus file reads"));
        }
    }
    inputs
}

/// One to four random edits of `input`, `other` the splice partner.
fn mutate(rng: &mut StdRng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        let at = rng.random_range(0..=out.len());
        match rng.random_range(0..7) {
            0 if !out.is_empty() => {
                let i = at.min(out.len() - 1);
                out[i] ^= 1 << rng.random_range(0..8);
            }
            1 if !out.is_empty() => {
                let i = at.min(out.len() - 1);
                out[i] = rng.random();
            }
            2 => {
                let end = rng.random_range(at..=out.len().min(at + 64));
                out.drain(at..end);
            }
            3 => {
                let len = rng.random_range(1..=32);
                let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                out.splice(at..at, bytes);
            }
            4 => out.truncate(at),
            5 => {
                let value = INTERESTING[rng.random_range(0..INTERESTING.len())];
                let width = [1, 2, 4, 8][rng.random_range(0..4)];
                let bytes = if rng.random() {
                    value.to_le_bytes()
                } else {
                    value.to_be_bytes()
                };
                let end = (at + width).min(out.len());
                let take = end - at;
                out[at..end].copy_from_slice(&bytes[..take]);
            }
            _ => {
                let from = rng.random_range(0..=other.len());
                out.truncate(at);
                out.extend_from_slice(&other[from..]);
            }
        }
    }
    out
}

#[test]
fn mutated_seeds_and_corpus_never_break_the_decoders() {
    let iterations = env_u64("WASMOVER_FUZZ_ITERATIONS", 5000);
    let seed = env_u64("WASMOVER_FUZZ_SEED", 0x7761_736d_6f76_6572);
    for (target, body) in fuzzing::TARGETS {
        let inputs = inputs(target);
        assert!(!inputs.is_empty(), "no seeds for {target}");
        let mut rng = StdRng::seed_from_u64(seed ^ target.len() as u64);
        for i in 0..iterations {
            let input = &inputs[rng.random_range(0..inputs.len())];
            let other = &inputs[rng.random_range(0..inputs.len())];
            let mutated = mutate(&mut rng, input, other);
            if std::panic::catch_unwind(|| body(&mutated)).is_err() {
                // Keep the input to add to fuzz/corpus once fixed.
                let kept = std::env::temp_dir().join(format!("wasmover-fuzz-{target}-{seed}-{i}"));
                std::fs::write(&kept, &mutated).expect("temp dir writable");
                panic!(
                    "{target} failed on iteration {i} (WASMOVER_FUZZ_SEED={seed}); input kept in {}",
                    kept.display()
                );
            }
        }
    }
}
