//! Encryption and authentication: AES-256-CTR, then a Poly1305-AES MAC
//! over the ciphertext; a sealed buffer is `IV || ciphertext || MAC`.

use aes::cipher::{BlockEncrypt, KeyInit, KeyIvInit, StreamCipher};
use aes::{Aes128, Aes256};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use poly1305::Poly1305;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

type Aes256Ctr = ctr::Ctr128BE<Aes256>;

/// Bytes of an IV.
pub const IV_LEN: usize = 16;
/// Bytes of a MAC.
pub const MAC_LEN: usize = 16;
/// What sealing adds to a plaintext.
pub const OVERHEAD: usize = IV_LEN + MAC_LEN;

/// A key: 32 bytes for AES-256, 16 for the MAC's AES-128 (`k`), 16 for
/// Poly1305's `r`.
#[derive(Clone)]
pub struct Key {
    encrypt: [u8; 32],
    mac_k: [u8; 16],
    mac_r: [u8; 16],
}

/// The master key's JSON form, as a key file holds it encrypted.
#[derive(Serialize, Deserialize)]
pub struct KeyJson {
    mac: MacJson,
    encrypt: String,
}

#[derive(Serialize, Deserialize)]
struct MacJson {
    k: String,
    r: String,
}

impl Key {
    /// A fresh random key.
    pub fn random() -> Key {
        Key {
            encrypt: rand::random(),
            mac_k: rand::random(),
            mac_r: rand::random(),
        }
    }

    /// The key from 64 derived bytes: encryption key, then `k`, then `r`.
    pub fn from_bytes(b: &[u8; 64]) -> Key {
        let mut key = Key {
            encrypt: [0; 32],
            mac_k: [0; 16],
            mac_r: [0; 16],
        };
        key.encrypt.copy_from_slice(&b[..32]);
        key.mac_k.copy_from_slice(&b[32..48]);
        key.mac_r.copy_from_slice(&b[48..]);
        key
    }

    /// The JSON form, with base64 fields.
    pub fn to_json(&self) -> KeyJson {
        KeyJson {
            mac: MacJson {
                k: BASE64.encode(self.mac_k),
                r: BASE64.encode(self.mac_r),
            },
            encrypt: BASE64.encode(self.encrypt),
        }
    }

    /// Parses the JSON form; `file` names the key file in errors.
    pub fn from_json(json: &KeyJson, file: &str) -> Result<Key> {
        fn field<const N: usize>(s: &str, file: &str, name: &str) -> Result<[u8; N]> {
            BASE64
                .decode(s)
                .ok()
                .and_then(|v| v.try_into().ok())
                .ok_or_else(|| {
                    Error::format(
                        file,
                        format!("master key field {name} is not {N} bytes of base64"),
                    )
                })
        }
        Ok(Key {
            encrypt: field(&json.encrypt, file, "encrypt")?,
            mac_k: field(&json.mac.k, file, "mac.k")?,
            mac_r: field(&json.mac.r, file, "mac.r")?,
        })
    }

    fn mac(&self, iv: &[u8; IV_LEN], ciphertext: &[u8]) -> [u8; MAC_LEN] {
        // Poly1305-AES: the one-time pad `s` is AES_k(nonce); the IV is the nonce.
        let mut s = aes::Block::from(*iv);
        Aes128::new(&self.mac_k.into()).encrypt_block(&mut s);
        let mut key = [0; 32];
        key[..16].copy_from_slice(&self.mac_r);
        key[16..].copy_from_slice(&s);
        Poly1305::new(&key.into())
            .compute_unpadded(ciphertext)
            .into()
    }

    /// Encrypts `plaintext` under a fresh random IV: `IV || ciphertext || MAC`.
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let iv: [u8; IV_LEN] = rand::random();
        let mut out = Vec::with_capacity(plaintext.len() + OVERHEAD);
        out.extend_from_slice(&iv);
        out.extend_from_slice(plaintext);
        Aes256Ctr::new(&self.encrypt.into(), &iv.into()).apply_keystream(&mut out[IV_LEN..]);
        let mac = self.mac(&iv, &out[IV_LEN..]);
        out.extend_from_slice(&mac);
        out
    }

    /// Checks the MAC and decrypts a sealed buffer; `file` names it in errors.
    pub fn open(&self, sealed: &[u8], file: &str) -> Result<Vec<u8>> {
        if sealed.len() < OVERHEAD {
            return Err(Error::Truncated {
                file: file.to_owned(),
                what: "IV and MAC",
                needed: OVERHEAD as u64,
                available: sealed.len() as u64,
            });
        }
        let (iv, rest) = sealed.split_at(IV_LEN);
        let (ciphertext, mac) = rest.split_at(rest.len() - MAC_LEN);
        let iv: [u8; IV_LEN] = iv.try_into().expect("split at IV_LEN");
        let expected = self.mac(&iv, ciphertext);
        // Constant time: every byte is compared whatever the first difference.
        if expected
            .iter()
            .zip(mac)
            .fold(0, |acc, (a, b)| acc | (a ^ b))
            != 0
        {
            return Err(Error::Mac {
                file: file.to_owned(),
            });
        }
        let mut plaintext = ciphertext.to_vec();
        Aes256Ctr::new(&self.encrypt.into(), &iv.into()).apply_keystream(&mut plaintext);
        Ok(plaintext)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_then_open_round_trips_and_a_flipped_bit_fails_the_mac() {
        let key = Key::random();
        let sealed = key.seal(b"hello restic");
        assert_eq!(sealed.len(), 12 + OVERHEAD);
        assert_eq!(key.open(&sealed, "f").unwrap(), b"hello restic");
        for i in [0, IV_LEN, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(matches!(key.open(&bad, "f"), Err(Error::Mac { file }) if file == "f"));
        }
        assert!(matches!(
            Key::random().open(&sealed, "f"),
            Err(Error::Mac { .. })
        ));
        assert!(matches!(
            key.open(&sealed[..20], "f"),
            Err(Error::Truncated {
                needed: 32,
                available: 20,
                ..
            })
        ));
    }
}
