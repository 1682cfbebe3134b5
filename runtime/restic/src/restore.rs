//! Restoring a snapshot into a local directory.

use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use filetime::FileTime;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::{BlobType, Index};
use crate::repository::{Repository, parse_time};
use crate::tree::{Node, NodeType};

/// What a restore wrote.
#[derive(Debug, Default)]
pub struct RestoreSummary {
    /// Regular files written.
    pub files: u64,
    /// Directories made.
    pub dirs: u64,
    /// Symbolic links made.
    pub symlinks: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// Entries of kinds not restored yet (devices, FIFOs, sockets).
    pub skipped: u64,
}

impl<B: Backend> Repository<B> {
    /// Restores snapshot `id`'s root tree into `target` (made if missing):
    /// regular files, directories and symlinks, with their permission bits
    /// and times. Every blob's MAC and plaintext hash are checked. Holds a
    /// shared lock throughout.
    pub fn restore(&self, id: &Id, target: &Path) -> Result<RestoreSummary> {
        let _lock = self.lock(false)?;
        let snapshot = self.load_snapshot(id)?;
        let index = self.load_index()?;
        fs::create_dir_all(target).map_err(Error::io("create", target))?;
        let mut summary = RestoreSummary::default();
        self.restore_tree(&index, &snapshot.tree, target, &mut summary)?;
        Ok(summary)
    }

    fn restore_tree(
        &self,
        index: &Index,
        tree: &Id,
        dir: &Path,
        summary: &mut RestoreSummary,
    ) -> Result<()> {
        for node in self.load_tree(index, tree)?.nodes {
            let name = node.name.as_bytes();
            if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
                return Err(Error::format(
                    format!("tree {tree}"),
                    format!("unsafe entry name {:?}", node.name),
                ));
            }
            let path = dir.join(&node.name);
            match node.kind {
                NodeType::Dir => {
                    let subtree = node.subtree.ok_or_else(|| {
                        Error::format(
                            format!("tree {tree}"),
                            format!("directory {:?} has no subtree", node.name),
                        )
                    })?;
                    match fs::create_dir(&path) {
                        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                            return Err(Error::io("create", &path)(e));
                        }
                        _ => {}
                    }
                    self.restore_tree(index, &subtree, &path, summary)?;
                    set_metadata(&path, &node)?;
                    summary.dirs += 1;
                }
                NodeType::File => {
                    let mut file = fs::File::create(&path).map_err(Error::io("create", &path))?;
                    let mut written = 0u64;
                    for blob in node.content.iter().flatten() {
                        let data = self.load_blob(index, BlobType::Data, blob)?;
                        file.write_all(&data).map_err(Error::io("write", &path))?;
                        written += data.len() as u64;
                    }
                    if written != node.size {
                        return Err(Error::format(
                            format!("tree {tree}"),
                            format!(
                                "{:?} has {written} bytes of content, its size is {}",
                                node.name, node.size
                            ),
                        ));
                    }
                    drop(file);
                    set_metadata(&path, &node)?;
                    summary.files += 1;
                    summary.bytes += written;
                }
                NodeType::Symlink => {
                    if path.symlink_metadata().is_ok() {
                        fs::remove_file(&path).map_err(Error::io("replace", &path))?;
                    }
                    std::os::unix::fs::symlink(node.link_target(), &path)
                        .map_err(Error::io("symlink", &path))?;
                    let (atime, mtime) = (file_time(&node.atime), file_time(&node.mtime));
                    if let (Some(a), Some(m)) = (atime, mtime) {
                        filetime::set_symlink_file_times(&path, a, m)
                            .map_err(Error::io("set times of", &path))?;
                    }
                    summary.symlinks += 1;
                }
                _ => {
                    tracing::warn!(path = %path.display(), kind = ?node.kind, "not restored: unsupported kind");
                    summary.skipped += 1;
                }
            }
        }
        Ok(())
    }
}

/// Sets permission bits, then times (last, since the others change them).
fn set_metadata(path: &Path, node: &Node) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(node.unix_mode()))
        .map_err(Error::io("chmod", path))?;
    if let Some(mtime) = file_time(&node.mtime) {
        let atime = file_time(&node.atime).unwrap_or(mtime);
        filetime::set_file_times(path, atime, mtime).map_err(Error::io("set times of", path))?;
    }
    Ok(())
}

fn file_time(rfc3339: &str) -> Option<FileTime> {
    let t = parse_time(rfc3339)?;
    Some(FileTime::from_unix_time(
        t.timestamp(),
        t.timestamp_subsec_nanos(),
    ))
}
