#!/usr/bin/env bash
# Restarts the kube-apiserver that start.sh DIR started (etcd keeps
# running), with the same command line and port, and waits until it is
# ready again: for tests of clients surviving an API server restart.
#   tests/apiserver/restart.sh DIR
set -euo pipefail

[[ $# -eq 1 ]] || { echo "usage: $0 DIR" >&2; exit 2; }
DIR="$(cd "$1" && pwd)"
log() { echo "restart.sh: $*" >&2; }

pid=$(awk '$2 == "kube-apiserver" { print $1 }' "$DIR/pids")
[[ -n "$pid" && -r /proc/$pid/cmdline ]] || { log "no running kube-apiserver in $DIR/pids"; exit 1; }
mapfile -d '' argv <"/proc/$pid/cmdline"

kill -TERM "$pid"
for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
kill -KILL "$pid" 2>/dev/null || true
while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done

setsid "${argv[@]}" </dev/null >>"$DIR/kube-apiserver.log" 2>&1 &
new=$!
sed -i "s/^$pid kube-apiserver\$/$new kube-apiserver/" "$DIR/pids"

source "$DIR/env"
for _ in $(seq 1 900); do
  code=$(curl -sS --cacert "$CA" --cert "$CLIENT_CERT" --key "$CLIENT_KEY" \
    -o /dev/null -w '%{http_code}' "$APISERVER_URL/readyz" 2>/dev/null || true)
  [[ "$code" == 200 ]] && { log "kube-apiserver restarted ($new)"; exit 0; }
  kill -0 "$new" 2>/dev/null || { log "kube-apiserver exited"; tail -n 20 "$DIR/kube-apiserver.log" >&2; exit 1; }
  sleep 0.2
done
log "kube-apiserver not ready after restart"
exit 1
