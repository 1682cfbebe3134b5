//! The native block engine of wasmover: rsync-style signature, delta and
//! patch.
//!
//! - [`Signature::compute`] reads a basis file once and records, per block,
//!   a weak rolling checksum and a strong hash.
//! - [`delta`](delta()) reads a new file once, finds blocks of the basis at any byte
//!   offset (so insertions and deletions that shift alignment still match),
//!   and writes copy and literal instructions, ending with the new file's
//!   length and BLAKE3 hash.
//! - [`patch`](patch()) rebuilds the new file from the basis and a delta and verifies
//!   it end to end, so a weak/strong collision can never produce a silently
//!   wrong copy. [`patch_in_place`] does the same over the basis itself,
//!   ordering copies so none reads bytes already overwritten, and
//!   [`SparseWriter`] makes a patched file sparse (zero runs as holes).
//!   [`patch_journaled`] patches in place under an undo journal, so a
//!   block device or image file rewritten in place is always either old
//!   or new: [`roll_back`] undoes an interrupted patch.
//! - [`Plan`] computes a delta in rounds: where the first left literals,
//!   it asks the basis side for a finer signature of only the basis ranges
//!   no copy used ([`Refinement`]), so a large file with scattered small
//!   changes costs about its changes on the wire, not its blocks. Where
//!   the changes were made in place, a round compares blocks only at
//!   their own offsets ([`AlignedTags`]), for 4 bytes a block.
//! - [`BasisHashes`] are the BLAKE3 chaining values of a basis's granules
//!   (BLAKE3 is a tree hash). Their [`GranuleSummary`] starts a [`Plan`]
//!   for a large file granule-first ([`Plan::from_granules`]): only
//!   granules that differ go through block rounds. [`patch_from_file`]
//!   then has the kernel copy the granules a delta leaves in place and
//!   accounts for them by those values instead of reading them, and an
//!   in-place patch reads back only what it wrote. [`BasisHashes::updated`]
//!   derives the new file's from the old ones and the ranges a patch left
//!   alone.
//!
//! Every encoding is versioned, big-endian and self-delimiting: signatures
//! and deltas travel on one byte stream with other messages, so decoders
//! read exactly their own bytes. Decoders are hostile-input safe: a
//! malformed or truncated input is an error, never a panic or an unbounded
//! allocation.
//!
//! ```
//! use std::io::Cursor;
//! use wasmover_block::{Limits, Signature, SignatureOptions, delta, patch};
//!
//! let old = vec![7u8; 100_000];
//! let mut new = old.clone();
//! new[50_000..50_010].copy_from_slice(b"0123456789");
//!
//! // Receiver: signature of its basis, onto the shared stream.
//! let sig = Signature::compute(&old[..], old.len() as u64, &SignatureOptions::default())?;
//! let mut stream = Vec::new();
//! sig.write_to(&mut stream)?;
//!
//! // Sender: reads exactly the signature, answers with a delta.
//! let mut incoming = &stream[..];
//! let sig = Signature::read_from(&mut incoming, &Limits::default())?;
//! let mut reply = Vec::new();
//! let stats = delta(&sig, &new[..], &mut reply)?;
//! assert!(stats.literal_bytes < 10_000);
//!
//! // Receiver: rebuilds and verifies.
//! let mut rebuilt = Vec::new();
//! patch(Cursor::new(&old), &reply[..], &mut rebuilt, &Limits::default())?;
//! assert_eq!(rebuilt, new);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(missing_docs)]

mod content_hash;
mod delta;
mod error;
mod file;
mod format;
#[doc(hidden)]
pub mod fuzzing;
mod in_place;
mod index;
mod journal;
mod patch;
mod refine;
mod rolling;
mod sparse;
mod tree_hash;
mod wire;

pub use content_hash::{ContentHasher, hash_file};
pub use delta::{delta, delta_file};
pub use error::{DeltaError, FormatError, PatchError};
pub use file::InPlaceFile;
pub use format::Limits;
pub use in_place::{IN_PLACE_MAX_HELD, InPlacePatch, patch_in_place};
pub use journal::{RollBack, patch_journaled, roll_back, write_undo};
pub use patch::{PatchStats, patch, patch_from_file, patch_reporting};
pub use refine::{Plan, RefineOptions};
pub use sparse::SparseWriter;
pub use tree_hash::BasisHashes;
pub use wire::{
    AlignedTags, Answer, Compressed, DEFAULT_MAX_BLOCK, DEFAULT_MIN_BLOCK, DeltaOutput, DeltaStats,
    GranuleSummary, Incoming, Refinement, Signature, SignatureOptions, Summary, zstd_level,
};

#[cfg(test)]
mod tests;
