//! `wasmover replicate SRC DST`: both sides of a mover's data plane in
//! this process, with a progress bar and a one-line summary.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use wasmover_host::MoverEngine;
use wasmover_operator::replicate;

use super::{Cli, MoverArgs, VerifyArgs, summary};

/// Makes `dst` equal to `src` and prints what it did.
pub fn run(
    engine: &MoverEngine,
    cli: &Cli,
    (src, dst): (&Path, &Path),
    journal: Option<&Path>,
    state_dir: replicate::StateDir,
    verify: &VerifyArgs,
    mover: &MoverArgs,
) -> anyhow::Result<ExitCode> {
    let module = mover.load(engine, cli)?;
    let bar = Arc::new(wasmover_operator::ProgressBar::on_stderr());
    let started = Instant::now();
    let report = replicate::replicate(
        &module,
        src,
        dst,
        &replicate::ReplicateOptions {
            journal: journal.map(PathBuf::from),
            state_dir,
            source_hashes: verify.source_hashes(cli, src),
            read_every_file: verify.read_every_file,
        },
        mover.limits(),
        &mover.params,
        bar.clone(),
    );
    bar.finish();
    let r = report?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "replicated {} -> {} with {} in {secs:.2}s: {}",
        src.display(),
        dst.display(),
        module.name(),
        summary(&r),
    );
    Ok(ExitCode::SUCCESS)
}
