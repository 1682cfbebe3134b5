//! Sparse files: on output, runs of zeros become holes instead of
//! written blocks; on input, holes are found by `SEEK_DATA`/`SEEK_HOLE`
//! and never read.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;

use crate::file::InPlaceFile;

/// Granule of hole detection: the common file-system block.
const GRANULE: usize = 4096;

/// A writer for a new, empty file that skips (seeks over) every aligned
/// 4 KiB piece of zeros, so the file system leaves a hole there, and
/// writes everything else. Pass `&mut` it to [`patch`](crate::patch())
/// as the output, then call [`SparseWriter::finish`], which sets the
/// final length so a trailing hole is kept.
///
/// The file must start empty: skipped ranges read as zeros only because
/// nothing was ever written there.
pub struct SparseWriter<W: InPlaceFile> {
    inner: W,
    /// Bytes accepted so far (the logical length).
    len: u64,
    /// The start of an unfinished granule.
    pending: Vec<u8>,
    /// Bytes skipped as holes, for statistics.
    skipped: u64,
    /// Whether the last bytes were skipped: only then must the length be
    /// set, the file having been written to its end otherwise.
    hole_at_end: bool,
}

impl<W: InPlaceFile> SparseWriter<W> {
    /// Wraps `inner`, an empty file positioned at its start.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            len: 0,
            pending: Vec::with_capacity(GRANULE),
            skipped: 0,
            hole_at_end: false,
        }
    }

    /// Bytes left as holes so far.
    pub fn skipped_bytes(&self) -> u64 {
        self.skipped
    }

    /// Writes what is pending, sets the file's length to everything
    /// written (holes included) and returns the file.
    pub fn finish(mut self) -> io::Result<W> {
        let pending = std::mem::take(&mut self.pending);
        if !pending.is_empty() {
            self.inner.write_all(&pending)?;
        } else if self.hole_at_end {
            self.inner.set_len(self.len)?;
        }
        self.inner.flush()?;
        Ok(self.inner)
    }

    /// Writes whole granules: runs of non-zero ones in one call, runs of
    /// zero ones as one seek.
    fn granules(&mut self, data: &[u8]) -> io::Result<()> {
        debug_assert_eq!(data.len() % GRANULE, 0);
        let mut start = 0;
        while start < data.len() {
            let zero = is_zero(&data[start..start + GRANULE]);
            let mut end = start + GRANULE;
            while end < data.len() && is_zero(&data[end..end + GRANULE]) == zero {
                end += GRANULE;
            }
            if zero {
                self.inner.seek(SeekFrom::Current((end - start) as i64))?;
                self.skipped += (end - start) as u64;
            } else {
                self.inner.write_all(&data[start..end])?;
            }
            self.hole_at_end = zero;
            start = end;
        }
        Ok(())
    }
}

/// What [`walk`] finds in a file, in order.
pub(crate) enum Piece<'a> {
    /// Bytes read from a data range.
    Data(&'a [u8]),
    /// A hole of this many bytes, not read.
    Hole(u64),
}

/// Whether `file` may have holes: fewer bytes allocated than its length.
pub(crate) fn may_have_holes(file: impl AsFd) -> io::Result<bool> {
    let stat = rustix::fs::fstat(file)?;
    Ok((stat.st_blocks as u64).saturating_mul(512) < stat.st_size as u64)
}

/// The next data range of `file` at or after `pos`, `(start, end)` with
/// `end` the hole after it, or `None` when only a hole follows. Where the
/// file system cannot tell, everything from `pos` on is data.
fn next_data(file: impl AsFd, pos: u64) -> io::Result<Option<(u64, u64)>> {
    use rustix::fs::{SeekFrom, seek};
    use rustix::io::Errno;
    let start = match seek(&file, SeekFrom::Data(pos)) {
        Ok(start) => start,
        Err(Errno::NXIO) => return Ok(None),
        Err(Errno::INVAL | Errno::OPNOTSUPP) => return Ok(Some((pos, u64::MAX))),
        Err(e) => return Err(e.into()),
    };
    Ok(Some((start, seek(&file, SeekFrom::Hole(start))?)))
}

/// Walks `file` from its start, reading its data ranges through `buf` and
/// skipping its holes, and tells `piece` what it finds, in order; returns
/// the length walked. What changes meanwhile is seen as it is found: a
/// file that shrinks ends where a read finds its end, one that grows is
/// walked to its new end.
pub(crate) fn walk<F: Read + AsFd>(
    mut file: F,
    buf: &mut [u8],
    mut piece: impl FnMut(Piece<'_>) -> io::Result<()>,
) -> io::Result<u64> {
    let mut pos = 0;
    loop {
        let Some((start, end)) = next_data(file.as_fd(), pos)? else {
            // A hole to the end of the file.
            let len = rustix::fs::fstat(file.as_fd())?.st_size as u64;
            if len > pos {
                piece(Piece::Hole(len - pos))?;
            }
            return Ok(pos.max(len));
        };
        if end <= start {
            // Cut short between the two seeks.
            return Ok(pos);
        }
        if start > pos {
            piece(Piece::Hole(start - pos))?;
            pos = start;
        }
        rustix::fs::seek(file.as_fd(), rustix::fs::SeekFrom::Start(pos))?;
        while pos < end {
            let want = (end - pos).min(buf.len() as u64) as usize;
            let n = match file.read(&mut buf[..want]) {
                Ok(0) => return Ok(pos),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            piece(Piece::Data(&buf[..n]))?;
            pos += n as u64;
        }
    }
}

/// Where a file holds data rather than holes: its data ranges, found
/// once (each `SEEK_HOLE` may scan to the end of the file, so looking them
/// up per copy would cost the square of the file's size).
#[derive(Debug)]
pub(crate) struct DataRanges {
    ranges: Vec<(u64, u64)>,
    /// The file's length when they were found.
    len: u64,
}

impl DataRanges {
    /// The data ranges of `file`, sorted.
    pub(crate) fn of(file: &std::fs::File) -> io::Result<Self> {
        use rustix::fs::{SeekFrom, seek};
        let len = file.metadata()?.len();
        let mut ranges = Vec::new();
        let mut pos = 0;
        while pos < len {
            let data = match seek(file, SeekFrom::Data(pos)) {
                Ok(data) => data,
                // No data after `pos`: the rest is a hole.
                Err(rustix::io::Errno::NXIO) => break,
                Err(e) => return Err(e.into()),
            };
            let hole = seek(file, SeekFrom::Hole(data))?.min(len);
            if hole <= data {
                break;
            }
            ranges.push((data, hole));
            pos = hole;
        }
        Ok(Self { ranges, len })
    }

    /// The parts of `[start, end)` that hold data.
    fn within(&self, start: u64, end: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        let first = self.ranges.partition_point(|&(_, e)| e <= start);
        self.ranges[first..]
            .iter()
            .take_while(move |&&(s, _)| s < end)
            .map(move |&(s, e)| (s.max(start), e.min(end)))
    }
}

impl<W: InPlaceFile> SparseWriter<W> {
    /// Appends `len` zero bytes: whole granules as holes, without a
    /// buffer of zeros.
    pub(crate) fn zeros(&mut self, mut len: u64) -> io::Result<()> {
        static ZEROS: [u8; GRANULE] = [0; GRANULE];
        if !self.pending.is_empty() {
            let take = ((GRANULE - self.pending.len()) as u64).min(len);
            self.write_all(&ZEROS[..take as usize])?;
            len -= take;
        }
        let whole = len / GRANULE as u64 * GRANULE as u64;
        if whole > 0 {
            let skip = i64::try_from(whole)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "run too long"))?;
            self.inner.seek(SeekFrom::Current(skip))?;
            self.skipped += whole;
            self.len += whole;
            self.hole_at_end = true;
        }
        self.write_all(&ZEROS[..(len - whole) as usize])
    }
}

impl SparseWriter<std::fs::File> {
    /// Appends `len` bytes of `from` starting at `offset`, copied by the
    /// kernel (no pass through this process; a file system that shares
    /// extents shares them), with the holes of `from` (its `data`
    /// ranges' complement) kept as holes, and nothing past its length
    /// when `data` was found. Only at a 4 KiB boundary of this
    /// file. A `from` shorter than the range is an
    /// [`io::ErrorKind::UnexpectedEof`].
    pub(crate) fn copy_range(
        &mut self,
        from: &std::fs::File,
        data: &DataRanges,
        offset: u64,
        len: u64,
    ) -> io::Result<()> {
        assert!(
            self.pending.is_empty(),
            "copy_range at a granule boundary only"
        );
        let end = offset
            .checked_add(len)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "range overflows"))?;
        let mut copied = 0;
        for (start, stop) in data.within(offset, end) {
            copy_file_range(
                from,
                start,
                &self.inner,
                self.len + (start - offset),
                stop - start,
            )?;
            copied += stop - start;
        }
        // A range that ends in a hole past the end of `from` is short. (A
        // file that shrinks later is the caller's to notice, by its stamp.)
        let from_len = data.len;
        if from_len < end {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the range ends at {end}, the file at {from_len}"),
            ));
        }
        self.skipped += len - copied;
        self.len += len;
        self.inner.seek(SeekFrom::Start(self.len))?;
        Ok(())
    }
}

/// Copies `len` bytes of `from` at `offset` to `to` at `at` in the kernel,
/// falling back to reading and writing where the file systems cannot.
fn copy_file_range(
    from: &std::fs::File,
    mut offset: u64,
    to: &std::fs::File,
    mut at: u64,
    len: u64,
) -> io::Result<()> {
    use rustix::io::Errno;
    use std::os::unix::fs::FileExt;
    let end = offset + len;
    while offset < end {
        let want = (end - offset).min(1 << 30) as usize;
        match rustix::fs::copy_file_range(from, Some(&mut offset), to, Some(&mut at), want) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => {}
            Err(Errno::XDEV | Errno::NOSYS | Errno::OPNOTSUPP | Errno::INVAL) => {
                let mut buf = vec![0u8; (end - offset).min(1 << 20) as usize];
                while offset < end {
                    let n = (end - offset).min(buf.len() as u64) as usize;
                    from.read_exact_at(&mut buf[..n], offset)?;
                    to.write_all_at(&buf[..n], at)?;
                    offset += n as u64;
                    at += n as u64;
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[inline]
fn is_zero(granule: &[u8]) -> bool {
    // OR-folding vectorizes; `all` would stop early but per byte.
    granule.iter().fold(0u8, |acc, &b| acc | b) == 0
}

impl<W: InPlaceFile> Write for SparseWriter<W> {
    fn write(&mut self, mut buf: &[u8]) -> io::Result<usize> {
        let accepted = buf.len();
        if !self.pending.is_empty() {
            let take = (GRANULE - self.pending.len()).min(buf.len());
            self.pending.extend_from_slice(&buf[..take]);
            buf = &buf[take..];
            if self.pending.len() == GRANULE {
                let granule = std::mem::take(&mut self.pending);
                self.granules(&granule)?;
                self.pending = granule;
                self.pending.clear();
            }
        }
        let whole = buf.len() / GRANULE * GRANULE;
        self.granules(&buf[..whole])?;
        self.pending.extend_from_slice(&buf[whole..]);
        self.len += accepted as u64;
        Ok(accepted)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Pending bytes wait for their granule: a flush in the middle of
        // a stream must not turn the rest of it into a write.
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Cursor, Read, Seek};

    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn the_file_reads_back_as_written(
            pieces in proptest::collection::vec((0usize..10_000, any::<bool>()), 0..12),
            splits in proptest::collection::vec(1usize..5000, 1..8),
        ) {
            let mut data = Vec::new();
            for (i, (len, zero)) in pieces.into_iter().enumerate() {
                data.extend((0..len).map(|j| if zero { 0 } else { (i + j) as u8 | 1 }));
            }
            let mut w = SparseWriter::new(Cursor::new(Vec::new()));
            let mut rest = &data[..];
            for &s in splits.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (now, later) = rest.split_at(s.min(rest.len()));
                w.write_all(now).unwrap();
                rest = later;
            }
            let file = w.finish().unwrap();
            prop_assert!(file.into_inner() == data);
        }
    }

    #[test]
    fn zero_runs_become_holes_in_a_real_file() {
        let mut data = vec![0u8; 8 << 20];
        data[..100].fill(1);
        data[(4 << 20)..(4 << 20) + 5000].fill(2);
        let mut w = SparseWriter::new(tempfile::tempfile().unwrap());
        w.write_all(&data).unwrap();
        assert!(w.skipped_bytes() >= (8 << 20) - 3 * 4096);
        let mut file = w.finish().unwrap();
        let mut back = Vec::new();
        file.seek(SeekFrom::Start(0)).unwrap();
        file.read_to_end(&mut back).unwrap();
        assert!(back == data);
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let allocated = file.metadata().unwrap().blocks() * 512;
            assert!(allocated < 1 << 20, "{allocated} bytes allocated");
        }
    }
}
