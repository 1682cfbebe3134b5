#!/usr/bin/env bash
# Builds the object-storage servers wasmover-restic's network backends are
# tested against (runtime/restic/tests/objectstore.rs): restic's rest-server
# and MinIO, an S3-compatible server, from their Go modules, cached by
# version under ${WASMOVER_CACHE:-$HOME/.cache/wasmover}/objectstore/.
# Idempotent: a second run only prints the paths.
#
#   tests/objectstore/install.sh      # prints REST_SERVER=... and MINIO=...
#   eval "$(tests/objectstore/install.sh)"
#
# Versions are pinned, and each module's checksum (the h1: hash go.sum
# records, also checked against sum.golang.org by the go command) is
# compared before anything is built:
#   rest-server  v0.14.0, the newest release (go.mod: go 1.23).
#   MinIO        github.com/minio/minio has no semver tags (its releases are
#                RELEASE.<date> tags the module proxy does not resolve here),
#                so a pseudo-version pins one commit: the newest the proxy
#                serves, 2026-02-12. Its go.mod asks for go 1.24.0 (the
#                installed Go is newer) and has no replace directives, so
#                a wrapper module that requires it builds it with its authors' dependency versions.
# Builds run niced (nice -n 19) with GO_JOBS parallel jobs (default: one
# per core), so that cargo keeps the CPU it needs.
# Needs: go (>= 1.24), flock.
set -euo pipefail

GO_JOBS="${GO_JOBS:-$(nproc)}"
REST_SERVER_VERSION="v0.14.0"
REST_SERVER_SUM="h1:II5myUaSHEc5133fkM4BL5zINJIV8vaPRwTair/hr4Q="
MINIO_VERSION="v0.0.0-20260212201848-7aac2a2c5b7c"
MINIO_SUM="h1:/qdoYujxF5MBLDMVLeiYJ/7fBa1HikX39Dvzb9Ji8pA="
CACHE="${WASMOVER_CACHE:-$HOME/.cache/wasmover}"
DIR="$CACHE/objectstore"
log() { echo "objectstore/install.sh: $*" >&2; }

mkdir -p "$DIR"
# One installer at a time (CI and a developer may race).
exec 9>"$DIR/.lock"
flock 9

# build MODULE VERSION SUM PACKAGE NAME: installs PACKAGE as $DIR/NAME-VERSION/NAME.
build() {
  local module=$1 version=$2 sum=$3 package=$4 name=$5
  local out="$DIR/$name-$version"
  [[ -x "$out/$name" ]] && return 0
  command -v go >/dev/null || { log "go is required to build $name"; exit 1; }
  log "building $name $version from $module (nice -n 19, -p $GO_JOBS)"
  local start got
  start=$(date +%s)
  got="$(go mod download -json "$module@$version" | sed -n 's/^[[:space:]]*"Sum": "\(.*\)",$/\1/p')"
  if [[ "$got" != "$sum" ]]; then
    log "$module@$version has checksum '$got', expected $sum"
    exit 1
  fi
  # A wrapper module that requires the pinned version: `go install
  # module@version` would ask the proxy for the module's version list
  # (deprecation notices), which the proxy here refuses.
  rm -rf "$out.new"
  mkdir -p "$out.new/src"
  (
    cd "$out.new/src"
    printf 'module wasmover.test/%s\n\ngo 1.24\n\nrequire %s %s\n' "$name" "$module" "$version" >go.mod
    printf '//go:build tools\n\npackage tools\n\nimport _ "%s"\n' "$package" >tools.go
    export GOFLAGS="-p=$GO_JOBS -mod=mod -buildvcs=false" CGO_ENABLED=0
    nice -n 19 go mod download >&2
    nice -n 19 go build -p "$GO_JOBS" -trimpath -ldflags "-s -w" -o "$out.new/$name" "$package"
  )
  rm -rf "$out.new/src"
  [[ -x "$out.new/$name" ]] || { log "go install left no $name"; exit 1; }
  rm -rf "$out"
  mv "$out.new" "$out"
  log "built $name in $(( $(date +%s) - start ))s"
}

build github.com/restic/rest-server "$REST_SERVER_VERSION" "$REST_SERVER_SUM" \
  github.com/restic/rest-server/cmd/rest-server rest-server
build github.com/minio/minio "$MINIO_VERSION" "$MINIO_SUM" github.com/minio/minio minio

echo "REST_SERVER=$DIR/rest-server-$REST_SERVER_VERSION/rest-server"
echo "MINIO=$DIR/minio-$MINIO_VERSION/minio"
