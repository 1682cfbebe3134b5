//! The content-addressed store of pulled manifests and modules: each blob
//! is a file named by its digest, verified against it on every read.

use std::io;
use std::path::{Path, PathBuf};

use crate::digest::Digest;

/// Default bound on one module's size: larger modules are refused before
/// they are downloaded, and never read into memory from the store.
pub const DEFAULT_MAX_MODULE_BYTES: u64 = 64 << 20;

/// Why the store could not read or keep a blob.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file's content no longer has its digest (disk corruption or
    /// tampering). The file has been removed.
    #[error("cached blob {digest} is corrupt (its content hashes to {actual}); removed it")]
    Corrupt {
        /// The digest the file is named by.
        digest: Digest,
        /// What its content hashes to.
        actual: Digest,
    },
    /// Bytes offered for `digest` have another digest.
    #[error("refusing to cache content as {expected}: it hashes to {actual}")]
    Mismatch {
        /// The digest claimed.
        expected: Digest,
        /// The content's digest.
        actual: Digest,
    },
    /// The blob exceeds the size limit.
    #[error("blob {digest} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// The blob.
        digest: Digest,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// Reading or writing the store failed.
    #[error("module store {path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The failure.
        #[source]
        source: io::Error,
    },
}

/// A directory of blobs named `sha256/<hex>`, written atomically (staged,
/// then renamed) and private to this user.
#[derive(Clone, Debug)]
pub struct ModuleStore {
    dir: PathBuf,
    max_bytes: u64,
}

impl ModuleStore {
    /// A store in `dir` (created on the first write), with the default size
    /// limit.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            max_bytes: DEFAULT_MAX_MODULE_BYTES,
        }
    }

    /// The same store with another size limit per blob.
    pub fn with_max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// The size limit per blob.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the blob `digest` is kept.
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join("sha256").join(digest.hex())
    }

    /// The blob `digest`, verified, or `None` if the store does not have it.
    /// A blob whose content does not match its digest is removed and
    /// reported as [`StoreError::Corrupt`].
    pub fn get(&self, digest: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.path(digest);
        let io_error = |source| StoreError::Io {
            path: path.display().to_string(),
            source,
        };
        let size = match std::fs::metadata(&path) {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(e)),
        };
        if size > self.max_bytes {
            return Err(StoreError::TooLarge {
                digest: digest.clone(),
                size,
                limit: self.max_bytes,
            });
        }
        let bytes = std::fs::read(&path).map_err(io_error)?;
        let actual = Digest::of(&bytes);
        if actual != *digest {
            std::fs::remove_file(&path).map_err(io_error)?;
            return Err(StoreError::Corrupt {
                digest: digest.clone(),
                actual,
            });
        }
        Ok(Some(bytes))
    }

    /// Keeps `bytes` as the blob `digest`, after checking that they have it.
    pub fn put(&self, digest: &Digest, bytes: &[u8]) -> Result<(), StoreError> {
        let actual = Digest::of(bytes);
        if actual != *digest {
            return Err(StoreError::Mismatch {
                expected: digest.clone(),
                actual,
            });
        }
        if bytes.len() as u64 > self.max_bytes {
            return Err(StoreError::TooLarge {
                digest: digest.clone(),
                size: bytes.len() as u64,
                limit: self.max_bytes,
            });
        }
        let path = self.path(digest);
        let dir = path.parent().expect("blob paths have a parent");
        let io_error = |p: &Path| {
            let p = p.display().to_string();
            move |source| StoreError::Io { path: p, source }
        };
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_error(dir))?;
        // Unique per writer: two threads storing the same blob must not write
        // into one staging file (the rename could publish a torn file).
        static STAGED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = STAGED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let staged = path.with_extension(format!("tmp{}-{n}", std::process::id()));
        std::fs::write(&staged, bytes).map_err(io_error(&staged))?;
        std::fs::rename(&staged, &path).map_err(io_error(&path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_then_get_verifies_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let store = ModuleStore::new(dir.path());
        let bytes = b"\0asm module bytes".to_vec();
        let digest = Digest::of(&bytes);
        assert!(store.get(&digest).unwrap().is_none());
        store.put(&digest, &bytes).unwrap();
        assert_eq!(store.get(&digest).unwrap(), Some(bytes));
        assert!(
            store
                .path(&digest)
                .ends_with(format!("sha256/{}", digest.hex()))
        );
    }

    #[test]
    fn refuses_to_keep_content_under_another_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = ModuleStore::new(dir.path());
        let claimed = Digest::of(b"what was promised");
        let e = store.put(&claimed, b"what arrived").unwrap_err();
        assert!(matches!(e, StoreError::Mismatch { .. }), "{e}");
        assert!(store.get(&claimed).unwrap().is_none());
    }

    #[test]
    fn a_corrupt_blob_is_removed_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store = ModuleStore::new(dir.path());
        let digest = Digest::of(b"original");
        store.put(&digest, b"original").unwrap();
        std::fs::write(store.path(&digest), b"tampered").unwrap();
        let e = store.get(&digest).unwrap_err();
        assert!(
            matches!(&e, StoreError::Corrupt { actual, .. } if *actual == Digest::of(b"tampered")),
            "{e}"
        );
        assert!(!store.path(&digest).exists());
        assert!(store.get(&digest).unwrap().is_none());
    }

    #[test]
    fn concurrent_writers_of_one_blob_all_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let store = ModuleStore::new(dir.path());
        let bytes = vec![42u8; 1 << 20];
        let digest = Digest::of(&bytes);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| store.put(&digest, &bytes).unwrap());
            }
        });
        assert_eq!(store.get(&digest).unwrap(), Some(bytes));
        let files = std::fs::read_dir(dir.path().join("sha256"))
            .unwrap()
            .count();
        assert_eq!(files, 1, "no staging file is left behind");
    }

    #[test]
    fn the_size_limit_holds_on_write_and_read() {
        let dir = tempfile::tempdir().unwrap();
        let big = vec![7u8; 100];
        let digest = Digest::of(&big);
        let small = ModuleStore::new(dir.path()).with_max_bytes(99);
        assert!(matches!(
            small.put(&digest, &big),
            Err(StoreError::TooLarge { size: 100, .. })
        ));
        ModuleStore::new(dir.path()).put(&digest, &big).unwrap();
        assert!(matches!(
            small.get(&digest),
            Err(StoreError::TooLarge { limit: 99, .. })
        ));
    }
}
