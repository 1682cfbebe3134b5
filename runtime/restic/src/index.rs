//! Index files: which pack holds each blob, at which offset.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::id::Id;

/// What a blob holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobType {
    /// A piece of a file's content.
    Data,
    /// A tree (directory listing, JSON).
    Tree,
}

impl BlobType {
    /// The name restic uses.
    pub fn name(self) -> &'static str {
        match self {
            BlobType::Data => "data",
            BlobType::Tree => "tree",
        }
    }
}

/// The JSON of an index file.
#[derive(Default, Serialize, Deserialize)]
pub struct IndexFile {
    /// The index files this one replaces (informative: restic reads all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supersedes: Vec<Id>,
    /// The packs this file describes.
    pub packs: Vec<IndexPack>,
}

/// One pack and its blobs, in an index file.
#[derive(Serialize, Deserialize)]
pub struct IndexPack {
    /// The pack's storage ID.
    pub id: Id,
    /// Its blobs, in pack order.
    pub blobs: Vec<IndexBlob>,
}

/// One blob of a pack, as the index lists it.
#[derive(Clone, Serialize, Deserialize)]
pub struct IndexBlob {
    /// The SHA-256 of the plaintext.
    pub id: Id,
    /// Data or tree.
    #[serde(rename = "type")]
    pub kind: BlobType,
    /// Where the sealed blob starts in the pack.
    pub offset: u64,
    /// The sealed blob's length.
    pub length: u32,
    /// The plaintext's length, for a compressed blob only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uncompressed_length: Option<u32>,
}

/// Where a blob is.
#[derive(Clone, Copy, Debug)]
pub struct BlobLocation {
    /// The pack holding it.
    pub pack: Id,
    /// Offset of the sealed blob in the pack.
    pub offset: u64,
    /// Length of the sealed blob.
    pub length: u32,
    /// The plaintext's length if the blob is compressed.
    pub uncompressed_length: Option<u32>,
}

/// Every blob the loaded index files know of.
#[derive(Default)]
pub struct Index {
    blobs: HashMap<(BlobType, Id), BlobLocation>,
}

impl Index {
    /// Adds the packs of an index file.
    pub fn add(&mut self, file: IndexFile) {
        for pack in file.packs {
            self.add_pack(&pack);
        }
    }

    /// Adds one pack's blobs.
    pub fn add_pack(&mut self, pack: &IndexPack) {
        for b in &pack.blobs {
            let location = BlobLocation {
                pack: pack.id,
                offset: b.offset,
                length: b.length,
                uncompressed_length: b.uncompressed_length,
            };
            self.blobs.insert((b.kind, b.id), location);
        }
    }

    /// The packs holding indexed blobs.
    pub fn packs(&self) -> std::collections::HashSet<Id> {
        self.blobs.values().map(|b| b.pack).collect()
    }

    /// Where a blob is, if indexed.
    pub fn get(&self, kind: BlobType, id: &Id) -> Option<&BlobLocation> {
        self.blobs.get(&(kind, *id))
    }
}
