//! Seeded inputs shared by the benches and `examples/compare.rs`.

#![allow(dead_code)]

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

/// Size of the benched files: big enough to leave the caches, small
/// enough for criterion's repetitions.
pub const LEN: usize = 64 << 20;

/// `len` seeded random bytes.
pub fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut data = vec![0; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    data
}

/// 1% of the file rewritten in scattered 4 KiB pages.
pub fn scattered_changes(old: &[u8], seed: u64) -> Vec<u8> {
    let mut new = old.to_vec();
    let mut rng = StdRng::seed_from_u64(seed);
    for _ in 0..old.len() / 4096 / 100 {
        let at = rng.random_range(0..old.len() - 4096);
        rng.fill_bytes(&mut new[at..at + 4096]);
    }
    new
}

/// This engine's signature options as the host uses them: under a seed
/// (not 0, for which XXH3 takes a shortcut the host never gets).
pub fn seeded(block_size: Option<u32>) -> wasmover_block::SignatureOptions {
    wasmover_block::SignatureOptions {
        block_size,
        seed: 0x5EED,
    }
}

/// fast_rsync's settings in every comparison: 4 KiB blocks, 8-byte MD4.
pub fn fast_rsync_options() -> fast_rsync::SignatureOptions {
    fast_rsync::SignatureOptions {
        block_size: 4096,
        crypto_hash_size: 8,
    }
}
