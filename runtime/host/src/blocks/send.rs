//! The sending side's rounds: the summary of a basis, and the delta
//! against the peer's summary, refined where the first round left
//! literals.

use std::ffi::OsStr;
use std::fs::File;
use std::io;

use wasmover_block::{
    BasisHashes, DeltaStats, GranuleSummary, Limits, Plan, RefineOptions, Summary,
};

use super::basis::Basis;
use super::error::{aborted, io_error, protocol_error};
use super::session::{BasisKept, BlockSession, MAX_SIGNATURES_AHEAD};
use crate::bindings::blocks::BlockError;
use crate::channel::Channel;
use crate::volume::Volume;
use crate::volume::path::shown;

/// Files shorter than this are delta'd in one streaming pass: another
/// round trip would cost more than it could save.
pub(crate) const REFINE_MIN_FILE: u64 = 1 << 20;

/// Files at least this large are matched granules first, and keep the
/// hashes of their granules for their patch, which then copies unchanged
/// granules in the kernel and need not read and hash them again.
pub(crate) const GRANULES_FIRST_MIN_FILE: u64 = 8 << 20;

/// A fresh seed for the hashes of a signature or summary: data crafted to
/// collide then collides only by chance, and a chance collision does not
/// repeat when the file is sent again.
pub(crate) fn seed() -> u64 {
    rand::random()
}

/// Reads one summary or refinement answer from the peer.
pub(crate) fn read_summary(
    channel: &mut Channel,
    limits: &Limits,
    path: &OsStr,
) -> Result<Summary, BlockError> {
    let mut reader = channel.reader_for_receive();
    Summary::read_from(&mut reader, limits).map_err(|e| {
        aborted(&e, &mut reader).unwrap_or_else(|| protocol_error("signature of", path)(e))
    })
}

/// The granule summary of a large basis, from its granule hashes: those
/// the run that wrote it kept, if it is as that run left it, else read
/// now. The hashes are kept for its patch when its stamp can be trusted.
pub(crate) fn granule_summary(
    volume: &Volume,
    path: &OsStr,
    basis: &mut Basis,
    session: &mut BlockSession,
) -> Result<GranuleSummary, BlockError> {
    // A file that changed lately might change again within the same tick
    // of its clock, unseen by its stamp.
    let stamp = basis
        .only_file()
        .map(|(_, stamp)| stamp)
        .filter(|stamp| stamp.settled(volume.settle_ns()));
    let kept = match (volume, stamp) {
        (Volume::Tree(tree), Some(_)) => tree.kept_hashes(path),
        (Volume::Image(image), Some(_)) => image.kept_hashes(),
        _ => None,
    }
    .filter(|kept| Some(kept.stamp) == stamp);
    let hashes = match kept {
        Some(kept) => {
            tracing::debug!(
                path = shown(path),
                "sending the granule hashes kept by the run that wrote it"
            );
            kept.hashes
        }
        None => match basis.only_file() {
            Some((file, _)) => BasisHashes::of_file(file),
            None => {
                let len = basis.len();
                BasisHashes::compute(&mut *basis, len)
            }
        }
        .map_err(io_error("reading", path))?,
    };
    let summary = hashes.summary(seed());
    if let Some(stamp) = stamp {
        session.keep_basis_hashes(BasisKept {
            path: path.to_owned(),
            stamp,
            hashes,
        });
    }
    Ok(summary)
}

/// Runs the refinement rounds `plan` asks for, reading the peer's answers
/// (and keeping summaries of later files that arrive first), then writes
/// the delta.
pub(crate) fn refine_and_write(
    mut plan: Plan,
    mut file: &File,
    channel: &mut Channel,
    session: &mut BlockSession,
    limits: &Limits,
    path: &OsStr,
) -> Result<DeltaStats, BlockError> {
    let delta_error = |e: io::Error| BlockError::Io(format!("delta of {}: {e}", shown(path)));
    while let Some(request) = plan.refinement(&RefineOptions::default()) {
        request
            .write_to(channel.writer())
            .map_err(io_error("asking for finer hashes of", path))?;
        let answer = loop {
            match read_summary(channel, limits, path)? {
                Summary::Answer(answer) => break answer,
                next if session.ahead.len() < MAX_SIGNATURES_AHEAD => session.ahead.push_back(next),
                _ => {
                    return Err(BlockError::Protocol(format!(
                        "more than {MAX_SIGNATURES_AHEAD} signatures arrived ahead of the finer \
                         hashes of {}",
                        shown(path)
                    )));
                }
            }
        };
        plan.refine(&answer, &mut file).map_err(delta_error)?;
    }
    plan.write(&mut file, channel.writer()).map_err(delta_error)
}
