#!/usr/bin/env bash
# Stops the etcd + kube-apiserver that start.sh DIR started (only those pids).
#   tests/apiserver/stop.sh DIR [--clean]   # --clean also removes DIR
set -euo pipefail

[[ $# -ge 1 ]] || { echo "usage: $0 DIR [--clean]" >&2; exit 2; }
DIR="$(cd "$1" 2>/dev/null && pwd)" || exit 0   # nothing to stop
PIDS="$DIR/pids"

if [[ -f "$PIDS" ]]; then
  live=()
  # kube-apiserver first, then etcd (reverse start order).
  while read -r pid name; do
    # Only signal a pid that is still ours: its command line mentions DIR.
    if [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$DIR"; then
      kill -TERM "$pid" 2>/dev/null && live+=("$pid") || true
    fi
  done < <(tac "$PIDS")
  for _ in $(seq 1 100); do
    still=()
    for pid in "${live[@]}"; do kill -0 "$pid" 2>/dev/null && still+=("$pid"); done
    live=("${still[@]}")
    [[ ${#live[@]} -eq 0 ]] && break
    sleep 0.1
  done
  for pid in "${live[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  rm -f "$PIDS"
fi

if [[ "${2:-}" == "--clean" ]]; then
  rm -rf "$DIR"
fi
