//! Lock files: a process working on a repository says so in `locks/`,
//! and leaves it alone while another holds an exclusive lock.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::backend::{Backend, FileType};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repository::{Repository, file_name};
use crate::snapshot;

/// A lock older than this is stale, whoever holds it (restic's rule).
const STALE_AFTER: chrono::TimeDelta = chrono::TimeDelta::minutes(30);
/// How long a new lock waits for concurrent ones to become visible.
const SETTLE: Duration = Duration::from_millis(200);
/// A held lock is rewritten this often so that it never looks stale.
const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);

/// The JSON of a lock file.
#[derive(Serialize, Deserialize)]
struct LockFile {
    time: String,
    exclusive: bool,
    #[serde(default)]
    hostname: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    pid: i32,
    #[serde(default)]
    uid: u32,
    #[serde(default)]
    gid: u32,
}

impl LockFile {
    fn mine(exclusive: bool) -> LockFile {
        LockFile {
            time: snapshot::now(),
            exclusive,
            hostname: snapshot::hostname(),
            username: snapshot::username(),
            pid: std::process::id() as i32,
            uid: rustix::process::getuid().as_raw(),
            gid: rustix::process::getgid().as_raw(),
        }
    }

    /// Older than 30 minutes, or taken on this host by a process that is gone.
    fn is_stale(&self) -> bool {
        let age = chrono::DateTime::parse_from_rfc3339(&self.time)
            .map(|t| chrono::Local::now().fixed_offset() - t);
        if age.is_err() || age.is_ok_and(|age| age > STALE_AFTER) {
            return true;
        }
        self.hostname == snapshot::hostname()
            && rustix::process::Pid::from_raw(self.pid).is_none_or(|pid| {
                rustix::process::test_kill_process(pid).is_err_and(|e| e == rustix::io::Errno::SRCH)
            })
    }
}

/// A lock held on a repository, removed when dropped.
pub struct Lock<'r, B: Backend> {
    repo: &'r Repository<B>,
    exclusive: bool,
    id: Id,
    written: Instant,
}

impl<B: Backend> Repository<B> {
    /// Takes a lock: shared (backup, restore) or exclusive (removing data).
    /// Fails with [`Error::Locked`] if a live lock conflicts: an exclusive
    /// one, or any one when `exclusive` is asked.
    pub fn lock(&self, exclusive: bool) -> Result<Lock<'_, B>> {
        self.check_locks(exclusive, None)?;
        let id = self.save_json(FileType::Lock, &LockFile::mine(exclusive))?;
        let lock = Lock {
            repo: self,
            exclusive,
            id,
            written: Instant::now(),
        };
        // Another process may have checked at the same time, and its lock
        // may still be on its way (restic writes to a temporary name, then
        // renames): wait, then check again, now that ours is visible
        // (dropping ours if it lost).
        std::thread::sleep(SETTLE);
        self.check_locks(exclusive, Some(&id))?;
        Ok(lock)
    }

    fn check_locks(&self, exclusive: bool, mine: Option<&Id>) -> Result<()> {
        for name in self.backend().list(FileType::Lock)? {
            // Other names are files still being written (`<id>-tmp-…`).
            let Ok(id) = name.parse::<Id>() else { continue };
            if Some(&id) == mine {
                continue;
            }
            let other: LockFile = match self.load_json(FileType::Lock, &id) {
                Ok(lock) => lock,
                // Removed since the listing: its holder is done.
                Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                    continue;
                }
                Err(e) => return Err(e),
            };
            if (exclusive || other.exclusive) && !other.is_stale() {
                return Err(Error::Locked {
                    file: file_name(FileType::Lock, &name),
                    holder: format!(
                        "{} lock of pid {} on {} ({}) since {}",
                        if other.exclusive { "an exclusive" } else { "a" },
                        other.pid,
                        other.hostname,
                        other.username,
                        other.time
                    ),
                });
            }
        }
        Ok(())
    }
}

impl<B: Backend> Lock<'_, B> {
    /// Rewrites the lock if it is due, so that a long operation's lock is
    /// not taken for stale; cheap to call often.
    pub fn refresh(&mut self) -> Result<()> {
        if self.written.elapsed() < REFRESH_EVERY {
            return Ok(());
        }
        let id = self
            .repo
            .save_json(FileType::Lock, &LockFile::mine(self.exclusive))?;
        let old = std::mem::replace(&mut self.id, id);
        self.written = Instant::now();
        self.repo.backend().delete(FileType::Lock, &old.to_hex())
    }
}

impl<B: Backend> std::fmt::Debug for Lock<'_, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lock")
            .field("id", &self.id)
            .field("exclusive", &self.exclusive)
            .finish()
    }
}

impl<B: Backend> Drop for Lock<'_, B> {
    fn drop(&mut self) {
        if let Err(e) = self
            .repo
            .backend()
            .delete(FileType::Lock, &self.id.to_hex())
        {
            tracing::warn!(lock = %self.id, error = %e, "could not remove the lock file; `restic unlock` removes it");
        }
    }
}
