//! The order of an in-place patch's copies: none reads bytes an earlier
//! one wrote, and cycles are broken by reading a source into memory.

use std::collections::VecDeque;
use std::io::{self, Read, Seek, SeekFrom, Write};

/// The copies in an order where none reads bytes an earlier one wrote,
/// and the copies whose sources must be read into memory first because
/// they are on a cycle (block A moves to B's place and B to A's).
///
/// Copies write disjoint ranges in `dst` order, so the copies a source
/// range overlaps are found by binary search; an edge `x -> y` says `x`
/// reads what `y` writes, so `x` goes first.
pub(super) fn schedule(copies: &[(u64, u64, u64)]) -> (Vec<usize>, Vec<usize>) {
    let n = copies.len();
    let mut waiting = vec![0usize; n];
    for (x, &(_, src, len)) in copies.iter().enumerate() {
        // First copy whose dst range ends after `src`.
        let mut y = copies.partition_point(|&(dst, _, l)| dst + l <= src);
        while y < n && copies[y].0 < src + len {
            if y != x {
                waiting[y] += 1;
            }
            y += 1;
        }
    }
    let mut order = Vec::with_capacity(n);
    let mut buffered = Vec::new();
    let mut done = vec![false; n];
    let mut ready: VecDeque<usize> = (0..n).filter(|&i| waiting[i] == 0).collect();
    let mut next_stuck = 0;
    while order.len() + buffered.len() < n {
        let Some(x) = ready.pop_front() else {
            // A cycle: read one copy's source now, which releases every
            // copy that waited for it to have read.
            while done[next_stuck] {
                next_stuck += 1;
            }
            let x = next_stuck;
            done[x] = true;
            buffered.push(x);
            release(x, copies, &mut waiting, &mut ready, &done);
            continue;
        };
        if done[x] {
            continue;
        }
        done[x] = true;
        order.push(x);
        release(x, copies, &mut waiting, &mut ready, &done);
    }
    (order, buffered)
}

/// `x` has read its source: the copies writing over it may go.
fn release(
    x: usize,
    copies: &[(u64, u64, u64)],
    waiting: &mut [usize],
    ready: &mut VecDeque<usize>,
    done: &[bool],
) {
    let (_, src, len) = copies[x];
    let n = copies.len();
    let mut y = copies.partition_point(|&(dst, _, l)| dst + l <= src);
    while y < n && copies[y].0 < src + len {
        if y != x && !done[y] {
            waiting[y] -= 1;
            if waiting[y] == 0 {
                ready.push_back(y);
            }
        }
        y += 1;
    }
}

/// Moves `len` bytes from `src` to `dst` within `file`, like `memmove`.
pub(super) fn move_within<F: Read + Write + Seek>(
    file: &mut F,
    src: u64,
    dst: u64,
    len: u64,
    buf: &mut [u8],
) -> io::Result<()> {
    let chunk = buf.len() as u64;
    let mut done = 0;
    while done < len {
        let n = chunk.min(len - done);
        // Backwards when moving up, so no chunk reads what one wrote.
        let off = if dst > src { len - done - n } else { done };
        let piece = &mut buf[..n as usize];
        file.seek(SeekFrom::Start(src + off))?;
        file.read_exact(piece)?;
        file.seek(SeekFrom::Start(dst + off))?;
        file.write_all(piece)?;
        done += n;
    }
    Ok(())
}
