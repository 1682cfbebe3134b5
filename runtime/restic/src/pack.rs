//! Pack files: sealed blobs one after another, then the sealed header
//! listing them, then the header's length (4 bytes, little-endian).

use std::io::{Seek, SeekFrom, Write};

use sha2::{Digest, Sha256};

use crate::backend::{Backend, FileType};
use crate::crypto::Key;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::{BlobType, IndexBlob, IndexPack};

/// Reads a stored pack's header (its last bytes: the sealed header, then
/// the header's length), and lists its blobs as an index would.
pub fn read_header(backend: &dyn Backend, key: &Key, id: &Id) -> Result<IndexPack> {
    let name = id.to_hex();
    let file = crate::repository::file_name(FileType::Data, &name);
    let size = backend.size(FileType::Data, &name)?;
    let truncated = |what, needed| Error::Truncated {
        file: file.clone(),
        what,
        needed,
        available: size,
    };
    if size < 4 {
        return Err(truncated("header length", 4));
    }
    let len = backend.get_range(FileType::Data, &name, size - 4, 4)?;
    let len = u64::from(u32::from_le_bytes(len.try_into().expect("4 bytes")));
    if len + 4 > size {
        return Err(truncated("header", len + 4));
    }
    let sealed = backend.get_range(FileType::Data, &name, size - 4 - len, len)?;
    let header = key.open(&sealed, &format!("{file} (header)"))?;
    let (mut blobs, mut offset, mut rest) = (Vec::new(), 0u64, header.as_slice());
    while let Some((&kind, tail)) = rest.split_first() {
        let compressed = kind & 0b10 != 0;
        let need = 4 + if compressed { 4 } else { 0 } + 32;
        if kind > 3 || tail.len() < need {
            return Err(Error::format(&file, "a pack header entry is malformed"));
        }
        let u32_at = |at: usize| u32::from_le_bytes(tail[at..at + 4].try_into().expect("4 bytes"));
        let length = u32_at(0);
        let uncompressed_length = compressed.then(|| u32_at(4));
        let id_at = need - 32;
        let blob = IndexBlob {
            id: Id(tail[id_at..need].try_into().expect("32 bytes")),
            kind: if kind & 1 == 0 {
                BlobType::Data
            } else {
                BlobType::Tree
            },
            offset,
            length,
            uncompressed_length,
        };
        offset += u64::from(length);
        blobs.push(blob);
        rest = &tail[need..];
    }
    if offset + len + 4 != size {
        return Err(Error::format(
            &file,
            format!(
                "the header lists {offset} bytes of blobs, the pack holds {}",
                size - len - 4
            ),
        ));
    }
    Ok(IndexPack { id: *id, blobs })
}

/// A pack being written, into an anonymous temporary file so that large
/// packs are streamed to the backend rather than held in memory.
pub struct PackWriter {
    file: std::fs::File,
    hasher: Sha256,
    blobs: Vec<IndexBlob>,
    size: u64,
}

impl PackWriter {
    /// An empty pack.
    pub fn new() -> Result<PackWriter> {
        let file = tempfile::tempfile().map_err(Error::io("create", std::env::temp_dir()))?;
        Ok(PackWriter {
            file,
            hasher: Sha256::new(),
            blobs: Vec::new(),
            size: 0,
        })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.file
            .write_all(bytes)
            .map_err(Error::io("write", "a temporary pack file"))?;
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// Seals and appends a blob; `compressed` holds the zstd form when it
    /// is smaller than the plaintext (format version 2 only).
    pub fn add(
        &mut self,
        key: &Key,
        kind: BlobType,
        id: Id,
        plaintext: &[u8],
        compressed: Option<&[u8]>,
    ) -> Result<()> {
        let sealed = key.seal(compressed.unwrap_or(plaintext));
        let uncompressed_length = compressed.map(|_| plaintext.len() as u32);
        let blob = IndexBlob {
            id,
            kind,
            offset: self.size,
            length: sealed.len() as u32,
            uncompressed_length,
        };
        self.write(&sealed)?;
        self.blobs.push(blob);
        Ok(())
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends the header and stores the pack under its storage ID.
    pub fn finish(mut self, key: &Key, backend: &dyn Backend) -> Result<IndexPack> {
        let mut header = Vec::with_capacity(self.blobs.len() * 41);
        for b in &self.blobs {
            let kind = match b.kind {
                BlobType::Data => 0,
                BlobType::Tree => 1,
            };
            header.push(
                kind | if b.uncompressed_length.is_some() {
                    0b10
                } else {
                    0
                },
            );
            header.extend_from_slice(&b.length.to_le_bytes());
            if let Some(n) = b.uncompressed_length {
                header.extend_from_slice(&n.to_le_bytes());
            }
            header.extend_from_slice(&b.id.0);
        }
        let sealed = key.seal(&header);
        self.write(&sealed)?;
        self.write(&(sealed.len() as u32).to_le_bytes())?;
        let id = Id(self.hasher.finalize().into());
        self.file
            .seek(SeekFrom::Start(0))
            .map_err(Error::io("seek", "a temporary pack file"))?;
        backend.put(FileType::Data, &id.to_hex(), &mut self.file)?;
        Ok(IndexPack {
            id,
            blobs: self.blobs,
        })
    }
}
