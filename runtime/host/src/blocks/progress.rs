//! Progress reported from inside a large file's transfer.

use crate::observer::{Observer, Progress};

/// Bytes of a file between two reports of its progress.
pub(super) const PROGRESS_STEP: u64 = 16 << 20;

/// Reports a large file's progress while it moves, on top of what the
/// module last reported (blocksync reports after each file), every
/// [`PROGRESS_STEP`] bytes: a progress bar moves within a 100 GiB device.
pub(crate) struct FileProgress<'a> {
    observer: &'a dyn Observer,
    module: &'a str,
    base: Progress,
    next: u64,
}

impl<'a> FileProgress<'a> {
    /// Reports on top of `base`, what `module` last reported, to
    /// `observer`.
    pub(crate) fn new(observer: &'a dyn Observer, module: &'a str, base: Progress) -> Self {
        Self {
            observer,
            module,
            base,
            next: PROGRESS_STEP,
        }
    }

    pub(super) fn advance(&mut self, done_in_file: u64) {
        if done_in_file < self.next {
            return;
        }
        self.next = done_in_file + PROGRESS_STEP;
        let mut bytes_done = self.base.bytes_done + done_in_file;
        if self.base.bytes_total > 0 {
            bytes_done = bytes_done.min(self.base.bytes_total);
        }
        self.observer.progress(
            self.module,
            Progress {
                bytes_done,
                ..self.base
            },
        );
    }
}
