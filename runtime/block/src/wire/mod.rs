//! The messages two peers exchange, one file each: what each holds and
//! how it is encoded and decoded (on the primitives of
//! [`format`](crate::format)), and, where that is all it takes, how it is
//! computed from the basis.
//!
//! The side that has the basis sends a [`Summary`]: a [`GranuleSummary`]
//! or a [`Signature`] to start a file, later an [`Answer`] to each
//! [`Refinement`] (a signature of the ranges asked for, or their
//! [`AlignedTags`]). The side that has the new file sends what the basis
//! side reads as [`Incoming`]: a [`Refinement`], or the delta (see
//! [`DeltaStats`]), which ends the file.

pub(crate) mod aligned_tags;
pub(crate) mod answer;
pub(crate) mod delta;
pub(crate) mod granule_summary;
pub(crate) mod incoming;
pub(crate) mod refinement;
pub(crate) mod signature;
pub(crate) mod summary;

pub use aligned_tags::AlignedTags;
pub use answer::Answer;
pub(crate) use delta::Encoder;
pub use delta::{Compressed, DeltaOutput, DeltaStats, zstd_level};
pub use granule_summary::GranuleSummary;
pub use incoming::Incoming;
pub use refinement::Refinement;
pub use signature::{DEFAULT_MAX_BLOCK, DEFAULT_MIN_BLOCK, Signature, SignatureOptions};
pub use summary::Summary;
