//! Forgetting snapshots by a retention policy, group by group as `restic
//! forget` does by default (host and paths).

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset, Utc};

use crate::backend::{Backend, FileType};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::policy::{RetainPolicy, Verdict};
use crate::repository::{Repository, file_name, parse_time};
use crate::snapshot::Snapshot;

/// Which snapshots a `forget` considers, as restic's `--host`, `--path`
/// and `--tag`: each given condition must hold. The default takes all.
#[derive(Clone, Debug, Default)]
pub struct SnapshotFilter {
    /// Taken on one of these hosts (any, if empty).
    pub hosts: Vec<String>,
    /// Of at least these paths.
    pub paths: Vec<String>,
    /// With at least these tags.
    pub tags: Vec<String>,
}

impl SnapshotFilter {
    /// Whether a snapshot passes.
    pub fn matches(&self, s: &Snapshot) -> bool {
        (self.hosts.is_empty() || self.hosts.contains(&s.hostname))
            && self.paths.iter().all(|p| s.paths.contains(p))
            && self.tags.iter().all(|t| s.tags.contains(t))
    }
}

/// The snapshots of one host and set of paths, and what became of them.
#[derive(Clone, Debug)]
pub struct ForgetGroup {
    /// The host they were taken on.
    pub hostname: String,
    /// The paths they hold, sorted.
    pub paths: Vec<String>,
    /// Those kept, newest first, with the rules that keep them.
    pub keep: Vec<Verdict>,
    /// Those removed (or that would be, in a dry run), newest first.
    pub remove: Vec<Verdict>,
}

impl<B: Backend> Repository<B> {
    /// Applies `policy` to the snapshots `filter` passes, grouped by host
    /// and paths as `restic forget` groups them by default, and removes the
    /// snapshot files it does not keep, under an exclusive lock. A dry run
    /// takes a shared lock and removes nothing. The data only they used
    /// stays until a [`prune`](Repository::prune).
    pub fn forget(
        &self,
        policy: &RetainPolicy,
        filter: &SnapshotFilter,
        dry_run: bool,
    ) -> Result<Vec<ForgetGroup>> {
        let _lock = self.lock(!dry_run)?;
        // Host and sorted paths: each group's snapshots.
        type Groups = BTreeMap<(String, Vec<String>), Vec<(Id, DateTime<FixedOffset>)>>;
        let mut groups = Groups::new();
        for (id, s) in self.snapshots()? {
            if !filter.matches(&s) {
                continue;
            }
            let time = parse_time(&s.time).ok_or_else(|| {
                Error::format(
                    file_name(FileType::Snapshot, &id.to_hex()),
                    format!("time {:?} is not RFC 3339", s.time),
                )
            })?;
            let mut paths = s.paths;
            paths.sort();
            groups
                .entry((s.hostname, paths))
                .or_default()
                .push((id, time));
        }
        let now = Utc::now();
        let groups: Vec<ForgetGroup> = groups
            .into_iter()
            .map(|((hostname, paths), snapshots)| {
                let (keep, remove) = policy.apply(&snapshots, now);
                ForgetGroup {
                    hostname,
                    paths,
                    keep,
                    remove,
                }
            })
            .collect();
        if !dry_run {
            for v in groups.iter().flat_map(|g| &g.remove) {
                self.backend().delete(FileType::Snapshot, &v.id.to_hex())?;
            }
        }
        Ok(groups)
    }
}
