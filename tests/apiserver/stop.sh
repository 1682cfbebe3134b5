#!/usr/bin/env bash
# Stops the etcd + kube-apiserver that start.sh DIR started (only those pids).
#   tests/apiserver/stop.sh DIR [--clean]   # --clean also removes DIR
set -euo pipefail

[[ $# -ge 1 ]] || { echo "usage: $0 DIR [--clean]" >&2; exit 2; }
DIR="$(cd "$1" 2>/dev/null && pwd)" || exit 0   # nothing to stop
PIDS="$DIR/pids"

ours() { # pid still alive (not a zombie) and its command line mentions DIR
  [[ -r /proc/$1/stat ]] || return 1
  [[ "$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)" != Z ]] || return 1
  tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF "$DIR"
}
gone_within() { # pid tenths-of-a-second
  local _
  for _ in $(seq 1 "$2"); do ours "$1" || return 0; sleep 0.1; done
  ! ours "$1"
}

if [[ -f "$PIDS" ]]; then
  # One at a time in reverse start order: kube-apiserver first, while etcd is
  # still up (with etcd gone its graceful shutdown hangs for ~10 s), then etcd.
  while read -r pid name; do
    ours "$pid" || continue
    kill -TERM "$pid" 2>/dev/null || continue
    # a kube-apiserver still starting up may ignore TERM: KILL after 10 s
    if ! gone_within "$pid" 100; then
      kill -KILL "$pid" 2>/dev/null || true
      gone_within "$pid" 100 || echo "stop.sh: $name ($pid) still running after KILL" >&2
    fi
  done < <(tac "$PIDS")
  rm -f "$PIDS"
fi

if [[ "${2:-}" == "--clean" ]]; then
  rm -rf "$DIR"
fi
