//! The basis a file is rebuilt from, read as one stream: its old content,
//! then the partial new content an interrupted run kept.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::session::BasisKept;
use crate::bindings::blocks::BlockError;
use crate::volume::path::shown;
use crate::volume::{Image, Stamp, Tree, Volume};

/// Opens a block volume for reading: its only path is the empty one.
fn open_image(image: &Image, path: &OsStr) -> Result<(File, u64), BlockError> {
    if !path.is_empty() {
        return Err(BlockError::InvalidPath(format!(
            "{}: a block volume has one entry, the empty path",
            shown(path)
        )));
    }
    Ok(image.open_read()?)
}

/// Opens the file a delta is computed from, with its stamp taken before
/// it is read (none for a device): a change while it is read changes the
/// stamp, and the digest then reads it again.
pub(crate) fn open_source(
    volume: &Volume,
    path: &OsStr,
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
pub(crate) struct Basis {
    parts: Vec<(File, u64)>,
    pos: u64,
    /// The old file's stamp, for a tree's file.
    stamp: Option<Stamp>,
}

impl Basis {
    pub(crate) fn open(volume: &Volume, path: &OsStr) -> Result<Self, BlockError> {
        match volume {
            Volume::Tree(tree) => Self::open_tree(tree, path),
            Volume::Image(image) => Self::open_image(image, path),
        }
    }

    pub(super) fn open_image(image: &Image, path: &OsStr) -> Result<Self, BlockError> {
        let (file, len) = open_image(image, path)?;
        // A device has none: its node does not change when it is written.
        let stamp = Stamp::of_file(&file);
        Ok(Self {
            stamp,
            ..Self::of([Some((file, len)), image.open_partial()?])
        })
    }

    pub(super) fn open_tree(tree: &Tree, path: &OsStr) -> Result<Self, BlockError> {
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
    pub(super) fn still(&self, kept: Option<BasisKept>) -> Option<BasisKept> {
        kept.filter(|kept| self.only_file().is_some_and(|(_, now)| now == kept.stamp))
    }

    /// The old file (of a tree, or an image file) and its stamp, when it
    /// is the whole basis (no partial content follows it).
    pub(super) fn only_file(&self) -> Option<(&File, Stamp)> {
        match (&self.parts[..], self.stamp) {
            ([(file, _)], Some(stamp)) => Some((file, stamp)),
            _ => None,
        }
    }

    pub(crate) fn len(&self) -> u64 {
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
