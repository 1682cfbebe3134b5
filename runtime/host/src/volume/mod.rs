//! The volume a data-plane call runs on: a directory tree ([`Tree`]), or
//! a raw block device or image file rewritten in place under an undo
//! journal ([`Image`]).

mod access;
mod ahead;
pub mod attributes;
mod content;
pub(crate) mod entry;
mod error;
mod image;
mod kept_hashes;
pub(crate) mod known;
pub(crate) mod path;
mod tree;
mod watch;

use std::ffi::{OsStr, OsString};
use std::io;

use std::path::{Path, PathBuf};

pub use access::Access;
pub use cap_std::fs::Dir;
pub use error::VolumeError;
pub use image::Image;
pub(crate) use kept_hashes::KeptHashes;
pub(crate) use known::Stamp;
pub use known::{HashStore, unix_nanos};
pub use tree::{LEGACY_STATE_DIR, Node, STAGING_SUFFIX, Tree, open_state_dir};

use crate::volume::entry::{Entry, TreeDigest};

/// A volume granted to one run.
#[derive(Debug)]
pub enum Volume {
    /// A directory tree.
    Tree(Tree),
    /// A block device or image file.
    Image(Image),
}

impl Volume {
    /// Opens `root`: a directory as a [`Tree`]; a block device or a
    /// regular file as an [`Image`], with its undo journal beside it (a
    /// writable device must name one: [`Volume::open_with_journal`]).
    pub fn open(root: impl Into<PathBuf>, access: Access) -> io::Result<Self> {
        Self::open_with_journal(root, access, None)
    }

    /// Opens `root` as [`Volume::open`] does, a block volume with its undo
    /// journal at `journal` if given: a file on a filesystem that outlives
    /// the run, with room for the bytes one run overwrites.
    pub fn open_with_journal(
        root: impl Into<PathBuf>,
        access: Access,
        journal: Option<PathBuf>,
    ) -> io::Result<Self> {
        Self::open_with_state(root, access, journal, None)
    }

    /// Opens `root` as [`Volume::open_with_journal`] does, a tree keeping
    /// what one run leaves for the next in `state`, a directory outside
    /// it ([`Tree::open_with_state`]; see [`open_state_dir`]). A block
    /// volume keeps its own beside its journal, outside it too, and takes
    /// no state directory.
    pub fn open_with_state(
        root: impl Into<PathBuf>,
        access: Access,
        journal: Option<PathBuf>,
        state: Option<Dir>,
    ) -> io::Result<Self> {
        let root = root.into();
        if !std::fs::metadata(&root)?.is_dir() {
            return Image::open(root, access, journal).map(Volume::Image);
        }
        if journal.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is a directory: an undo journal is for block devices and image files",
                    root.display()
                ),
            ));
        }
        Tree::open_with_state(root, access, state).map(Volume::Tree)
    }

    /// Sets where a tree's digest keeps the hashes it saw for the next run
    /// (see [`HashStore`]); a block volume's digest reads it whole every
    /// time.
    pub fn set_hash_store(&mut self, store: HashStore) -> io::Result<()> {
        match self {
            Volume::Tree(tree) => tree.set_hash_store(store),
            Volume::Image(_) => Ok(()),
        }
    }

    /// Makes a tree's digest read every file, trusting no stored hash (see
    /// [`Tree::read_every_file`]); a block volume keeps no hashes between
    /// runs.
    pub fn read_every_file(&mut self) {
        if let Volume::Tree(tree) = self {
            tree.read_every_file();
        }
    }

    /// The directory, device or file behind the volume.
    pub fn root(&self) -> &Path {
        match self {
            Volume::Tree(tree) => tree.root(),
            Volume::Image(image) => image.path(),
        }
    }

    /// How the volume was opened.
    pub fn access(&self) -> Access {
        match self {
            Volume::Tree(tree) => tree.access(),
            Volume::Image(image) => image.access(),
        }
    }

    /// The directory tree, or [`VolumeError::NotATree`] naming `path`.
    pub fn tree(&self, path: &OsStr) -> Result<&Tree, VolumeError> {
        match self {
            Volume::Tree(tree) => Ok(tree),
            Volume::Image(_) => Err(VolumeError::NotATree(path::shown(path))),
        }
    }

    /// Every entry (see [`Tree::scan`]); a block volume lists only itself.
    pub fn scan(&self) -> Result<Vec<Entry>, VolumeError> {
        match self {
            Volume::Tree(tree) => tree.scan(),
            Volume::Image(image) => Ok(vec![image.entry()?]),
        }
    }

    /// The tree digest (see `tree-digest` in `wit/mover.wit`).
    pub fn digest(&self) -> Result<TreeDigest, VolumeError> {
        self.digest_leaving_out(&[])
    }

    /// The [`digest`](Self::digest) without the entries at `leave_out`
    /// and under them; a block volume has none to leave out.
    pub fn digest_leaving_out(&self, leave_out: &[OsString]) -> Result<TreeDigest, VolumeError> {
        match self {
            Volume::Tree(tree) => tree.digest_leaving_out(leave_out),
            Volume::Image(_) if !leave_out.is_empty() => Err(VolumeError::InvalidPath(
                "a block volume has no entries to leave out of its digest".into(),
            )),
            Volume::Image(image) => image.digest(),
        }
    }

    /// How long before a stamp a file must have changed for what was read
    /// after it to be trusted later by that stamp ([`Stamp::settled`]).
    pub(crate) fn settle_ns(&self) -> i64 {
        match self {
            Volume::Tree(tree) => tree.settle_ns(),
            Volume::Image(image) => image.settle_ns(),
        }
    }

    /// Records that the file at `path`, as `stamp` identifies it, hashes to
    /// `hash` (see [`KnownHashes`](known::KnownHashes)).
    pub(crate) fn remember_hash(&self, path: &OsStr, stamp: Stamp, hash: [u8; 32]) {
        match self {
            Volume::Tree(tree) => tree.known.remember(path, stamp, hash),
            Volume::Image(image) => image.remember_hash(stamp, hash),
        }
    }

    /// Removes what earlier runs left that a completed transfer no longer
    /// needs (see [`Tree::discard_leftovers`]); nothing on a block volume.
    pub fn discard_leftovers(&self) {
        if let Volume::Tree(tree) = self {
            tree.discard_leftovers();
        }
    }
}
