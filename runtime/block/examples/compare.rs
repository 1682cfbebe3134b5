//! Side by side on one large file: this engine, the fast_rsync crate and
//! rsync itself (`--no-whole-file --inplace`, local), for the cases of the
//! block-engine issue. Prints GB/s, wire bytes and ratios, medians of
//! several runs, then the issue's goals table. `benches/compare.sh` runs
//! it twice: on both cores, then pinned to one (`taskset -c 0`, with
//! `--one-core` to label it), which gives the per-core figures.
//!
//! ```text
//! cargo run --release -p wasmover-block --example compare -- [SIZE_MIB] [RUNS] [DIR]
//! ```

// The benches' seeded inputs, so both measure the same kinds of file.
#[path = "../benches/common/mod.rs"]
mod common;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{fast_rsync_options, random, scattered_changes};
use wasmover_block::{
    Answer, Limits, Plan, RefineOptions, Signature, SignatureOptions, patch, patch_in_place,
};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn gbps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e9
}

#[derive(Clone, Copy)]
struct Measured {
    signature: Duration,
    delta: Duration,
    patch: Duration,
    total: Duration,
    wire: u64,
    rounds: u32,
}

/// This engine, file to file, as the host runs it: patched into a staging
/// file, and (second result) in place over a copy of the basis, as
/// `rsync --inplace` does.
fn ours(dir: &Path, runs: usize) -> (Measured, Option<Measured>) {
    let (old, new, out) = (dir.join("old"), dir.join("new"), dir.join("out"));
    let (mut s, mut d, mut p, mut t) = (vec![], vec![], vec![], vec![]);
    let (mut p2, mut t2) = (vec![], vec![]);
    let (mut wire, mut rounds) = (0, 0);
    for _ in 0..runs {
        let start = Instant::now();
        let len = std::fs::metadata(&old).unwrap().len();
        let sig = Signature::compute(
            File::open(&old).unwrap(),
            len,
            &SignatureOptions {
                seed: rand::random(),
                ..Default::default()
            },
        )
        .unwrap();
        let mut sig_bytes = Vec::new();
        wire = sig.write_to(&mut sig_bytes).unwrap();
        let t_sig = start.elapsed();
        // Rounds as the host runs them: the finer signatures are computed
        // on the basis side, and count as delta time here.
        // Unbuffered: the engine reads in large chunks, and a buffer would
        // refill a megabyte for every literal run the rounds seek to.
        let new_file = || File::open(&new).unwrap();
        let mut plan = Plan::new(&sig, new_file()).unwrap();
        rounds = 0;
        while let Some(request) = plan.refinement(&RefineOptions::default()) {
            wire += request.write_to(Vec::new()).unwrap();
            let fine =
                Answer::compute(File::open(&old).unwrap(), len, &request, rand::random()).unwrap();
            wire += fine.write_to(Vec::new()).unwrap();
            plan.refine(&fine, new_file()).unwrap();
            rounds += 1;
        }
        let mut delta_bytes = Vec::new();
        let stats = plan.write(new_file(), &mut delta_bytes).unwrap();
        wire += stats.encoded_bytes;
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
        rounds,
    };
    let in_place = (!p2.is_empty()).then(|| Measured {
        patch: median(p2),
        total: median(t2),
        ..staged
    });
    (staged, in_place)
}

/// fast_rsync, block 4 KiB, 8-byte hash. Its API takes slices, so each
/// phase reads its input file whole, and the patch writes its output file,
/// as a host using it would.
fn fast_rsync(dir: &Path, runs: usize) -> Measured {
    let options = fast_rsync_options();
    let (mut s, mut d, mut p, mut t) = (vec![], vec![], vec![], vec![]);
    let mut wire = 0;
    for _ in 0..runs {
        let start = Instant::now();
        let old = std::fs::read(dir.join("old")).unwrap();
        let sig = fast_rsync::Signature::calculate(&old, options);
        let t_sig = start.elapsed();
        let new = std::fs::read(dir.join("new")).unwrap();
        let mut delta_bytes = Vec::new();
        fast_rsync::diff(&sig.index(), &new, &mut delta_bytes).unwrap();
        let t_delta = start.elapsed() - t_sig;
        let mut out = Vec::with_capacity(new.len());
        fast_rsync::apply(&old, &delta_bytes, &mut out).unwrap();
        std::fs::write(dir.join("out"), &out).unwrap();
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
        rounds: 0,
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
            // --ignore-times: the files may share size and mtime second.
            .args(["--no-whole-file", "--inplace", "--ignore-times", "--stats"])
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
    let mut args: Vec<String> = std::env::args().collect();
    let one_core = args.iter().any(|a| a == "--one-core");
    args.retain(|a| a != "--one-core");
    let mib: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1024);
    let runs: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(3);
    let dir = args
        .get(3)
        .map(Into::into)
        .unwrap_or_else(std::env::temp_dir)
        .join("wasmover-compare");
    std::fs::create_dir_all(&dir).unwrap();
    let len = mib << 20;
    let old = random(len, 42);

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("unchanged", old.clone()),
        ("1% scattered 4 KiB changes", scattered_changes(&old, 43)),
        ("inserted near the start", {
            let mut new = Vec::with_capacity(len + 100);
            new.extend_from_slice(&old[..1000]);
            new.extend_from_slice(b"100 bytes inserted near the start shift every block that follows them by one hundred bytes....");
            new.extend_from_slice(&old[1000..]);
            new
        }),
        ("appended 10%", {
            let mut new = old.clone();
            new.extend_from_slice(&random(len / 10, 44));
            new
        }),
        ("nothing matches", random(len, 45)),
    ];
    std::fs::write(dir.join("old"), &old).unwrap();
    println!("{mib} MiB, median of {runs} runs, warm page cache; GB/s of the new file's length");
    println!(
        "| case | engine | signature GB/s | delta GB/s | patch GB/s | whole s | wire bytes | refinement rounds | time vs rsync | time vs fast_rsync |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut results = Vec::new();
    for (name, new) in &cases {
        std::fs::write(dir.join("new"), new).unwrap();
        let (o, o_in_place) = ours(&dir, runs);
        let f = fast_rsync(&dir, runs);
        let r = rsync(&dir, runs);
        let n = new.len();
        let ratio = |a: Duration, b: Duration| format!("{:.2}x", a.as_secs_f64() / b.as_secs_f64());
        if o_in_place.is_none() {
            println!(
                "| {name} | wasmover in place | refused: literals over IN_PLACE_MAX_HELD | | | | | | | |"
            );
        }
        let rows = [
            Some(("wasmover", &o)),
            o_in_place.as_ref().map(|m| ("wasmover in place", m)),
            Some(("fast_rsync", &f)),
        ];
        for (engine, m) in rows.into_iter().flatten() {
            println!(
                "| {name} | {engine} | {:.2} | {:.2} | {:.2} | {:.3} | {} | {} | {} | {} |",
                gbps(old.len(), m.signature),
                gbps(n, m.delta),
                gbps(n, m.patch),
                m.total.as_secs_f64(),
                m.wire,
                if engine == "fast_rsync" {
                    "-".to_string()
                } else {
                    m.rounds.to_string()
                },
                r.map_or("-".into(), |(t, _)| ratio(m.total, t)),
                ratio(m.total, f.total),
            );
        }
        match r {
            Some((t, wire)) => println!(
                "| {name} | rsync | - | - | - | {:.3} | {wire} | - | 1.00x | {} |",
                t.as_secs_f64(),
                ratio(t, f.total)
            ),
            None => println!("| {name} | rsync | not installed | | | | | | | |"),
        }
        results.push(Case {
            name,
            len: n,
            ours: o,
            in_place: o_in_place,
            fast_rsync: f,
            rsync: r,
        });
    }
    let _ = std::fs::remove_dir_all(&dir);
    goals(old.len(), &results, one_core);
    let differing = old.iter().zip(&cases[1].1).filter(|(a, b)| a != b).count();
    println!(
        "\nThe 1% case's new file differs from the old in {:.2} MB of random bytes: \
         no delta can send fewer literals than that.",
        differing as f64 / 1e6
    );
}

/// One case's results.
struct Case<'a> {
    name: &'a str,
    len: usize,
    ours: Measured,
    in_place: Option<Measured>,
    fast_rsync: Measured,
    rsync: Option<(Duration, u64)>,
}

/// The issue's goals table, from the cases measured above.
fn goals(basis_len: usize, cases: &[Case], one_core: bool) {
    let case = |name: &str| cases.iter().find(|c| c.name == name).expect("measured");
    let (unchanged, scattered, nothing) = (
        case("unchanged"),
        case("1% scattered 4 KiB changes"),
        case("nothing matches"),
    );
    let x = |a: f64, b: f64| format!("{:.2}x", a / b);
    println!();
    println!(
        "Goals, {} (ratios are ours / peer: higher is better for speeds, lower for bytes and time)",
        if one_core {
            "pinned to one core: GB/s per core"
        } else {
            "on every core (for GB/s per core, see the run pinned to one)"
        }
    );
    println!("| measure | goal | wasmover | fast_rsync | rsync | vs fast_rsync | vs rsync |");
    println!("|---|---|---|---|---|---|---|");
    let speed = |measure: &str, goal: &str, ours: f64, peer: f64| {
        println!(
            "| {measure} | {goal} | {ours:.2} | {peer:.2} | - | {} | - |",
            x(ours, peer)
        );
    };
    speed(
        "signature, GB/s",
        ">= 6",
        gbps(basis_len, unchanged.ours.signature),
        gbps(basis_len, unchanged.fast_rsync.signature),
    );
    speed(
        "delta, 1% changed, GB/s (refinement rounds included)",
        ">= 4",
        gbps(scattered.len, scattered.ours.delta),
        gbps(scattered.len, scattered.fast_rsync.delta),
    );
    speed(
        "delta, nothing matches, GB/s",
        ">= 0.5",
        gbps(nothing.len, nothing.ours.delta),
        gbps(nothing.len, nothing.fast_rsync.delta),
    );
    let patched = scattered.in_place.unwrap_or(scattered.ours);
    speed(
        "patch, 1% changed, GB/s (in place when it applies)",
        ">= 6",
        gbps(scattered.len, patched.patch),
        gbps(scattered.len, scattered.fast_rsync.patch),
    );
    let (rsync_time, rsync_wire) = scattered.rsync.unwrap_or_default();
    println!(
        "| wire bytes, 1% changed | <= 1.0 MB | {:.2} MB | {:.2} MB | {:.2} MB | {} | {} |",
        scattered.ours.wire as f64 / 1e6,
        scattered.fast_rsync.wire as f64 / 1e6,
        rsync_wire as f64 / 1e6,
        x(scattered.ours.wire as f64, scattered.fast_rsync.wire as f64),
        x(scattered.ours.wire as f64, rsync_wire as f64),
    );
    println!(
        "| whole replication of that file, s | <= 0.3x rsync | {:.3} | {:.3} | {:.3} | {} | {} |",
        patched.total.as_secs_f64(),
        scattered.fast_rsync.total.as_secs_f64(),
        rsync_time.as_secs_f64(),
        x(
            patched.total.as_secs_f64(),
            scattered.fast_rsync.total.as_secs_f64()
        ),
        x(patched.total.as_secs_f64(), rsync_time.as_secs_f64()),
    );
}
