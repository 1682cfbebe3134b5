//! An undo journal for in-place patches: the bytes a patch will overwrite
//! are saved, durably, before the first of them is written, so a patch
//! cut off part-way (a crash, a full disk, a failed verification) can be
//! rolled back and the file is always either old or new.
//!
//! A journal is `WMUJ`, a version byte, the file's old length, records in
//! ascending offsets, an end record, and a BLAKE3 hash of everything
//! before it. A record is a tag, an offset and a length, then for saved
//! bytes the bytes; a run of old bytes that were all zero is a record
//! without bytes, so the journal of a first copy onto a fresh (zeroed)
//! device stays small. The target is written only after the whole journal
//! is on disk, so a journal that ends early (the writer died while writing
//! it) means the target was never touched.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, FileTypeExt};

use crate::error::{FormatError, PatchError};
use crate::format::{self, Limits};
use crate::in_place::InPlacePatch;
use crate::patch::PatchStats;

const JOURNAL_MAGIC: [u8; 4] = *b"WMUJ";
/// Copy buffer of journal writes and roll-backs, and the unit in which
/// zero runs are found.
const BUFFER: usize = 1 << 20;
/// Record tags.
const END: u8 = 0;
const BYTES: u8 = 1;
const ZEROS: u8 = 2;

/// What [`roll_back`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RollBack {
    /// The saved bytes and the old length were restored and synced.
    Restored {
        /// Bytes written back.
        bytes: u64,
    },
    /// The journal is incomplete: its writer stopped before the target
    /// was touched, so there is nothing to undo.
    Incomplete,
}

/// A writer that hashes what passes through it.
struct Hashing<W> {
    inner: W,
    hasher: blake3::Hasher,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Saves the bytes of `target` that `patch` will overwrite, and its
/// length, into `journal` (empty, opened for writing), and syncs it.
/// Returns the bytes saved (zero runs are recorded, not saved). The caller must also make the journal's
/// directory entry durable before it lets the patch write.
pub fn write_undo(target: &File, patch: &InPlacePatch, journal: &File) -> io::Result<u64> {
    let ranges = patch.overwritten();
    let mut out = Hashing {
        inner: BufWriter::with_capacity(BUFFER, journal),
        hasher: blake3::Hasher::new(),
    };
    out.write_all(&JOURNAL_MAGIC)?;
    out.write_all(&[format::DISK_VERSION])?;
    out.write_all(&patch.basis_len().to_be_bytes())?;
    let mut buf = vec![0u8; BUFFER];
    let mut saved = 0;
    let record = |out: &mut Hashing<_>, tag: u8, at: u64, len: u64| -> io::Result<()> {
        out.write_all(&[tag])?;
        out.write_all(&at.to_be_bytes())?;
        out.write_all(&len.to_be_bytes())
    };
    for &(offset, len) in &ranges {
        let mut done = 0;
        // A run of zero chunks not yet written.
        let mut zeros: Option<(u64, u64)> = None;
        while done < len {
            let at = offset + done;
            let n = (len - done).min(BUFFER as u64) as usize;
            target.read_exact_at(&mut buf[..n], at)?;
            if buf[..n].iter().all(|&b| b == 0) {
                let run = zeros.get_or_insert((at, 0));
                run.1 += n as u64;
            } else {
                if let Some((z, zlen)) = zeros.take() {
                    record(&mut out, ZEROS, z, zlen)?;
                }
                record(&mut out, BYTES, at, n as u64)?;
                out.write_all(&buf[..n])?;
                saved += n as u64;
            }
            done += n as u64;
        }
        if let Some((z, zlen)) = zeros {
            record(&mut out, ZEROS, z, zlen)?;
        }
    }
    record(&mut out, END, 0, 0)?;
    let hash = out.hasher.finalize();
    let mut inner = out.inner;
    inner.write_all(hash.as_bytes())?;
    inner.flush()?;
    drop(inner);
    journal.sync_all()?;
    Ok(saved)
}

/// A reader that hashes what passes through it.
struct Verifying<R> {
    inner: R,
    hasher: blake3::Hasher,
}

impl<R: Read> Read for Verifying<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Old content of a range, as a journal records it.
enum Saved<'a> {
    /// These bytes.
    Bytes(&'a [u8]),
    /// This many zero bytes.
    Zeros(u64),
}

/// Walks a journal from its start: checks its structure, calls `restore`
/// with every saved range, and returns the old length, or `None` when the
/// journal ends early.
fn walk(
    journal: &File,
    mut restore: impl FnMut(u64, Saved) -> io::Result<()>,
) -> Result<Option<u64>, PatchError> {
    let mut from_start = journal;
    from_start.seek(SeekFrom::Start(0))?;
    let mut r = Verifying {
        inner: BufReader::with_capacity(BUFFER, from_start),
        hasher: blake3::Hasher::new(),
    };
    let incomplete = |e: FormatError| match e {
        FormatError::Truncated { .. } => Ok(None),
        e => Err(PatchError::from(e)),
    };
    if let Err(e) = format::read_header(
        &mut r,
        JOURNAL_MAGIC,
        format::DISK_VERSION,
        "undo journal header",
    ) {
        return incomplete(e);
    }
    let old_len = match format::read_u64(&mut r, "old length") {
        Ok(len) => len,
        Err(e) => return incomplete(e),
    };
    let malformed = |reason| -> PatchError { FormatError::Malformed { reason }.into() };
    if old_len > Limits::default().max_file_len {
        return Err(malformed("undo journal: old length beyond any file"));
    }
    let mut buf = vec![0u8; BUFFER];
    let mut end = 0;
    loop {
        let record = (|| -> Result<(u8, u64, u64), FormatError> {
            Ok((
                format::read_u8(&mut r, "record tag")?,
                format::read_u64(&mut r, "record offset")?,
                format::read_u64(&mut r, "record length")?,
            ))
        })();
        let (tag, offset, len) = match record {
            Ok(record) => record,
            Err(e) => return incomplete(e),
        };
        if tag == END {
            break;
        }
        if offset < end || offset.checked_add(len).is_none_or(|e| e > old_len) {
            return Err(malformed(
                "undo journal: records out of order or beyond the old length",
            ));
        }
        end = offset + len;
        match tag {
            BYTES => {
                let mut done = 0;
                while done < len {
                    let n = (len - done).min(BUFFER as u64) as usize;
                    match r.read_exact(&mut buf[..n]) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
                        Err(e) => return Err(e.into()),
                    }
                    restore(offset + done, Saved::Bytes(&buf[..n]))?;
                    done += n as u64;
                }
            }
            // One call, whatever the length: checking a journal costs
            // what it holds, not what it claims.
            ZEROS => restore(offset, Saved::Zeros(len))?,
            _ => return Err(malformed("undo journal: unknown record")),
        }
    }
    let computed = r.hasher.finalize();
    let mut stored = [0u8; 32];
    match r.inner.read_exact(&mut stored) {
        Ok(()) if computed.as_bytes() == &stored => Ok(Some(old_len)),
        Ok(()) => Err(malformed("undo journal: damaged, its hash does not match")),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Restores `target` from `journal`: every saved range and the old
/// length (only if it differs, so a block device works), then syncs the
/// target. Safe to repeat if interrupted. A journal that ends early
/// changes nothing; one that is damaged or malformed is refused before
/// anything is written.
pub fn roll_back(journal: &File, target: &File) -> Result<RollBack, PatchError> {
    // First check the whole journal, then write: a damaged journal must
    // not half-restore a file.
    if walk(journal, |_, _| Ok(()))?.is_none() {
        return Ok(RollBack::Incomplete);
    }
    let mut bytes = 0;
    let zeros = vec![0u8; BUFFER];
    let old_len = walk(journal, |at, saved| match saved {
        Saved::Bytes(data) => {
            bytes += data.len() as u64;
            target.write_all_at(data, at)
        }
        Saved::Zeros(len) => {
            bytes += len;
            let mut done = 0;
            while done < len {
                let n = (len - done).min(BUFFER as u64) as usize;
                target.write_all_at(&zeros[..n], at + done)?;
                done += n as u64;
            }
            Ok(())
        }
    })?
    .ok_or_else(|| io::Error::other("the undo journal changed while it was read"))?;
    let meta = target.metadata()?;
    if !meta.file_type().is_block_device() && meta.len() != old_len {
        target.set_len(old_len)?;
    }
    target.sync_all()?;
    Ok(RollBack::Restored { bytes })
}

/// Applies `patch` to `target` under an undo journal in `journal` (an
/// empty file): the overwritten bytes are saved and synced first, then
/// the patch is applied, verified and synced. If applying or verifying
/// fails, the target is rolled back before the error returns, or the
/// error is [`PatchError::Unrecovered`] and the journal must be kept. On
/// success (or a rolled-back failure) the caller deletes the journal;
/// until then a crash leaves a journal that [`roll_back`] undoes.
pub fn patch_journaled(
    target: &mut File,
    patch: InPlacePatch,
    journal: &File,
) -> Result<PatchStats, PatchError> {
    write_undo(target, &patch, journal)?;
    match patch.apply(&mut *target) {
        Ok(stats) => {
            target.sync_all()?;
            Ok(stats)
        }
        Err(e) => match roll_back(journal, target) {
            Ok(_) => Err(e),
            Err(undo) => Err(PatchError::Unrecovered {
                error: e.to_string(),
                roll_back: undo.to_string(),
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Seek, SeekFrom, Write};

    use proptest::prelude::*;

    use super::*;
    use crate::fuzzing::{delta_of, pseudo_random};

    fn file_with(bytes: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    fn contents(mut f: &File) -> Vec<u8> {
        let mut out = Vec::new();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.read_to_end(&mut out).unwrap();
        out
    }

    /// A 256 KiB file with two 4 KiB pages rewritten.
    fn old_and_new() -> (Vec<u8>, Vec<u8>) {
        let old = pseudo_random(256 << 10, 1);
        let mut new = old.clone();
        new[8192..12288].copy_from_slice(&pseudo_random(4096, 2));
        new[200_704..204_800].copy_from_slice(&pseudo_random(4096, 3));
        (old, new)
    }

    #[test]
    fn a_journaled_patch_saves_only_what_it_overwrites() {
        let (old, new) = old_and_new();
        let mut target = file_with(&old);
        let journal = tempfile::tempfile().unwrap();
        let d = delta_of(&old, &new, 4096);
        let patch = InPlacePatch::read(&mut target, &d[..], &Limits::default(), None).unwrap();
        assert_eq!(patch.overwritten(), [(8192, 4096), (200_704, 4096)]);
        patch_journaled(&mut target, patch, &journal).unwrap();
        assert_eq!(contents(&target), new);
        let (header, record) = (4 + 1 + 8, 1 + 8 + 8);
        assert_eq!(
            journal.metadata().unwrap().len(),
            header + 2 * (record + 4096) + record + 32
        );
        // Version 3, what journals already on disk say: one an older
        // build left is rolled back by this one, whatever the wire's
        // version.
        assert_eq!(&contents(&journal)[..5], b"WMUJ\x03");
        // Rolling back the finished patch (a crash before the journal
        // was deleted) gives the old file, and doing it twice is the same.
        for _ in 0..2 {
            assert_eq!(
                roll_back(&journal, &target).unwrap(),
                RollBack::Restored { bytes: 8192 }
            );
            assert_eq!(contents(&target), old);
        }
    }

    #[test]
    fn a_failed_verification_rolls_the_file_back() {
        let (old, new) = old_and_new();
        let mut target = file_with(&old);
        let journal = tempfile::tempfile().unwrap();
        let mut d = delta_of(&old, &new, 4096);
        let last = d.len() - 1;
        d[last] ^= 1;
        let patch = InPlacePatch::read(&mut target, &d[..], &Limits::default(), None).unwrap();
        let err = patch_journaled(&mut target, patch, &journal).unwrap_err();
        assert!(matches!(err, PatchError::Verification { .. }), "{err}");
        assert_eq!(contents(&target), old);
    }

    #[test]
    fn a_journal_that_ends_early_changes_nothing_and_a_damaged_one_is_refused() {
        let (old, new) = old_and_new();
        let mut target = file_with(&old);
        let journal = tempfile::tempfile().unwrap();
        let d = delta_of(&old, &new, 4096);
        let patch = InPlacePatch::read(&mut target, &d[..], &Limits::default(), None).unwrap();
        write_undo(&target, &patch, &journal).unwrap();
        patch.apply(&mut target).unwrap();
        let full = contents(&journal);
        for cut in [0, 3, 20, 100, full.len() - 1] {
            let torn = file_with(&full[..cut]);
            assert_eq!(roll_back(&torn, &target).unwrap(), RollBack::Incomplete);
            assert_eq!(contents(&target), new, "cut at {cut}");
        }
        let mut damaged = full.clone();
        damaged[100] ^= 1;
        let err = roll_back(&file_with(&damaged), &target).unwrap_err();
        assert!(err.to_string().contains("damaged"), "{err}");
        assert_eq!(contents(&target), new);
    }

    #[test]
    fn old_zeros_are_recorded_not_saved() {
        // A fresh device: 8 MiB of zeros with one old page of data, all of
        // it rewritten.
        let mut old = vec![0u8; 8 << 20];
        old[3 << 20..(3 << 20) + 4096].fill(5);
        let new = pseudo_random(8 << 20, 11);
        let mut target = file_with(&old);
        let journal = tempfile::tempfile().unwrap();
        let d = delta_of(&old, &new, 4096);
        let patch = InPlacePatch::read(&mut target, &d[..], &Limits::default(), None).unwrap();
        let saved = write_undo(&target, &patch, &journal).unwrap();
        assert_eq!(saved, 1 << 20, "only the one MiB chunk holding data");
        assert!(journal.metadata().unwrap().len() < (1 << 20) + 1000);
        patch.apply(&mut target).unwrap();
        assert_eq!(contents(&target), new);
        roll_back(&journal, &target).unwrap();
        assert!(contents(&target) == old);
    }

    #[test]
    fn spilled_literals_rebuild_the_same_file() {
        let old = pseudo_random(64 << 10, 6);
        let new = pseudo_random(96 << 10, 9);
        let mut target = file_with(&old);
        let d = delta_of(&old, &new, 1024);
        let spill = tempfile::tempfile().unwrap();
        let patch =
            InPlacePatch::read(&mut target, &d[..], &Limits::default(), Some(spill)).unwrap();
        let stats = patch.apply(&mut target).unwrap();
        assert_eq!(stats.literal_bytes, new.len() as u64);
        assert_eq!(contents(&target), new);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever the edit (moves, growth, shrinking), a patch cut off
        /// after any number of its writes rolls back to the old file.
        #[test]
        fn any_partial_patch_rolls_back_to_the_old_file(
            old_len in 1usize..20_000,
            edits in proptest::collection::vec((0usize..20_000, 0usize..3000, any::<u8>()), 0..6),
            new_len in 0usize..30_000,
            seed in any::<u64>(),
            torn_writes in 0usize..64,
        ) {
            let old = pseudo_random(old_len, seed);
            let mut new: Vec<u8> = old.iter().copied().cycle().skip(old_len / 3).take(new_len).collect();
            for (at, len, v) in edits {
                let at = at.min(new.len());
                let end = (at + len).min(new.len());
                new[at..end].iter_mut().for_each(|b| *b ^= v | 1);
            }
            let target = file_with(&old);
            let journal = tempfile::tempfile().unwrap();
            let d = delta_of(&old, &new, 256);
            let patch = InPlacePatch::read(&mut &target, &d[..], &Limits::default(), None).unwrap();
            let ranges = patch.overwritten();
            write_undo(&target, &patch, &journal).unwrap();
            // A crash part-way: some of the overwritten ranges hold
            // garbage, and the file may have been resized.
            for &(at, len) in ranges.iter().take(torn_writes) {
                target.write_all_at(&vec![0xEE; len as usize], at).unwrap();
            }
            if torn_writes % 2 == 1 {
                target.set_len(new_len as u64).unwrap();
            }
            roll_back(&journal, &target).unwrap();
            prop_assert_eq!(contents(&target), old);
        }
    }
}
