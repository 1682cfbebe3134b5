//! Where an in-place patch keeps a delta's literals until it writes them:
//! in memory, or spilled to a file.

use std::io::{self, Read, Write};

/// Where a delta's literal bytes wait until they are written.
pub(super) enum Literals {
    /// In memory, counted against [`IN_PLACE_MAX_HELD`](crate::IN_PLACE_MAX_HELD).
    Memory(Vec<u8>),
    /// In a file the caller provided, for patches larger than memory.
    Spilled { file: std::fs::File, len: u64 },
}

impl Literals {
    pub(super) fn len(&self) -> u64 {
        match self {
            Literals::Memory(bytes) => bytes.len() as u64,
            Literals::Spilled { len, .. } => *len,
        }
    }

    /// Bytes held in memory.
    pub(super) fn held(&self) -> u64 {
        match self {
            Literals::Memory(bytes) => bytes.len() as u64,
            Literals::Spilled { .. } => 0,
        }
    }

    /// Appends up to `len` bytes from `r`; returns how many arrived.
    pub(super) fn append(&mut self, r: &mut impl Read, len: u64) -> io::Result<u64> {
        match self {
            // Grows only as bytes arrive: a lying length costs nothing.
            Literals::Memory(bytes) => r.take(len).read_to_end(bytes).map(|n| n as u64),
            Literals::Spilled { file, len: spilled } => {
                let n = io::copy(&mut r.take(len), &mut &*file)?;
                *spilled += n;
                Ok(n)
            }
        }
    }

    /// Writes bytes `at..at + len` to `out`.
    pub(super) fn write_to(
        &self,
        at: u64,
        len: u64,
        out: &mut impl Write,
        buf: &mut [u8],
    ) -> io::Result<()> {
        match self {
            Literals::Memory(bytes) => out.write_all(&bytes[at as usize..(at + len) as usize]),
            Literals::Spilled { file, .. } => {
                use std::os::unix::fs::FileExt;
                let mut done = 0;
                while done < len {
                    let n = (len - done).min(buf.len() as u64) as usize;
                    file.read_exact_at(&mut buf[..n], at + done)?;
                    out.write_all(&buf[..n])?;
                    done += n as u64;
                }
                Ok(())
            }
        }
    }
}
