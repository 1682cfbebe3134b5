#!/usr/bin/env bash
# Fetches VolSync's CustomResourceDefinitions (volsync.backube/v1alpha1
# ReplicationSource and ReplicationDestination) for wasmover's tests, which
# install them on a real API server with no VolSync controller running, and
# caches them by version under
# ${WASMOVER_CACHE:-$HOME/.cache/wasmover}/volsync/<version>/. Idempotent: a
# second run only prints the path.
#
#   tests/volsync/install.sh      # prints VOLSYNC_CRDS=<dir holding the two CRD files>
#
# Source: VolSync's own Go module, github.com/backube/volsync at a pinned
# version, through the Go module proxy (`go mod download`, which checks it
# against the checksum database), then the checked-in
# config/crd/bases/volsync.backube_*.yaml. The module's h1: sum is pinned
# here too, so another version's CRDs never pass for this one.
# Needs: go, python3, flock.
set -euo pipefail

VOLSYNC_VERSION="${VOLSYNC_VERSION:-v0.14.0}"
VOLSYNC_SUM="${VOLSYNC_SUM:-h1:xdYpIYdn3pQgSSktcKlywn2X5Vo9V68iNGIj7ysqk64=}"
CACHE="${WASMOVER_CACHE:-$HOME/.cache/wasmover}"
DIR="$CACHE/volsync/$VOLSYNC_VERSION"
FILES=(volsync.backube_replicationsources.yaml volsync.backube_replicationdestinations.yaml)
log() { echo "volsync/install.sh: $*" >&2; }

mkdir -p "$DIR"
# One installer at a time per version (scripts/test and a test may race).
exec 9>"$DIR/.lock"
flock 9

have=1
for f in "${FILES[@]}"; do [[ -s "$DIR/crds/$f" ]] || have=0; done
if ((have == 0)); then
  command -v go >/dev/null || { log "go is required to fetch VolSync's module"; exit 1; }
  log "fetching github.com/backube/volsync@$VOLSYNC_VERSION from the Go module proxy"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  # Outside any module, so no go.mod is read or written.
  json=$(cd "$work" && go mod download -json "github.com/backube/volsync@$VOLSYNC_VERSION")
  read -r src sum error < <(python3 -c '
import json, sys
d = json.load(sys.stdin)
print(d.get("Dir", "-"), d.get("Sum", "-"), d.get("Error", "").replace("\n", " ") or "-")
' <<<"$json")
  [[ "$error" == "-" ]] || { log "go mod download failed: $error"; exit 1; }
  [[ "$sum" == "$VOLSYNC_SUM" ]] || {
    log "github.com/backube/volsync@$VOLSYNC_VERSION has sum $sum, not the pinned $VOLSYNC_SUM"
    exit 1
  }
  mkdir -p "$DIR/crds.tmp"
  for f in "${FILES[@]}"; do
    install -m 0644 "$src/config/crd/bases/$f" "$DIR/crds.tmp/$f"
  done
  rm -rf "$DIR/crds"
  mv "$DIR/crds.tmp" "$DIR/crds"
fi
echo "VOLSYNC_CRDS=$DIR/crds"
