//! The greeting each end sends right after the TLS handshake.
//!
//! ```text
//! magic    8 bytes  "WMVRAGNT"
//! min      u16 BE   lowest protocol version spoken
//! max      u16 BE   highest protocol version spoken
//! role     u8       0 sender (client), 1 receiver (server)
//! proof    32 bytes BLAKE3 keyed by the pre-shared key over
//!                   "wasmover agent proof", the role, the TLS exporter
//!                   value and the fields above
//! ```
//!
//! This layout never changes, so any two versions can tell each other
//! which versions they speak. Version 1: after the greetings the TLS stream
//! carries the transfer's bytes as they are, and a clean end is a TLS
//! close_notify. Version 2: the same, and the block engine's first message
//! for a large file may be a granule summary (`WMGS`), which version 1
//! cannot read. Version 3: the block engine's encodings name byte ranges
//! in varints (encoding version 4), which version 2 cannot read. Version
//! 4: seeded strong hashes and 32-bit granule tags (encoding version 5).
//! Version 5: refinements may ask for aligned tags (`WMAT`, encoding
//! version 6). Version 6: files are verified by their content hash (zero
//! leaves hash as a constant, so holes are not read) instead of BLAKE3,
//! in deltas and the tree digest, and deltas carry runs of zeros
//! (encoding version 7); a version 5 peer would fail verification.
//! Version 7: a delta's literals may come zstd-compressed (encoding
//! version 8), which a version 6 peer cannot read; each end decides for
//! what it sends (zstd level 3 by default), and reads both forms.
//! Version 8: messages may come zstd-compressed too (a flag in their
//! length), which a version 7 peer would take for a message too long.
//! The lowest version is 8 too: an older peer is refused here, with
//! "upgrade the older agent", before anything moves.

use crate::{NetError, Psk};

/// The lowest protocol version this agent speaks.
pub const MIN_VERSION: u16 = 8;
/// The highest protocol version this agent speaks.
pub const MAX_VERSION: u16 = 8;
/// Length of a greeting on the wire.
pub const LEN: usize = 8 + 2 + 2 + 1 + 32;

const MAGIC: &[u8; 8] = b"WMVRAGNT";
/// The exporter label (RFC 8446 §7.5).
pub(crate) const EXPORTER_LABEL: &[u8] = b"EXPORTER-wasmover-agent-psk-proof";

/// Which end of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The end that connects and sends the volume.
    Sender,
    /// The end that listens and receives.
    Receiver,
}

impl Role {
    fn code(self) -> u8 {
        match self {
            Role::Sender => 0,
            Role::Receiver => 1,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Role::Sender => "sender",
            Role::Receiver => "receiver",
        }
    }
}

/// What each end's proof covers besides the key.
fn proven(role: u8, exporter: &[u8; 32], fields: &[u8]) -> Vec<u8> {
    let mut message = b"wasmover agent proof".to_vec();
    message.push(role);
    message.extend_from_slice(exporter);
    message.extend_from_slice(fields);
    message
}

/// This end's greeting, speaking `versions` (normally
/// `(MIN_VERSION, MAX_VERSION)`).
pub(crate) fn encode(
    role: Role,
    psk: &Psk,
    exporter: &[u8; 32],
    versions: (u16, u16),
) -> [u8; LEN] {
    let mut out = [0; LEN];
    out[..8].copy_from_slice(MAGIC);
    out[8..10].copy_from_slice(&versions.0.to_be_bytes());
    out[10..12].copy_from_slice(&versions.1.to_be_bytes());
    out[12] = role.code();
    let proof = psk.prove(&proven(role.code(), exporter, &out[..13]));
    out[13..].copy_from_slice(proof.as_bytes());
    out
}

/// Checks the peer's greeting, as seen by an end playing `ours` and
/// speaking `versions`, and returns the highest version both speak.
pub(crate) fn check(
    peer: &[u8; LEN],
    ours: Role,
    psk: &Psk,
    exporter: &[u8; 32],
    versions: (u16, u16),
) -> Result<u16, NetError> {
    if &peer[..8] != MAGIC {
        return Err(NetError::NotAnAgent);
    }
    let expected = psk.prove(&proven(peer[12], exporter, &peer[..13]));
    let proof: [u8; 32] = peer[13..].try_into().expect("32 bytes");
    // blake3::Hash compares in constant time.
    if expected != blake3::Hash::from_bytes(proof) {
        return Err(NetError::AuthenticationFailed);
    }
    if peer[12] == ours.code() {
        return Err(NetError::SameRole(ours.name()));
    }
    let theirs = (
        u16::from_be_bytes([peer[8], peer[9]]),
        u16::from_be_bytes([peer[10], peer[11]]),
    );
    let version = versions.1.min(theirs.1);
    if version < versions.0.max(theirs.0) {
        return Err(NetError::Version {
            ours: versions,
            theirs,
        });
    }
    Ok(version)
}
