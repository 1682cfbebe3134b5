//! Opening and creating a repository; reading and writing its encrypted
//! JSON files and blobs.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backend::{Backend, FileType, LocalBackend};
use crate::config::Config;
use crate::crypto::Key;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::{BlobLocation, BlobType, Index, IndexFile};
use crate::key::KeyFile;
use crate::snapshot::{self, Snapshot};
use crate::tree::Tree;

/// An open repository: its backend, master key and config.
pub struct Repository<B = LocalBackend> {
    backend: B,
    key: Key,
    config: Config,
}

// NB: by hand, so that the master key is never printed.
impl<B> std::fmt::Debug for Repository<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A repository file's name in errors: `snapshots/1a2b…`.
pub(crate) fn file_name(kind: FileType, name: &str) -> String {
    match kind {
        FileType::Config => "config".into(),
        _ => format!("{}/{name}", kind.dir()),
    }
}

impl<B: Backend> Repository<B> {
    /// Creates a repository (format version 2) with one key for `password`.
    pub fn create(backend: B, password: &str) -> Result<Repository<B>> {
        backend.create()?;
        let repo = Repository {
            backend,
            key: Key::random(),
            config: Config::new(),
        };
        let key_file = KeyFile::new(
            &repo.key,
            password,
            snapshot::hostname(),
            snapshot::username(),
        )?;
        let bytes = serde_json::to_vec(&key_file).expect("key files serialize");
        repo.backend.put(
            FileType::Key,
            &Id::hash(&bytes).to_hex(),
            &mut bytes.as_slice(),
        )?;
        // The config is plain JSON, never compressed: its version says whether anything else may be.
        let config = repo
            .key
            .seal(&serde_json::to_vec(&repo.config).expect("the config serializes"));
        repo.backend
            .put(FileType::Config, "config", &mut config.as_slice())?;
        Ok(repo)
    }

    /// Opens a repository: finds the key file `password` opens and checks the config.
    pub fn open(backend: B, password: &str) -> Result<Repository<B>> {
        let names = backend.list(FileType::Key)?;
        if names.is_empty() {
            return Err(Error::NoKeys);
        }
        let mut key = None;
        for name in &names {
            let file = file_name(FileType::Key, name);
            if let Some(k) =
                KeyFile::parse(&backend.get(FileType::Key, name)?, &file)?.open(password, &file)?
            {
                key = Some(k);
                break;
            }
        }
        let key = key.ok_or(Error::WrongPassword { keys: names.len() })?;
        let sealed = backend.get(FileType::Config, "config")?;
        let config: Config = decode_json(&key.open(&sealed, "config")?, "config")?;
        if !Config::SUPPORTED.contains(&config.version) {
            return Err(Error::format(
                "config",
                format!(
                    "repository format version {} is not supported",
                    config.version
                ),
            ));
        }
        Ok(Repository {
            backend,
            key,
            config,
        })
    }

    /// The repository's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    pub(crate) fn key(&self) -> &Key {
        &self.key
    }

    /// Reads, verifies (storage ID, MAC) and decodes an encrypted JSON file.
    pub(crate) fn load_json<T: DeserializeOwned>(&self, kind: FileType, id: &Id) -> Result<T> {
        let name = id.to_hex();
        let file = file_name(kind, &name);
        let sealed = self.backend.get(kind, &name)?;
        let actual = Id::hash(&sealed);
        if actual != *id {
            return Err(Error::StorageId { file, actual });
        }
        decode_json(&self.key.open(&sealed, &file)?, &file)
    }

    /// Encodes (compressed in format version 2), encrypts and stores a JSON file.
    pub(crate) fn save_json<T: Serialize>(&self, kind: FileType, value: &T) -> Result<Id> {
        let json = serde_json::to_vec(value).expect("repository documents serialize");
        let plain = if self.config.version >= 2 {
            let mut v = vec![2];
            v.extend(
                zstd::bulk::compress(&json, 3)
                    .map_err(Error::io("compress", file_name(kind, "…")))?,
            );
            v
        } else {
            json
        };
        let sealed = self.key.seal(&plain);
        let id = Id::hash(&sealed);
        self.backend
            .put(kind, &id.to_hex(), &mut sealed.as_slice())?;
        Ok(id)
    }

    /// Every snapshot, oldest first.
    pub fn snapshots(&self) -> Result<Vec<(Id, Snapshot)>> {
        let mut all = Vec::new();
        for name in self.backend.list(FileType::Snapshot)? {
            let id = parse_name(FileType::Snapshot, &name)?;
            all.push((id, self.load_json::<Snapshot>(FileType::Snapshot, &id)?));
        }
        all.sort_by_key(|s| parse_time(&s.1.time));
        Ok(all)
    }

    /// The snapshot named by `latest`, a full ID or a unique ID prefix.
    pub fn find_snapshot(&self, name: &str) -> Result<Id> {
        if name == "latest" {
            let all = self.snapshots()?;
            return all.last().map(|s| s.0).ok_or(Error::NotFound {
                what: name.into(),
                reason: "there are no snapshots",
            });
        }
        let mut found = self
            .backend
            .list(FileType::Snapshot)?
            .into_iter()
            .filter(|n| n.starts_with(name));
        match (found.next(), found.next()) {
            (Some(n), None) => parse_name(FileType::Snapshot, &n),
            (None, _) => Err(Error::NotFound {
                what: name.into(),
                reason: "no snapshot has this ID",
            }),
            (Some(_), Some(_)) => Err(Error::NotFound {
                what: name.into(),
                reason: "more than one snapshot starts so",
            }),
        }
    }

    /// Loads a snapshot.
    pub fn load_snapshot(&self, id: &Id) -> Result<Snapshot> {
        self.load_json(FileType::Snapshot, id)
    }

    /// Loads every index file.
    pub fn load_index(&self) -> Result<Index> {
        let mut index = Index::default();
        for (_, file) in self.load_index_files()? {
            index.add(file);
        }
        Ok(index)
    }

    /// Loads every index file, each with its storage ID.
    pub(crate) fn load_index_files(&self) -> Result<Vec<(Id, IndexFile)>> {
        self.backend
            .list(FileType::Index)?
            .iter()
            .map(|name| {
                let id = parse_name(FileType::Index, name)?;
                Ok((id, self.load_json(FileType::Index, &id)?))
            })
            .collect()
    }

    /// Loads a tree blob.
    pub fn load_tree(&self, index: &Index, id: &Id) -> Result<Tree> {
        let blob = self.load_blob(index, BlobType::Tree, id)?;
        serde_json::from_slice(&blob).map_err(|source| Error::Json {
            file: format!("tree {id}"),
            source,
        })
    }

    /// Loads a blob: reads it from its pack, checks its MAC, decompresses
    /// it and checks that the plaintext hashes to `id`.
    pub fn load_blob(&self, index: &Index, kind: BlobType, id: &Id) -> Result<Vec<u8>> {
        let at = index.get(kind, id).ok_or(Error::BlobMissing {
            kind: kind.name(),
            id: *id,
        })?;
        let pack = at.pack.to_hex();
        let file = format!(
            "{} ({} blob {id} at offset {})",
            file_name(FileType::Data, &pack),
            kind.name(),
            at.offset
        );
        let sealed = self
            .backend
            .get_range(FileType::Data, &pack, at.offset, at.length.into())?;
        Ok(self.open_blob(&sealed, at, id, &file)?.0)
    }

    /// Opens a sealed blob read from its pack: checks its MAC, decompresses
    /// it and checks that the plaintext hashes to `id`. Returns the
    /// plaintext and, for a compressed blob, the stored zstd form.
    pub(crate) fn open_blob(
        &self,
        sealed: &[u8],
        at: &BlobLocation,
        id: &Id,
        file: &str,
    ) -> Result<(Vec<u8>, Option<Vec<u8>>)> {
        let stored = self.key.open(sealed, file)?;
        let (plain, compressed) = match at.uncompressed_length {
            None => (stored, None),
            Some(n) => {
                let plain = zstd::bulk::decompress(&stored, n as usize)
                    .map_err(|e| Error::format(file, format!("zstd: {e}")))?;
                if plain.len() != n as usize {
                    return Err(Error::format(
                        file,
                        format!("decompressed to {} bytes, the index says {n}", plain.len()),
                    ));
                }
                (plain, Some(stored))
            }
        };
        let actual = Id::hash(&plain);
        if actual != *id {
            return Err(Error::BlobId {
                id: *id,
                file: file.to_owned(),
                actual,
            });
        }
        Ok((plain, compressed))
    }
}

/// Decodes an unpacked file's plaintext: JSON (format 1, or a leading `{`
/// or `[`), or version byte 2 and zstd-compressed JSON.
fn decode_json<T: DeserializeOwned>(plain: &[u8], file: &str) -> Result<T> {
    let json = match plain.first() {
        Some(b'{' | b'[') => std::borrow::Cow::Borrowed(plain),
        Some(2) => std::borrow::Cow::Owned(
            zstd::stream::decode_all(&plain[1..])
                .map_err(|e| Error::format(file, format!("zstd: {e}")))?,
        ),
        Some(v) => return Err(Error::format(file, format!("unknown encoding version {v}"))),
        None => return Err(Error::format(file, "empty")),
    };
    serde_json::from_slice(&json).map_err(|source| Error::Json {
        file: file.to_owned(),
        source,
    })
}

fn parse_name(kind: FileType, name: &str) -> Result<Id> {
    name.parse()
        .map_err(|_| Error::format(file_name(kind, name), "the name is not a storage ID"))
}

/// Parses an RFC 3339 time as restic writes them.
pub(crate) fn parse_time(time: &str) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    chrono::DateTime::parse_from_rfc3339(time).ok()
}
