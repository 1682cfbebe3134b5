//! Where repository files live: the [`Backend`] trait and a local directory.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The kinds of repository files, each in its own place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileType {
    /// The one `config` file.
    Config,
    /// Key files (`keys/`).
    Key,
    /// Pack files (`data/`).
    Data,
    /// Index files (`index/`).
    Index,
    /// Snapshot files (`snapshots/`).
    Snapshot,
    /// Lock files (`locks/`).
    Lock,
}

impl FileType {
    /// The directory holding this kind of file (restic's default layout).
    pub fn dir(self) -> &'static str {
        match self {
            FileType::Config => "",
            FileType::Key => "keys",
            FileType::Data => "data",
            FileType::Index => "index",
            FileType::Snapshot => "snapshots",
            FileType::Lock => "locks",
        }
    }
}

/// Stores named, immutable repository files. Names are storage IDs in hex;
/// the config file's name is ignored.
pub trait Backend: Send + Sync {
    /// Reads a whole file.
    fn get(&self, kind: FileType, name: &str) -> Result<Vec<u8>>;
    /// Reads `len` bytes at `offset`; fails if the file is shorter.
    fn get_range(&self, kind: FileType, name: &str, offset: u64, len: u64) -> Result<Vec<u8>>;
    /// The size of a file.
    fn size(&self, kind: FileType, name: &str) -> Result<u64>;
    /// Writes a file from a stream, atomically: readers see all or nothing.
    fn put(&self, kind: FileType, name: &str, data: &mut dyn Read) -> Result<()>;
    /// The names of the files of a kind.
    fn list(&self, kind: FileType) -> Result<Vec<String>>;
    /// Removes a file.
    fn delete(&self, kind: FileType, name: &str) -> Result<()>;
    /// Prepares an empty repository's structure; fails if `config` exists.
    fn create(&self) -> Result<()>;
}

/// A boxed backend is a backend, so that [`crate::open_backend`]'s result
/// opens a [`crate::Repository`].
impl<B: Backend + ?Sized> Backend for Box<B> {
    fn get(&self, kind: FileType, name: &str) -> Result<Vec<u8>> {
        (**self).get(kind, name)
    }
    fn get_range(&self, kind: FileType, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        (**self).get_range(kind, name, offset, len)
    }
    fn size(&self, kind: FileType, name: &str) -> Result<u64> {
        (**self).size(kind, name)
    }
    fn put(&self, kind: FileType, name: &str, data: &mut dyn Read) -> Result<()> {
        (**self).put(kind, name, data)
    }
    fn list(&self, kind: FileType) -> Result<Vec<String>> {
        (**self).list(kind)
    }
    fn delete(&self, kind: FileType, name: &str) -> Result<()> {
        (**self).delete(kind, name)
    }
    fn create(&self) -> Result<()> {
        (**self).create()
    }
}

/// A repository in a local directory, laid out as `restic init` makes it.
pub struct LocalBackend {
    root: PathBuf,
}

impl LocalBackend {
    /// The repository at `root`.
    pub fn new(root: impl Into<PathBuf>) -> LocalBackend {
        LocalBackend { root: root.into() }
    }

    fn path(&self, kind: FileType, name: &str) -> PathBuf {
        match kind {
            FileType::Config => self.root.join("config"),
            // Packs are spread over 256 directories by their first byte.
            FileType::Data => self
                .root
                .join("data")
                .join(name.get(..2).unwrap_or(name))
                .join(name),
            _ => self.root.join(kind.dir()).join(name),
        }
    }
}

fn truncated(path: &Path, needed: u64, available: u64) -> Error {
    Error::Truncated {
        file: path.display().to_string(),
        what: "range",
        needed,
        available,
    }
}

impl Backend for LocalBackend {
    fn get(&self, kind: FileType, name: &str) -> Result<Vec<u8>> {
        let path = self.path(kind, name);
        fs::read(&path).map_err(Error::io("read", &path))
    }

    fn get_range(&self, kind: FileType, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let path = self.path(kind, name);
        let mut file = fs::File::open(&path).map_err(Error::io("open", &path))?;
        let size = file.metadata().map_err(Error::io("stat", &path))?.len();
        if offset.saturating_add(len) > size {
            return Err(truncated(&path, offset.saturating_add(len), size));
        }
        file.seek(SeekFrom::Start(offset))
            .map_err(Error::io("seek", &path))?;
        let mut buf = vec![0; len as usize];
        file.read_exact(&mut buf)
            .map_err(Error::io("read", &path))?;
        Ok(buf)
    }

    fn size(&self, kind: FileType, name: &str) -> Result<u64> {
        let path = self.path(kind, name);
        Ok(fs::metadata(&path).map_err(Error::io("stat", &path))?.len())
    }

    fn put(&self, kind: FileType, name: &str, data: &mut dyn Read) -> Result<()> {
        let path = self.path(kind, name);
        let dir = path.parent().expect("repository files have a parent");
        fs::create_dir_all(dir).map_err(Error::io("create", dir))?;
        let tmp_dir = self.root.join("tmp");
        fs::create_dir_all(&tmp_dir).map_err(Error::io("create", &tmp_dir))?;
        let mut tmp = tempfile::NamedTempFile::new_in(&tmp_dir)
            .map_err(Error::io("create a file in", &tmp_dir))?;
        io::copy(data, &mut tmp).map_err(Error::io("write", tmp.path()))?;
        tmp.as_file()
            .sync_all()
            .map_err(Error::io("sync", tmp.path()))?;
        // restic makes repository files read-only; so do we.
        let mut perms = tmp
            .as_file()
            .metadata()
            .map_err(Error::io("stat", tmp.path()))?
            .permissions();
        perms.set_readonly(true);
        tmp.as_file()
            .set_permissions(perms)
            .map_err(Error::io("chmod", tmp.path()))?;
        tmp.persist(&path)
            .map_err(|e| Error::io("rename into", &path)(e.error))?;
        Ok(())
    }

    fn list(&self, kind: FileType) -> Result<Vec<String>> {
        fn names(dir: &Path) -> Result<Vec<String>> {
            match fs::read_dir(dir) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
                Err(e) => Err(Error::io("list", dir)(e)),
                Ok(entries) => entries
                    .map(|e| {
                        Ok(e.map_err(Error::io("list", dir))?
                            .file_name()
                            .to_string_lossy()
                            .into_owned())
                    })
                    .collect(),
            }
        }
        let dir = self.root.join(kind.dir());
        match kind {
            FileType::Config => Ok(if dir.join("config").exists() {
                vec!["config".into()]
            } else {
                vec![]
            }),
            FileType::Data => {
                let mut all = Vec::new();
                for sub in names(&dir)? {
                    all.extend(names(&dir.join(sub))?);
                }
                Ok(all)
            }
            _ => names(&dir),
        }
    }

    fn delete(&self, kind: FileType, name: &str) -> Result<()> {
        let path = self.path(kind, name);
        fs::remove_file(&path).map_err(Error::io("remove", &path))
    }

    fn create(&self) -> Result<()> {
        let config = self.path(FileType::Config, "");
        if config.exists() {
            return Err(Error::format(
                config.display().to_string(),
                "a repository exists here already",
            ));
        }
        for kind in [
            FileType::Key,
            FileType::Index,
            FileType::Snapshot,
            FileType::Lock,
        ] {
            let dir = self.root.join(kind.dir());
            fs::create_dir_all(&dir).map_err(Error::io("create", &dir))?;
        }
        for byte in 0..=255u8 {
            let dir = self.root.join("data").join(hex::encode([byte]));
            fs::create_dir_all(&dir).map_err(Error::io("create", &dir))?;
        }
        let tmp = self.root.join("tmp");
        fs::create_dir_all(&tmp).map_err(Error::io("create", &tmp))
    }
}
