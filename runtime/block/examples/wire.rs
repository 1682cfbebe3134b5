//! What a large file's delta sends under the engine's defaults, part by
//! part, as the agents exchange it (without their framing and TLS): the
//! granule summary of the old file, each refinement round's request and
//! answer (its ranges and block hashes or tags apart), and the delta. The
//! README's breakdown of the small-write case comes from it.
//!
//! ```text
//! cargo run --release -p wasmover-block --example wire -- OLD NEW
//! ```

use std::error::Error;
use std::fs::File;
use std::io::sink;

use wasmover_block::{Answer, BasisHashes, Plan, RefineOptions};

/// A signature's encoding around its ranges and block hashes: magic and
/// version, block size, basis length, kind, block count, seed.
const SIGNATURE_FRAME: u64 = 5 + 4 + 8 + 1 + 8 + 8;
/// Aligned tags' encoding around the tags: magic and version, block
/// size, seed, tag count.
const ALIGNED_FRAME: u64 = 5 + 4 + 8 + 8;
/// A refinement's encoding before its ranges: magic and version, block
/// size, kind.
const REFINEMENT_FRAME: u64 = 5 + 4 + 1;

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(old), Some(new), None) = (args.next(), args.next(), args.next()) else {
        return Err("usage: wire OLD NEW".into());
    };
    let (old, new) = (File::open(old)?, File::open(new)?);
    let summary = BasisHashes::compute(&old, old.metadata()?.len())?.summary(rand::random());
    let tags = summary.write_to(sink())?;
    println!("granule summary (old side): {tags} B");
    let mut plan = Plan::from_granules(&summary, &new)?;
    let (mut ranges, mut hashes, mut frames) = (0, 0, 0);
    while let Some(request) = plan.refinement(&RefineOptions::default()) {
        let asked = request.write_to(sink())?;
        let fine = Answer::compute(&old, old.metadata()?.len(), &request, rand::random())?;
        let answer = fine.write_to(sink())?;
        let (frame, block_hashes) = match fine {
            Answer::Signature(_) => (SIGNATURE_FRAME, 12 * fine.block_count() as u64),
            Answer::Aligned(_) => (ALIGNED_FRAME, 4 * fine.block_count() as u64),
        };
        let (asked_ranges, answer_ranges) =
            (asked - REFINEMENT_FRAME, answer - frame - block_hashes);
        println!(
            "{} round of {} B blocks: {} ranges; request {asked} B (ranges {asked_ranges}), \
             answer {answer} B (ranges {answer_ranges}, block hashes {block_hashes})",
            if request.aligned() {
                "aligned"
            } else {
                "search"
            },
            request.block_size(),
            request.ranges().len(),
        );
        ranges += asked_ranges + answer_ranges;
        hashes += block_hashes;
        frames += REFINEMENT_FRAME + frame;
        plan.refine(&fine, &new)?;
    }
    let delta = plan.write(&new, sink())?;
    println!(
        "delta (new side): {} B, of which literals {} B",
        delta.encoded_bytes, delta.literal_bytes
    );
    println!(
        "in all: {} B = summary {tags} + block hashes {hashes} + ranges {ranges} \
         + round headers {frames} + delta {}",
        tags + hashes + ranges + frames + delta.encoded_bytes,
        delta.encoded_bytes
    );
    Ok(())
}
