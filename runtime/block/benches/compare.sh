#!/usr/bin/env bash
# The block engine side by side with fast_rsync and rsync on one large
# seeded file (default 1 GiB, 3 runs): prints a Markdown table of GB/s,
# wire bytes and time ratios and the issue's goals table, first on every
# core, then pinned to one core (the per-core figures).
# Usage: benches/compare.sh [SIZE_MIB] [RUNS] [DIR]
set -euo pipefail
cd "$(dirname "$0")/../../.."
command -v rsync >/dev/null || { echo "compare.sh: rsync is not installed (scripts/setup installs it)" >&2; exit 1; }
command -v taskset >/dev/null || { echo "compare.sh: taskset is missing (util-linux)" >&2; exit 1; }
cargo build --release --quiet -p wasmover-block --example compare
bin="${CARGO_TARGET_DIR:-target}/release/examples/compare"
echo "## every core ($(nproc))"
"$bin" "$@"
echo
echo "## one core (taskset -c 0)"
taskset -c 0 "$bin" --one-core "$@"
