//! The first round of a [`Plan`]: the new file read once, matched against
//! a whole-file signature or a granule summary, and hashed.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

use blake3::hazmat::{Mode, left_subtree_len, merge_subtrees_root};

use super::Plan;
use super::ops::Recorder;
use crate::content_hash::ContentHasher;
use crate::delta::{Sink, search};
use crate::index::Index;
use crate::tree_hash::{Granules, hash_granules, hash_granules_of_file};
use crate::wire::{GranuleSummary, Signature};

/// Files at least this large are searched as two halves at once
/// ([`Plan::from_file`]).
const PARALLEL_SEARCH_MIN: u64 = 64 << 20;

/// Reads `file` from `pos` up to `end` (or its end) at offsets, so that
/// several readers share one open file.
struct At<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for At<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len().min(self.end.saturating_sub(self.pos) as usize);
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

fn changed_length() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the new file changed length while its delta was computed",
    )
}

impl Plan {
    /// [`new`](Self::new) for a file: a large one is searched as two
    /// halves on two threads, split where BLAKE3's tree splits it, so each
    /// half's hash joins into the file's. The seam may cost one block of
    /// literals, which a refinement round then narrows.
    pub fn from_file(sig: &Signature, file: &File) -> io::Result<Self> {
        Self::from_file_split_from(sig, file, PARALLEL_SEARCH_MIN)
    }

    /// [`from_file`](Self::from_file), searching a file as two halves
    /// from `split_min` bytes on.
    pub(crate) fn from_file_split_from(
        sig: &Signature,
        file: &File,
        split_min: u64,
    ) -> io::Result<Self> {
        let len = file.metadata()?.len();
        let whole = At {
            file,
            pos: 0,
            end: u64::MAX,
        };
        if len < split_min {
            return Self::new(sig, whole);
        }
        let mid = left_subtree_len(len);
        let index = Index::new(sig);
        let half = |start: u64, end: u64| {
            let mut ops = Vec::new();
            let mut recorder = Recorder {
                ops: &mut ops,
                at: start,
            };
            let mut hasher = ContentHasher::at(start);
            let read = At {
                file,
                pos: start,
                end,
            };
            let n = search(sig, &index, read, &mut recorder, Some(&mut hasher))?;
            Ok::<_, io::Error>((ops, n, (n > 0).then(|| hasher.finalize_non_root())))
        };
        let (left, right) = rayon::join(|| half(0, mid), || half(mid, u64::MAX));
        let ((mut ops, left_len, left_cv), (right_ops, right_len, right_cv)) = (left?, right?);
        let new_len = left_len + right_len;
        let (Some(left_cv), Some(right_cv)) = (left_cv, right_cv) else {
            return Err(changed_length());
        };
        // The split must be the one BLAKE3 makes of the length read.
        if left_len != mid || left_subtree_len(new_len) != mid {
            return Err(changed_length());
        }
        ops.extend(right_ops);
        Ok(Self {
            ops,
            new_len,
            hash: merge_subtrees_root(&left_cv, &right_cv, Mode::Hash),
            basis_len: sig.basis_len(),
            block_size: Some(sig.block_size()),
            searched: true,
            rounds: 0,
            last_round: None,
        })
    }

    /// The first round against a [`GranuleSummary`]: hashes `new` by the
    /// basis's granules in one BLAKE3 pass and takes each granule whose
    /// tag is alike at the same offset as a copy, the rest as literals
    /// for [`refinement`](Self::refinement) rounds to search.
    pub fn from_granules<R: Read + Send>(summary: &GranuleSummary, new: R) -> io::Result<Self> {
        Self::granules_matched(summary, hash_granules(new, summary.granule())?)
    }

    /// [`from_granules`](Self::from_granules) for a file: one that may
    /// have holes is read by its data ranges, a granule inside a hole
    /// neither read nor hashed.
    pub fn from_granules_of_file(summary: &GranuleSummary, file: &File) -> io::Result<Self> {
        Self::granules_matched(summary, hash_granules_of_file(file, summary.granule())?)
    }

    /// The first round against `summary` of a file read by its granules.
    fn granules_matched(summary: &GranuleSummary, read: Granules) -> io::Result<Self> {
        let g = summary.granule();
        let mut ops = Vec::new();
        let mut recorder = Recorder {
            ops: &mut ops,
            at: 0,
        };
        for (i, cv) in read.cvs.iter().enumerate() {
            let start = i as u64 * g;
            let len = (start + g).min(read.len) - start;
            match summary.granule_at(i) {
                Some((t, basis_len)) if basis_len == len && t == summary.tag(cv) => {
                    recorder.copy(start, len)?
                }
                _ => recorder.skip(len),
            }
        }
        Ok(Self {
            ops,
            new_len: read.len,
            hash: read.hash,
            basis_len: summary.basis_len(),
            block_size: None,
            searched: false,
            rounds: 0,
            last_round: None,
        })
    }

    /// The first round: reads `new` once, matching it against `sig` as
    /// [`delta`](crate::delta()) does, and hashes it for the end marker.
    pub fn new<R: Read>(sig: &Signature, new: R) -> io::Result<Self> {
        let mut ops = Vec::new();
        let mut hasher = ContentHasher::new();
        let index = Index::new(sig);
        let mut recorder = Recorder {
            ops: &mut ops,
            at: 0,
        };
        let new_len = search(sig, &index, new, &mut recorder, Some(&mut hasher))?;
        Ok(Self {
            ops,
            new_len,
            hash: hasher.finalize(),
            basis_len: sig.basis_len(),
            block_size: Some(sig.block_size()),
            searched: true,
            rounds: 0,
            last_round: None,
        })
    }
}
