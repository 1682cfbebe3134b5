//! Backing up a local directory as a new snapshot.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use chrono::TimeZone;
use rayon::prelude::*;

use crate::backend::{Backend, FileType};
use crate::chunker::Chunker;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::{BlobType, Index, IndexFile};
use crate::lock::Lock;
use crate::pack::PackWriter;
use crate::repository::{Repository, parse_time};
use crate::snapshot::{self, Snapshot};
use crate::tree::{Node, NodeType, Tree};

/// A pack is stored once it holds this many bytes (restic's default size).
pub(crate) const PACK_SIZE: u64 = 16 * 1024 * 1024;
/// File content is hashed and compressed in parallel batches of this many
/// bytes (a few chunks), which bounds the memory a backup holds.
const BATCH_BYTES: usize = 32 * 1024 * 1024;
/// zstd's level, as restic's default ("auto") compression.
const ZSTD_LEVEL: i32 = 3;

/// What a backup read and added.
#[derive(Debug, Default)]
pub struct BackupSummary {
    /// Regular files read.
    pub files: u64,
    /// Regular files not read: unchanged since the parent snapshot.
    pub files_unchanged: u64,
    /// Directories read.
    pub dirs: u64,
    /// Bytes of file content read.
    pub bytes_read: u64,
    /// Blobs new to the repository.
    pub blobs_added: u64,
    /// Blobs the repository had already (deduplicated).
    pub blobs_deduplicated: u64,
    /// Bytes of pack files stored.
    pub bytes_added: u64,
    /// Pack files stored.
    pub packs: u64,
    /// Pack files an unfinished backup had stored (in no index), whose
    /// blobs this backup indexed and used instead of storing them again.
    pub packs_reused: u64,
}

/// The state of one backup: the index, the open packs, the new blobs.
struct Writer<'r, B: Backend> {
    repo: &'r Repository<B>,
    /// A shared lock, so that no prune removes packs this backup relies on.
    lock: Lock<'r, B>,
    index: Index,
    /// Blobs in packs not yet stored, so that they deduplicate too.
    pending: HashSet<(BlobType, Id)>,
    data: Option<PackWriter>,
    tree: Option<PackWriter>,
    stored: IndexFile,
    summary: BackupSummary,
}

impl<B: Backend> Repository<B> {
    /// Backs up the directory `source` as a new snapshot whose root tree
    /// is the directory's content, writing only blobs the repository lacks.
    /// The latest snapshot of the same path from this host is the parent:
    /// a file whose size, mtime, ctime and inode match its entry there is
    /// not read again.
    /// Packs are stored first, then the index, then the snapshot, so a
    /// failed backup leaves no snapshot. Holds a shared lock throughout.
    pub fn backup(&self, source: &Path) -> Result<(Id, BackupSummary)> {
        let time = snapshot::now();
        let source = fs::canonicalize(source).map_err(Error::io("resolve", source))?;
        let lock = self.lock(false)?;
        let paths = vec![source.to_string_lossy().into_owned()];
        let hostname = snapshot::hostname();
        // Snapshots before the index (restic's read order): a snapshot
        // written meanwhile then has its trees in the index read next.
        let parent = self
            .snapshots()?
            .into_iter()
            .rev()
            .find(|(_, s)| s.paths == paths && s.hostname == hostname);
        let mut w = Writer {
            repo: self,
            lock,
            index: self.load_index()?,
            pending: HashSet::new(),
            data: None,
            tree: None,
            stored: IndexFile::default(),
            summary: BackupSummary::default(),
        };
        w.adopt_unindexed_packs()?;
        let tree = w.save_dir(&source, parent.as_ref().map(|p| p.1.tree))?;
        for kind in [BlobType::Data, BlobType::Tree] {
            w.store_pack(kind)?;
        }
        if !w.stored.packs.is_empty() {
            self.save_json(FileType::Index, &w.stored)?;
        }
        let snapshot = Snapshot {
            time,
            parent: parent.map(|p| p.0),
            tree,
            paths,
            hostname,
            username: snapshot::username(),
            uid: rustix::process::getuid().as_raw(),
            gid: rustix::process::getgid().as_raw(),
            excludes: Vec::new(),
            tags: Vec::new(),
            original: None,
            program_version: Some(concat!("wasmover-restic ", env!("CARGO_PKG_VERSION")).into()),
            extra: Default::default(),
        };
        let id = self.save_json(FileType::Snapshot, &snapshot)?;
        Ok((id, w.summary))
    }
}

impl<B: Backend> Writer<'_, B> {
    /// Indexes the packs in `data/` that no index lists: those a backup
    /// stored before it failed (a server gone, a killed process), or one
    /// still running stores. Their blobs are then known, so that a rerun
    /// does not upload them again, and this backup's index file lists them.
    /// A pack whose header cannot be read is left alone (a prune removes it).
    fn adopt_unindexed_packs(&mut self) -> Result<()> {
        let indexed = self.index.packs();
        for name in self.repo.backend().list(FileType::Data)? {
            let Ok(id) = name.parse::<Id>() else { continue };
            if indexed.contains(&id) {
                continue;
            }
            match crate::pack::read_header(self.repo.backend(), self.repo.key(), &id) {
                Ok(pack) => {
                    self.index.add_pack(&pack);
                    self.stored.packs.push(pack);
                    self.summary.packs_reused += 1;
                }
                Err(e) => tracing::warn!(pack = %id, error = %e, "an unindexed pack is not reused"),
            }
        }
        Ok(())
    }

    /// Saves a directory's tree (and everything below it); returns its ID.
    /// `parent` is the same directory's tree in the parent snapshot.
    fn save_dir(&mut self, dir: &Path, parent: Option<Id>) -> Result<Id> {
        let parent: HashMap<OsString, Node> = match parent {
            Some(id) => self
                .repo
                .load_tree(&self.index, &id)?
                .nodes
                .into_iter()
                .map(|n| (n.name.clone(), n))
                .collect(),
            None => HashMap::new(),
        };
        let mut entries = fs::read_dir(dir)
            .map_err(Error::io("list", dir))?
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(Error::io("list", dir))?;
        entries.sort_by_key(|e| e.file_name());
        let mut nodes = Vec::with_capacity(entries.len());
        for entry in entries {
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).map_err(Error::io("stat", &path))?;
            let ft = meta.file_type();
            let kind = match () {
                _ if ft.is_dir() => NodeType::Dir,
                _ if ft.is_file() => NodeType::File,
                _ if ft.is_symlink() => NodeType::Symlink,
                _ if ft.is_block_device() => NodeType::Dev,
                _ if ft.is_char_device() => NodeType::Chardev,
                _ if ft.is_fifo() => NodeType::Fifo,
                _ if ft.is_socket() => NodeType::Socket,
                _ => NodeType::Other,
            };
            let mut node = Node {
                name: entry.file_name(),
                kind,
                mode: Node::go_mode(kind, meta.mode()),
                mtime: format_time(meta.mtime(), meta.mtime_nsec()),
                atime: format_time(meta.atime(), meta.atime_nsec()),
                ctime: format_time(meta.ctime(), meta.ctime_nsec()),
                uid: meta.uid(),
                gid: meta.gid(),
                user: String::new(),
                group: String::new(),
                inode: meta.ino(),
                device_id: 0,
                size: 0,
                links: meta.nlink(),
                linktarget: String::new(),
                linktarget_raw: None,
                content: None,
                subtree: None,
                extra: Default::default(),
            };
            match kind {
                NodeType::Dir => {
                    let before = parent
                        .get(&node.name)
                        .filter(|p| p.kind == NodeType::Dir)
                        .and_then(|p| p.subtree);
                    node.subtree = Some(self.save_dir(&path, before)?);
                }
                NodeType::File => match parent
                    .get(&node.name)
                    .filter(|p| self.unchanged(p, &node, meta.len()))
                {
                    Some(before) => {
                        (node.content, node.size) = (before.content.clone(), before.size);
                        self.summary.files_unchanged += 1;
                    }
                    None => {
                        let (content, size) = self.save_file(&path)?;
                        (node.content, node.size) = (Some(content), size);
                    }
                },
                NodeType::Symlink => {
                    let target = fs::read_link(&path).map_err(Error::io("read link", &path))?;
                    node.set_link_target(target.as_os_str());
                }
                _ => {}
            }
            nodes.push(node);
        }
        self.summary.dirs += 1;
        let blob = Tree { nodes }.to_blob();
        let id = Id::hash(&blob);
        let compressed = compress(&blob, BlobType::Tree, self.repo.config().version, &id)?;
        self.add_blob(BlobType::Tree, id, &blob, compressed.as_deref())?;
        Ok(id)
    }

    /// Whether a file's entry in the parent snapshot still describes it
    /// (restic's rule: same size, mtime, ctime and inode) and all its
    /// blobs are indexed.
    fn unchanged(&self, before: &Node, now: &Node, size: u64) -> bool {
        let same_time = |a: &str, b: &str| match (parse_time(a), parse_time(b)) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        };
        before.kind == NodeType::File
            && before.size == size
            && before.inode == now.inode
            && same_time(&before.mtime, &now.mtime)
            && same_time(&before.ctime, &now.ctime)
            && before.content.as_ref().is_some_and(|c| {
                c.iter()
                    .all(|id| self.index.get(BlobType::Data, id).is_some())
            })
    }

    /// Saves a file's content, streamed in chunks; returns its blob IDs and size.
    fn save_file(&mut self, path: &Path) -> Result<(Vec<Id>, u64)> {
        let file = fs::File::open(path).map_err(Error::io("open", path))?;
        let mut chunker = Chunker::new(file);
        let (mut ids, mut size) = (Vec::new(), 0);
        let (mut batch, mut batch_bytes) = (Vec::new(), 0);
        loop {
            let chunk = chunker.next_chunk().map_err(Error::io("read", path))?;
            let end = chunk.is_none();
            if let Some(chunk) = chunk {
                size += chunk.len() as u64;
                batch_bytes += chunk.len();
                batch.push(chunk.to_vec());
            }
            if end || batch_bytes >= BATCH_BYTES {
                ids.extend(self.add_data_blobs(std::mem::take(&mut batch))?);
                batch_bytes = 0;
            }
            if end {
                break;
            }
        }
        self.summary.files += 1;
        self.summary.bytes_read += size;
        Ok((ids, size))
    }

    fn is_known(&self, kind: BlobType, id: &Id) -> bool {
        self.index.get(kind, id).is_some() || self.pending.contains(&(kind, *id))
    }

    /// Hashes and compresses chunks of file content on all cores, then
    /// adds them in order; returns their IDs.
    fn add_data_blobs(&mut self, chunks: Vec<Vec<u8>>) -> Result<Vec<Id>> {
        let version = self.repo.config().version;
        let this = &*self;
        let prepared = chunks
            .into_par_iter()
            .map(|chunk| {
                let id = Id::hash(&chunk);
                // Known blobs are not compressed for nothing.
                let compressed = if this.is_known(BlobType::Data, &id) {
                    None
                } else {
                    compress(&chunk, BlobType::Data, version, &id)?
                };
                Ok((id, chunk, compressed))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut ids = Vec::with_capacity(prepared.len());
        for (id, chunk, compressed) in prepared {
            self.add_blob(BlobType::Data, id, &chunk, compressed.as_deref())?;
            ids.push(id);
        }
        Ok(ids)
    }

    /// Adds a blob, with its zstd form if smaller, unless the repository
    /// or this backup has it already.
    fn add_blob(
        &mut self,
        kind: BlobType,
        id: Id,
        plaintext: &[u8],
        compressed: Option<&[u8]>,
    ) -> Result<()> {
        self.lock.refresh()?;
        if self.is_known(kind, &id) {
            self.summary.blobs_deduplicated += 1;
            return Ok(());
        }
        let slot = match kind {
            BlobType::Data => &mut self.data,
            BlobType::Tree => &mut self.tree,
        };
        let pack = match slot {
            Some(p) => p,
            None => slot.insert(PackWriter::new()?),
        };
        pack.add(self.repo.key(), kind, id, plaintext, compressed)?;
        let full = pack.size() >= PACK_SIZE;
        self.pending.insert((kind, id));
        self.summary.blobs_added += 1;
        if full {
            self.store_pack(kind)?;
        }
        Ok(())
    }

    /// Stores the open pack of `kind`, if any, and indexes its blobs.
    fn store_pack(&mut self, kind: BlobType) -> Result<()> {
        let slot = match kind {
            BlobType::Data => &mut self.data,
            BlobType::Tree => &mut self.tree,
        };
        let Some(pack) = slot.take() else {
            return Ok(());
        };
        let size = pack.size();
        let indexed = pack.finish(self.repo.key(), self.repo.backend())?;
        for b in &indexed.blobs {
            self.pending.remove(&(b.kind, b.id));
        }
        self.index.add_pack(&indexed);
        self.stored.packs.push(indexed);
        self.summary.packs += 1;
        self.summary.bytes_added += size;
        Ok(())
    }
}

/// The zstd form of a blob if the format allows it (version 2): always
/// for a tree, as restic stores them (its prune repacks uncompressed
/// trees), for data only if smaller.
pub(crate) fn compress(
    plaintext: &[u8],
    kind: BlobType,
    version: u32,
    id: &Id,
) -> Result<Option<Vec<u8>>> {
    if version < 2 {
        return Ok(None);
    }
    let c = zstd::bulk::compress(plaintext, ZSTD_LEVEL)
        .map_err(Error::io("compress", format!("blob {id}")))?;
    Ok((kind == BlobType::Tree || c.len() < plaintext.len()).then_some(c))
}

/// A time as restic writes it: RFC 3339 with nanoseconds, local offset.
fn format_time(secs: i64, nanos: i64) -> String {
    chrono::Local
        .timestamp_opt(secs, nanos as u32)
        .single()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, false))
        .unwrap_or_default()
}
