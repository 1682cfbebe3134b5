//! `blocks`: signature, delta and patch run natively between the volume and
//! the channel, through the block engine.
//!
//! A large file is delta'd in rounds: where the first round against what
//! the peer sent of its basis leaves literals, the sending side asks for
//! finer hashes of the basis ranges no copy used (a signature, or aligned
//! tags where the changes were made in place), and the receiving side
//! answers from inside `receive-patch` before the delta arrives. The
//! receiving side may have sent summaries of later files ahead of that
//! answer; they are kept, in order, for the next `send-delta` calls.
//!
//! For a large file the first round is granule-first: the receiving side
//! sends the tags of its granules' BLAKE3 hashes ([`BasisHashes`]), the
//! sending side hashes its own granules (which its file's BLAKE3 needs
//! anyway) and only granules that differ go through block rounds. The
//! receiving side keeps the granule hashes for the patch that follows:
//! granules left in place are then not read again, whether the file is
//! rebuilt beside the old one or, when large, patched in place under an
//! undo journal. After the patch it keeps the new file's granule hashes
//! for the next run ([`KeptHashes`]), which then reads nothing before it
//! answers, as long as the file's stamp is unchanged.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use wasmover_block::{
    Answer, BasisHashes, DeltaStats, FormatError, GranuleSummary, InPlacePatch, Incoming, Limits,
    PatchError, PatchStats, Plan, RefineOptions, Signature, SignatureOptions, SparseWriter,
    Summary,
};

use crate::bindings::blocks::{self as wit, BlockError, BlockStats};
use crate::bindings::channel::ChannelError;
use crate::channel::Channel;
use crate::state::{HostState, Observer, Progress};
use crate::volume::{Image, KeptHashes, Stamp, Tree, Volume, VolumeError};

impl From<VolumeError> for BlockError {
    fn from(e: VolumeError) -> Self {
        match e {
            VolumeError::ReadOnly => BlockError::ReadOnly,
            VolumeError::InvalidPath(p) => BlockError::InvalidPath(p),
            VolumeError::NotFound(p) => BlockError::NotFound(p),
            e @ VolumeError::NotATree(_) => BlockError::InvalidPath(e.to_string()),
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

/// Files shorter than this are delta'd in one streaming pass: another
/// round trip would cost more than it could save.
const REFINE_MIN_FILE: u64 = 1 << 20;
/// Signatures of later files the peer may send ahead of the answer to a
/// refinement (the blocksync mover keeps at most 64 in flight).
const MAX_SIGNATURES_AHEAD: usize = 1024;

/// Files at least this large are matched granules first, and keep the
/// hashes of their granules for their patch, which then copies unchanged
/// granules in the kernel and need not read and hash them again.
const GRANULES_FIRST_MIN_FILE: u64 = 8 << 20;
/// Basis hashes (and large files) kept for patches to come (the blocksync
/// mover has at most 64 signatures in flight).
const MAX_BASIS_HASHES: usize = 128;

/// State of the block protocol between calls.
#[derive(Debug, Default)]
pub(crate) struct BlockSession {
    /// Summaries that arrived while a refinement answer was awaited.
    ahead: VecDeque<Summary>,
    /// What the signature pass of bases kept for their patches.
    basis_hashes: VecDeque<BasisKept>,
    /// Files of a tree whose signature went out, large enough to be
    /// patched in place ([`IN_PLACE_MIN_FILE`]).
    large: VecDeque<String>,
}

/// What the summary pass of a basis kept for its patch: the stamp the
/// basis had before it was read and its granule hashes.
#[derive(Debug)]
struct BasisKept {
    path: String,
    stamp: Stamp,
    hashes: BasisHashes,
}

impl BasisKept {
    /// The granule hashes of the file a patch of this basis just wrote
    /// (`file`, `len` bytes, now stamped `stamp`), from these and the
    /// ranges the patch left as they were in the basis: to keep for the
    /// next run. `None` where the new length calls for another granule, or
    /// the file cannot be read.
    fn updated(
        &self,
        file: &File,
        len: u64,
        unchanged: &[(u64, u64)],
        stamp: Stamp,
    ) -> Option<KeptHashes> {
        match self.hashes.updated(file, len, unchanged) {
            Ok(Some(hashes)) => Some(KeptHashes { stamp, hashes }),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(path = self.path, "could not update its granule hashes: {e}");
                None
            }
        }
    }
}

impl BlockSession {
    fn keep_basis_hashes(&mut self, kept: BasisKept) {
        if self.basis_hashes.len() == MAX_BASIS_HASHES {
            self.basis_hashes.pop_front();
        }
        self.basis_hashes.push_back(kept);
    }

    fn keep_large(&mut self, path: &str) {
        if self.large.len() == MAX_BASIS_HASHES {
            self.large.pop_front();
        }
        self.large.push_back(path.to_owned());
    }

    fn take_large(&mut self, path: &str) -> bool {
        let found = self.large.iter().position(|p| p == path);
        found.and_then(|i| self.large.remove(i)).is_some()
    }

    fn take_basis_hashes(&mut self, path: &str) -> Option<BasisKept> {
        let i = self.basis_hashes.iter().position(|k| k.path == path)?;
        self.basis_hashes.remove(i)
    }
}

fn protocol_error(what: &str, path: &str) -> impl FnOnce(FormatError) -> BlockError {
    move |e| match e {
        FormatError::Io(e) => io_error(what, path)(e),
        // The stream ended part-way: the peer went away.
        FormatError::Truncated { .. } => BlockError::Channel(ChannelError::Closed),
        e => BlockError::Protocol(format!("{what} {path}: {e}")),
    }
}

/// Reads one summary or refinement answer from the peer.
fn read_summary(channel: &mut Channel, limits: &Limits, path: &str) -> Result<Summary, BlockError> {
    let mut reader = channel.reader_for_receive();
    Summary::read_from(&mut reader, limits).map_err(|e| {
        aborted(&e, &mut reader).unwrap_or_else(|| protocol_error("signature of", path)(e))
    })
}

/// The peer's abort, when what was read as a stream's magic number was an
/// abort record's ([`crate::channel::ABORT_MAGIC`]).
fn aborted(e: &FormatError, reader: &mut impl io::Read) -> Option<BlockError> {
    match e {
        FormatError::BadMagic { found, .. } if *found == crate::channel::ABORT_MAGIC => {
            Some(BlockError::Channel(ChannelError::Aborted(
                crate::channel::read_abort_reason(reader),
            )))
        }
        _ => None,
    }
}

/// Opens a block volume for reading: its only path is the empty one.
fn open_image(image: &Image, path: &str) -> Result<(File, u64), BlockError> {
    if !path.is_empty() {
        return Err(BlockError::InvalidPath(format!(
            "{path}: a block volume has one entry, the empty path"
        )));
    }
    Ok(image.open_read()?)
}

/// Opens the file a delta is computed from, with its stamp taken before
/// it is read (none for a device): a change while it is read changes the
/// stamp, and the digest then reads it again.
fn open_source(
    volume: &Volume,
    path: &str,
) -> Result<Option<(File, u64, Option<Stamp>)>, BlockError> {
    match volume {
        Volume::Tree(tree) => Ok(tree
            .open_file(path)?
            .map(|(file, len, stamp)| (file, len, Some(stamp)))),
        Volume::Image(image) => {
            let (file, len) = open_image(image, path)?;
            let stamp = Stamp::of_file(&file);
            Ok(Some((file, len, stamp)))
        }
    }
}

/// What a file is rebuilt from: its old content, followed by the partial
/// new content an interrupted run kept ([`Tree::keep_partial`], or a
/// block volume's appended literals), so a resumed transfer finds the
/// blocks that already arrived.
struct Basis {
    parts: Vec<(File, u64)>,
    pos: u64,
    /// The old file's stamp, for a tree's file.
    stamp: Option<Stamp>,
}

impl Basis {
    fn open(volume: &Volume, path: &str) -> Result<Self, BlockError> {
        match volume {
            Volume::Tree(tree) => Self::open_tree(tree, path),
            Volume::Image(image) => Self::open_image(image, path),
        }
    }

    fn open_image(image: &Image, path: &str) -> Result<Self, BlockError> {
        let (file, len) = open_image(image, path)?;
        // A device has none: its node does not change when it is written.
        let stamp = Stamp::of_file(&file);
        Ok(Self {
            stamp,
            ..Self::of([Some((file, len)), image.open_partial()?])
        })
    }

    fn open_tree(tree: &Tree, path: &str) -> Result<Self, BlockError> {
        let (old, stamp) = match tree.open_file(path)? {
            Some((file, len, stamp)) => (Some((file, len)), Some(stamp)),
            None => (None, None),
        };
        Ok(Self {
            stamp,
            ..Self::of([old, tree.open_partial(path)?])
        })
    }

    fn of(parts: [Option<(File, u64)>; 2]) -> Self {
        Self {
            parts: parts.into_iter().flatten().collect(),
            pos: 0,
            stamp: None,
        }
    }

    /// What the signature pass kept of this basis, if the basis is still
    /// the file it was taken of: the whole basis, with the same stamp.
    fn still(&self, kept: Option<BasisKept>) -> Option<BasisKept> {
        kept.filter(|kept| self.only_file().is_some_and(|(_, now)| now == kept.stamp))
    }

    /// The old file (of a tree, or an image file) and its stamp, when it
    /// is the whole basis (no partial content follows it).
    fn only_file(&self) -> Option<(&File, Stamp)> {
        match (&self.parts[..], self.stamp) {
            ([(file, _)], Some(stamp)) => Some((file, stamp)),
            _ => None,
        }
    }

    fn len(&self) -> u64 {
        self.parts.iter().map(|(_, len)| len).sum()
    }
}

impl io::Read for Basis {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut start = 0;
        for (file, len) in &self.parts {
            if self.pos < start + len {
                let at = self.pos - start;
                let want = buf.len().min((len - at) as usize);
                let n = file.read_at(&mut buf[..want], at)?;
                self.pos += n as u64;
                return Ok(n);
            }
            start += len;
        }
        Ok(0)
    }
}

impl io::Seek for Basis {
    fn seek(&mut self, to: io::SeekFrom) -> io::Result<u64> {
        let pos = match to {
            io::SeekFrom::Start(p) => Some(p),
            io::SeekFrom::End(d) => self.len().checked_add_signed(d),
            io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = pos
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(self.pos)
    }
}

/// Bytes of a file between two reports of its progress.
const PROGRESS_STEP: u64 = 16 << 20;

/// Reports a large file's progress while it moves, on top of what the
/// module last reported (blocksync reports after each file), every
/// [`PROGRESS_STEP`] bytes: a progress bar moves within a 100 GiB device.
pub(crate) struct FileProgress<'a> {
    observer: &'a dyn Observer,
    module: &'a str,
    base: Progress,
    next: u64,
}

impl FileProgress<'_> {
    fn advance(&mut self, done_in_file: u64) {
        if done_in_file < self.next {
            return;
        }
        self.next = done_in_file + PROGRESS_STEP;
        let mut bytes_done = self.base.bytes_done + done_in_file;
        if self.base.bytes_total > 0 {
            bytes_done = bytes_done.min(self.base.bytes_total);
        }
        self.observer.progress(
            self.module,
            Progress {
                bytes_done,
                ..self.base
            },
        );
    }
}

/// Refinement requests answered per file before the peer is refused: the
/// engine asks for at most five ([`RefineOptions::max_rounds`]), and a
/// hostile peer must not keep this side hashing forever.
const MAX_REFINEMENTS: usize = 8;

/// Maps a patch's failure to the guest's error.
fn patch_error(path: &str) -> impl FnOnce(PatchError) -> BlockError + '_ {
    move |e| match e {
        PatchError::Verification { .. } => BlockError::Verification(format!("{path}: {e}")),
        PatchError::Io(e) => io_error("patching", path)(e),
        PatchError::Format(e) => protocol_error("delta of", path)(e),
        e @ PatchError::Unrecovered { .. } => BlockError::Io(format!("patching {path}: {e}")),
        e => BlockError::Protocol(format!("delta of {path}: {e}")),
    }
}

/// A fresh seed for the hashes of a signature or summary: data crafted to
/// collide then collides only by chance, and a chance collision does not
/// repeat when the file is sent again.
fn seed() -> u64 {
    rand::random()
}

/// Answers refinement requests from `basis` until the delta arrives, then
/// hands `basis` and the delta to `apply`.
fn receive_delta<B: io::Read + io::Seek, T>(
    basis: &mut B,
    basis_len: u64,
    channel: &mut Channel,
    limits: &Limits,
    path: &str,
    apply: impl FnOnce(&mut B, &mut dyn io::Read) -> Result<T, BlockError>,
) -> Result<T, BlockError> {
    let mut answered = 0;
    loop {
        let mut reader = channel.reader_for_receive();
        let incoming = match Incoming::read_from(&mut reader, limits) {
            Ok(incoming) => incoming,
            Err(e) => {
                return Err(
                    aborted(&e, &mut reader).unwrap_or_else(|| protocol_error("delta of", path)(e))
                );
            }
        };
        match incoming {
            Incoming::Refinement(_) if answered == MAX_REFINEMENTS => {
                return Err(BlockError::Protocol(format!(
                    "delta of {path}: the peer asked for finer hashes more than {MAX_REFINEMENTS} times"
                )));
            }
            Incoming::Refinement(request) => {
                let answer = Answer::compute(&mut *basis, basis_len, &request, seed())
                    .map_err(protocol_error("finer hashes of", path))?;
                answer
                    .write_to(channel.writer())
                    .map_err(io_error("sending the finer hashes of", path))?;
                answered += 1;
            }
            Incoming::Delta(mut delta) => return apply(basis, &mut delta),
        }
    }
}

/// Files of a tree at least this large (with one link) are patched in
/// place under an undo journal instead of rebuilt beside: only the changed
/// bytes are written, and no room for a second copy is needed.
const IN_PLACE_MIN_FILE: u64 = if cfg!(test) { 1 << 20 } else { 64 << 20 };

/// Where a patch in place keeps its undo journal and the literals waiting
/// for it.
trait InPlaceTarget {
    /// The partial content, created if missing, for the patch to read and
    /// append its literals to.
    fn spill(&self) -> Result<File, VolumeError>;
    /// Creates the (empty) undo journal, durably.
    fn begin_journal(&self) -> Result<File, VolumeError>;
    /// Deletes the undo journal, durably.
    fn end_journal(&self) -> Result<(), VolumeError>;
    /// Removes the partial content; best effort.
    fn discard_partial(&self);
}

impl InPlaceTarget for Image {
    fn spill(&self) -> Result<File, VolumeError> {
        Image::spill(self)
    }

    fn begin_journal(&self) -> Result<File, VolumeError> {
        Image::begin_journal(self)
    }

    fn end_journal(&self) -> Result<(), VolumeError> {
        Image::end_journal(self)
    }

    fn discard_partial(&self) {
        Image::discard_partial(self)
    }
}

/// A file of a tree being patched in place.
struct TreeFile<'a> {
    tree: &'a Tree,
    path: &'a str,
}

impl InPlaceTarget for TreeFile<'_> {
    fn spill(&self) -> Result<File, VolumeError> {
        self.tree.spill(self.path)
    }

    fn begin_journal(&self) -> Result<File, VolumeError> {
        self.tree.begin_journal(self.path)
    }

    fn end_journal(&self) -> Result<(), VolumeError> {
        self.tree.end_journal()
    }

    fn discard_partial(&self) {
        self.tree.remove_partial(self.path)
    }
}

/// Receives a delta and applies it to `file` in place under `target`'s
/// undo journal: nothing is written until the whole delta arrived and the
/// bytes it overwrites are saved, and a failure rolls the file back.
/// Literals wait in the partial content, which a lost peer leaves for the
/// next transfer to resume from. `check_len` may refuse the new length
/// before anything is written.
///
/// Also returns the ranges the patch left as they were (see
/// [`InPlacePatch::unchanged`]).
#[allow(clippy::too_many_arguments)]
fn receive_in_place_journaled(
    target: &impl InPlaceTarget,
    mut basis: Basis,
    file: &mut File,
    kept: Option<&BasisKept>,
    check_len: impl FnOnce(u64) -> Result<(), BlockError>,
    label: &str,
    channel: &mut Channel,
    limits: &Limits,
    progress: &mut FileProgress,
) -> Result<(PatchStats, Vec<(u64, u64)>), BlockError> {
    // Granule hashes of a file that nothing wrote since they were taken:
    // the verification reads back only what the patch wrote.
    let hashes = kept.map(|kept| kept.hashes.clone());
    let basis_len = basis.len();
    let result = receive_delta(&mut basis, basis_len, channel, limits, label, |_, delta| {
        let spill = Some(target.spill()?);
        let mut report = |done| progress.advance(done);
        let mut patch = InPlacePatch::read_reporting(&mut *file, delta, limits, spill, &mut report)
            .map_err(patch_error(label))?;
        if let Some(hashes) = hashes {
            patch = patch.with_basis_hashes(hashes);
        }
        check_len(patch.new_len())?;
        let unchanged = patch.unchanged();
        let journal = target.begin_journal()?;
        let result = wasmover_block::patch_journaled(file, patch, &journal);
        drop(journal);
        if !matches!(result, Err(PatchError::Unrecovered { .. })) {
            target.end_journal()?;
        }
        Ok((result.map_err(patch_error(label))?, unchanged))
    });
    // The peer is gone: what arrived is kept for the next run.
    if !matches!(result, Err(BlockError::Channel(_))) {
        target.discard_partial();
    }
    result
}

/// Receives a delta for a block volume and applies it in place under the
/// undo journal ([`receive_in_place_journaled`]).
fn receive_in_place(
    image: &Image,
    path: &str,
    hashes: Option<BasisKept>,
    channel: &mut Channel,
    limits: &Limits,
    progress: &mut FileProgress,
) -> Result<PatchStats, BlockError> {
    // The basis the peer's signature covered: the volume, then the partial
    // content.
    let basis = Basis::open_image(image, path)?;
    let (mut file, len) = image.open_write()?;
    let device = image.is_device()?;
    let check_len = |new_len| {
        if device && new_len != len {
            return Err(BlockError::Io(format!(
                "the source volume is {new_len} bytes and this block device {len}: a \
                 device keeps its size, so it must be as large as the source"
            )));
        }
        Ok(())
    };
    // How messages name it: its path is empty.
    let label = "the block volume";
    let kept = basis.still(hashes);
    let (stats, unchanged) = receive_in_place_journaled(
        image,
        basis,
        &mut file,
        kept.as_ref(),
        check_len,
        label,
        channel,
        limits,
        progress,
    )?;
    let stamp = Stamp::of_file(&file);
    if let Some(stamp) = stamp {
        image.remember_hash(stamp, stats.hash);
    }
    let next = kept
        .zip(stamp)
        .and_then(|(kept, stamp)| kept.updated(&file, stats.written_bytes, &unchanged, stamp));
    image.keep_hashes(next.as_ref());
    Ok(stats)
}

/// Receives a delta for a large file of a tree and patches it in place
/// under the tree's undo journal ([`receive_in_place_journaled`]); an
/// interrupted run leaves the journal, and the next open of the tree
/// rolls the file back.
fn receive_in_place_tree(
    tree: &Tree,
    file: Target,
    mut open: File,
    hashes: Option<BasisKept>,
    channel: &mut Channel,
    limits: &Limits,
    progress: &mut FileProgress,
) -> Result<PatchStats, BlockError> {
    let path = file.path;
    let basis = Basis::open_tree(tree, path)?;
    let kept = basis.still(hashes);
    let target = TreeFile { tree, path };
    let (stats, unchanged) = receive_in_place_journaled(
        &target,
        basis,
        &mut open,
        kept.as_ref(),
        |_| Ok(()),
        path,
        channel,
        limits,
        progress,
    )?;
    let stamp = tree.commit_in_place(&open, path, file.mode, file.mtime_ns, stats.hash)?;
    let next = kept
        .zip(stamp)
        .and_then(|(kept, stamp)| kept.updated(&open, stats.written_bytes, &unchanged, stamp));
    tree.keep_hashes(path, next.as_ref());
    Ok(stats)
}

/// The granule summary of a large basis, from its granule hashes: those
/// the run that wrote it kept, if it is as that run left it, else read
/// now. The hashes are kept for its patch when its stamp can be trusted.
fn granule_summary(
    volume: &Volume,
    path: &str,
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
                path,
                "sending the granule hashes kept by the run that wrote it"
            );
            kept.hashes
        }
        None => {
            let len = basis.len();
            BasisHashes::compute(&mut *basis, len).map_err(io_error("reading", path))?
        }
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
fn refine_and_write(
    mut plan: Plan,
    mut file: &File,
    channel: &mut Channel,
    session: &mut BlockSession,
    limits: &Limits,
    path: &str,
) -> Result<DeltaStats, BlockError> {
    let delta_error = |e: io::Error| BlockError::Io(format!("delta of {path}: {e}"));
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
                         hashes of {path}"
                    )));
                }
            }
        };
        plan.refine(&answer, &mut file).map_err(delta_error)?;
    }
    plan.write(&mut file, channel.writer()).map_err(delta_error)
}

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
            let mut progress = FileProgress {
                observer: &*s.grants.observer,
                module: &s.module,
                base: s.progress,
                next: PROGRESS_STEP,
            };
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
        path: String,
        block_size: Option<u32>,
    ) -> wasmtime::Result<Result<BlockStats, BlockError>> {
        self.with_volume_and_channel(|volume, channel, session, _, _| {
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
                wire_bytes: 0,
            })
        })
    }

    fn send_delta(&mut self, path: String) -> wasmtime::Result<Result<BlockStats, BlockError>> {
        self.with_volume_and_channel(|volume, channel, session, limits, _| {
            let summary = match session.ahead.pop_front() {
                Some(summary) => summary,
                None => read_summary(channel, limits, &path)?,
            };
            let (file, len, stamp) =
                open_source(volume, &path)?.ok_or_else(|| BlockError::NotFound(path.clone()))?;
            let delta_error = |e: io::Error| BlockError::Io(format!("delta of {path}: {e}"));
            let stats = match summary {
                Summary::Signature(signature)
                    if len < REFINE_MIN_FILE || signature.block_count() == 0 =>
                {
                    wasmover_block::delta(&signature, &file, channel.writer())
                        .map_err(|e| BlockError::Io(format!("delta of {path}: {e}")))?
                }
                Summary::Signature(signature) => {
                    let plan = Plan::from_file(&signature, &file).map_err(delta_error)?;
                    refine_and_write(plan, &file, channel, session, limits, &path)?
                }
                Summary::Granules(granules) => {
                    let plan = Plan::from_granules(&granules, &file).map_err(delta_error)?;
                    refine_and_write(plan, &file, channel, session, limits, &path)?
                }
                Summary::Answer(_) => {
                    return Err(BlockError::Protocol(format!(
                        "expected the signature of {path}, received the answer to a refinement"
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
        self.with_volume_and_channel(|volume, channel, session, limits, progress| {
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
                wire_bytes: 0,
            })
        })
    }
}

/// A file of a tree to rebuild, and the metadata it gets.
struct Target<'a> {
    path: &'a str,
    mode: u32,
    mtime_ns: i64,
}

/// Receives a delta for a file of a tree, rebuilds it beside the old one
/// and renames it into place; a peer lost part-way leaves what arrived for
/// the next run to resume from.
///
/// With the hashes of the old file's granules (`hashes`, from its
/// signature), granules the delta keeps in place are copied by the kernel
/// and not read again, as long as the old file still has the stamp it had
/// when they were hashed.
fn receive_beside(
    tree: &Tree,
    file: Target,
    hashes: Option<BasisKept>,
    channel: &mut Channel,
    limits: &Limits,
    progress: &mut FileProgress,
) -> Result<PatchStats, BlockError> {
    let path = file.path;
    let mut basis = Basis::open_tree(tree, path)?;
    let known = basis.still(hashes);
    let (staged_file, staged) = tree.create_staged(path)?;
    let result = (|| {
        // Zero runs become holes: the staged file starts empty.
        let mut out = SparseWriter::new(staged_file);
        let len = basis.len();
        let (stats, in_place) = receive_delta(
            &mut basis,
            len,
            channel,
            limits,
            path,
            |basis, delta| match (&known, basis.only_file()) {
                (Some(kept), Some((old, _))) => {
                    let mut report = |done| progress.advance(done);
                    let (stats, in_place) = wasmover_block::patch_from_file(
                        old,
                        &kept.hashes,
                        delta,
                        &mut out,
                        limits,
                        &mut report,
                    )
                    .map_err(patch_error(path))?;
                    if Stamp::of_file(old).is_none_or(|now| now != kept.stamp) {
                        return Err(BlockError::Verification(format!(
                            "{path}: the old file changed while it was the basis of its new \
                             content: the next run rebuilds it again"
                        )));
                    }
                    Ok((stats, Some(in_place)))
                }
                _ => {
                    let mut report = |done| progress.advance(done);
                    let stats = wasmover_block::patch_reporting(
                        basis,
                        delta,
                        &mut out,
                        limits,
                        &mut report,
                    )
                    .map_err(patch_error(path))?;
                    Ok((stats, None))
                }
            },
        )?;
        let file = out.finish().map_err(io_error("writing", path))?;
        Ok((stats, in_place, file))
    })();
    match result {
        Ok((stats, in_place, staged_file)) => {
            let stamp = tree.commit_staged(
                &staged_file,
                &staged,
                path,
                file.mode,
                file.mtime_ns,
                stats.hash,
            )?;
            tree.remove_partial(path);
            let next = match (known, in_place, stamp) {
                (Some(kept), Some(in_place), Some(stamp)) => {
                    kept.updated(&staged_file, stats.written_bytes, &in_place, stamp)
                }
                _ => None,
            };
            tree.keep_hashes(path, next.as_ref());
            Ok(stats)
        }
        // The peer is gone: what arrived is kept for the next run.
        Err(e @ BlockError::Channel(_)) => {
            tree.keep_partial(&staged, path);
            Err(e)
        }
        Err(e) => {
            tree.discard_staged(&staged);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    /// A refinement request for the first 4 KiB of a basis.
    fn request() -> Vec<u8> {
        let mut r = b"WMRF\x06".to_vec();
        r.extend_from_slice(&1024u32.to_be_bytes());
        r.push(0);
        r.extend_from_slice(&1u64.to_be_bytes());
        // Varints: offset 0, length 4096.
        r.extend_from_slice(&[0x00, 0x80, 0x20]);
        assert!(matches!(
            Incoming::read_from(&r[..], &Limits::default()),
            Ok(Incoming::Refinement(_))
        ));
        r
    }

    /// Rebuilds `path` of `tree` from `new` through [`receive_beside`],
    /// with the old file's granule hashes as its signature left them,
    /// after `meanwhile` ran; the peer's delta is against the old file as
    /// it was hashed.
    fn rebuild_with_hashes(
        tree: &Tree,
        path: &str,
        new: &[u8],
        meanwhile: impl FnOnce(),
    ) -> Result<PatchStats, BlockError> {
        let mut basis = Basis::open_tree(tree, path).unwrap();
        let (_, stamp) = basis.only_file().unwrap();
        // Old enough for its stamp to be trusted.
        std::thread::sleep(std::time::Duration::from_nanos(
            crate::volume::known::SETTLE_NS as u64 + 50_000_000,
        ));
        let stamp = Stamp::of_file(basis.only_file().unwrap().0)
            .filter(|s| *s == stamp)
            .unwrap();
        let len = basis.len();
        let signature = Signature::compute(&mut basis, len, &SignatureOptions::default()).unwrap();
        io::Seek::seek(&mut basis, io::SeekFrom::Start(0)).unwrap();
        let hashes = BasisHashes::compute(&mut basis, len).unwrap();
        drop(basis);
        meanwhile();
        let (mut here, mut peer) = Channel::pair();
        let new = new.to_vec();
        let for_sender = signature.clone();
        let sender = std::thread::spawn(move || {
            wasmover_block::delta(&for_sender, &new[..], peer.writer()).unwrap();
            peer.flush().unwrap();
            peer
        });
        let observer = crate::state::Quiet;
        let mut progress = FileProgress {
            observer: &observer,
            module: "test",
            base: Progress::default(),
            next: PROGRESS_STEP,
        };
        let target = Target {
            path,
            mode: 0o644,
            mtime_ns: 1_000_000_000,
        };
        let kept = BasisKept {
            path: path.to_owned(),
            stamp,
            hashes,
        };
        let result = receive_beside(
            tree,
            target,
            Some(kept),
            &mut here,
            &Limits::default(),
            &mut progress,
        );
        drop(sender.join().unwrap());
        result
    }

    #[test]
    fn granules_in_place_are_taken_by_their_hashes_only_while_the_old_file_is_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let old = wasmover_block::fuzzing::pseudo_random(9 << 20, 5);
        let mut new = old.clone();
        new[5_000_000..5_004_096].fill(1);
        std::fs::write(dir.path().join("f"), &old).unwrap();
        let tree = Tree::open(dir.path(), crate::volume::Access::ReadWrite).unwrap();

        let stats = rebuild_with_hashes(&tree, "f", &new, || {}).unwrap();
        assert_eq!(stats.hash, *blake3::hash(&new).as_bytes());
        assert!(std::fs::read(dir.path().join("f")).unwrap() == new);
        // What is kept for the next run is what reading the new file gives,
        // under the stamp it has now; nothing where the filesystem's ctime
        // could miss a change made right after it was written.
        let kept = tree.kept_hashes("f");
        if tree.settle_ns() > 0 {
            assert!(kept.is_none());
        } else {
            let kept = kept.expect("granule hashes are kept");
            let (file, len, stamp) = tree.open_file("f").unwrap().unwrap();
            assert_eq!(kept.stamp, stamp);
            assert_eq!(kept.hashes, BasisHashes::compute(&file, len).unwrap());
        }

        // The old file changes (same length) after its hashes were taken:
        // they are not believed, so the patch reads what is there now, and
        // the rebuilt file does not verify instead of passing with hashes
        // of bytes that are gone. The file is left as it was.
        let mut changed = new.clone();
        changed[1 << 20] ^= 0xff;
        let path = dir.path().join("f");
        let err = rebuild_with_hashes(&tree, "f", &old, || {
            std::fs::write(&path, &changed).unwrap();
        })
        .unwrap_err();
        assert!(matches!(err, BlockError::Verification(_)), "{err:?}");
        assert!(std::fs::read(dir.path().join("f")).unwrap() == changed);
    }

    #[test]
    fn a_peer_that_keeps_asking_for_finer_signatures_is_refused() {
        let (mut here, mut peer) = Channel::pair();
        let basis = vec![7u8; 64 << 10];
        let asker = std::thread::spawn(move || {
            for _ in 0..=MAX_REFINEMENTS {
                peer.writer().write_all(&request()).unwrap();
            }
            peer.flush().unwrap();
            // Read the answers until this side gives up and hangs up.
            let mut sink = Vec::new();
            let _ = peer.reader_for_receive().read_to_end(&mut sink);
            sink.len()
        });
        let err = receive_delta(
            &mut io::Cursor::new(&basis),
            basis.len() as u64,
            &mut here,
            &Limits::default(),
            "f",
            |_, _| -> Result<(), BlockError> { unreachable!("no delta is sent") },
        )
        .unwrap_err();
        assert!(
            matches!(&err, BlockError::Protocol(m) if m.contains("finer hashes more than 8 times")),
            "{err:?}"
        );
        drop(here);
        let answered = asker.join().unwrap();
        assert!(answered > 0, "the first requests were answered");
    }

    #[test]
    fn an_abort_where_a_signature_or_delta_was_due_says_why() {
        let (mut here, mut peer) = Channel::pair();
        peer.abort("VolumeError: disk full");
        peer.abort("VolumeError: still full");
        let err = read_summary(&mut here, &Limits::default(), "f").unwrap_err();
        assert!(
            matches!(&err, BlockError::Channel(ChannelError::Aborted(r)) if r == "VolumeError: disk full"),
            "{err:?}"
        );
        let err = receive_delta(
            &mut io::Cursor::new(Vec::new()),
            0,
            &mut here,
            &Limits::default(),
            "f",
            |_, _| -> Result<(), BlockError> { unreachable!("no delta is sent") },
        )
        .unwrap_err();
        assert!(
            matches!(&err, BlockError::Channel(ChannelError::Aborted(r)) if r == "VolumeError: still full"),
            "{err:?}"
        );
    }
}
