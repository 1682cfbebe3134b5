//! Which extended attributes a tree covers, and their digest.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use std::sync::atomic::Ordering;

use super::{Tree, checked};
use crate::volume::attributes::{self, Applied, Attributes, Namespaces};
use crate::volume::error::VolumeError;

impl Tree {
    /// Makes scans fingerprint each entry's extended attributes in
    /// `namespaces` (POSIX ACLs are `system`) and the digest cover them;
    /// none by default.
    pub fn include_attributes(&self, namespaces: Namespaces) {
        self.attributes.store(namespaces.bits(), Ordering::Relaxed);
    }

    /// The namespaces of extended attributes the tree covers.
    pub(crate) fn attributes(&self) -> Namespaces {
        Namespaces::from_bits(self.attributes.load(Ordering::Relaxed))
    }

    /// The digest of the covered extended attributes of the entry at
    /// `path`, as the tree digest takes them.
    pub(super) fn attributes_digest(&self, path: &OsStr) -> Result<[u8; 32], VolumeError> {
        let read = attributes::read(&self.dir, checked(path)?.as_bytes());
        let covered = read.map_err(VolumeError::io(path))?.only(self.attributes());
        Ok(attributes::digest(&covered))
    }
}

impl Tree {
    /// The covered extended attributes of the entry at `path`.
    pub fn read_attributes(&self, path: &OsStr) -> Result<Attributes, VolumeError> {
        let read = attributes::read(&self.dir, checked(path)?.as_bytes());
        Ok(read.map_err(VolumeError::io(path))?.only(self.attributes()))
    }

    /// Makes the covered extended attributes of the entry at `path`
    /// equal to `want` ([`attributes::apply`]); `trusted.*` only when
    /// `privileged`.
    pub fn apply_attributes(
        &self,
        path: &OsStr,
        want: &Attributes,
        privileged: bool,
    ) -> Result<Applied, VolumeError> {
        let path = checked(path)?;
        self.writable()?;
        let covered = self.attributes();
        attributes::apply(&self.dir, path.as_bytes(), want, covered, privileged)
            .map_err(VolumeError::io(path))
    }
}
