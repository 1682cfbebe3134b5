//! Bodies of the fuzz targets in `fuzz/`, here so that a stable `#[test]`
//! replays `fuzz/corpus/*` without cargo-fuzz or nightly. Not API.

use std::fs::File;
use std::io::{Cursor, Read, Seek, Write};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{
    Answer, Compressed, InPlacePatch, Incoming, Limits, PatchError, Plan, RefineOptions, RollBack,
    Signature, SignatureOptions, Summary, delta, patch, patch_in_place, write_undo,
};

/// A fuzz target body.
pub type Target = fn(&[u8]);

/// Every target, by the name of its `fuzz/fuzz_targets/*.rs` and corpus
/// directory.
pub const TARGETS: [(&str, Target); 6] = [
    ("parse_signature", parse_signature),
    ("parse_refinement", parse_refinement),
    ("parse_delta", parse_delta),
    ("apply", apply),
    ("round_trip", round_trip),
    ("roll_back", roll_back),
];

/// Limits small enough that a fuzzer notices any unbounded allocation.
pub fn limits() -> Limits {
    Limits {
        max_blocks: 1 << 12,
        max_file_len: 1 << 20,
    }
}

/// The basis `parse_delta` patches against: 3000 seeded bytes.
pub fn basis() -> Vec<u8> {
    pseudo_random(3000, 0x9E37_79B9_7F4A_7C15)
}

/// `len` bytes of a xorshift stream from `seed`: incompressible, and the
/// same for a seed.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The delta of `new` against a signature of `old` at `block_size`.
pub fn delta_of(old: &[u8], new: &[u8], block_size: u32) -> Vec<u8> {
    let options = SignatureOptions {
        block_size: Some(block_size),
        ..Default::default()
    };
    let sig = Signature::compute(old, old.len() as u64, &options).expect("slice");
    let mut d = Vec::new();
    delta(&sig, new, &mut d).expect("vec");
    d
}

/// Refinement down to `min_block_size`, whatever it costs: small inputs
/// would never pay for a round otherwise.
pub fn eager(min_block_size: u32) -> RefineOptions {
    RefineOptions {
        min_block_size,
        max_rounds: 3,
        cost_fraction: 0,
        min_yield: 0,
        deep_round_min_literal: 0,
    }
}

/// Target `parse_signature`: decoding a signature, granule summary or
/// answer to a refinement never panics, never reads past it, and what
/// decodes re-encodes to the same bytes.
pub fn parse_signature(data: &[u8]) {
    let mut reader = data;
    if let Ok(sig) = Summary::read_from(&mut reader, &limits()) {
        let used = data.len() - reader.len();
        let mut again = Vec::new();
        let written = sig.write_to(&mut again).expect("writing to a Vec");
        assert_eq!(written, again.len() as u64);
        assert_eq!(again, &data[..used], "re-encoding differs");
    }
}

/// Target `parse_refinement`: decoding what follows a signature never
/// panics; a refinement re-encodes to the bytes it was read from, and
/// answering it over [`basis`] is a clear error or an answer with a hash
/// for each block asked for, which decodes as itself.
pub fn parse_refinement(data: &[u8]) {
    let mut reader = data;
    if let Ok(Incoming::Refinement(request)) = Incoming::read_from(&mut reader, &limits()) {
        let used = data.len() - reader.len();
        let mut again = Vec::new();
        let written = request.write_to(&mut again).expect("writing to a Vec");
        assert_eq!(written, again.len() as u64);
        assert_eq!(again, &data[..used], "re-encoding differs");
        let basis = basis();
        if let Ok(answer) = Answer::compute(Cursor::new(&basis), basis.len() as u64, &request, 7) {
            assert_eq!(answer.block_count(), blocks(&request));
            let mut encoded = Vec::new();
            answer.write_to(&mut encoded).expect("writing to a Vec");
            let decoded = Summary::read_from(&encoded[..], &limits()).expect("own answer");
            assert_eq!(decoded, Summary::Answer(answer));
        }
    }
}

/// The blocks `request` asks for: its ranges cut into blocks.
fn blocks(request: &crate::Refinement) -> usize {
    let bs = u64::from(request.block_size());
    request
        .ranges()
        .iter()
        .map(|r| r.1.div_ceil(bs))
        .sum::<u64>() as usize
}

/// Target `parse_delta`: patching [`basis`] with arbitrary bytes never
/// panics, never writes beyond the limit, never reads past the delta, and
/// succeeds only with output that matches the end marker.
pub fn parse_delta(data: &[u8]) {
    check_patch(&basis(), data);
}

/// Target `apply`: the first two bytes give the basis length, the basis
/// follows, then the delta; checked as in [`parse_delta`].
pub fn apply(data: &[u8]) {
    let Some((head, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let n = usize::from(u16::from_be_bytes(*head)) % (rest.len() + 1);
    let (basis, delta) = rest.split_at(n);
    check_patch(basis, delta);
}

/// Target `round_trip`: the input split in two is an old and a new file;
/// signature, delta and patch (through the encodings, block size from the
/// first byte) must rebuild the new file exactly.
pub fn round_trip(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let (old, new) = rest.split_at(rest.len() / 2);
    // Blocks of 1 to 64 bytes, but never more blocks than the limits take
    // (the target checks the codec, not the limit).
    let fewest = old.len().div_ceil(limits().max_blocks as usize).max(1);
    // The seed varies with the input too.
    let seed = u64::from(first);
    let opts = SignatureOptions {
        block_size: Some((u32::from(first % 64) + 1).max(fewest as u32)),
        seed,
    };
    let sig = Signature::compute(old, old.len() as u64, &opts).expect("reading a slice");
    let mut stream = Vec::new();
    sig.write_to(&mut stream).expect("writing to a Vec");
    let mut reader = &stream[..];
    let sig = Signature::read_from(&mut reader, &limits()).expect("own signature");
    assert!(reader.is_empty());
    let mut d = Vec::new();
    delta(&sig, new, &mut d).expect("delta into a Vec");
    let mut out = Vec::new();
    patch(Cursor::new(old), &d[..], &mut out, &limits()).expect("own delta");
    assert_eq!(out, new);
    // Literals compressed (at a level from the input), wherever it pays.
    let mut z = Vec::new();
    let compressed = Compressed {
        out: &mut z,
        level: Some(i32::from(first % 5) + 1),
    };
    let stats = delta(&sig, new, compressed).expect("delta into a Vec");
    assert!(stats.literal_wire_bytes <= stats.literal_bytes);
    out.clear();
    let patched = patch(Cursor::new(old), &z[..], &mut out, &limits()).expect("own delta");
    assert_eq!(out, new);
    assert_eq!(patched.literal_wire_bytes, stats.literal_wire_bytes);

    // Refined, down to blocks of 1 byte, through the encodings too.
    let mut plan = Plan::new(&sig, new).expect("reading a slice");
    while let Some(request) = plan.refinement(&eager(1)) {
        let mut asked = Vec::new();
        request.write_to(&mut asked).expect("writing to a Vec");
        let Ok(Incoming::Refinement(request)) = Incoming::read_from(&asked[..], &limits()) else {
            panic!("own refinement");
        };
        let answer = Answer::compute(Cursor::new(old), old.len() as u64, &request, seed)
            .expect("own refinement's ranges");
        let mut encoded = Vec::new();
        answer.write_to(&mut encoded).expect("writing to a Vec");
        let Ok(Summary::Answer(answer)) = Summary::read_from(&encoded[..], &limits()) else {
            panic!("own answer");
        };
        plan.refine(&answer, Cursor::new(new))
            .expect("reading a slice");
    }
    for level in [None, Some(3)] {
        let mut d = Vec::new();
        plan.write(Cursor::new(new), Compressed { out: &mut d, level })
            .expect("writing to a Vec");
        out.clear();
        patch(Cursor::new(old), &d[..], &mut out, &limits()).expect("own refined delta");
        assert_eq!(out, new);
    }
}

fn check_patch(basis: &[u8], data: &[u8]) {
    let limits = limits();
    let mut reader = data;
    let mut out = Vec::new();
    let result = patch(Cursor::new(basis), &mut reader, &mut out, &limits);
    assert!(out.len() as u64 <= limits.max_file_len);
    match result {
        Ok(stats) => {
            assert_eq!(stats.written_bytes, out.len() as u64);
            assert_eq!(stats.copied_bytes + stats.literal_bytes, out.len() as u64);
            // The end marker is the last thing read: 1 + 8 + 32 bytes.
            let used = data.len() - reader.len();
            assert!(used >= 5 + 8 + 41);
        }
        Err(PatchError::Io(e)) => panic!("I/O error from in-memory input: {e}"),
        Err(_) => {}
    }
    // Differential: in place over a copy of the basis, the same verdict
    // and, on success, the same file.
    let mut file = Cursor::new(basis.to_vec());
    let in_place = patch_in_place(&mut file, data, &limits);
    match (&result, &in_place) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b);
            assert!(file.get_ref() == &out, "in-place result differs");
        }
        (Err(_), Err(_)) => {}
        _ => panic!("patch {result:?} but patch_in_place {in_place:?}"),
    }
}

/// An unnamed scratch file holding `bytes` (created in the temporary
/// directory and unlinked at once).
fn scratch_file(bytes: &[u8]) -> File {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "wasmover-fuzz-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let mut file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .expect("temporary directory writable");
    let _ = std::fs::remove_file(&path);
    file.write_all(bytes).expect("scratch file writable");
    file
}

fn contents(mut file: &File) -> Vec<u8> {
    let mut out = Vec::new();
    file.rewind().expect("seekable");
    file.read_to_end(&mut out).expect("readable");
    out
}

/// The file [`roll_back`] journals are for.
fn journaled_file() -> Vec<u8> {
    (0..8192u32).map(|i| (i * 31 % 251) as u8).collect()
}

/// Target `roll_back`: the input is an undo journal of an 8 KiB file.
/// Rolling back never panics, and unless it restores (only a journal with
/// its hash intact does) it leaves the file exactly as it was.
pub fn roll_back(data: &[u8]) {
    let journal = scratch_file(data);
    let before = journaled_file();
    let target = scratch_file(&before);
    match crate::roll_back(&journal, &target) {
        Ok(RollBack::Restored { .. }) => {}
        Ok(RollBack::Incomplete) | Err(_) => {
            assert!(contents(&target) == before, "a refused journal wrote")
        }
    }
}

/// Seed inputs for every target: valid encodings and broken variants.
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let basis = basis();
    let mut new = basis.clone();
    new.splice(100..100, *b"inserted");
    new[2000..2040].fill(7);
    new.extend_from_slice(b"appended");
    let mut in_place = basis.clone();
    in_place[2000..2040].fill(7);
    let mut seeds = Vec::new();
    for bs in [64u32, 700, 4096] {
        let sig = Signature::compute(
            &basis[..],
            basis.len() as u64,
            &SignatureOptions {
                block_size: Some(bs),
                seed: 0x5EED,
            },
        )
        .expect("slice");
        let mut s = Vec::new();
        sig.write_to(&mut s).expect("vec");
        let mut d = Vec::new();
        delta(&sig, &new[..], &mut d).expect("vec");
        // Compressible literals, sent compressed: text appended.
        let mut z = Vec::new();
        let mut text = new.clone();
        text.extend(
            (0..64)
                .flat_map(|i| format!("{i:04} GET /index.html 200 OK\n").into_bytes())
                .collect::<Vec<u8>>(),
        );
        delta(
            &sig,
            &text[..],
            Compressed {
                out: &mut z,
                level: Some(3),
            },
        )
        .expect("vec");
        let variants = |name: &str, bytes: &[u8]| {
            let mut flipped = bytes.to_vec();
            let mid = flipped.len() / 2;
            flipped[mid] ^= 0x40;
            vec![
                (format!("{name}-bs{bs}-valid"), bytes.to_vec()),
                (format!("{name}-bs{bs}-truncated"), bytes[..mid].to_vec()),
                (format!("{name}-bs{bs}-flipped"), flipped),
            ]
        };
        for (name, bytes) in variants("sig", &s) {
            seeds.push(("parse_signature", name, bytes));
        }
        // One refinement round, where the edits leave literals to refine:
        // the request, its answer, the refined delta. The edits move data,
        // so the round searches; edits in place only make it aligned.
        let mut rd = Vec::new();
        for (kind, new) in [("", &new), ("aligned-", &in_place)] {
            let mut plan = Plan::new(&sig, &new[..]).expect("slice");
            let Some(request) = plan.refinement(&eager(8)) else {
                continue;
            };
            assert_eq!(request.aligned(), !kind.is_empty());
            let mut r = Vec::new();
            request.write_to(&mut r).expect("vec");
            for (name, bytes) in variants(&format!("{kind}refinement"), &r) {
                seeds.push(("parse_refinement", name, bytes));
            }
            let answer = Answer::compute(Cursor::new(&basis), basis.len() as u64, &request, 7)
                .expect("own ranges");
            let mut f = Vec::new();
            answer.write_to(&mut f).expect("vec");
            for (name, bytes) in variants(&format!("{kind}answer"), &f) {
                seeds.push(("parse_signature", name, bytes));
            }
            plan.refine(&answer, Cursor::new(&new)).expect("slice");
            if kind.is_empty() {
                plan.write(Cursor::new(&new), &mut rd).expect("vec");
            }
        }
        for (name, bytes) in variants("delta", &d)
            .into_iter()
            .chain(variants("compressed-delta", &z))
            .chain(if rd.is_empty() {
                Vec::new()
            } else {
                variants("refined-delta", &rd)
            })
        {
            let mut framed = (basis.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&basis);
            framed.extend_from_slice(&bytes);
            seeds.push(("apply", name.clone(), framed));
            seeds.push(("parse_delta", name, bytes));
        }
        let mut pair = vec![bs as u8];
        pair.extend_from_slice(&basis[..1500]);
        pair.extend_from_slice(&new[..1500]);
        seeds.push(("round_trip", format!("pair-bs{bs}"), pair));
    }
    // The undo journal of patching the journaled file into a new one that
    // keeps a run of its zeros: saved bytes and a zero record.
    let old = {
        let mut old = journaled_file();
        old[4096..6144].fill(0);
        old
    };
    let mut new = old.clone();
    new[1000..1100].fill(9);
    new[4096..6144].fill(1);
    new.truncate(7000);
    let d = delta_of(&old, &new, 256);
    let mut file = Cursor::new(old.clone());
    let in_place = InPlacePatch::read(&mut file, &d[..], &limits(), None).expect("own delta");
    let target = scratch_file(&old);
    let journal = scratch_file(&[]);
    write_undo(&target, &in_place, &journal).expect("scratch files");
    let bytes = contents(&journal);
    let mid = bytes.len() / 2;
    let mut flipped = bytes.clone();
    flipped[mid] ^= 0x40;
    seeds.push(("roll_back", "journal-valid".into(), bytes.clone()));
    seeds.push((
        "roll_back",
        "journal-truncated".into(),
        bytes[..mid].to_vec(),
    ));
    seeds.push(("roll_back", "journal-flipped".into(), flipped));
    seeds
}
