//! Content-defined chunking: cuts a stream into blobs at positions chosen
//! by a gear hash of the last 64 bytes, so an insertion moves only the cuts
//! near it. restic accepts any blob boundaries; these sizes match its
//! chunker's (512 KiB to 8 MiB, about 1 MiB past the minimum on average).

use std::io::{self, Read};

/// No cut before this many bytes (except at the end of the stream).
pub const MIN_SIZE: usize = 512 * 1024;
/// A cut at this many bytes at the latest.
pub const MAX_SIZE: usize = 8 * 1024 * 1024;
/// A cut where the hash's top 20 bits are zero: one position in 2^20.
const CUT_SHIFT: u32 = 64 - 20;

/// 256 pseudo-random words, one per byte value (splitmix64 from a fixed seed).
const GEAR: [u64; 256] = {
    let mut table = [0; 256];
    let mut state: u64 = 0x7761_736d_6f76_6572; // "wasmover"
    let mut i = 0;
    while i < 256 {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        table[i] = z ^ (z >> 31);
        i += 1;
    }
    table
};

/// Where the first chunk of `data` ends; `data.len()` if no cut falls
/// before it (the caller passes at most [`MAX_SIZE`] bytes, or the rest).
fn cut_point(data: &[u8]) -> usize {
    let end = data.len().min(MAX_SIZE);
    if end <= MIN_SIZE {
        return end;
    }
    // The hash covers 64 bytes, so starting 64 bytes early makes the
    // first candidate cut depend only on content.
    let mut hash = 0u64;
    for (i, &b) in data[..end].iter().enumerate().skip(MIN_SIZE - 64) {
        hash = (hash << 1).wrapping_add(GEAR[b as usize]);
        if i >= MIN_SIZE && hash >> CUT_SHIFT == 0 {
            return i + 1;
        }
    }
    end
}

/// Splits a reader into chunks, holding at most twice [`MAX_SIZE`] in memory.
pub struct Chunker<R> {
    reader: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
}

impl<R: Read> Chunker<R> {
    /// A chunker over `reader`.
    pub fn new(reader: R) -> Chunker<R> {
        Chunker {
            reader,
            buf: vec![0; 2 * MAX_SIZE],
            start: 0,
            end: 0,
            eof: false,
        }
    }

    /// The next chunk, or `None` at the end of the stream.
    pub fn next_chunk(&mut self) -> io::Result<Option<&[u8]>> {
        if self.start + MAX_SIZE > self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        while !self.eof && self.end - self.start < MAX_SIZE {
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.start == self.end {
            return Ok(None);
        }
        let chunk_start = self.start;
        self.start += cut_point(&self.buf[self.start..self.end]);
        Ok(Some(&self.buf[chunk_start..self.start]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn chunks(data: &[u8]) -> Vec<Vec<u8>> {
        let mut c = Chunker::new(data);
        let mut out = Vec::new();
        while let Some(chunk) = c.next_chunk().unwrap() {
            out.push(chunk.to_vec());
        }
        out
    }

    #[test]
    fn chunks_reassemble_within_bounds_and_resynchronize_after_an_insertion() {
        let data = noise(24 << 20, 1);
        let a = chunks(&data);
        assert_eq!(a.concat(), data);
        assert!(
            a.len() > 4,
            "24 MiB of noise gives several chunks, got {}",
            a.len()
        );
        assert!(
            a[..a.len() - 1]
                .iter()
                .all(|c| (MIN_SIZE..=MAX_SIZE).contains(&c.len()))
        );
        let mut edited = data.clone();
        edited.splice(100..100, *b"inserted");
        let b = chunks(&edited);
        assert_eq!(b.concat(), edited);
        // Only the first chunk changes; every later one is found again.
        assert_eq!(a[1..], b[1..]);
        assert!(chunks(&[]).is_empty());
        assert_eq!(chunks(b"small"), vec![b"small".to_vec()]);
    }
}
