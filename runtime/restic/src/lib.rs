//! restic's repository format, natively: the second kind of storage a
//! wasmover host moves data to (issue 28).
//!
//! A repository is a set of immutable files named by the SHA-256 of their
//! content, kept by a [`Backend`]: a local directory, restic's REST server or
//! S3-compatible object storage ([`open_backend`] takes restic's repository
//! strings). Everything but the key files is encrypted with the repository's
//! master key (AES-256-CTR, Poly1305-AES). File contents are cut into blobs
//! named by the SHA-256 of their plaintext, zstd-compressed (format version
//! 2) and packed with an encrypted header at the end of each pack; index
//! files map blobs to packs; trees (JSON) describe directories, and a
//! snapshot names a root tree. The layout follows restic's design document
//! (`doc/design.rst`), so the `restic` CLI reads what this crate writes and
//! the other way round. [`Repository::forget`] removes snapshots by a
//! retention policy as `restic forget` does, and [`Repository::prune`] the
//! data no snapshot uses any more, as `restic prune` does.
//!
//! ```no_run
//! use wasmover_restic::{LocalBackend, PruneOptions, Repository, RetainPolicy, SnapshotFilter};
//! # fn main() -> Result<(), wasmover_restic::Error> {
//! let repo = Repository::open(LocalBackend::new("/backups/repo"), "secret")?;
//! let (id, _summary) = repo.backup("/data".as_ref())?;
//! repo.restore(&id, "/restore".as_ref())?;
//! let daily = RetainPolicy { daily: 7, within: Some("2d".parse()?), ..RetainPolicy::default() };
//! repo.forget(&daily, &SnapshotFilter::default(), false)?;
//! repo.prune(&PruneOptions::default())?;
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

mod backend;
mod backup;
mod chunker;
mod config;
mod crypto;
mod error;
mod forget;
mod http;
mod id;
mod index;
mod key;
mod location;
mod lock;
mod pack;
mod policy;
mod prune;
mod quote;
mod repository;
mod rest;
mod restore;
mod s3;
mod snapshot;
mod tree;

pub use backend::{Backend, FileType, LocalBackend};
pub use backup::BackupSummary;
pub use config::Config;
pub use error::{Error, Result};
pub use forget::{ForgetGroup, SnapshotFilter};
pub use http::BackendOptions;
pub use id::Id;
pub use index::{BlobLocation, BlobType, Index};
pub use location::{open_backend, open_from_vars};
pub use lock::Lock;
pub use policy::{RetainPolicy, Span, Verdict};
pub use prune::{PruneOptions, PruneReport};
pub use repository::Repository;
pub use rest::RestBackend;
pub use restore::RestoreSummary;
pub use s3::S3Backend;
pub use snapshot::Snapshot;
pub use tree::{Node, NodeType, Tree};
