//! `blocks`: signature, delta and patch run natively between the volume and
//! the channel, through the block engine.

use std::io::{self, BufWriter, Write};

use wasmover_block::{Limits, Signature, SignatureOptions};

use crate::bindings::blocks::{self as wit, BlockError, BlockStats};
use crate::bindings::channel::ChannelError;
use crate::channel::Channel;
use crate::state::HostState;
use crate::volume::{Volume, VolumeError};

impl From<VolumeError> for BlockError {
    fn from(e: VolumeError) -> Self {
        match e {
            VolumeError::ReadOnly => BlockError::ReadOnly,
            VolumeError::InvalidPath(p) => BlockError::InvalidPath(p),
            VolumeError::NotFound(p) => BlockError::NotFound(p),
            e @ VolumeError::Io { .. } => BlockError::Io(e.to_string()),
        }
    }
}

fn io_error(context: &str, path: &str) -> impl FnOnce(io::Error) -> BlockError {
    move |e| match e.kind() {
        io::ErrorKind::UnexpectedEof | io::ErrorKind::BrokenPipe => {
            BlockError::Channel(ChannelError::Closed)
        }
        _ => BlockError::Io(format!("{context} {path}: {e}")),
    }
}

impl HostState {
    /// Runs `f` with the granted volume and channel; both are required.
    fn with_volume_and_channel(
        &mut self,
        f: impl FnOnce(&Volume, &mut Channel, &Limits) -> Result<BlockStats, BlockError>,
    ) -> wasmtime::Result<Result<BlockStats, BlockError>> {
        self.host_call(|s| {
            let (Some(volume), Some(channel)) = (&s.grants.volume, &mut s.grants.channel) else {
                return Err(BlockError::Io(
                    "this run grants no volume or no channel".into(),
                ));
            };
            let before = channel.bytes();
            let mut stats = f(volume, channel, &Limits::default())?;
            let after = channel.bytes();
            stats.wire_bytes = (after.0 - before.0) + (after.1 - before.1);
            Ok(stats)
        })
    }
}

impl wit::Host for HostState {
    fn send_signature(
        &mut self,
        path: String,
        block_size: Option<u32>,
    ) -> wasmtime::Result<Result<BlockStats, BlockError>> {
        self.with_volume_and_channel(|volume, channel, _| {
            let options = SignatureOptions { block_size };
            let signature = match volume.open_file(&path)? {
                Some((file, len)) => {
                    Signature::compute(file, len, &options).map_err(io_error("reading", &path))?
                }
                None => Signature::empty(),
            };
            signature
                .write_to(channel.writer())
                .map_err(io_error("sending the signature of", &path))?;
            Ok(BlockStats {
                file_bytes: signature.basis_len(),
                matched_bytes: 0,
                literal_bytes: 0,
                wire_bytes: 0,
            })
        })
    }

    fn send_delta(&mut self, path: String) -> wasmtime::Result<Result<BlockStats, BlockError>> {
        self.with_volume_and_channel(|volume, channel, limits| {
            let signature = {
                let reader = channel
                    .reader_for_receive()
                    .map_err(io_error("receiving the signature of", &path))?;
                Signature::read_from(reader, limits)
                    .map_err(|e| BlockError::Protocol(format!("signature of {path}: {e}")))?
            };
            let (file, _) = volume
                .open_file(&path)?
                .ok_or_else(|| BlockError::NotFound(path.clone()))?;
            let stats = wasmover_block::delta(&signature, file, channel.writer())
                .map_err(|e| BlockError::Io(format!("delta of {path}: {e}")))?;
            Ok(BlockStats {
                file_bytes: stats.new_len,
                matched_bytes: stats.matched_bytes,
                literal_bytes: stats.literal_bytes,
                wire_bytes: 0,
            })
        })
    }

    fn receive_patch(
        &mut self,
        path: String,
        mode: u32,
        mtime_ns: i64,
    ) -> wasmtime::Result<Result<BlockStats, BlockError>> {
        self.with_volume_and_channel(|volume, channel, limits| {
            let basis = volume.open_file(&path)?;
            let (staged_file, staged) = volume.create_staged(&path)?;
            let result = (|| {
                let delta = channel
                    .reader_for_receive()
                    .map_err(io_error("receiving the delta of", &path))?;
                let mut out = BufWriter::with_capacity(256 << 10, staged_file);
                let stats = match basis {
                    Some((file, _)) => wasmover_block::patch(file, delta, &mut out, limits),
                    None => {
                        wasmover_block::patch(io::Cursor::new(&[][..]), delta, &mut out, limits)
                    }
                }
                .map_err(|e| match e {
                    wasmover_block::PatchError::Verification { .. } => {
                        BlockError::Verification(format!("{path}: {e}"))
                    }
                    wasmover_block::PatchError::Io(e) => io_error("patching", &path)(e),
                    e => BlockError::Protocol(format!("delta of {path}: {e}")),
                })?;
                out.flush().map_err(io_error("writing", &path))?;
                Ok(stats)
            })();
            match result {
                Ok(stats) => {
                    volume.commit_staged(&staged, &path, mode, mtime_ns)?;
                    Ok(BlockStats {
                        file_bytes: stats.written_bytes,
                        matched_bytes: stats.copied_bytes,
                        literal_bytes: stats.literal_bytes,
                        wire_bytes: 0,
                    })
                }
                Err(e) => {
                    volume.discard_staged(&staged);
                    Err(e)
                }
            }
        })
    }
}
