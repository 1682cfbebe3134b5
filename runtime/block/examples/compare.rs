//! Side by side on one large file: this engine, the fast_rsync crate and
//! rsync itself (`--no-whole-file --inplace`, local), for the cases of the
//! block-engine issue. Prints GB/s, wire bytes and ratios, medians of
//! several runs. Run through `benches/compare.sh`.
//!
//! ```text
//! cargo run --release -p wasmover-block --example compare -- [SIZE_MIB] [RUNS] [DIR]
//! ```

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use wasmover_block::{Limits, Signature, SignatureOptions, delta, patch, patch_in_place};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn gbps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e9
}

struct Measured {
    signature: Duration,
    delta: Duration,
    patch: Duration,
    total: Duration,
    wire: u64,
}

/// This engine, file to file, as the host runs it: patched into a staging
/// file, and (second result) in place over a copy of the basis, as
/// `rsync --inplace` does.
fn ours(dir: &Path, runs: usize) -> (Measured, Option<Measured>) {
    let (old, new, out) = (dir.join("old"), dir.join("new"), dir.join("out"));
    let (mut s, mut d, mut p, mut t) = (vec![], vec![], vec![], vec![]);
    let (mut p2, mut t2) = (vec![], vec![]);
    let mut wire = 0;
    for _ in 0..runs {
        let start = Instant::now();
        let len = std::fs::metadata(&old).unwrap().len();
        let sig = Signature::compute(File::open(&old).unwrap(), len, &SignatureOptions::default())
            .unwrap();
        let mut sig_bytes = Vec::new();
        sig.write_to(&mut sig_bytes).unwrap();
        let t_sig = start.elapsed();
        let mut delta_bytes = Vec::new();
        let stats = delta(
            &sig,
            BufReader::with_capacity(1 << 20, File::open(&new).unwrap()),
            &mut delta_bytes,
        )
        .unwrap();
        let t_delta = start.elapsed() - t_sig;
        let mut w = BufWriter::with_capacity(1 << 20, File::create(&out).unwrap());
        patch(
            File::open(&old).unwrap(),
            &delta_bytes[..],
            &mut w,
            &Limits::default(),
        )
        .unwrap();
        w.flush().unwrap();
        let total = start.elapsed();
        s.push(t_sig);
        d.push(t_delta);
        p.push(total - t_sig - t_delta);
        t.push(total);
        wire = sig_bytes.len() as u64 + stats.encoded_bytes;

        let in_place = dir.join("in-place");
        std::fs::copy(&old, &in_place).unwrap();
        let start = Instant::now();
        let file = File::options()
            .read(true)
            .write(true)
            .open(&in_place)
            .unwrap();
        // Refused (too many literals to hold) counts as not applicable.
        if patch_in_place(file, &delta_bytes[..], &Limits::default()).is_ok() {
            p2.push(start.elapsed());
            t2.push(t_sig + t_delta + start.elapsed());
        }
    }
    let staged = Measured {
        signature: median(s),
        delta: median(d),
        patch: median(p),
        total: median(t),
        wire,
    };
    let in_place = (!p2.is_empty()).then(|| Measured {
        patch: median(p2),
        total: median(t2),
        ..staged
    });
    (staged, in_place)
}

/// fast_rsync, in memory (its API takes slices), block 4 KiB, 8-byte hash.
fn fast_rsync(old: &[u8], new: &[u8], runs: usize) -> Measured {
    let options = fast_rsync::SignatureOptions {
        block_size: 4096,
        crypto_hash_size: 8,
    };
    let (mut s, mut d, mut p, mut t) = (vec![], vec![], vec![], vec![]);
    let mut wire = 0;
    for _ in 0..runs {
        let start = Instant::now();
        let sig = fast_rsync::Signature::calculate(old, options);
        let t_sig = start.elapsed();
        let mut delta_bytes = Vec::new();
        fast_rsync::diff(&sig.index(), new, &mut delta_bytes).unwrap();
        let t_delta = start.elapsed() - t_sig;
        let mut out = Vec::with_capacity(new.len());
        fast_rsync::apply(old, &delta_bytes, &mut out).unwrap();
        let total = start.elapsed();
        s.push(t_sig);
        d.push(t_delta);
        p.push(total - t_sig - t_delta);
        t.push(total);
        wire = sig.serialized().len() as u64 + delta_bytes.len() as u64;
    }
    Measured {
        signature: median(s),
        delta: median(d),
        patch: median(p),
        total: median(t),
        wire,
    }
}

/// rsync itself, local, updating a copy of the old file in place.
fn rsync(dir: &Path, runs: usize) -> Option<(Duration, u64)> {
    let (old, new, dst) = (dir.join("old"), dir.join("new"), dir.join("dst"));
    let mut times = vec![];
    let mut wire = 0;
    for _ in 0..runs {
        std::fs::copy(&old, &dst).ok()?;
        let start = Instant::now();
        let out = Command::new("rsync")
            .args(["--no-whole-file", "--inplace", "--stats"])
            .arg(&new)
            .arg(&dst)
            .output()
            .ok()?;
        times.push(start.elapsed());
        let text = String::from_utf8_lossy(&out.stdout);
        let number = |label: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(label))
                .map(|v| v.trim().split(' ').next().unwrap_or("0").replace(',', ""))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        wire = number("Total bytes sent:") + number("Total bytes received:");
    }
    Some((median(times), wire))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mib: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1024);
    let runs: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(3);
    let dir = args
        .get(3)
        .map(Into::into)
        .unwrap_or_else(std::env::temp_dir)
        .join("wasmover-compare");
    std::fs::create_dir_all(&dir).unwrap();
    let len = mib << 20;
    let mut rng = StdRng::seed_from_u64(42);
    let mut old = vec![0u8; len];
    rng.fill_bytes(&mut old);

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("unchanged", old.clone()),
        ("1% scattered 4 KiB changes", {
            let mut new = old.clone();
            for _ in 0..len / 4096 / 100 {
                let at = rng.random_range(0..len - 4096);
                rng.fill_bytes(&mut new[at..at + 4096]);
            }
            new
        }),
        ("inserted near the start", {
            let mut new = Vec::with_capacity(len + 100);
            new.extend_from_slice(&old[..1000]);
            new.extend_from_slice(b"100 bytes inserted near the start shift every block that follows them by one hundred bytes....");
            new.extend_from_slice(&old[1000..]);
            new
        }),
        ("appended 10%", {
            let mut new = old.clone();
            let mut tail = vec![0; len / 10];
            rng.fill_bytes(&mut tail);
            new.extend_from_slice(&tail);
            new
        }),
        ("nothing matches", {
            let mut new = vec![0; len];
            rng.fill_bytes(&mut new);
            new
        }),
    ];
    std::fs::write(dir.join("old"), &old).unwrap();
    println!("{mib} MiB, median of {runs} runs, warm page cache; GB/s of the new file's length");
    println!(
        "| case | engine | signature GB/s | delta GB/s | patch GB/s | whole s | wire bytes | time vs rsync | time vs fast_rsync |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (name, new) in &cases {
        std::fs::write(dir.join("new"), new).unwrap();
        let (o, o_in_place) = ours(&dir, runs);
        let f = fast_rsync(&old, new, runs);
        let r = rsync(&dir, runs);
        let n = new.len();
        let ratio = |a: Duration, b: Duration| format!("{:.2}x", a.as_secs_f64() / b.as_secs_f64());
        if o_in_place.is_none() {
            println!(
                "| {name} | wasmover in place | refused: literals over IN_PLACE_MAX_HELD | | | | | | |"
            );
        }
        let rows = [
            Some(("wasmover", &o)),
            o_in_place.as_ref().map(|m| ("wasmover in place", m)),
            Some(("fast_rsync", &f)),
        ];
        for (engine, m) in rows.into_iter().flatten() {
            println!(
                "| {name} | {engine} | {:.2} | {:.2} | {:.2} | {:.3} | {} | {} | {} |",
                gbps(old.len(), m.signature),
                gbps(n, m.delta),
                gbps(n, m.patch),
                m.total.as_secs_f64(),
                m.wire,
                r.map_or("-".into(), |(t, _)| ratio(m.total, t)),
                ratio(m.total, f.total),
            );
        }
        match r {
            Some((t, wire)) => println!(
                "| {name} | rsync | - | - | - | {:.3} | {wire} | 1.00x | {} |",
                t.as_secs_f64(),
                ratio(t, f.total)
            ),
            None => println!("| {name} | rsync | not installed | | | | | | |"),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
