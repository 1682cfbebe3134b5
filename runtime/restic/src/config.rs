//! The repository's `config` file.

use serde::{Deserialize, Serialize};

use crate::id::Id;

/// The decrypted `config`: format version, repository ID, and the
/// polynomial restic's own chunker uses in this repository.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Config {
    /// Format version: 1 (no compression) or 2.
    pub version: u32,
    /// The repository's random ID.
    pub id: Id,
    /// restic's Rabin polynomial (hex); this crate's chunker does not use
    /// it, but restic needs a valid one to back up into the repository.
    pub chunker_polynomial: String,
}

impl Config {
    /// The versions this crate reads.
    pub const SUPPORTED: [u32; 2] = [1, 2];

    /// A new version 2 configuration with a random ID and polynomial.
    pub fn new() -> Config {
        Config {
            version: 2,
            id: Id::random(),
            chunker_polynomial: format!("{:x}", random_irreducible_polynomial()),
        }
    }
}

impl Default for Config {
    fn default() -> Config {
        Config::new()
    }
}

/// A random irreducible polynomial of degree 53 over GF(2), the kind
/// restic's chunker expects; about one random candidate in 53 is one.
fn random_irreducible_polynomial() -> u64 {
    loop {
        let p = (rand::random::<u64>() & ((1 << 53) - 1)) | (1 << 53) | 1;
        if irreducible(p) {
            return p;
        }
    }
}

fn degree(p: u128) -> i32 {
    127 - p.leading_zeros() as i32
}

/// `a mod p` in GF(2)[x].
fn reduce(mut a: u128, p: u64) -> u64 {
    let dp = degree(p as u128);
    while a != 0 && degree(a) >= dp {
        a ^= (p as u128) << (degree(a) - dp);
    }
    a as u64
}

/// `a * b mod p` in GF(2)[x], for `a`, `b` of degree below 64.
fn mul_mod(a: u64, b: u64, p: u64) -> u64 {
    let mut product = 0u128;
    for bit in 0..64 {
        if b >> bit & 1 == 1 {
            product ^= (a as u128) << bit;
        }
    }
    reduce(product, p)
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, reduce(a as u128, b));
    }
    a
}

/// Ben-Or's test: `p` of degree d is irreducible iff
/// gcd(x^(2^i) - x mod p, p) = 1 for every i ≤ d/2.
fn irreducible(p: u64) -> bool {
    let mut x_pow = 2; // x
    for _ in 0..degree(p as u128) / 2 {
        x_pow = mul_mod(x_pow, x_pow, p);
        if gcd(p, x_pow ^ 2) != 1 {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn irreducibility_matches_known_polynomials() {
        // restic's design document's example polynomial is irreducible.
        assert!(irreducible(0x25b468838dcb75));
        // x^2 + 1 = (x + 1)^2, and any product, is not.
        assert!(!irreducible(0b101));
        assert!(!irreducible(mul_mod(0x25b468838dcb75, 0b11, u64::MAX)));
        assert!(irreducible(0b111));
        let p = random_irreducible_polynomial();
        assert_eq!(degree(p as u128), 53);
    }
}
