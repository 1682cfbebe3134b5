//! `blocks`: the guest's signature, delta and patch calls, run natively
//! by [`crate::blocks`] between the granted volume and channel.

use std::io;
use std::os::unix::ffi::OsStrExt;

use wasmover_block::{Limits, Plan, Signature, SignatureOptions, Summary};

use super::os;
use crate::bindings::blocks::{self as wit, AttributeStats, BlockError, BlockStats};
use crate::bindings::volume::AttributeNamespaces;
use crate::blocks::{
    Basis, BlockSession, FileProgress, GRANULES_FIRST_MIN_FILE, IN_PLACE_MIN_FILE, REFINE_MIN_FILE,
    Target, granule_summary, io_error, open_source, read_summary, receive_beside, receive_in_place,
    receive_in_place_tree, refine_and_write, seed,
};
use crate::channel::Channel;
use crate::state::HostState;
use crate::volume::Volume;
use crate::volume::attributes::{self, Batch, Namespace, Namespaces};
use crate::volume::path::shown;

impl HostState {
    /// Runs `f` with the granted volume and channel; both are required.
    fn with_volume_and_channel(
        &mut self,
        f: impl FnOnce(
            &Volume,
            &mut Channel,
            &mut BlockSession,
            &Limits,
            &mut FileProgress,
        ) -> Result<BlockStats, BlockError>,
    ) -> wasmtime::Result<Result<BlockStats, BlockError>> {
        self.host_call(|s| {
            let (Some(volume), Some(channel)) = (&s.grants.volume, &mut s.grants.channel) else {
                return Err(BlockError::Io(
                    "this run grants no volume or no channel".into(),
                ));
            };
            let mut progress = FileProgress::new(&*s.grants.observer, &s.module, s.progress);
            let before = channel.bytes();
            let mut stats = f(
                volume,
                channel,
                &mut s.blocks,
                &Limits::default(),
                &mut progress,
            )?;
            let after = channel.bytes();
            stats.wire_bytes = (after.0 - before.0) + (after.1 - before.1);
            Ok(stats)
        })
    }
}

impl wit::Host for HostState {
    fn send_signature(
        &mut self,
        path: Vec<u8>,
        block_size: Option<u32>,
    ) -> wasmtime::Result<Result<BlockStats, BlockError>> {
        self.with_volume_and_channel(|volume, channel, session, _, _| {
            let path = os(path);
            let mut basis = Basis::open(volume, &path)?;
            let len = basis.len();
            if matches!(volume, Volume::Tree(_)) && len >= IN_PLACE_MIN_FILE {
                session.keep_large(&path);
            }
            let summary = match (len, block_size) {
                (0, _) => Summary::Signature(Signature::empty()),
                (GRANULES_FIRST_MIN_FILE.., None) => {
                    Summary::Granules(granule_summary(volume, &path, &mut basis, session)?)
                }
                (len, block_size) => Summary::Signature(
                    Signature::compute(
                        &mut basis,
                        len,
                        &SignatureOptions {
                            block_size,
                            seed: seed(),
                        },
                    )
                    .map_err(io_error("reading", &path))?,
                ),
            };
            summary
                .write_to(channel.writer())
                .map_err(io_error("sending the signature of", &path))?;
            Ok(BlockStats {
                file_bytes: len,
                matched_bytes: 0,
                literal_bytes: 0,
                literal_wire_bytes: 0,
                wire_bytes: 0,
            })
        })
    }

    fn send_delta(&mut self, path: Vec<u8>) -> wasmtime::Result<Result<BlockStats, BlockError>> {
        self.with_volume_and_channel(|volume, channel, session, limits, _| {
            let path = os(path);
            let summary = match session.next_ahead() {
                Some(summary) => summary,
                None => read_summary(channel, limits, &path)?,
            };
            let (file, len, stamp) =
                open_source(volume, &path)?.ok_or_else(|| BlockError::NotFound(shown(&path)))?;
            let delta_error =
                |e: io::Error| BlockError::Io(format!("delta of {}: {e}", shown(&path)));
            let stats = match summary {
                Summary::Signature(signature)
                    if len < REFINE_MIN_FILE || signature.block_count() == 0 =>
                {
                    wasmover_block::delta_file(&signature, &file, channel.writer())
                        .map_err(|e| BlockError::Io(format!("delta of {}: {e}", shown(&path))))?
                }
                Summary::Signature(signature) => {
                    let plan = Plan::from_file(&signature, &file).map_err(delta_error)?;
                    refine_and_write(plan, &file, channel, session, limits, &path)?
                }
                Summary::Granules(granules) => {
                    let plan =
                        Plan::from_granules_of_file(&granules, &file).map_err(delta_error)?;
                    refine_and_write(plan, &file, channel, session, limits, &path)?
                }
                Summary::Answer(_) => {
                    return Err(BlockError::Protocol(format!(
                        "expected the signature of {}, received the answer to a refinement",
                        shown(&path)
                    )));
                }
            };
            if let Some(stamp) = stamp {
                volume.remember_hash(&path, stamp, stats.hash);
            }
            Ok(BlockStats {
                file_bytes: stats.new_len,
                matched_bytes: stats.matched_bytes,
                literal_bytes: stats.literal_bytes,
                literal_wire_bytes: stats.literal_wire_bytes,
                wire_bytes: 0,
            })
        })
    }

    fn receive_patch(
        &mut self,
        path: Vec<u8>,
        mode: u32,
        mtime_ns: i64,
    ) -> wasmtime::Result<Result<BlockStats, BlockError>> {
        self.with_volume_and_channel(|volume, channel, session, limits, progress| {
            let path = os(path);
            let result = match volume {
                Volume::Tree(tree) => {
                    let hashes = session.take_basis_hashes(&path);
                    let file = Target {
                        path: &path,
                        mode,
                        mtime_ns,
                    };
                    let in_place = match session.take_large(&path) {
                        true => tree.open_in_place(&path)?,
                        false => None,
                    };
                    match in_place.filter(|(_, len)| *len >= IN_PLACE_MIN_FILE) {
                        Some((open, _)) => receive_in_place_tree(
                            tree, file, open, hashes, channel, limits, progress,
                        ),
                        None => receive_beside(tree, file, hashes, channel, limits, progress),
                    }
                }
                Volume::Image(image) => {
                    let hashes = session.take_basis_hashes(&path);
                    receive_in_place(image, &path, hashes, channel, limits, progress)
                }
            };
            if let Err(BlockError::Verification(_)) = &result {
                // Whatever the kept granule hashes claimed, the file is
                // read again if it is asked for again.
                match volume {
                    Volume::Tree(tree) => tree.keep_hashes(&path, None),
                    Volume::Image(image) => image.keep_hashes(None),
                }
            }
            let stats = result?;
            Ok(BlockStats {
                file_bytes: stats.written_bytes,
                matched_bytes: stats.copied_bytes,
                literal_bytes: stats.literal_bytes,
                literal_wire_bytes: stats.literal_wire_bytes,
                wire_bytes: 0,
            })
        })
    }

    fn set_compression(&mut self, level: Option<i32>) -> wasmtime::Result<Result<(), BlockError>> {
        self.host_call(|s| {
            if let Some(level) = level.filter(|l| *l == 0 || !(-7..=19).contains(l)) {
                return Err(BlockError::Invalid(format!(
                    "compression level {level} is outside zstd's levels (1 to 19, or -7 to -1)"
                )));
            }
            if let Some(channel) = &mut s.grants.channel {
                channel.set_compression(level);
            }
            Ok(())
        })
    }

    fn send_attributes(
        &mut self,
        paths: Vec<Vec<u8>>,
    ) -> wasmtime::Result<Result<u64, BlockError>> {
        self.host_call(|s| {
            let (Some(volume), Some(channel)) = (&s.grants.volume, &mut s.grants.channel) else {
                return Err(BlockError::Io(
                    "this run grants no volume or no channel".into(),
                ));
            };
            let before = channel.bytes().1;
            let mut batch = Batch::new();
            for path in paths {
                let path = os(path);
                let read = volume.tree(&path)?.read_attributes(&path)?;
                if !batch.is_empty() && !batch.fits(path.as_bytes(), &read) {
                    let full = std::mem::take(&mut batch).finish();
                    channel
                        .send_message(&full)
                        .map_err(|e| BlockError::Channel(e.into()))?;
                }
                let pushed = batch.push(path.as_bytes(), &read);
                pushed.map_err(|e| BlockError::Io(format!("{}: {e}", shown(&path))))?;
            }
            if !batch.is_empty() {
                channel
                    .send_message(&batch.finish())
                    .map_err(|e| BlockError::Channel(e.into()))?;
            }
            // An empty batch ends them.
            channel
                .send_message(&Batch::new().finish())
                .map_err(|e| BlockError::Channel(e.into()))?;
            Ok(channel.bytes().1 - before)
        })
    }

    fn receive_attributes(&mut self) -> wasmtime::Result<Result<AttributeStats, BlockError>> {
        self.host_call(|s| {
            let (Some(volume), Some(channel)) = (&s.grants.volume, &mut s.grants.channel) else {
                return Err(BlockError::Io(
                    "this run grants no volume or no channel".into(),
                ));
            };
            let privileged = rustix::process::geteuid().is_root();
            let before = channel.bytes().0;
            let mut stats = AttributeStats {
                entries: 0,
                skipped: 0,
                skipped_namespaces: AttributeNamespaces::empty(),
                wire_bytes: 0,
            };
            loop {
                let bytes = channel
                    .receive_message(attributes::MAX_BATCH_BYTES as u64)
                    .map_err(|e| BlockError::Channel(e.into()))?;
                let batch = attributes::decode_batch(&bytes)
                    .map_err(|e| BlockError::Protocol(format!("extended attributes: {e}")))?;
                if batch.is_empty() {
                    break;
                }
                for (path, want) in batch {
                    let path = os(path);
                    let applied = volume
                        .tree(&path)?
                        .apply_attributes(&path, &want, privileged)?;
                    stats.entries += 1;
                    for (&namespace, &count) in &applied.skipped {
                        let flag = namespace_flag(namespace);
                        if !stats.skipped_namespaces.contains(flag) {
                            tracing::warn!(
                                module = &*s.module,
                                path = shown(&path),
                                "this receiver may not set {namespace}.* attributes: they are \
                                 left out (and out of the digest) for this transfer"
                            );
                        }
                        stats.skipped_namespaces |= flag;
                        stats.skipped += count;
                    }
                }
            }
            stats.wire_bytes = channel.bytes().0 - before;
            Ok(stats)
        })
    }
}

/// The contract's flag of an attribute namespace.
fn namespace_flag(namespace: Namespace) -> AttributeNamespaces {
    match namespace {
        Namespace::User => AttributeNamespaces::USER,
        Namespace::System => AttributeNamespaces::SYSTEM,
        Namespace::Security => AttributeNamespaces::SECURITY,
        Namespace::Trusted => AttributeNamespaces::TRUSTED,
        Namespace::Other => AttributeNamespaces::empty(),
    }
}

/// The namespaces the contract's flags name.
pub(super) fn namespaces(flags: AttributeNamespaces) -> Namespaces {
    let all = [
        Namespace::User,
        Namespace::System,
        Namespace::Security,
        Namespace::Trusted,
    ];
    Namespaces::of(
        all.into_iter()
            .filter(|&n| flags.contains(namespace_flag(n))),
    )
}
