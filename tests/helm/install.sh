#!/usr/bin/env bash
# Builds helm from its Go module for the chart's tests (tests/chart.rs) and
# for rendering operator/yaml/wasmover.yaml, caching it by version under
# ${WASMOVER_CACHE:-$HOME/.cache/wasmover}/helm/<version>/.
# Idempotent: a second run only prints the path.
#
#   tests/helm/install.sh        # prints HELM=...
#   eval "$(tests/helm/install.sh)"
#
# Writes: <cache>/helm/<version>/bin/helm, and src/ (the wrapper module it
# is built from: go.mod, go.sum, tools.go).
#
# helm.sh/helm/v4 v4.1.x is the newest Helm built on the k8s.io v0.35
# libraries; the wrapper module raises them to v0.35.4, the release that
# tests/apiserver/install.sh builds kube-apiserver from, so that both
# builds share the Go module and build caches. Helm takes its default
# Kubernetes version (`helm template`'s .Capabilities.KubeVersion) from the
# client-go it was built with: v1.35.4.
# The build runs niced (nice -n 19) with GO_JOBS parallel jobs (default:
# one per core), taking the CPU other work leaves. Measured single-job on 2 cores beside other builds (load 4): with
# empty Go caches 245-317 s wall, 145 s user CPU; after the kube-apiserver
# build, 226 s wall, 111 s user CPU; later runs print the cached path (~0.01 s).
# Needs: go (>= the version helm's go.mod names; 1.25 for v4.1), flock.
set -euo pipefail

GO_JOBS="${GO_JOBS:-$(nproc)}" # parallel Go build jobs

HELM_VERSION="${HELM_VERSION:-v4.1.4}"
K8S_LIBS_VERSION="${K8S_LIBS_VERSION:-v0.35.4}"
CACHE="${WASMOVER_CACHE:-$HOME/.cache/wasmover}"
DIR="$CACHE/helm/$HELM_VERSION"
log() { echo "install.sh: $*" >&2; }

[[ "$HELM_VERSION" =~ ^v([0-9]+)\.[0-9]+\.[0-9]+$ ]] ||
  { log "HELM_VERSION must look like v4.1.4, not '$HELM_VERSION'"; exit 2; }
module="helm.sh/helm/v${BASH_REMATCH[1]}"

mkdir -p "$DIR/bin"
# One installer at a time per version (CI and a developer may race).
exec 9>"$DIR/.lock"
flock 9

if [[ ! -x "$DIR/bin/helm" ]]; then
  command -v go >/dev/null || { log "go is required to build helm"; exit 1; }
  mkdir -p "$DIR/src"
  cd "$DIR/src"

  log "fetching $module@$HELM_VERSION go.mod"
  gomod="$(go mod download -json "$module@$HELM_VERSION" |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
  [[ -f "$gomod" ]] || { log "no go.mod for $module@$HELM_VERSION (is the Go module proxy reachable?)"; exit 1; }
  gover="$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$gomod")"

  {
    echo "module wasmover.test/helm"
    echo
    echo "go $gover"
    echo
    echo "require ("
    echo "	$module $HELM_VERSION"
    # every k8s.io/X v0.N.M that helm requires, at $K8S_LIBS_VERSION
    sed -n 's|^[[:space:]]*\(k8s.io/[A-Za-z0-9._/-]*\) v0\.[0-9]*\.[0-9]*\( //.*\)\{0,1\}$|\t\1 '"$K8S_LIBS_VERSION"'|p' "$gomod"
    echo ")"
  } >go.mod.new
  mv -f go.mod.new go.mod
  cat >tools.go <<EOF
//go:build tools

package tools

import _ "$module/cmd/helm"
EOF
  # Version stamping, as helm's Makefile does for a release tag.
  ldflags="-s -w -X $module/internal/version.version=$HELM_VERSION"
  ldflags+=" -X $module/internal/version.metadata= -X $module/internal/version.gitTreeState=clean"

  # shellcheck disable=SC2030  # subshell-local on purpose
  export GOFLAGS="-p=$GO_JOBS -mod=mod -buildvcs=false" CGO_ENABLED=0
  log "building helm $HELM_VERSION with k8s.io $K8S_LIBS_VERSION (nice -n 19, -p $GO_JOBS)"
  start=$(date +%s)
  nice -n 19 go mod download >&2
  nice -n 19 go build -p "$GO_JOBS" -trimpath -ldflags "$ldflags" -o "$DIR/bin/helm.tmp" "$module/cmd/helm"
  mv -f "$DIR/bin/helm.tmp" "$DIR/bin/helm"
  log "built helm in $(( $(date +%s) - start ))s"
fi

echo "HELM=$DIR/bin/helm"
