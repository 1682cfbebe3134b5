//! What a plan holds of the new file, copies and literal runs in order,
//! and the recorder that builds them from what a search finds.

use std::io;

use crate::delta::Sink;

/// One piece of the new file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Op {
    /// Equal to `len` bytes of the basis at `offset`.
    Copy { offset: u64, len: u64 },
    /// Not (yet) found: `len` bytes of the new file at `at`.
    Literal { at: u64, len: u64 },
}

/// Records the search's findings as [`Op`]s, coalescing neighbours.
pub(super) struct Recorder<'a> {
    pub(super) ops: &'a mut Vec<Op>,
    /// Offset in the new file of the next byte the search reports.
    pub(super) at: u64,
}

impl Sink for Recorder<'_> {
    fn copy(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.at += len;
        match self.ops.last_mut() {
            Some(Op::Copy { offset: o, len: l }) if *o + *l == offset => *l += len,
            _ => self.ops.push(Op::Copy { offset, len }),
        }
        Ok(())
    }

    fn literal(&mut self, data: &[u8]) -> io::Result<()> {
        self.skip(data.len() as u64);
        Ok(())
    }
}

impl Recorder<'_> {
    /// Records the next `len` bytes as literal, unread.
    pub(super) fn skip(&mut self, len: u64) {
        if len == 0 {
            return;
        }
        match self.ops.last_mut() {
            Some(Op::Literal { at, len: l }) if *at + *l == self.at => *l += len,
            _ => self.ops.push(Op::Literal { at: self.at, len }),
        }
        self.at += len;
    }
}
