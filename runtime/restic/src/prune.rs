//! Pruning: removing the data no snapshot uses any more, as `restic prune`
//! does, in an order that loses nothing if it stops half-way.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use rayon::prelude::*;

use crate::backend::{Backend, FileType};
use crate::backup::{PACK_SIZE, compress};
use crate::crypto::OVERHEAD;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::{BlobLocation, BlobType, Index, IndexFile, IndexPack};
use crate::lock::Lock;
use crate::pack::PackWriter;
use crate::repository::{Repository, file_name};
use crate::tree::Tree;

/// Trees read at once while finding the used blobs.
const TREE_READERS: usize = 8;
/// An index file lists at most this many blobs (restic's limit).
const INDEX_MAX_BLOBS: usize = 50_000;
/// A pack smaller than this is repacked with others, when there are at
/// least `SMALL_PACKS` of them (restic's defaults).
const SMALL_PACK: u64 = PACK_SIZE / 25;
const SMALL_PACKS: usize = 10;

/// How a prune trades repacking for space.
#[derive(Clone, Debug)]
pub struct PruneOptions {
    /// Unused data tolerated in kept packs after the prune, in percent of
    /// the data (restic's `--max-unused`, 5% by default): partly used
    /// packs with the most unused data are repacked until the rest is
    /// below it.
    pub max_unused_percent: f64,
}

impl Default for PruneOptions {
    fn default() -> PruneOptions {
        PruneOptions {
            max_unused_percent: 5.0,
        }
    }
}

/// What a prune found and removed. Sizes are of pack files (encrypted,
/// compressed blobs and headers).
#[derive(Debug, Default)]
pub struct PruneReport {
    /// Blobs the snapshots use.
    pub blobs_used: u64,
    /// Their bytes in packs.
    pub bytes_used: u64,
    /// Packs removed whole: no used blob in them, or in no index.
    pub packs_deleted: u64,
    /// Their bytes.
    pub bytes_deleted: u64,
    /// Partly used packs whose used blobs were copied into new packs, then removed.
    pub packs_repacked: u64,
    /// Their bytes.
    pub bytes_repacked: u64,
    /// New packs written by repacking.
    pub packs_written: u64,
    /// Their bytes.
    pub bytes_written: u64,
    /// Unused bytes left in the packs kept.
    pub bytes_unused_after: u64,
    /// Index files written (all packs kept and written).
    pub index_files_written: u64,
    /// Index files removed (replaced by those written).
    pub index_files_deleted: u64,
}

/// One indexed pack and how much of it is used.
struct PackUse {
    pack: IndexPack,
    used_bytes: u64,
    unused_bytes: u64,
    /// Holds tree and data blobs both.
    mixed: bool,
    /// Holds trees stored uncompressed in a format that compresses them.
    must_compress: bool,
}

/// A pack file's size by its index entry: its blobs, then the sealed
/// header (an entry of 37 bytes per blob, 41 if compressed), then the
/// header's length.
fn pack_size(pack: &IndexPack) -> u64 {
    pack.blobs
        .iter()
        .map(|b| {
            let entry = if b.uncompressed_length.is_some() {
                41
            } else {
                37
            };
            u64::from(b.length) + entry
        })
        .sum::<u64>()
        + OVERHEAD as u64
        + 4
}

impl PackUse {
    fn size(&self) -> u64 {
        pack_size(&self.pack)
    }

    fn is_data(&self) -> bool {
        !self.mixed
            && self
                .pack
                .blobs
                .first()
                .is_some_and(|b| b.kind == BlobType::Data)
    }
}

/// What a prune does to each pack.
#[derive(Default)]
struct Plan {
    /// In `data/` but in no index: removed first.
    unreferenced: Vec<Id>,
    /// No used blob.
    remove: BTreeSet<Id>,
    /// Partly used: their used blobs are copied, then they are removed.
    repack: BTreeSet<Id>,
    /// Indexed but not in `data/`: left out of the new index.
    missing: BTreeSet<Id>,
}

impl<B: Backend> Repository<B> {
    /// Removes what no snapshot uses, under an exclusive lock: packs with
    /// no used blob, and partly used packs (while more than
    /// `max_unused_percent` of the data would be unused, and every pack
    /// mixing trees and data or holding uncompressed trees) once their used
    /// blobs are copied into new packs. Refuses, removing nothing, when a
    /// snapshot needs a blob or pack that is missing. New packs are written
    /// first, then a new index of everything kept, then the old index
    /// files and packs are removed: stopped at any point, the repository
    /// holds every snapshot's data, and a new prune finishes the job.
    pub fn prune(&self, options: &PruneOptions) -> Result<PruneReport> {
        let p = options.max_unused_percent;
        if !(0.0..100.0).contains(&p) {
            return Err(Error::Policy {
                field: "max_unused_percent",
                reason: format!("{p} is not at least 0 and below 100"),
            });
        }
        let mut lock = self.lock(true)?;
        let index_files = self.load_index_files()?;
        let old_index: Vec<Id> = index_files.iter().map(|f| f.0).collect();
        // Each pack once: one a prune stopped half-way is in two index files.
        let mut packs: BTreeMap<Id, IndexPack> = BTreeMap::new();
        for pack in index_files.into_iter().flat_map(|f| f.1.packs) {
            packs.entry(pack.id).or_insert(pack);
        }
        let stored: HashSet<Id> = self
            .backend()
            .list(FileType::Data)?
            .iter()
            .filter_map(|name| name.parse().ok())
            .collect();
        // Indexed packs that are gone are left out of the new index; a
        // blob only they held is missing.
        let mut plan = Plan {
            missing: packs
                .keys()
                .filter(|id| !stored.contains(id))
                .copied()
                .collect(),
            ..Plan::default()
        };
        packs.retain(|id, _| stored.contains(id));
        let mut index = Index::default();
        for pack in packs.values() {
            index.add_pack(pack);
        }
        let used = self.used_blobs(&index, &mut lock)?;
        let chosen = choose_copies(&packs, &used)?;
        let mut report = PruneReport {
            blobs_used: chosen.len() as u64,
            ..PruneReport::default()
        };
        let version = self.config().version;
        let packs: BTreeMap<Id, PackUse> = packs
            .into_iter()
            .map(|(id, pack)| {
                let (mut used_bytes, mut unused_bytes) = (0, 0);
                for b in &pack.blobs {
                    match chosen.get(&(b.kind, b.id)) == Some(&id) {
                        true => used_bytes += u64::from(b.length),
                        false => unused_bytes += u64::from(b.length),
                    }
                }
                let kind = |k| pack.blobs.iter().any(|b| b.kind == k);
                let mixed = kind(BlobType::Data) && kind(BlobType::Tree);
                let must_compress = version >= 2
                    && pack
                        .blobs
                        .iter()
                        .any(|b| b.kind == BlobType::Tree && b.uncompressed_length.is_none());
                let pack_use = PackUse {
                    pack,
                    used_bytes,
                    unused_bytes,
                    mixed,
                    must_compress,
                };
                (id, pack_use)
            })
            .collect();
        report.bytes_used = packs.values().map(|p| p.used_bytes).sum();
        self.plan(&packs, &stored, p, &mut plan, &mut report)?;

        for id in &plan.unreferenced {
            self.backend().delete(FileType::Data, &id.to_hex())?;
        }
        let written = self.repack(&packs, &plan.repack, &chosen, &mut lock, &mut report)?;
        if plan.remove.is_empty() && plan.repack.is_empty() && plan.missing.is_empty() {
            return Ok(report);
        }
        let kept = packs
            .into_iter()
            .filter(|(id, _)| !plan.remove.contains(id) && !plan.repack.contains(id))
            .map(|(_, p)| p.pack);
        self.write_index(kept.chain(written), old_index.clone(), &mut report)?;
        for id in &old_index {
            self.backend().delete(FileType::Index, &id.to_hex())?;
            report.index_files_deleted += 1;
        }
        for id in plan.remove.iter().chain(&plan.repack) {
            lock.refresh()?;
            self.backend().delete(FileType::Data, &id.to_hex())?;
        }
        Ok(report)
    }

    /// Every blob the snapshots use: their trees, the trees below, and the
    /// files' data blobs. Trees are read a level at a time, `TREE_READERS`
    /// at once, so that a remote repository's latency is paid per level
    /// rather than per directory.
    fn used_blobs(&self, index: &Index, lock: &mut Lock<'_, B>) -> Result<HashSet<(BlobType, Id)>> {
        let readers = rayon::ThreadPoolBuilder::new()
            .num_threads(TREE_READERS)
            .build()
            .map_err(|e| Error::io("start", "tree readers")(std::io::Error::other(e)))?;
        let mut used = HashSet::new();
        let mut level: Vec<Id> = self.snapshots()?.into_iter().map(|s| s.1.tree).collect();
        level.retain(|tree| used.insert((BlobType::Tree, *tree)));
        while !level.is_empty() {
            lock.refresh()?;
            let trees: Vec<Result<Tree>> = readers.install(|| {
                level
                    .par_iter()
                    .map(|id| self.load_tree(index, id))
                    .collect()
            });
            level = Vec::new();
            for tree in trees {
                let nodes = match tree {
                    Ok(t) => t.nodes,
                    Err(e @ Error::BlobMissing { .. }) => {
                        return Err(Error::Incomplete {
                            reason: e.to_string(),
                        });
                    }
                    Err(e) => return Err(e),
                };
                for node in nodes {
                    used.extend(
                        node.content
                            .into_iter()
                            .flatten()
                            .map(|id| (BlobType::Data, id)),
                    );
                    level.extend(
                        node.subtree
                            .filter(|tree| used.insert((BlobType::Tree, *tree))),
                    );
                }
            }
        }
        Ok(used)
    }

    /// Decides the fate of each pack in `data/` (see [`Self::prune`]).
    fn plan(
        &self,
        packs: &BTreeMap<Id, PackUse>,
        stored: &HashSet<Id>,
        max_unused_percent: f64,
        plan: &mut Plan,
        report: &mut PruneReport,
    ) -> Result<()> {
        for id in stored {
            if !packs.contains_key(id) {
                plan.unreferenced.push(*id);
                report.packs_deleted += 1;
                report.bytes_deleted += self.backend().size(FileType::Data, &id.to_hex())?;
            }
        }
        let (mut candidates, mut small) = (Vec::new(), Vec::new());
        for (id, p) in packs {
            if p.used_bytes == 0 {
                plan.remove.insert(*id);
                report.packs_deleted += 1;
                report.bytes_deleted += p.size();
            } else if p.unused_bytes == 0 && !p.mixed && !p.must_compress {
                if p.size() < SMALL_PACK {
                    small.push((id, p));
                }
            } else {
                candidates.push((id, p));
            }
        }
        if small.len() >= SMALL_PACKS {
            candidates.extend(small);
        }
        // Trees and small packs first, then the most unused first.
        candidates.sort_by(|(_, a), (_, b)| {
            a.is_data()
                .cmp(&b.is_data())
                .then((a.size() >= SMALL_PACK).cmp(&(b.size() >= SMALL_PACK)))
                .then_with(|| {
                    let (a_unused, b_unused) =
                        (u128::from(a.unused_bytes), u128::from(b.unused_bytes));
                    (b_unused * u128::from(a.used_bytes))
                        .cmp(&(a_unused * u128::from(b.used_bytes)))
                })
        });
        let tolerated =
            (max_unused_percent / (100.0 - max_unused_percent) * report.bytes_used as f64) as u64;
        let mut unused: u64 = packs
            .values()
            .filter(|p| p.used_bytes > 0)
            .map(|p| p.unused_bytes)
            .sum();
        for (id, p) in candidates {
            if p.is_data() && !p.must_compress && unused < tolerated && p.size() >= SMALL_PACK {
                continue;
            }
            plan.repack.insert(*id);
            unused -= p.unused_bytes;
            report.packs_repacked += 1;
            report.bytes_repacked += p.size();
        }
        report.bytes_unused_after = unused;
        Ok(())
    }

    /// Copies the used blobs of the packs in `repack` into new packs
    /// (trees and data apart, trees compressed in format version 2); each
    /// blob is checked (MAC, plaintext hash) on the way. Returns the new
    /// packs, all stored.
    fn repack(
        &self,
        packs: &BTreeMap<Id, PackUse>,
        repack: &BTreeSet<Id>,
        chosen: &HashMap<(BlobType, Id), Id>,
        lock: &mut Lock<'_, B>,
        report: &mut PruneReport,
    ) -> Result<Vec<IndexPack>> {
        let mut written = Vec::new();
        let mut writers: [Option<PackWriter>; 2] = [None, None];
        let mut copied = HashSet::new();
        for id in repack {
            let name = id.to_hex();
            let bytes = self.backend().get(FileType::Data, &name)?;
            let expected = packs[id].size();
            if bytes.len() as u64 != expected {
                return Err(Error::format(
                    file_name(FileType::Data, &name),
                    format!(
                        "{} bytes, its index entry says {expected}: `restic repair index` (rebuild-index) corrects the index",
                        bytes.len()
                    ),
                ));
            }
            for b in &packs[id].pack.blobs {
                if chosen.get(&(b.kind, b.id)) != Some(id) || !copied.insert((b.kind, b.id)) {
                    continue;
                }
                lock.refresh()?;
                let at = BlobLocation {
                    pack: *id,
                    offset: b.offset,
                    length: b.length,
                    uncompressed_length: b.uncompressed_length,
                };
                let file = format!(
                    "{} ({} blob {} at offset {})",
                    file_name(FileType::Data, &name),
                    b.kind.name(),
                    b.id,
                    b.offset
                );
                let end = b.offset + u64::from(b.length);
                let sealed =
                    bytes
                        .get(b.offset as usize..end as usize)
                        .ok_or_else(|| Error::Truncated {
                            file: file.clone(),
                            what: "blob",
                            needed: end,
                            available: bytes.len() as u64,
                        })?;
                let (plain, stored_compressed) = self.open_blob(sealed, &at, &b.id, &file)?;
                let compressed = match stored_compressed {
                    Some(c) => Some(c),
                    None => compress(&plain, b.kind, self.config().version, &b.id)?,
                };
                let slot = match b.kind {
                    BlobType::Data => &mut writers[0],
                    BlobType::Tree => &mut writers[1],
                };
                let writer = match slot {
                    Some(w) => w,
                    None => slot.insert(PackWriter::new()?),
                };
                writer.add(self.key(), b.kind, b.id, &plain, compressed.as_deref())?;
                if writer.size() >= PACK_SIZE {
                    let full = slot.take().expect("just written to");
                    written.push(self.store(full, report)?);
                }
            }
        }
        for slot in &mut writers {
            if let Some(w) = slot.take() {
                written.push(self.store(w, report)?);
            }
        }
        Ok(written)
    }

    fn store(&self, writer: PackWriter, report: &mut PruneReport) -> Result<IndexPack> {
        let pack = writer.finish(self.key(), self.backend())?;
        report.packs_written += 1;
        report.bytes_written += pack_size(&pack);
        Ok(pack)
    }

    /// Writes index files listing `packs`; the first names the old ones as superseded.
    fn write_index(
        &self,
        packs: impl Iterator<Item = IndexPack>,
        mut supersedes: Vec<Id>,
        report: &mut PruneReport,
    ) -> Result<()> {
        let mut file = IndexFile::default();
        let mut blobs = 0;
        for pack in packs {
            blobs += pack.blobs.len();
            file.packs.push(pack);
            if blobs >= INDEX_MAX_BLOBS {
                file.supersedes = std::mem::take(&mut supersedes);
                self.save_json(FileType::Index, &std::mem::take(&mut file))?;
                report.index_files_written += 1;
                blobs = 0;
            }
        }
        if !file.packs.is_empty() {
            file.supersedes = supersedes;
            self.save_json(FileType::Index, &file)?;
            report.index_files_written += 1;
        }
        Ok(())
    }
}

/// Which pack's copy of each used blob is kept, much as restic chooses: a
/// blob in one pack is kept there; of a blob in several, the copy in the
/// first pack wholly used or already keeping others, else the last copy
/// (so that after a prune stopped once its new packs were indexed, the
/// next keeps those and copies nothing again). Fails, naming one, if used
/// blobs are in no pack file there is.
fn choose_copies(
    packs: &BTreeMap<Id, IndexPack>,
    used: &HashSet<(BlobType, Id)>,
) -> Result<HashMap<(BlobType, Id), Id>> {
    let mut copies: HashMap<(BlobType, Id), usize> = HashMap::new();
    for b in packs.values().flat_map(|p| &p.blobs) {
        if used.contains(&(b.kind, b.id)) {
            *copies.entry((b.kind, b.id)).or_default() += 1;
        }
    }
    if let Some((kind, id)) = used.iter().find(|b| !copies.contains_key(b)) {
        return Err(Error::Incomplete {
            reason: format!(
                "{} of the blobs the snapshots use are in no pack file the index lists and data/ holds ({} blob {id}, …)",
                used.len() - copies.len(),
                kind.name()
            ),
        });
    }
    let mut chosen = HashMap::new();
    for (id, pack) in packs {
        for b in &pack.blobs {
            if copies.get(&(b.kind, b.id)) == Some(&1) {
                chosen.insert((b.kind, b.id), *id);
            }
        }
    }
    for (id, pack) in packs {
        let mut keeps = pack.blobs.iter().all(|b| used.contains(&(b.kind, b.id)))
            || pack
                .blobs
                .iter()
                .any(|b| chosen.get(&(b.kind, b.id)) == Some(id));
        for b in &pack.blobs {
            let key = (b.kind, b.id);
            let Some(left) = copies.get_mut(&key) else {
                continue;
            };
            if *left <= 1 && chosen.contains_key(&key) {
                continue;
            }
            if keeps || *left == 1 {
                chosen.insert(key, *id);
                *left = 1;
                keeps = true;
            } else {
                *left -= 1;
            }
        }
    }
    Ok(chosen)
}
