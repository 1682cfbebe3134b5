//! The pre-shared key.

use std::path::Path;

use crate::NetError;

/// Fewest key bytes accepted (256 bits).
pub const MIN_KEY_BYTES: usize = 32;
/// Largest key file read.
const MAX_KEY_FILE: u64 = 64 << 10;
/// BLAKE3 key-derivation context: the proof key is bound to this protocol.
const CONTEXT: &str = "wasmover agent 2026-11 pre-shared key proof v1";

/// A pre-shared key, reduced to the 32-byte key of the proofs.
///
/// The key file holds at least [`MIN_KEY_BYTES`] random bytes, either as
/// hex text (what the blocksync mover puts in its Secret: 64 hex digits;
/// surrounding whitespace is ignored) or raw. A file that is entirely hex
/// digits (even count) is read as hex, anything else as raw bytes, so both
/// ends read the same file the same way.
#[derive(Clone)]
pub struct Psk([u8; 32]);

impl std::fmt::Debug for Psk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Psk(..)")
    }
}

impl Psk {
    /// Reads a key file (see the type's documentation for the format).
    pub fn from_file(path: &Path) -> Result<Self, NetError> {
        let key_error = |reason: String| NetError::Key {
            path: path.to_owned(),
            reason,
        };
        let len = std::fs::metadata(path)
            .map_err(|e| key_error(e.to_string()))?
            .len();
        if len > MAX_KEY_FILE {
            return Err(key_error(format!(
                "{len} bytes is too large for a key (at most {MAX_KEY_FILE})"
            )));
        }
        let bytes = std::fs::read(path).map_err(|e| key_error(e.to_string()))?;
        Self::from_bytes(&bytes).map_err(key_error)
    }

    /// Reads key material: hex text or raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let text = bytes.trim_ascii();
        let key = match decode_hex(text) {
            Some(decoded) => decoded,
            None => bytes.to_vec(),
        };
        if key.len() < MIN_KEY_BYTES {
            return Err(format!(
                "{} bytes of key material, at least {MIN_KEY_BYTES} are needed (e.g. `head -c 32 /dev/urandom | xxd -p -c 64`)",
                key.len()
            ));
        }
        Ok(Self(blake3::derive_key(CONTEXT, &key)))
    }

    /// The keyed hash of `message`. Compare results with `==` on
    /// [`blake3::Hash`], which is constant-time.
    pub(crate) fn prove(&self, message: &[u8]) -> blake3::Hash {
        blake3::keyed_hash(&self.0, message)
    }
}

fn decode_hex(text: &[u8]) -> Option<Vec<u8>> {
    if text.is_empty() || !text.len().is_multiple_of(2) || !text.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).expect("checked hex digit") as u8;
    Some(
        text.chunks(2)
            .map(|pair| (digit(pair[0]) << 4) | digit(pair[1]))
            .collect(),
    )
}
