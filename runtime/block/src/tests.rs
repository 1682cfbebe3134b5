//! Round trips and hostile inputs.

use std::io::Cursor;

use proptest::prelude::*;

use crate::fuzzing::{eager, pseudo_random as data};
use crate::*;

/// The seed the tests' signatures and summaries are keyed by, unless a
/// test is about seeds: not 0, so that a side that ignored it would fail.
const SEED: u64 = 0x5EED_7E57;

/// The content hash of `data`, which deltas end with.
fn content(data: &[u8]) -> blake3::Hash {
    let mut hasher = ContentHasher::new();
    hasher.update(data);
    hasher.finalize()
}

fn signature(old: &[u8], block_size: Option<u32>) -> Signature {
    let options = SignatureOptions {
        block_size,
        seed: SEED,
    };
    Signature::compute(old, old.len() as u64, &options).unwrap()
}

fn round_trip(old: &[u8], new: &[u8], block_size: Option<u32>) -> (DeltaStats, PatchStats) {
    let sig = signature(old, block_size);
    let mut encoded = Vec::new();
    let written = sig.write_to(&mut encoded).unwrap();
    assert_eq!(written, encoded.len() as u64);
    let sig = Signature::read_from(&encoded[..], &Limits::default()).unwrap();
    let mut delta_bytes = Vec::new();
    let d = delta(&sig, new, &mut delta_bytes).unwrap();
    assert_eq!(d.encoded_bytes, delta_bytes.len() as u64);
    let mut rebuilt = Vec::new();
    let p = patch(
        Cursor::new(old),
        &delta_bytes[..],
        &mut rebuilt,
        &Limits::default(),
    )
    .unwrap();
    assert!(
        rebuilt == new,
        "rebuilt file differs ({} vs {} bytes)",
        rebuilt.len(),
        new.len()
    );
    assert_eq!(
        (p.copied_bytes, p.literal_bytes, p.zero_bytes),
        (d.matched_bytes, d.literal_bytes, d.zero_bytes)
    );
    // Both report the new file's BLAKE3, so a host need not hash it again.
    assert_eq!((d.hash, p.hash), (*content(new).as_bytes(), d.hash));
    assert_eq!(
        (d.literal_wire_bytes, p.literal_wire_bytes),
        (d.literal_bytes, d.literal_bytes)
    );
    // The same with literals compressed: the same instructions, the
    // literals in fewer bytes where they compress.
    let mut compressed = Vec::new();
    let z = delta(
        &sig,
        new,
        Compressed {
            out: &mut compressed,
            level: Some(1),
        },
    )
    .unwrap();
    assert_eq!(z.encoded_bytes, compressed.len() as u64);
    assert_eq!(
        (z.matched_bytes, z.literal_bytes, z.zero_bytes, z.hash),
        (d.matched_bytes, d.literal_bytes, d.zero_bytes, d.hash)
    );
    assert!(z.literal_wire_bytes <= z.literal_bytes);
    rebuilt.clear();
    let zp = patch(
        Cursor::new(old),
        &compressed[..],
        &mut rebuilt,
        &Limits::default(),
    )
    .unwrap();
    assert!(
        rebuilt == new,
        "rebuilt file differs with compressed literals"
    );
    assert_eq!(zp.literal_wire_bytes, z.literal_wire_bytes);
    (d, p)
}

/// What crossed the wire in a refined exchange, by direction.
#[derive(Debug, Default)]
struct Wire {
    /// Signatures, from the basis side.
    signatures: u64,
    /// Refinement requests and the delta, from the new file's side.
    requests_and_delta: u64,
    /// Block sizes of the refinement rounds, in order.
    rounds: Vec<u32>,
    /// Which of them were aligned.
    aligned: Vec<bool>,
}

/// Signature, rounds of refinement and delta through their encodings, as
/// two peers exchange them, then patch and in-place patch; both must
/// rebuild `new`.
fn refined_round_trip(
    old: &[u8],
    new: &[u8],
    block_size: u32,
    options: &RefineOptions,
) -> (DeltaStats, Wire) {
    let summary = Summary::Signature(signature(old, Some(block_size)));
    summarized_round_trip(old, new, summary, options)
}

/// [`refined_round_trip`], starting from the granule summary of `old`.
fn granule_first_round_trip(old: &[u8], new: &[u8], options: &RefineOptions) -> (DeltaStats, Wire) {
    let hashes = BasisHashes::compute(old, old.len() as u64).unwrap();
    summarized_round_trip(old, new, Summary::Granules(hashes.summary(SEED)), options)
}

fn summarized_round_trip(
    old: &[u8],
    new: &[u8],
    summary: Summary,
    options: &RefineOptions,
) -> (DeltaStats, Wire) {
    let limits = Limits::default();
    let mut wire = Wire::default();
    let mut encoded = Vec::new();
    wire.signatures += summary.write_to(&mut encoded).unwrap();
    assert_eq!(wire.signatures, encoded.len() as u64);
    let decoded = Summary::read_from(&encoded[..], &limits).unwrap();
    assert_eq!(decoded, summary);
    let mut plan = match decoded {
        Summary::Signature(sig) => {
            assert!(!sig.is_refinement());
            Plan::new(&sig, new).unwrap()
        }
        Summary::Granules(summary) => Plan::from_granules(&summary, new).unwrap(),
        Summary::Answer(_) => panic!("a first summary decodes as one"),
    };
    let mut literal = plan.literal_bytes();
    while let Some(request) = plan.refinement(options) {
        let mut asked = Vec::new();
        wire.rounds.push(request.block_size());
        wire.aligned.push(request.aligned());
        wire.requests_and_delta += request.write_to(&mut asked).unwrap();
        let Incoming::Refinement(request) = Incoming::read_from(&asked[..], &limits).unwrap()
        else {
            panic!("a refinement decodes as one");
        };
        // Each answer under a seed of its own, as the host draws them.
        let seed = SEED + wire.rounds.len() as u64;
        let before = wire.signatures;
        let answer = Answer::compute(Cursor::new(old), old.len() as u64, &request, seed).unwrap();
        assert_eq!(matches!(answer, Answer::Aligned(_)), request.aligned());
        let mut encoded = Vec::new();
        wire.signatures += answer.write_to(&mut encoded).unwrap();
        assert_eq!(wire.signatures - before, encoded.len() as u64);
        let Summary::Answer(answer) = Summary::read_from(&encoded[..], &limits).unwrap() else {
            panic!("an answer decodes as one");
        };
        plan.refine(&answer, Cursor::new(new)).unwrap();
        assert!(
            plan.literal_bytes() <= literal,
            "a round never adds literals"
        );
        literal = plan.literal_bytes();
    }
    let mut delta_bytes = Vec::new();
    let stats = plan.write(Cursor::new(new), &mut delta_bytes).unwrap();
    assert_eq!(stats.encoded_bytes, delta_bytes.len() as u64);
    assert_eq!(stats.literal_bytes, literal);
    wire.requests_and_delta += stats.encoded_bytes;
    let Incoming::Delta(reader) = Incoming::read_from(&delta_bytes[..], &limits).unwrap() else {
        panic!("a delta decodes as one");
    };
    let mut rebuilt = Vec::new();
    let p = patch(Cursor::new(old), reader, &mut rebuilt, &limits).unwrap();
    assert!(rebuilt == new, "refined delta rebuilt a different file");
    assert_eq!(
        (p.copied_bytes, p.literal_bytes),
        (stats.matched_bytes, stats.literal_bytes)
    );
    assert_eq!((stats.hash, p.hash), (*content(new).as_bytes(), stats.hash));
    let mut file = Cursor::new(old.to_vec());
    let in_place = patch_in_place(&mut file, &delta_bytes[..], &limits).unwrap();
    assert_eq!(in_place, p);
    assert!(
        file.into_inner() == new,
        "refined delta in place rebuilt a different file"
    );
    (stats, wire)
}

#[derive(Clone, Debug)]
enum Edit {
    Replace(usize, Vec<u8>),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
    Append(Vec<u8>),
}

fn apply(old: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut new = old.to_vec();
    for edit in edits {
        let at = |i: usize| {
            if new.is_empty() {
                0
            } else {
                i % (new.len() + 1)
            }
        };
        match edit {
            Edit::Replace(i, b) => {
                let i = at(*i);
                let end = (i + b.len()).min(new.len());
                new.splice(i..end, b.iter().copied());
            }
            Edit::Insert(i, b) => {
                let i = at(*i);
                new.splice(i..i, b.iter().copied());
            }
            Edit::Delete(i, n) => {
                let i = at(*i);
                let end = (i + n).min(new.len());
                new.drain(i..end);
            }
            Edit::Truncate(n) => new.truncate(*n % (new.len() + 1)),
            Edit::Append(b) => new.extend_from_slice(b),
        }
    }
    new
}

fn edit() -> impl Strategy<Value = Edit> {
    let bytes = proptest::collection::vec(any::<u8>(), 0..300);
    prop_oneof![
        (any::<usize>(), bytes.clone()).prop_map(|(i, b)| Edit::Replace(i, b)),
        (any::<usize>(), bytes.clone()).prop_map(|(i, b)| Edit::Insert(i, b)),
        (any::<usize>(), 0usize..500).prop_map(|(i, n)| Edit::Delete(i, n)),
        any::<usize>().prop_map(Edit::Truncate),
        bytes.prop_map(Edit::Append),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn patch_of_delta_rebuilds_the_new_file(
        len in 0usize..20_000,
        seed in any::<u64>(),
        edits in proptest::collection::vec(edit(), 0..6),
        block_size in prop_oneof![Just(None), (1u32..600).prop_map(Some)],
    ) {
        let old = data(len, seed);
        let new = apply(&old, &edits);
        round_trip(&old, &new, block_size);
    }

    #[test]
    fn refined_deltas_rebuild_the_new_file(
        len in 0usize..40_000,
        seed in any::<u64>(),
        edits in proptest::collection::vec(edit(), 0..8),
        block_size in 16u32..2048,
        min_block in 1u32..64,
    ) {
        let old = data(len, seed);
        let new = apply(&old, &edits);
        let (refined, _) = refined_round_trip(&old, &new, block_size, &eager(min_block));
        let (plain, _) = round_trip(&old, &new, Some(block_size));
        prop_assert!(refined.literal_bytes <= plain.literal_bytes);
    }

    /// Granule-first: any edit of a file of several granules rebuilds
    /// through the same rounds, and copies every granule left in place.
    #[test]
    fn granule_first_deltas_rebuild_the_new_file(
        granules in 0usize..10,
        extra in 0usize..20_000,
        seed in any::<u64>(),
        edits in proptest::collection::vec(edit(), 0..6),
    ) {
        let old = data(granules * (16 << 10) + extra, seed);
        let new = apply(&old, &edits);
        let (stats, _) = granule_first_round_trip(&old, &new, &RefineOptions::default());
        let same_place = old
            .chunks(16 << 10)
            .zip(new.chunks(16 << 10))
            .filter(|(a, b)| a == b)
            .map(|(a, _)| a.len() as u64)
            .sum::<u64>();
        prop_assert!(stats.matched_bytes >= same_place, "{stats:?}, {same_place} in place");
    }

    #[test]
    fn sizes_around_block_boundaries(extra in 0usize..3, blocks in 0usize..5, shrink in 0usize..3) {
        let bs = 64usize;
        let old = data(blocks * bs + extra, 5);
        let new = old[..old.len().saturating_sub(shrink)].to_vec();
        round_trip(&old, &new, Some(bs as u32));
        round_trip(&new, &old, Some(bs as u32));
    }

    #[test]
    fn decoders_never_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = Signature::read_from(&bytes[..], &Limits::default());
        let _ = Summary::read_from(&bytes[..], &Limits::default());
        let mut out = Vec::new();
        let _ = patch(Cursor::new(&b"basis"[..]), &bytes[..], &mut out, &Limits::default());
    }
}

#[test]
fn unchanged_file_sends_no_literals() {
    let old = data(1 << 20, 1);
    let (d, _) = round_trip(&old, &old, None);
    assert_eq!(d.literal_bytes, 0);
    assert_eq!(d.matched_bytes, old.len() as u64);
    // One coalesced copy: header, one copy instruction, end.
    assert!(d.encoded_bytes < 100, "{d:?}");
}

#[test]
fn a_shift_near_the_start_still_matches_the_rest() {
    let old = data(1 << 20, 2);
    let mut new = old.clone();
    new.splice(100..100, *b"xyz");
    let (d, _) = round_trip(&old, &new, None);
    assert!(d.literal_bytes <= 2 * 4096 + 3, "{d:?}");
}

#[test]
fn empty_files_and_absent_basis() {
    round_trip(b"", b"", None);
    round_trip(b"", b"all new", None);
    round_trip(b"old", b"", None);
    let new = data(3 << 20, 9);
    let mut out = Vec::new();
    let d = delta(&Signature::empty(), &new[..], &mut out).unwrap();
    assert_eq!(d.literal_bytes, new.len() as u64);
}

#[test]
fn encodings_are_self_delimiting_on_a_shared_stream() {
    let old = data(50_000, 3);
    let new = data(50_000, 4);
    let sig = signature(&old, Some(1000));
    let mut stream = Vec::new();
    sig.write_to(&mut stream).unwrap();
    delta(&sig, &new[..], &mut stream).unwrap();
    stream.extend_from_slice(b"next message");

    let mut reader = Cursor::new(stream);
    let back = Signature::read_from(&mut reader, &Limits::default()).unwrap();
    assert_eq!(back, sig);
    let mut rebuilt = Vec::new();
    patch(
        Cursor::new(&old),
        &mut reader,
        &mut rebuilt,
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(rebuilt, new);
    let pos = reader.position() as usize;
    assert_eq!(&reader.into_inner()[pos..], b"next message");
}

#[test]
fn a_wrong_basis_fails_verification_instead_of_producing_a_wrong_file() {
    let old = data(100_000, 5);
    let new = old.clone();
    let sig = signature(&old, Some(1000));
    let mut d = Vec::new();
    delta(&sig, &new[..], &mut d).unwrap();
    // The receiver's basis changed after its signature was taken (the same
    // situation as a weak+strong collision): the copies read other bytes.
    let mut other = old.clone();
    other[50_000] ^= 1;
    let err = patch(
        Cursor::new(&other),
        &d[..],
        &mut Vec::new(),
        &Limits::default(),
    )
    .unwrap_err();
    assert!(matches!(err, PatchError::Verification { .. }), "{err}");
}

#[test]
fn every_truncation_of_a_valid_encoding_is_an_error() {
    let old = data(5000, 6);
    let new = apply(&old, &[Edit::Insert(10, vec![1, 2, 3])]);
    let sig = signature(&old, Some(512));
    let mut s = Vec::new();
    sig.write_to(&mut s).unwrap();
    for cut in 0..s.len() {
        assert!(matches!(
            Signature::read_from(&s[..cut], &Limits::default()),
            Err(FormatError::Truncated { .. })
        ));
    }
    let mut d = Vec::new();
    delta(&sig, &new[..], &mut d).unwrap();
    for cut in 0..d.len() {
        let err = patch(
            Cursor::new(&old),
            &d[..cut],
            &mut Vec::new(),
            &Limits::default(),
        )
        .unwrap_err();
        assert!(
            matches!(err, PatchError::Format(FormatError::Truncated { .. })),
            "cut at {cut}: {err}"
        );
    }
}

#[test]
fn hostile_headers_are_refused_without_allocating() {
    // A signature claiming 2^40 blocks of 1 byte: one range, from 0 and
    // 2^40 long (varints: 0, then five empty groups and 0x20).
    let mut s = b"WMSG\x08".to_vec();
    s.extend_from_slice(&1u32.to_be_bytes());
    s.extend_from_slice(&(1u64 << 40).to_be_bytes());
    s.push(0);
    s.extend_from_slice(&1u64.to_be_bytes());
    s.extend_from_slice(&[0, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20]);
    s.extend_from_slice(&(1u64 << 40).to_be_bytes());
    assert!(matches!(
        Signature::read_from(&s[..], &Limits::default()),
        Err(FormatError::TooLarge { .. })
    ));
    // A refinement claiming 2^40 ranges.
    let mut r = b"WMRF\x08".to_vec();
    r.extend_from_slice(&1024u32.to_be_bytes());
    r.push(0);
    r.extend_from_slice(&(1u64 << 40).to_be_bytes());
    assert!(matches!(
        Incoming::read_from(&r[..], &Limits::default()),
        Err(FormatError::TooLarge { .. })
    ));
    // A copy far outside the basis.
    let mut d = b"WMDL\x08".to_vec();
    d.extend_from_slice(&32u64.to_be_bytes());
    d.push(1);
    d.extend_from_slice(&(u64::MAX / 2).to_be_bytes());
    d.extend_from_slice(&1u64.to_be_bytes());
    let err = patch(
        Cursor::new(&[0u8; 32]),
        &d[..],
        &mut Vec::new(),
        &Limits::default(),
    )
    .unwrap_err();
    assert!(matches!(err, PatchError::OutOfBasis { .. }), "{err}");
    // Wrong magic and version.
    assert!(matches!(
        Signature::read_from(&b"WMDL\x08"[..], &Limits::default()),
        Err(FormatError::BadMagic { .. })
    ));
    assert!(matches!(
        Signature::read_from(&b"WMSG\x09"[..], &Limits::default()),
        Err(FormatError::UnsupportedVersion { found: 9, .. })
    ));
}

#[test]
fn a_block_collision_fails_verification_instead_of_producing_a_wrong_file() {
    // The signature claims the basis holds `new`'s blocks (what a weak and
    // strong hash collision amounts to) while the basis really holds `old`:
    // every copy reads the wrong bytes, and only verification can tell.
    let old = data(64_000, 7);
    let new = data(64_000, 8);
    let forged = signature(&new, Some(4096));
    let mut d = Vec::new();
    let stats = delta(&forged, &new[..], &mut d).unwrap();
    assert_eq!(stats.literal_bytes, 0);
    let err = patch(
        Cursor::new(&old),
        &d[..],
        &mut Vec::new(),
        &Limits::default(),
    )
    .unwrap_err();
    assert!(matches!(err, PatchError::Verification { .. }), "{err}");
}

/// A valid signature followed by a valid delta, and the basis they need.
fn valid_encodings(seed: u64, block_size: u32) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let old = data(3000 + (seed % 3000) as usize, seed);
    let new = apply(
        &old,
        &[
            Edit::Insert(seed as usize, vec![9; 17]),
            Edit::Replace((seed as usize).wrapping_mul(7), vec![1; 40]),
        ],
    );
    let sig = signature(&old, Some(block_size));
    let (mut s, mut d) = (Vec::new(), Vec::new());
    sig.write_to(&mut s).unwrap();
    delta(&sig, &new[..], &mut d).unwrap();
    (old, s, d)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn truncated_or_corrupted_encodings_are_errors_not_panics(
        seed in any::<u64>(),
        block_size in 16u32..700,
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let (old, s, d) = valid_encodings(seed, block_size);
        let limits = Limits::default();
        let sig_cut = cut.index(s.len());
        prop_assert!(
            matches!(
                Signature::read_from(&s[..sig_cut], &limits),
                Err(FormatError::Truncated { .. })
            ),
            "signature cut at {}",
            sig_cut
        );
        let delta_cut = cut.index(d.len());
        let truncated = patch(Cursor::new(&old), &d[..delta_cut], &mut Vec::new(), &limits);
        prop_assert!(
            matches!(truncated, Err(PatchError::Format(FormatError::Truncated { .. }))),
            "delta cut at {}: {:?}",
            delta_cut,
            truncated
        );
        // One flipped bit anywhere: the decoder may reject it or (in a
        // hash) accept it, but never panics, and a rebuilt file that is
        // not the announced one is never reported as a success.
        let mut s2 = s.clone();
        s2[flip.index(s.len())] ^= 1 << bit;
        let _ = Signature::read_from(&s2[..], &limits);
        let mut d2 = d.clone();
        d2[flip.index(d.len())] ^= 1 << bit;
        let mut out = Vec::new();
        if patch(Cursor::new(&old), &d2[..], &mut out, &limits).is_ok() {
            // Only a flip in a field verification covers can get here,
            // such as the copy start pointing at identical bytes.
            let mut expected = Vec::new();
            patch(Cursor::new(&old), &d[..], &mut expected, &limits).unwrap();
            prop_assert_eq!(out, expected);
        }
    }
}

#[test]
fn a_large_signature_equals_the_plain_per_block_hashes() {
    // Several parallel chunks plus a short last block.
    let old = data((20 << 20) + 1234, 10);
    let sig = signature(&old, Some(8192));
    assert_eq!(sig.block_count(), old.len().div_ceil(8192));
    for (i, (block, bytes)) in sig.blocks().iter().zip(old.chunks(8192)).enumerate() {
        assert_eq!(
            block.weak,
            crate::rolling::Rolling::new(bytes).digest(),
            "block {i}"
        );
        assert_eq!(
            block.strong,
            crate::rolling::strong(SEED, bytes),
            "block {i}"
        );
    }
}

#[test]
fn hashes_and_tags_are_keyed_by_their_seed() {
    let old = data(3 << 20, 21);
    let len = old.len() as u64;
    let keyed = |seed| {
        let options = SignatureOptions {
            block_size: Some(4096),
            seed,
        };
        Signature::compute(&old[..], len, &options).unwrap()
    };
    let (a, b) = (keyed(1), keyed(2));
    let pairs = || a.blocks().iter().zip(b.blocks());
    assert!(pairs().all(|(x, y)| x.weak == y.weak));
    assert!(pairs().all(|(x, y)| x.strong != y.strong));
    let hashes = BasisHashes::compute(&old[..], len).unwrap();
    let (x, y) = (hashes.summary(1), hashes.summary(2));
    let granules = (0..).map_while(|i| Some((x.granule_at(i)?, y.granule_at(i)?)));
    assert!(granules.clone().count() > 100);
    assert!(granules.clone().all(|((t, _), (u, _))| t != u));
    // The side with the new file hashes under the seed it is sent, so
    // every seed finds the unchanged file whole.
    for sig in [&a, &b] {
        let stats = delta(sig, &old[..], Vec::new()).unwrap();
        assert_eq!(stats.literal_bytes, 0);
    }
    for summary in [&x, &y] {
        let plan = Plan::from_granules(summary, &old[..]).unwrap();
        assert_eq!(plan.literal_bytes(), 0);
    }
}

#[test]
fn blocks_rewritten_in_place_cost_only_themselves() {
    let bs = 4096;
    let old = data(1 << 20, 11);
    let mut new = old.clone();
    // One block rewritten, then two adjacent ones, then three.
    for range in [10 * bs..11 * bs, 40 * bs..42 * bs, 100 * bs..103 * bs] {
        for b in &mut new[range] {
            *b = b.wrapping_add(1);
        }
    }
    let (d, _) = round_trip(&old, &new, Some(bs as u32));
    assert_eq!(d.literal_bytes, 6 * bs as u64, "{d:?}");
}

/// Where `fuzz/` keeps its corpus, one directory per target.
fn corpus_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus")
}

#[test]
fn fuzz_corpus_replays_without_failures() {
    let mut replayed = 0;
    for (target, run) in crate::fuzzing::TARGETS {
        let Ok(entries) = std::fs::read_dir(corpus_dir().join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            run(&std::fs::read(&path).unwrap());
            replayed += 1;
        }
    }
    assert!(replayed > 0, "no corpus under {}", corpus_dir().display());
}

#[test]
fn fuzz_seeds_pass_their_targets() {
    for (target, name, bytes) in crate::fuzzing::seeds() {
        let (_, run) = crate::fuzzing::TARGETS
            .into_iter()
            .find(|(t, _)| *t == target)
            .unwrap_or_else(|| panic!("seed {name} for unknown target {target}"));
        run(&bytes);
    }
}

/// Rewrites the seed corpus: `cargo test -p wasmover-block -- --ignored
/// write_fuzz_seeds`.
#[test]
#[ignore = "writes files under fuzz/corpus"]
fn write_fuzz_seeds() {
    for (target, name, bytes) in crate::fuzzing::seeds() {
        let dir = corpus_dir().join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn fuzz_targets_hold_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        crate::fuzzing::parse_signature(&bytes);
        crate::fuzzing::parse_refinement(&bytes);
        crate::fuzzing::parse_delta(&bytes);
        crate::fuzzing::apply(&bytes);
        crate::fuzzing::round_trip(&bytes);
    }
}

#[test]
fn scattered_small_changes_cost_their_bytes_not_their_blocks() {
    // 16 MiB with 1% of it rewritten as scattered 4 KiB pages, 32 KiB
    // blocks: one round spoils 32 KiB per page, refinement sends the pages.
    let old = data(16 << 20, 11);
    let (new, changed) = scattered_pages(&old);
    let (plain, _) = round_trip(&old, &new, Some(32 << 10));
    let (refined, wire) = refined_round_trip(&old, &new, 32 << 10, &RefineOptions::default());
    assert!(plain.literal_bytes >= 6 * changed, "{plain:?}");
    assert!(
        refined.literal_bytes <= changed + changed / 20,
        "{refined:?} for {changed} changed bytes"
    );
    let total = wire.signatures + wire.requests_and_delta;
    eprintln!("{changed} changed: one round {plain:?}; refined {refined:?}, {wire:?}");
    assert!(
        total <= changed + changed / 5,
        "{wire:?} for {changed} changed bytes"
    );
}

/// 1% rewritten as scattered 4 KiB pages, the benchmark's case.
fn scattered_pages(old: &[u8]) -> (Vec<u8>, u64) {
    scattered_writes(old, 4096)
}

/// One write of `size` new bytes (at most 4 KiB) into each of 1% of the
/// 4 KiB pages, scattered; returns the new file and the bytes written.
fn scattered_writes(old: &[u8], size: usize) -> (Vec<u8>, u64) {
    let mut new = old.to_vec();
    let pages = (new.len() / 100) / 4096;
    for k in 0..pages {
        let at = (k * 2_654_435_761 % (new.len() / 4096)) * 4096 + k * 61 % (4097 - size);
        new[at..at + size].copy_from_slice(&data(size, k as u64 + 99));
    }
    (new, (pages * size) as u64)
}

#[test]
fn granule_first_sends_scattered_pages_and_little_else() {
    let old = data(16 << 20, 11);
    let (new, changed) = scattered_pages(&old);
    let (stats, wire) = granule_first_round_trip(&old, &new, &RefineOptions::default());
    let (blocks, block_wire) = refined_round_trip(&old, &new, 4 << 10, &RefineOptions::default());
    eprintln!("{changed} changed: granules first {stats:?}, {wire:?}; blocks {block_wire:?}");
    assert!(
        stats.literal_bytes <= blocks.literal_bytes,
        "{stats:?} {blocks:?}"
    );
    let total = wire.signatures + wire.requests_and_delta;
    assert!(
        total <= changed + changed / 5,
        "{wire:?} for {changed} changed bytes"
    );
}

#[test]
fn small_writes_are_narrowed_down_to_their_bytes() {
    // 1% of the 4 KiB pages each take one 64-byte write, as a database's
    // row updates do: rounds of ever smaller blocks narrow each write
    // down to a block or two of 64 bytes, where one round at 4 KiB would
    // send the whole page.
    let old = data(16 << 20, 13);
    let (new, changed) = scattered_writes(&old, 64);
    let writes = changed / 64;
    // As many writes as in 1 GiB would leave more than enough literals
    // for the rounds after the second.
    let options = RefineOptions {
        deep_round_min_literal: 0,
        ..RefineOptions::default()
    };
    let (stats, wire) = granule_first_round_trip(&old, &new, &options);
    eprintln!("{changed} changed: {stats:?}, {wire:?}");
    assert_eq!(wire.rounds, [4096, 1024, 256, 64], "{wire:?}");
    // Written in place: every round compares blocks where they lie.
    assert_eq!(wire.aligned, [true; 4], "{wire:?}");
    assert!(stats.literal_bytes <= 2 * changed, "{stats:?}");
    // The summary (a tag a granule), then about 4 block tags of 4 B a
    // write in each of four rounds (12 B a block for a signature), a range
    // in each request (a few bytes), and the delta (two 64-byte blocks and
    // two copies a write).
    let tag = crate::format::TAG_BYTES as u64;
    let granules = (new.len() as u64 >> 14) * tag;
    let total = wire.signatures + wire.requests_and_delta;
    assert!(
        total <= granules + writes * (4 * (5 * tag + 5) + 2 * 64 + 64),
        "{wire:?} for {changed} changed bytes"
    );
}

#[test]
fn writes_in_place_into_a_file_that_grew_or_shrank_are_compared_in_place() {
    // A database file takes row updates and grows (or is cut): the rounds
    // over the length both files share stay aligned, and the new tail is
    // sent as it is.
    let old = data(16 << 20, 16);
    let (written, changed) = scattered_writes(&old, 64);
    let options = RefineOptions {
        deep_round_min_literal: 0,
        ..RefineOptions::default()
    };
    let mut grown = written.clone();
    grown.extend_from_slice(&data(100_003, 17));
    let shrunk = &written[..written.len() - 100_003];
    for (new, tail) in [(&grown[..], 100_003), (shrunk, 0)] {
        let (stats, wire) = granule_first_round_trip(&old, new, &options);
        assert_eq!(wire.aligned, [true; 4], "{} bytes: {wire:?}", new.len());
        assert!(stats.literal_bytes <= 2 * changed + tail, "{stats:?}");
    }
}

#[test]
fn a_few_small_writes_take_no_more_than_two_rounds() {
    // Two more round trips would save a few kilobytes: not worth the wait.
    let old = data(2 << 20, 14);
    let mut new = old.clone();
    for at in [100_000, 1_500_000] {
        new[at..at + 64].copy_from_slice(&data(64, at as u64));
    }
    let (stats, wire) = refined_round_trip(&old, &new, 4096, &RefineOptions::default());
    assert_eq!(wire.rounds, [1024, 256], "{wire:?}");
    assert!(stats.literal_bytes <= 4 * 256, "{stats:?}");
}

#[test]
fn a_round_that_finds_little_is_the_last() {
    // Pages of new data: the round at 4 KiB blocks narrows each changed
    // granule to its page, the one at 1 KiB finds nothing in the page,
    // and finer blocks would find nothing either, so no more are asked
    // for, though they would be cheap next to the page.
    let old = data(16 << 20, 11);
    let (new, changed) = scattered_pages(&old);
    let (stats, wire) = granule_first_round_trip(&old, &new, &RefineOptions::default());
    assert_eq!(wire.rounds, [4096, 1024], "{wire:?}");
    assert_eq!(stats.literal_bytes, changed);
    let eager = eager(64);
    let (_, eager_wire) = granule_first_round_trip(&old, &new, &eager);
    assert!(eager_wire.rounds.len() > 2, "{eager_wire:?}");
    assert!(eager_wire.signatures > wire.signatures, "{eager_wire:?}");
}

#[test]
fn granule_first_finds_data_that_moved() {
    // An insertion near the start spoils every granule after it; the
    // refinement searches the rest with blocks sized for a whole file.
    let old = data(8 << 20, 12);
    let mut new = old.clone();
    new.splice(5000..5000, data(3, 1));
    let (stats, wire) = granule_first_round_trip(&old, &new, &RefineOptions::default());
    assert!(stats.literal_bytes <= 64 << 10, "{stats:?}");
    // The summary (8 B a granule) and about a whole-file signature.
    let signature = signature(&old, None).write_to(Vec::new()).unwrap();
    assert!(
        wire.signatures <= 4096 + 8 * 512 + 2 * signature,
        "{wire:?}"
    );
}

#[test]
fn granule_first_searches_where_aligned_blocks_find_nothing() {
    // Three bytes deleted near the start and three inserted in the middle:
    // the length is the same, but the granules between have moved. Blocks
    // compared in place find nothing there, so the same ranges are then
    // searched at any offset.
    let old = data(8 << 20, 15);
    let mut new = old.clone();
    new.drain(100_000..100_003);
    new.splice(4_000_000..4_000_000, *b"new");
    assert_eq!(new.len(), old.len());
    let (stats, wire) = granule_first_round_trip(&old, &new, &RefineOptions::default());
    assert_eq!(wire.aligned[..2], [true, false], "{wire:?}");
    assert_eq!(wire.rounds[0], wire.rounds[1], "{wire:?}");
    assert!(stats.literal_bytes <= 64 << 10, "{stats:?}");
}

#[test]
fn granule_hashes_computed_at_once_equal_the_streamed_ones() {
    for len in [0, 1, 16 << 10, (16 << 10) + 1, 5 << 20, (9 << 20) + 12_345] {
        let old = data(len, 7);
        let hashes = BasisHashes::compute(&old[..], len as u64).unwrap();
        assert_eq!(hashes.len(), len as u64);
        // The file's BLAKE3 from every granule's value but the first's.
        let mut buf = vec![0u8; 64 << 10];
        let changed = [(0, 1.min(len as u64))];
        let hash = crate::tree_hash::hash_changed(
            Cursor::new(&old),
            len as u64,
            &hashes,
            &changed,
            &mut buf,
        );
        assert_eq!(hash.unwrap(), content(&old), "{len}");
        let short = BasisHashes::compute(&old[..len / 2], len as u64);
        assert!(
            len < 2 || short.is_err(),
            "{len}: a short basis is an error"
        );
    }
}

#[test]
fn a_granule_summary_the_engine_would_not_make_is_refused() {
    let hashes = BasisHashes::compute(&data(1 << 20, 1)[..], 1 << 20).unwrap();
    let mut encoded = Vec::new();
    hashes.summary(SEED).write_to(&mut encoded).unwrap();
    // Granule 8 KiB instead of 16 KiB: twice the tags.
    encoded[5..13].copy_from_slice(&(8u64 << 10).to_be_bytes());
    assert!(matches!(
        Summary::read_from(&encoded[..], &Limits::default()),
        Err(FormatError::Malformed { .. })
    ));
    // A basis beyond the limit.
    encoded[5..13].copy_from_slice(&(16u64 << 10).to_be_bytes());
    let limits = Limits {
        max_file_len: 1 << 19,
        ..Limits::default()
    };
    assert!(matches!(
        Summary::read_from(&encoded[..], &limits),
        Err(FormatError::TooLarge { .. })
    ));
    // Truncated tags.
    assert!(Summary::read_from(&encoded[..encoded.len() - 1], &Limits::default()).is_err());
}

#[test]
fn a_refinement_is_not_asked_for_when_it_cannot_pay() {
    let old = data(1 << 20, 3);
    // Mostly new: over half literal.
    let mut new = data(1 << 20, 4);
    new[..1 << 18].copy_from_slice(&old[..1 << 18]);
    assert!(
        Plan::new(&signature(&old, Some(8192)), &new[..])
            .unwrap()
            .refinement(&RefineOptions::default())
            .is_none()
    );
    // Unchanged: nothing to refine.
    assert!(
        Plan::new(&signature(&old, Some(8192)), &old[..])
            .unwrap()
            .refinement(&RefineOptions::default())
            .is_none()
    );
    // Appended: every basis block is used, so no basis is left to search.
    let mut appended = old.clone();
    appended.extend_from_slice(&data(1000, 5));
    assert!(
        Plan::new(&signature(&old, Some(8192)), &appended[..])
            .unwrap()
            .refinement(&RefineOptions::default())
            .is_none()
    );
}

#[test]
fn hostile_refinements_and_answers_are_refused() {
    let old = data(100_000, 7);
    let limits = Limits::default();
    // A request for ranges beyond the basis: 5,000 bytes at 99,000
    // (varints: 99,000 = 0xb8 0x85 0x06, 5,000 = 0x88 0x27).
    let refinement_of_kind = |kind: u8, ranges: &[u8]| {
        let mut r = b"WMRF\x08".to_vec();
        r.extend_from_slice(&1024u32.to_be_bytes());
        r.push(kind);
        r.extend_from_slice(&1u64.to_be_bytes());
        r.extend_from_slice(ranges);
        r
    };
    let refinement = |ranges: &[u8]| refinement_of_kind(0, ranges);
    for kind in [0, 1] {
        let r = refinement_of_kind(kind, &[0xb8, 0x85, 0x06, 0x88, 0x27]);
        let Incoming::Refinement(request) = Incoming::read_from(&r[..], &limits).unwrap() else {
            panic!("decodes as a refinement");
        };
        assert_eq!(request.ranges(), [(99_000, 5_000)]);
        assert_eq!(request.aligned(), kind == 1);
        let err = Answer::compute(Cursor::new(&old), old.len() as u64, &request, SEED).unwrap_err();
        assert!(matches!(err, FormatError::Malformed { .. }), "{err}");
    }
    // A kind of refinement this version does not know.
    assert!(matches!(
        Incoming::read_from(&refinement_of_kind(2, &[0x00, 0x80, 0x08])[..], &limits),
        Err(FormatError::Malformed { .. })
    ));
    // An empty range; a varint with a needless zero group; one beyond
    // 64 bits; a range that ends beyond 2^64.
    let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
    for ranges in [
        &[0x10, 0x00][..],
        &[0x90, 0x00, 0x01],
        &[
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x01,
        ],
        &[&max[..], &[0x01]].concat(),
    ] {
        assert!(
            matches!(
                Incoming::read_from(&refinement(ranges)[..], &limits),
                Err(FormatError::Malformed { .. })
            ),
            "{ranges:x?}"
        );
    }
    // Neither a delta nor a refinement.
    assert!(matches!(
        Incoming::read_from(&b"WMSG\x08"[..], &limits),
        Err(FormatError::BadMagic { .. })
    ));
    // A signature about another basis.
    let mut new = old.clone();
    new.splice(50_000..50_000, [1; 100]);
    let mut plan = Plan::new(&signature(&old, Some(8192)), &new[..]).unwrap();
    let request = plan.refinement(&eager(64)).expect("worth refining");
    assert!(!request.aligned(), "{request:?}");
    let other = data(200_000, 8);
    let fine = Answer::compute(Cursor::new(&other), other.len() as u64, &request, SEED).unwrap();
    assert!(plan.refine(&fine, Cursor::new(&new)).is_err());
    // Aligned tags for fewer or more blocks than the round asked for.
    let mut new = old.clone();
    new[50_000..50_100].fill(1);
    let plan = Plan::new(&signature(&old, Some(8192)), &new[..]).unwrap();
    let request = plan.refinement(&eager(64)).expect("worth refining");
    assert!(request.aligned(), "{request:?}");
    let answer = Answer::compute(Cursor::new(&old), old.len() as u64, &request, SEED).unwrap();
    let mut encoded = Vec::new();
    answer.write_to(&mut encoded).unwrap();
    let count_at = 5 + 4 + 8;
    let count = u64::from_be_bytes(encoded[count_at..count_at + 8].try_into().unwrap());
    assert_eq!(count, answer.block_count() as u64);
    for (tags, extra) in [(count - 1, &[][..]), (count + 1, &[0, 0, 0, 0][..])] {
        let mut tampered = encoded[..count_at].to_vec();
        tampered.extend_from_slice(&tags.to_be_bytes());
        let kept = encoded.len().min(count_at + 8 + 4 * tags as usize);
        tampered.extend_from_slice(&encoded[count_at + 8..kept]);
        tampered.extend_from_slice(extra);
        let Summary::Answer(tampered) = Summary::read_from(&tampered[..], &limits).unwrap() else {
            panic!("decodes as an answer");
        };
        let err = plan
            .clone()
            .refine(&tampered, Cursor::new(&new))
            .unwrap_err();
        assert!(
            err.to_string().contains("than the round asked for"),
            "{err}"
        );
    }
    // More tags than the limit, and fewer than announced.
    let mut huge = encoded[..count_at].to_vec();
    huge.extend_from_slice(&(1u64 << 40).to_be_bytes());
    assert!(matches!(
        Summary::read_from(&huge[..], &limits),
        Err(FormatError::TooLarge { .. })
    ));
    assert!(Summary::read_from(&encoded[..encoded.len() - 1], &limits).is_err());
    // A whole-file signature whose range is not the whole file.
    let mut s = Vec::new();
    signature(&old, Some(8192)).write_to(&mut s).unwrap();
    s[5 + 4 + 8 + 1 + 8 + 1] ^= 1; // the range's length, after its offset 0
    assert!(matches!(
        Signature::read_from(&s[..], &limits),
        Err(FormatError::Malformed { .. })
    ));
}

/// What [`patch_from_a_file`] returns: the rebuilt file, the patch's
/// figures and the ranges copied in place.
type FromFile = (std::fs::File, PatchStats, Vec<(u64, u64)>);

/// Rebuilds `new` from the real file `old` with [`patch_from_file`].
fn patch_from_a_file(
    old: &std::fs::File,
    hashes: &BasisHashes,
    sig: &Signature,
    new: &[u8],
) -> Result<FromFile, PatchError> {
    let mut delta_bytes = Vec::new();
    delta(sig, new, &mut delta_bytes).unwrap();
    let mut out = SparseWriter::new(tempfile::tempfile().unwrap());
    let mut reported = 0;
    let (stats, in_place) = patch_from_file(
        old,
        hashes,
        &delta_bytes[..],
        &mut out,
        &Limits::default(),
        &mut |done| reported = done,
    )?;
    assert_eq!(reported, new.len() as u64, "progress reaches the end");
    Ok((out.finish().unwrap(), stats, in_place))
}

fn contents(mut file: &std::fs::File) -> Vec<u8> {
    use std::io::{Read, Seek};
    let mut back = Vec::new();
    file.seek(std::io::SeekFrom::Start(0)).unwrap();
    file.read_to_end(&mut back).unwrap();
    back
}

#[test]
fn a_patch_from_a_file_takes_granules_in_place_by_their_hashes() {
    use std::io::{Seek, Write};
    use std::os::unix::fs::{FileExt, MetadataExt};
    // 8 MiB with a 2 MiB hole in the middle.
    let len = 8 << 20;
    let mut old = data(len, 21);
    old[3 << 20..5 << 20].fill(0);
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(&old[..3 << 20]).unwrap();
    file.write_all_at(&old[5 << 20..], 5 << 20).unwrap();
    file.rewind().unwrap();
    let sig = signature(&old, None);
    let hashes = BasisHashes::compute(&file, len as u64).unwrap();
    assert_eq!(hashes.len(), len as u64);

    let scattered = {
        let mut new = old.clone();
        for i in (0..len).step_by(700_001) {
            new[i..(i + 4096).min(len)].fill(7);
        }
        new
    };
    let shifted = {
        let mut new = old.clone();
        new.splice(6 << 20..6 << 20, *b"inserted");
        new.truncate(len - 5000);
        new
    };
    let grown = [old.clone(), data(100_000, 2)].concat();
    let tiny = old[..1000].to_vec();
    for (name, new) in [
        ("unchanged", &old),
        ("scattered", &scattered),
        ("shifted", &shifted),
        ("grown", &grown),
        ("tiny", &tiny),
    ] {
        let (rebuilt, stats, in_place) = patch_from_a_file(&file, &hashes, &sig, new).unwrap();
        assert!(
            contents(&rebuilt) == *new,
            "{name}: rebuilt a different file"
        );
        assert_eq!(stats.hash, *content(new).as_bytes(), "{name}");
        // The new file's signature and granule hashes, from the old ones
        // and what the copies in place did not cover: what reading the
        // whole new file gives.
        let new_len = new.len() as u64;
        let fresh_hashes = BasisHashes::compute(&contents(&rebuilt)[..], new_len).unwrap();
        let updated = hashes.updated(&rebuilt, new_len, &in_place).unwrap();
        assert!(
            updated.is_none_or(|u| u == fresh_hashes),
            "{name}: granule hashes"
        );
        if name == "scattered" {
            let copied: u64 = in_place.iter().map(|&(_, l)| l).sum();
            assert!(copied > new_len / 2, "{name}: {in_place:?}");
        }
        if name != "tiny" {
            // The hole came across as a hole, not as 2 MiB of zeros.
            let allocated = rebuilt.metadata().unwrap().blocks() * 512;
            assert!(
                allocated < (len as u64) - (3 << 19),
                "{name}: {allocated} bytes allocated"
            );
        }
    }

    // Hashes of another basis vouch for granules that are not there: the
    // rebuilt file does not verify.
    let other = tempfile::tempfile().unwrap();
    other.write_all_at(&data(len, 22), 0).unwrap();
    let wrong = BasisHashes::compute(&other, len as u64).unwrap();
    let err = patch_from_a_file(&file, &wrong, &sig, &scattered).unwrap_err();
    let mut encoded = Vec::new();
    let written = hashes.write_to(&mut encoded).unwrap();
    assert_eq!(written, encoded.len() as u64);
    assert_eq!(BasisHashes::read_from(&encoded[..]).unwrap(), hashes);
    for cut in [0, 4, 20, encoded.len() - 1] {
        assert!(
            BasisHashes::read_from(&encoded[..cut]).is_err(),
            "cut at {cut}"
        );
    }
    assert!(matches!(err, PatchError::Verification { .. }), "{err:?}");

    // A basis cut short under the patch is refused, not read past.
    file.set_len(4 << 20).unwrap();
    let err = patch_from_a_file(&file, &hashes, &sig, &scattered).unwrap_err();
    assert!(matches!(err, PatchError::OutOfBasis { .. }), "{err:?}");
}

#[test]
fn an_in_place_patch_with_basis_hashes_reads_back_only_what_it_wrote() {
    use std::io::Write;
    let len = 6 << 20;
    let old = data(len, 31);
    let sig = signature(&old, None);
    let hashes = BasisHashes::compute(&old[..], len as u64).unwrap();
    let scattered = {
        let mut new = old.clone();
        for i in (0..len).step_by(500_009) {
            new[i..(i + 4096).min(len)].fill(3);
        }
        new
    };
    let moved = [&old[1 << 20..], &old[..1 << 20]].concat();
    let shrunk = old[..len - 70_000].to_vec();
    let grown = [old.clone(), data(90_000, 4)].concat();
    for (name, new) in [
        ("scattered", &scattered),
        ("moved", &moved),
        ("shrunk", &shrunk),
        ("grown", &grown),
    ] {
        let mut delta_bytes = Vec::new();
        delta(&sig, &new[..], &mut delta_bytes).unwrap();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&old).unwrap();
        let patch = InPlacePatch::read(&mut file, &delta_bytes[..], &Limits::default(), None)
            .unwrap()
            .with_basis_hashes(hashes.clone());
        let unchanged = patch.unchanged();
        let stats = patch.apply(&mut file).unwrap();
        assert_eq!(stats.hash, *content(new).as_bytes(), "{name}");
        assert!(contents(&file) == *new, "{name}: a different file");
        for &(offset, len) in &unchanged {
            let range = offset as usize..(offset + len) as usize;
            assert!(
                old[range.clone()] == new[range],
                "{name}: {offset}+{len} changed"
            );
        }
        if name == "scattered" {
            let kept: u64 = unchanged.iter().map(|&(_, l)| l).sum();
            assert!(kept > len as u64 * 9 / 10, "{name}: {unchanged:?}");
        }
    }

    // Hashes of another file vouch for granules that are not there.
    let wrong = BasisHashes::compute(&data(len, 32)[..], len as u64).unwrap();
    let mut delta_bytes = Vec::new();
    delta(&sig, &scattered[..], &mut delta_bytes).unwrap();
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(&old).unwrap();
    let patch = InPlacePatch::read(&mut file, &delta_bytes[..], &Limits::default(), None)
        .unwrap()
        .with_basis_hashes(wrong);
    let err = patch.apply(&mut file).unwrap_err();
    assert!(matches!(err, PatchError::Verification { .. }), "{err:?}");
}

#[test]
fn a_file_searched_in_two_halves_plans_what_one_search_does() {
    use std::io::Write;
    let len = (3 << 20) + 12_345;
    let old = data(len, 41);
    let mid = blake3::hazmat::left_subtree_len(len as u64) as usize;
    let mut new = old.clone();
    for i in (0..len).step_by(300_007) {
        new[i..(i + 100).min(len)].fill(9);
    }
    // Shifted across the seam: the blocks after it match at new offsets.
    new.splice(mid - 5000..mid - 5000, *b"shift");
    let sig = signature(&old, Some(4096));
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(&new).unwrap();

    let write = |plan: Plan| {
        let mut out = Vec::new();
        let stats = plan.write(Cursor::new(&new), &mut out).unwrap();
        let mut rebuilt = Vec::new();
        let Incoming::Delta(reader) = Incoming::read_from(&out[..], &Limits::default()).unwrap()
        else {
            panic!("a delta decodes as one");
        };
        patch(Cursor::new(&old), reader, &mut rebuilt, &Limits::default()).unwrap();
        assert!(rebuilt == new, "rebuilt a different file");
        stats
    };
    // NB: split from 1 MiB, not from_file's 64 MiB: the seam is what is
    // tested, and a 3 MiB file has one as a 64 MiB file does.
    let halves = write(Plan::from_file_split_from(&sig, &file, 1 << 20).unwrap());
    let one = write(Plan::new(&sig, &new[..]).unwrap());
    assert_eq!(halves.hash, *content(&new).as_bytes());
    assert!(
        halves.literal_bytes <= one.literal_bytes + 4096,
        "{} vs {} literal bytes",
        halves.literal_bytes,
        one.literal_bytes
    );
}

/// A sparse file of `len` bytes with `data` written at each offset, and
/// its bytes.
fn sparse_file(len: u64, data: &[(u64, &[u8])]) -> (std::fs::File, Vec<u8>) {
    use std::os::unix::fs::FileExt;
    let file = tempfile::tempfile().unwrap();
    file.set_len(len).unwrap();
    let mut bytes = vec![0u8; len as usize];
    for &(at, piece) in data {
        file.write_all_at(piece, at).unwrap();
        bytes[at as usize..at as usize + piece.len()].copy_from_slice(piece);
    }
    (file, bytes)
}

fn allocated(file: &std::fs::File) -> u64 {
    use std::os::unix::fs::MetadataExt;
    file.metadata().unwrap().blocks() * 512
}

#[test]
fn holes_and_written_zeros_hash_alike_in_real_files() {
    use std::io::{Seek, Write};
    use std::os::unix::fs::FileExt;
    let len = 48 << 20;
    let one = data(5000, 1);
    let two = data(100, 2);
    // Unaligned data, a hole, and 2 MiB of zeros written (allocated).
    let (mut sparse, bytes) = sparse_file(len, &[(1_000_003, &one), (40 << 20 | 17, &two)]);
    sparse.write_all_at(&vec![0; 2 << 20], 9 << 20).unwrap();
    let mut dense = tempfile::tempfile().unwrap();
    dense.write_all(&bytes).unwrap();
    assert!(allocated(&sparse) < 4 << 20 && allocated(&dense) >= len);
    let mut buf = vec![0; 1 << 20];
    let expected = (content(&bytes), len);
    sparse.rewind().unwrap();
    dense.rewind().unwrap();
    assert_eq!(hash_file(&sparse, &mut buf).unwrap(), expected);
    assert_eq!(hash_file(&dense, &mut buf).unwrap(), expected);
    assert_ne!(
        expected.0,
        blake3::hash(&bytes),
        "zero leaves hash as the constant"
    );
}

#[test]
fn a_sparse_file_travels_as_its_data_and_stays_sparse() {
    use std::io::{Seek, Write};
    let len = 64 << 20;
    let pieces = [data(70_000, 3), data(4096, 4), data(1, 5)];
    let (file, bytes) = sparse_file(
        len,
        &[
            (12_345, &pieces[0]),
            (32 << 20, &pieces[1]),
            (len - 1, &pieces[2]),
        ],
    );
    let mut wire = Vec::new();
    let stats = delta_file(&Signature::empty(), &file, &mut wire).unwrap();
    assert_eq!(stats.new_len, len);
    assert!(
        stats.literal_bytes < 100_000 && wire.len() < 100_000,
        "{stats:?}: the holes were sent"
    );
    assert_eq!(stats.literal_bytes + stats.zero_bytes, len);
    assert_eq!(stats.hash, *content(&bytes).as_bytes());

    let mut out = SparseWriter::new(tempfile::tempfile().unwrap());
    let patched = patch(
        Cursor::new(&[][..]),
        &wire[..],
        &mut out,
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(patched.zero_bytes, stats.zero_bytes);
    let rebuilt = out.finish().unwrap();
    assert!(contents(&rebuilt) == bytes, "rebuilt a different file");
    assert!(
        allocated(&rebuilt) < 1 << 20,
        "{} bytes allocated",
        allocated(&rebuilt)
    );

    // The same bytes written densely: zero runs still travel as runs
    // (but for pieces a read boundary cuts, 4 KiB each at most).
    let mut dense = tempfile::tempfile().unwrap();
    dense.write_all(&bytes).unwrap();
    dense.rewind().unwrap();
    let mut dense_wire = Vec::new();
    let dense_stats = delta_file(&Signature::empty(), &dense, &mut dense_wire).unwrap();
    assert_eq!(dense_stats.hash, stats.hash);
    assert!(dense_wire.len() < 256 << 10, "{dense_stats:?}");
}

#[test]
fn a_file_that_shrinks_or_grows_while_walked_is_walked_as_it_is_found() {
    use std::os::unix::fs::FileExt;
    for grow in [false, true] {
        let head = data(100_000, 6);
        let (file, _) = sparse_file(16 << 20, &[(0, &head), (10 << 20, &data(100_000, 7))]);
        let mut walked = Vec::new();
        let mut changed = false;
        let mut buf = vec![0; 64 << 10];
        let len = crate::sparse::walk(&file, &mut buf, |piece| {
            if !changed {
                changed = true;
                match grow {
                    // Past the data that was there, and its length.
                    true => file.write_all_at(b"later", 20 << 20)?,
                    // Into the first data range, while it is read.
                    false => file.set_len(70_000)?,
                }
            }
            match piece {
                crate::sparse::Piece::Data(bytes) => walked.extend_from_slice(bytes),
                crate::sparse::Piece::Hole(n) => walked.resize(walked.len() + n as usize, 0),
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(len, walked.len() as u64, "grow: {grow}");
        assert!(
            contents(&file) == walked,
            "grow: {grow}: walked other bytes"
        );
    }
}

#[test]
fn granules_of_a_sparse_file_hash_as_its_bytes() {
    use crate::tree_hash::{hash_granules, hash_granules_of_file};
    let piece = data(20_000, 8);
    for (len, at, granule) in [
        (10u64 << 20, vec![0u64, 3 << 20 | 5], 16u64 << 10),
        (10 << 20, vec![1 << 20, (10 << 20) - 20_000], 64 << 10),
        (3 << 20, vec![100_003], 1 << 20),
        (50_000, vec![7], 64 << 10),
        (8 << 20, vec![], 16 << 10),
    ] {
        let placed: Vec<(u64, &[u8])> = at.iter().map(|&a| (a, &piece[..])).collect();
        let (file, bytes) = sparse_file(len, &placed);
        let sparse = hash_granules_of_file(&file, granule).unwrap();
        let dense = hash_granules(&bytes[..], granule).unwrap();
        assert_eq!(
            (sparse.len, &sparse.cvs, sparse.hash),
            (dense.len, &dense.cvs, dense.hash),
            "{len} bytes by {granule}"
        );
        assert_eq!(sparse.hash, content(&bytes));
    }
}

/// Log-like lines: timestamps, levels, a few words, numbers; compresses
/// about as well as a service's log does.
fn log_text(len: usize, seed: u64) -> Vec<u8> {
    let words = [
        "GET",
        "POST",
        "/api/v1/items",
        "200",
        "404",
        "user",
        "ok",
        "timeout",
    ];
    let noise = data(len / 8 + 64, seed);
    let mut out = Vec::with_capacity(len + 128);
    let mut i = 0;
    while out.len() < len {
        let n = noise[i % noise.len()] as usize;
        out.extend_from_slice(
            format!(
                "2026-12-07T15:{:02}:{:02}.{:03}Z INFO {} {} took {} ms\n",
                i / 60 % 60,
                i % 60,
                n * 3,
                words[n % words.len()],
                words[(n / 8) % words.len()],
                n
            )
            .as_bytes(),
        );
        i += 1;
    }
    out.truncate(len);
    out
}

fn compressed_delta(sig: &Signature, new: &[u8], level: i32) -> (Vec<u8>, DeltaStats) {
    let mut d = Vec::new();
    let level = Some(level);
    let stats = delta(sig, new, Compressed { out: &mut d, level }).unwrap();
    assert_eq!(stats.encoded_bytes, d.len() as u64);
    (d, stats)
}

#[test]
fn compressible_literals_travel_compressed_and_rebuild_the_file() {
    let new = log_text(3 << 20, 1);
    let (d, stats) = compressed_delta(&Signature::empty(), &new, 3);
    assert_eq!(stats.literal_bytes, new.len() as u64);
    assert!(
        stats.literal_wire_bytes * 4 < stats.literal_bytes,
        "{stats:?}"
    );
    assert!(
        d.len() as u64 - stats.literal_wire_bytes < 1000,
        "{stats:?}"
    );
    let mut out = Vec::new();
    let p = patch(Cursor::new(&[][..]), &d[..], &mut out, &Limits::default()).unwrap();
    assert!(out == new);
    assert_eq!(p.literal_wire_bytes, stats.literal_wire_bytes);
    // In place too (a large file patched in place reads the same delta).
    let mut file = Cursor::new(Vec::new());
    let in_place = patch_in_place(&mut file, &d[..], &Limits::default()).unwrap();
    assert!(file.into_inner() == new);
    assert_eq!(in_place.literal_wire_bytes, stats.literal_wire_bytes);
}

#[test]
fn incompressible_literals_travel_as_they_are() {
    let new = data(8 << 20, 2);
    let (d, stats) = compressed_delta(&Signature::empty(), &new, 3);
    let mut plain = Vec::new();
    delta(&Signature::empty(), &new[..], &mut plain).unwrap();
    assert_eq!(stats.literal_wire_bytes, stats.literal_bytes);
    assert!(d.len() <= plain.len(), "no chunk compressed");
    // Text after random data is compressed again once a try succeeds.
    let mut mixed = data(4 << 20, 3);
    mixed.extend(log_text(8 << 20, 4));
    let (d, stats) = compressed_delta(&Signature::empty(), &mixed, 3);
    assert!(stats.literal_wire_bytes < (6 << 20), "{stats:?}");
    let mut out = Vec::new();
    patch(Cursor::new(&[][..]), &d[..], &mut out, &Limits::default()).unwrap();
    assert!(out == mixed);
}

/// A compressed literal cut anywhere, or with any byte changed, is an
/// error (or, for a change the format does not notice, the right file):
/// never a panic, never a wrong file.
#[test]
fn a_cut_or_corrupted_compressed_literal_is_an_error() {
    let old = log_text(64 << 10, 5);
    let mut new = old.clone();
    new.splice(1000..1000, log_text(600 << 10, 6));
    let sig = signature(&old, Some(1024));
    let (d, stats) = compressed_delta(&sig, &new, 3);
    assert!(
        stats.literal_wire_bytes < stats.literal_bytes / 3,
        "{stats:?}"
    );
    let try_patch = |bytes: &[u8]| {
        let mut out = Vec::new();
        patch(Cursor::new(&old[..]), bytes, &mut out, &Limits::default()).map(|_| out)
    };
    assert!(try_patch(&d).unwrap() == new);
    for cut in (0..d.len()).step_by(997).chain([d.len() - 1, d.len() - 41]) {
        assert!(try_patch(&d[..cut]).is_err(), "cut at {cut}");
    }
    let mut decompress_errors = 0;
    for at in (13..d.len()).step_by(1009) {
        let mut bad = d.clone();
        bad[at] ^= 0x20;
        match try_patch(&bad) {
            Ok(out) => assert!(out == new, "a wrong file from a change at {at}"),
            Err(PatchError::Format(FormatError::Malformed { reason })) => {
                decompress_errors += usize::from(reason.contains("decompress"));
            }
            Err(_) => {}
        }
    }
    assert!(
        decompress_errors > 0,
        "the frames' checksum catches changes"
    );
    // A compressed length no shorter than the literal, and one longer
    // than what follows, are refused before anything is decompressed.
    let mut header = b"WMDL\x08".to_vec();
    header.extend_from_slice(&0u64.to_be_bytes());
    for (len, packed) in [
        (10u32, 10u32),
        (10, 0),
        (100, 99),
        (MAX_LITERAL_TEST + 1, 5),
    ] {
        let mut bad = header.clone();
        bad.push(4);
        bad.extend_from_slice(&len.to_be_bytes());
        bad.extend_from_slice(&packed.to_be_bytes());
        bad.extend_from_slice(&[0; 20]);
        assert!(try_patch(&bad).is_err(), "{len} {packed}");
    }
}

const MAX_LITERAL_TEST: u32 = 16 << 20;
