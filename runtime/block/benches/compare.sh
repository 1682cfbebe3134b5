#!/usr/bin/env bash
# The block engine side by side with fast_rsync and rsync on one large
# seeded file (default 1 GiB, 3 runs): prints a Markdown table of GB/s,
# wire bytes and time ratios. Usage: benches/compare.sh [SIZE_MIB] [RUNS] [DIR]
set -euo pipefail
cd "$(dirname "$0")/../../.."
command -v rsync >/dev/null || { echo "compare.sh: rsync is not installed (scripts/setup installs it)" >&2; exit 1; }
cargo run --release --quiet -p wasmover-block --example compare -- "$@"
