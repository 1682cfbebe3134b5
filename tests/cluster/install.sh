#!/usr/bin/env bash
# Installs and builds everything tests/cluster/start.sh runs, cached under
# ${WASMOVER_CACHE:-$HOME/.cache/wasmover}/ by version. Idempotent: a second run
# only prints the paths. Needs root (apt-get) the first time on a fresh machine.
#
#   tests/cluster/install.sh            # prints KEY=path lines (below)
#   eval "$(tests/cluster/install.sh)"
#
# What and where (each keyed by what determines it, so a version bump rebuilds):
#   Debian packages   containerd runc containernetworking-plugins busybox-static
#                     nftables (kube-proxy), plus iproute2 openssl curl: only the missing ones
#   kube/<v>/         etcd, kube-apiserver, kubelet, kube-controller-manager,
#                     kube-scheduler, kube-proxy, kubectl (tests/apiserver/install.sh)
#   csi/<key>/bin/    csi-provisioner, csi-snapshotter, snapshot-controller and
#                     crictl: ONE wrapper module and ONE go build, with every module
#                     the kube build uses pinned to its version there (k8s.io/* at
#                     v0.X.Y), so the shared packages come from the same Go build cache
#   csi/<key>/crd/    the six snapshot + group-snapshot CRDs, from the
#                     external-snapshotter client/v8 module zip (config/crd)
#   cluster-go/<sha>/ the project's tests/cluster/go module (./cmd/...: csi-hostdir,
#                     pause), keyed by a hash of its sources
#   images/           OCI image-layout tarballs for `ctr images import`:
#                     wasmover.test/pause:1 (cmd/pause) and wasmover.test/busybox:1
#                     (Debian's busybox-static with its applet links)
# Prints ETCD= KUBE_APISERVER= KUBELET= KUBE_CONTROLLER_MANAGER= KUBE_SCHEDULER=
# KUBE_PROXY= KUBECTL= CSI_PROVISIONER= CSI_SNAPSHOTTER= SNAPSHOT_CONTROLLER=
# CRICTL= SNAPSHOT_CRDS= CSI_HOSTDIR= PAUSE= PAUSE_IMAGE= PAUSE_TAR=
# BUSYBOX_IMAGE= BUSYBOX_TAR= CTR= (the last only with the Go module present).
# Go builds run niced (nice -n 19) with GO_JOBS jobs (default: the cores), CGO_ENABLED=0.
set -euo pipefail

GO_JOBS="${GO_JOBS:-$(nproc)}" # parallel Go build jobs

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KUBE_VERSION="${KUBE_VERSION:-v1.35.4}"
# external-provisioner: the proxy serves v5.3.0 (k8s.io v0.33), v6.3.0 and v6.4.0
# (v0.36, v0.37; v6.0-v6.2 answer 403). v6.3.0 does not build against client-go
# v0.35 (it calls cache.WaitFor, new in v0.36); v5.3.0 does.
PROVISIONER_VERSION="${PROVISIONER_VERSION:-v5.3.0}"
# v8.5.0 is the external-snapshotter built on client-go v0.35; its client/v8
# (API types and CRDs) is v8.4.0, the version its go.mod requires.
SNAPSHOTTER_VERSION="${SNAPSHOTTER_VERSION:-v8.5.0}"
SNAPSHOT_CLIENT_VERSION="${SNAPSHOT_CLIENT_VERSION:-v8.4.0}"
CRICTL_VERSION="${CRICTL_VERSION:-v1.34.0}"   # sigs.k8s.io/cri-tools; v1.35 is not on the proxy
# crictl uses k8s.io/kubectl's util/term only, whose TerminalSizeQueue changed
# in v0.35: that one module stays at v0.34 (nothing else here uses kubectl).
CRICTL_KUBECTL_VERSION="${CRICTL_KUBECTL_VERSION:-v0.34.13}"
CACHE="${WASMOVER_CACHE:-$HOME/.cache/wasmover}"
PAUSE_IMAGE="wasmover.test/pause:1"
BUSYBOX_IMAGE="wasmover.test/busybox:1"
log() { echo "install.sh: $*" >&2; }
elapsed() { echo "$(( $(date +%s) - $1 ))s"; }

mkdir -p "$CACHE"
exec 8>"$CACHE/.cluster-install.lock"
flock 8

# ------------------------------------------------------ Debian packages ----
PACKAGES=(containerd runc containernetworking-plugins busybox-static nftables iproute2 openssl curl)
missing=()
for p in "${PACKAGES[@]}"; do
  [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" == "install ok installed" ]] || missing+=("$p")
done
if (( ${#missing[@]} )); then
  [[ $EUID -eq 0 ]] || { log "need root to apt-get install ${missing[*]}"; exit 1; }
  log "apt-get install ${missing[*]}"
  start=$(date +%s)
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  log "installed packages in $(elapsed "$start")"
fi

# ------------------------------------------------------- kube binaries ----
kube_env="$("$HERE/../apiserver/install.sh")"
eval "$kube_env"

command -v go >/dev/null || { log "go is required"; exit 1; }
export GOFLAGS="-p=$GO_JOBS -mod=mod -buildvcs=false" CGO_ENABLED=0

# ------------------------------------------- CSI sidecars and crictl ----
CSI_DIR="$CACHE/csi/provisioner-$PROVISIONER_VERSION-snapshotter-$SNAPSHOTTER_VERSION-crictl-$CRICTL_VERSION-kube-$KUBE_VERSION"
CSI_BINS=(csi-provisioner csi-snapshotter snapshot-controller crictl)
need=""
for b in "${CSI_BINS[@]}"; do [[ -x "$CSI_DIR/bin/$b" ]] || need=1; done
[[ -f "$CSI_DIR/crd/.done" ]] || need=1
if [[ -n "$need" ]]; then
  mkdir -p "$CSI_DIR/src" "$CSI_DIR/bin"
  cd "$CSI_DIR/src"
  # Every module the kube build uses is pinned to the version it uses (replace
  # wins over the newer ones the sidecars ask for), so client-go and the rest
  # come out of the same Go build cache. Only the CSI spec is newer (group
  # snapshots need >= v1.11), and kubectl older (for crictl, above).
  kube_mods="$(cd "$CACHE/kube/$KUBE_VERSION/src" && go list -m \
    -f '{{if not .Main}}{{.Path}} {{with .Replace}}{{.Version}}{{else}}{{.Version}}{{end}}{{end}}' all)"
  P=github.com/kubernetes-csi/external-provisioner/${PROVISIONER_VERSION%%.*}
  S=github.com/kubernetes-csi/external-snapshotter/v8
  C=github.com/kubernetes-csi/external-snapshotter/client/v8
  T=sigs.k8s.io/cri-tools
  {
    echo "module wasmover.test/csi-sidecars"
    echo
    echo "go 1.25.5"   # external-snapshotter v8.5.0's
    echo
    echo "require ("
    printf '\t%s %s\n' "$P" "$PROVISIONER_VERSION" "$S" "$SNAPSHOTTER_VERSION" \
      "$C" "$SNAPSHOT_CLIENT_VERSION" "$T" "$CRICTL_VERSION"
    # the provisioner's v1.3.0 is built on structured-merge-diff v4; v1.5.1 on v6, as client-go v0.35
    printf '\tsigs.k8s.io/gateway-api v1.5.1\n'
    echo ")"
    echo
    echo "replace ("
    awk -v kubectl="$CRICTL_KUBECTL_VERSION" 'NF == 2 && $1 != "github.com/container-storage-interface/spec" {
      printf "\t%s => %s %s\n", $1, $1, ($1 == "k8s.io/kubectl" ? kubectl : $2) }' <<<"$kube_mods"
    grep -q '^k8s.io/kubernetes ' <<<"$kube_mods" || printf '\tk8s.io/kubernetes => k8s.io/kubernetes %s\n' "$KUBE_VERSION"
    echo ")"
  } >go.mod.new
  mv -f go.mod.new go.mod
  printf '//go:build tools\n\npackage tools\n\nimport (\n\t_ "%s"\n\t_ "%s"\n\t_ "%s"\n\t_ "%s"\n)\n' \
    "$P/cmd/csi-provisioner" "$S/cmd/csi-snapshotter" "$S/cmd/snapshot-controller" "$T/cmd/crictl" >tools.go

  log "building ${CSI_BINS[*]} (external-provisioner $PROVISIONER_VERSION, external-snapshotter $SNAPSHOTTER_VERSION, cri-tools $CRICTL_VERSION; nice -n 19, -p $GO_JOBS)"
  start=$(date +%s)
  nice -n 19 go mod tidy >&2   # resolves (the pins above win) and downloads
  rm -rf "$CSI_DIR/bin/.new"; mkdir -p "$CSI_DIR/bin/.new"
  nice -n 19 go build -p "$GO_JOBS" -trimpath -ldflags "-s -w" \
    -ldflags "$P/cmd/csi-provisioner=-s -w -X main.version=$PROVISIONER_VERSION" \
    -ldflags "$S/cmd/csi-snapshotter=-s -w -X main.version=$SNAPSHOTTER_VERSION" \
    -ldflags "$S/cmd/snapshot-controller=-s -w -X main.version=$SNAPSHOTTER_VERSION" \
    -ldflags "$T/cmd/crictl=-s -w -X $T/pkg/version.Version=$CRICTL_VERSION" \
    -o "$CSI_DIR/bin/.new/" "$P/cmd/csi-provisioner" "$S/cmd/csi-snapshotter" \
    "$S/cmd/snapshot-controller" "$T/cmd/crictl"
  for b in "${CSI_BINS[@]}"; do mv -f "$CSI_DIR/bin/.new/$b" "$CSI_DIR/bin/$b"; done
  rmdir "$CSI_DIR/bin/.new"
  log "built ${CSI_BINS[*]} in $(elapsed "$start")"

  crd_src="$(go mod download -json "$C@$SNAPSHOT_CLIENT_VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')/config/crd"
  rm -rf "$CSI_DIR/crd"; mkdir -p "$CSI_DIR/crd"
  n=0
  for f in "$crd_src"/*snapshot*.yaml; do install -m 0644 "$f" "$CSI_DIR/crd/"; n=$((n + 1)); done
  (( n == 6 )) || { log "expected 6 snapshot CRDs in $crd_src, found $n"; exit 1; }
  touch "$CSI_DIR/crd/.done"
fi

# ------------------------------------------- the project's Go module ----
GO_SRC="$HERE/go"
have_go=""
if [[ -f "$GO_SRC/go.mod" && -d "$GO_SRC/cmd/csi-hostdir" && -d "$GO_SRC/cmd/pause" ]]; then
  have_go=1
  sum="$(cd "$GO_SRC" && find . -type f \( -name '*.go' -o -name go.mod -o -name go.sum \) -print0 |
    LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)"
  GO_OUT="$CACHE/cluster-go/$sum"
  if [[ ! -x "$GO_OUT/bin/csi-hostdir" || ! -x "$GO_OUT/bin/pause" ]]; then
    log "building tests/cluster/go ./cmd/... (sources $sum; nice -n 19, -p $GO_JOBS)"
    start=$(date +%s)
    rm -rf "$GO_OUT/bin.new"; mkdir -p "$GO_OUT/bin.new"
    # its own go.mod and go.sum as they are (-mod=readonly): this script does not edit them
    (cd "$GO_SRC" && GOFLAGS="-p=$GO_JOBS -mod=readonly -buildvcs=false" \
      nice -n 19 go build -p "$GO_JOBS" -trimpath -ldflags "-s -w" -o "$GO_OUT/bin.new/" ./cmd/...)
    rm -rf "${GO_OUT:?}/bin"; mv "$GO_OUT/bin.new" "$GO_OUT/bin"
    log "built tests/cluster/go in $(elapsed "$start")"
  fi

  # ------------------------------------------------------------ images ----
  IMG="$CACHE/images"
  mkdir -p "$IMG"
  psum="$(sha256sum "$GO_OUT/bin/pause" | cut -c1-16)"
  PAUSE_TAR="$IMG/pause-$psum.tar"
  if [[ ! -f "$PAUSE_TAR" ]]; then
    python3 "$HERE/oci-image.py" "$PAUSE_TAR" "$PAUSE_IMAGE" \
      --file "$GO_OUT/bin/pause:/pause" --entrypoint /pause
  fi
else
  log "tests/cluster/go (cmd/csi-hostdir, cmd/pause) is not there yet: no CSI driver or pause image"
fi

bb_version="$(dpkg-query -W -f='${Version}' busybox-static | tr ':~+' '___')"
BUSYBOX_TAR="$CACHE/images/busybox-$bb_version.tar"
if [[ ! -f "$BUSYBOX_TAR" ]]; then
  mkdir -p "$CACHE/images"
  links=()
  # `busybox --list-full` names each applet with its usual directory (bin/ls, usr/bin/awk, ...)
  while read -r applet; do
    [[ "$applet" == bin/busybox ]] || links+=(--link "$applet:/bin/busybox")
  done < <(/bin/busybox --list-full | sort)
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$CACHE/images/.passwd"
  printf 'root:x:0:\nnobody:x:65534:\n' >"$CACHE/images/.group"
  python3 "$HERE/oci-image.py" "$BUSYBOX_TAR" "$BUSYBOX_IMAGE" \
    --file /bin/busybox:/bin/busybox --file "$CACHE/images/.passwd:/etc/passwd:644" \
    --file "$CACHE/images/.group:/etc/group:644" --dir /tmp:1777 --dir /root:700 \
    "${links[@]}" --cmd sh
  rm -f "$CACHE/images/.passwd" "$CACHE/images/.group"
fi

# ---------------------------------------------------------------- paths ----
echo "$kube_env"
for b in "${CSI_BINS[@]}"; do key="${b^^}"; echo "${key//-/_}=$CSI_DIR/bin/$b"; done
echo "SNAPSHOT_CRDS=$CSI_DIR/crd"
echo "CTR=$(command -v ctr)"
echo "BUSYBOX_IMAGE=$BUSYBOX_IMAGE"
echo "BUSYBOX_TAR=$BUSYBOX_TAR"
if [[ -n "$have_go" ]]; then
  echo "CSI_HOSTDIR=$GO_OUT/bin/csi-hostdir"
  echo "PAUSE=$GO_OUT/bin/pause"
  echo "PAUSE_IMAGE=$PAUSE_IMAGE"
  echo "PAUSE_TAR=$PAUSE_TAR"
fi
