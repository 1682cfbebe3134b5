//! Hashing a watched tree's files ahead of its digest.
//!
//! After a writable tree's scan, the run waits for the peer's listing,
//! compares, and moves the changes; the digest comes last and, where no
//! hashes were kept (a destination seeded by another tool), reads every
//! file. A thread at the lowest priority reads them meanwhile, on CPU the
//! run leaves idle. Its hash of a file serves the digest only if the
//! watch saw no change to that file since the scan (see [`super::watch`]),
//! so the content it read is the content the scan found.

use std::ffi::{OsStr, OsString};
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use cap_std::fs::Dir;

use super::content::{DIGEST_BUFFER, content_hash, open_to_read};
use super::known::{Stamp, Stored};

/// Files this large are left to the digest. A run that changes one reads
/// it at the same time for its delta, so reading its old content ahead is
/// wasted, and it slowed that run: onto a fresh copy of a 1 GiB file with
/// 1% changed, the sender's wall time rose from 0.79 to 0.93 s (medians
/// of 4 to 6 alternating runs). Small files are where the digest's per-file
/// cost is, and where reading ahead pays.
pub(super) const LARGEST: u64 = 8 << 20;

/// A file to hash ahead: its index in the scan, its path and stamp.
pub(super) type File = (u32, OsString, Stamp);

/// The hashes read ahead: each file's index in the scan, content hash
/// and length, in scan order.
pub(super) type Hashes = Vec<(u32, blake3::Hash, u64)>;

/// Files being hashed ahead, on their own thread.
pub(super) struct Ahead {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<(Stored, Hashes)>>,
    /// What the thread returned, once joined.
    done: Option<(Stored, Hashes)>,
}

impl Ahead {
    /// Starts hashing `files` under `dir`, once `stored` (run on the
    /// thread: loading the kept hashes reads a file too) is known, except
    /// the files whose hash it holds.
    pub(super) fn start(
        dir: Dir,
        files: Vec<File>,
        stored: impl FnOnce(&Dir) -> Stored + Send + 'static,
    ) -> io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("wasmover-ahead".into())
            .spawn(move || {
                // Only where nothing else wants the CPU.
                let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 19);
                let stored = stored(&dir);
                let mut hashes = Vec::new();
                let mut buffer = vec![0; DIGEST_BUFFER];
                for (index, path, stamp) in files {
                    if stopped.load(Ordering::Relaxed) {
                        break;
                    }
                    if stored.get(stamp).is_some() {
                        continue;
                    }
                    // A file that cannot be read now is left to the digest,
                    // which says why if it still cannot.
                    if let Ok((hash, len)) = hash_file(&dir, &path, &stopped, &mut buffer) {
                        hashes.push((index, hash, len));
                    }
                }
                (stored, hashes)
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
            done: None,
        })
    }

    /// Stops hashing; returns the kept hashes it loaded and the hashes it
    /// read so far (`None` if the thread failed).
    pub(super) fn finish(mut self) -> Option<(Stored, Hashes)> {
        self.stop.store(true, Ordering::Relaxed);
        self.join();
        let done = self.done.take();
        if let Some((_, hashes)) = &done {
            tracing::debug!(files = hashes.len(), "hashed ahead of the digest");
        }
        done
    }

    fn join(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.done = thread.join().ok();
        }
    }

    /// Waits until every file is hashed; then the hashes, to tamper with.
    #[cfg(test)]
    pub(super) fn wait(&mut self) -> &mut Hashes {
        self.join();
        &mut self.done.as_mut().expect("the thread returned").1
    }
}

impl Drop for Ahead {
    /// A run that ends without a digest stops the reading too.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.join();
    }
}

/// BLAKE3 of the regular file at `path` and its length, unless `stop` is
/// set while it reads.
fn hash_file(
    dir: &Dir,
    path: &OsStr,
    stop: &AtomicBool,
    buffer: &mut [u8],
) -> io::Result<(blake3::Hash, u64)> {
    let file = open_to_read(dir, path)?;
    content_hash(Stoppable { file, stop }, buffer)
}

/// A file whose reads fail once `stop` is set.
struct Stoppable<'a> {
    file: cap_std::fs::File,
    stop: &'a AtomicBool,
}

impl std::os::fd::AsFd for Stoppable<'_> {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl io::Read for Stoppable<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        if self.stop.load(Ordering::Relaxed) {
            return Err(io::Error::other("stopped"));
        }
        self.file.read(buffer)
    }
}
