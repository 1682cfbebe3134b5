#!/usr/bin/env bash
# Imports image tarballs (OCI image layout or docker save format) into the
# containerd of a cluster tests/cluster/start.sh DIR is running, for Pods with
# imagePullPolicy Never or IfNotPresent. Writes only into DIR's containerd.
#
#   tests/cluster/import.sh DIR IMAGE.tar [IMAGE.tar...]
set -euo pipefail

log() { echo "cluster/import.sh: $*" >&2; }
[[ $# -ge 2 ]] || { echo "usage: $0 DIR IMAGE.tar [IMAGE.tar...]" >&2; exit 2; }
DIR="$1"
shift
[[ -f "$DIR/env" ]] || { log "$DIR/env not found: is a cluster running there?"; exit 1; }
# shellcheck disable=SC1091
source "$DIR/env"
[[ -n "${CONTAINERD:-}" && -S "$CONTAINERD" ]] || { log "no containerd socket in $DIR (cluster stopped?)"; exit 1; }
for tar in "$@"; do
  [[ -f "$tar" ]] || { log "$tar: no such file"; exit 1; }
  "$CTR" --address "$CONTAINERD" --namespace k8s.io images import "$tar" >&2 ||
    { log "importing $tar failed"; exit 1; }
done
