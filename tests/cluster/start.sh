#!/usr/bin/env bash
# Starts a whole single-node Kubernetes cluster for wasmover's end-to-end tests,
# its state under DIR: etcd + kube-apiserver (tests/apiserver/start.sh),
# kube-controller-manager, kube-scheduler, containerd, a CNI bridge, the kubelet,
# the project's CSI driver (tests/cluster/go csi-hostdir) with csi-provisioner,
# csi-snapshotter and snapshot-controller as host processes, and, with
# WITH_KUBE_PROXY=1, kube-proxy (nftables) so Pods reach Service ClusterIPs.
# Needs root. Undo everything with tests/cluster/stop.sh DIR.
#
#   export KUBECONFIG=$(tests/cluster/start.sh DIR)   # DIR: fresh or empty
#   source DIR/env                                    # names, ports, paths (below)
#   tests/cluster/stop.sh DIR
#
# Writes into DIR: kubeconfig (admin), env (sourceable: APISERVER_URL,
# APISERVER_PORT, NODE_NAME, CONTAINERD, KUBECTL, CRICTL, CTR, PAUSE_IMAGE,
# BUSYBOX_IMAGE, CSI_DRIVER, STORAGE_CLASS, SNAPSHOT_CLASS, GROUP_SNAPSHOT_CLASS,
# PLAIN_CSI_DRIVER, PLAIN_STORAGE_CLASS, PLAIN_SNAPSHOT_CLASS (empty without WITH_PLAIN_CSI),
# BRIDGE, POD_CIDR, KUBECONFIG), pids + cluster.pids (what stop.sh stops),
# host-state (what stop.sh undoes), pki/, *.kubeconfig, etcd.log,
# kube-apiserver.log, logs/<process>.log, and the data of containerd
# (containerd/), the kubelet (kubelet/), CNI (cni/) and the CSI driver (csi/).
# On the host: the cluster's bridge, cgroups (/wasmover-<hash>), an /etc/hosts
# line, /run/wasmover-clusters/ (the host's sysctls before the first cluster).
# Prints the kubeconfig path on stdout; everything else on stderr.
#
# Environment (all optional):
#   NODE_NAME        node name (default wasmover-node); must resolve to 127.0.0.1,
#                    else a line is added to /etc/hosts (and removed by stop.sh)
#   BRIDGE, POD_CIDR CNI bridge name and host-local /24 (default: the first free
#                    wasmoverN / 10.244.N.0/24)
#   APISERVER_PORT ETCD_CLIENT_PORT ETCD_PEER_PORT KUBELET_PORT STREAM_PORT
#                    fixed ports (default: free ones)
#   IMAGES           space-separated OCI/docker image tarballs to import as well
#   WITH_KUBE_PROXY=1 also run kube-proxy (nftables, --masquerade-all) and make the
#                    bridge a gateway, so Pod -> ClusterIP -> Pod works
#   WITH_PLAIN_CSI=1 also run a second csi-hostdir, plain.csi.wasmover.dev, WITHOUT
#                    group snapshots (its own provisioner and snapshotter, StorageClass
#                    and VolumeSnapshotClass wasmover-plain, no VolumeGroupSnapshotClass):
#                    a driver that group snapshots refuse; env PLAIN_CSI_DRIVER,
#                    PLAIN_STORAGE_CLASS, PLAIN_SNAPSHOT_CLASS
#   READY_TIMEOUT    seconds to wait for each step (default 120)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log() { echo "cluster/start.sh: $*" >&2; }
die() { log "$*"; exit 1; }
[[ $# -eq 1 ]] || { echo "usage: $0 DIR" >&2; exit 2; }
[[ $EUID -eq 0 ]] || die "needs root (containerd, kubelet, mounts, cgroups)"
mkdir -p "$1"
DIR="$(cd "$1" && pwd)"
[[ ! -f "$DIR/pids" && ! -f "$DIR/cluster.pids" ]] ||
  die "$DIR holds a started cluster: run tests/cluster/stop.sh $DIR first"
READY_TIMEOUT="${READY_TIMEOUT:-120}"
NODE_NAME="${NODE_NAME:-wasmover-node}"
WITH_KUBE_PROXY="${WITH_KUBE_PROXY:-}"
ms() { date +%s%3N; }
since() { local d=$(( $(ms) - $1 )); printf '%d.%03ds' $((d / 1000)) $((d % 1000)); }
t_start=$(ms)

paths="$("$HERE/install.sh")" || die "tests/cluster/install.sh failed"
eval "$paths"
[[ -n "${PAUSE_TAR:-}" ]] || die "no pause image: tests/cluster/go (cmd/pause) is missing or failed to build"

mkdir -p "$DIR/logs"
touch "$DIR/cluster.pids"
failed() {
  local rc=$?
  [[ $rc -ne 0 ]] || return 0
  log "failed (rc=$rc) after $(since "$t_start"); stopping what was started"
  "$HERE/stop.sh" "$DIR" >&2 || true
}
trap failed EXIT

# alive checks every process started so far; a dead one ends the start with its log.
alive() {
  local pid name
  while read -r pid name; do
    [[ -n "$pid" ]] || continue
    if ! kill -0 "$pid" 2>/dev/null || [[ "$(cut -d' ' -f3 "/proc/$pid/stat" 2>/dev/null)" == Z ]]; then
      log "$name (pid $pid) exited; tail of its log:"
      tail -n 40 "$(logfile "$name")" >&2 || true
      exit 1
    fi
  done < <(cat "$DIR/pids" "$DIR/cluster.pids" 2>/dev/null)
}
logfile() { if [[ -f "$DIR/$1.log" ]]; then echo "$DIR/$1.log"; else echo "$DIR/logs/$1.log"; fi; }
# wait_for WHAT CMD...: runs CMD until it succeeds, failing fast if a process died.
wait_for() {
  local what="$1" deadline=$(( $(date +%s) + READY_TIMEOUT ))
  shift
  until "$@" >/dev/null 2>&1; do
    alive
    (( $(date +%s) < deadline )) || die "timed out after ${READY_TIMEOUT}s waiting for $what"
    sleep 0.2
  done
}
# run NAME CMD...: starts CMD in its own session, logging to DIR/logs/NAME.log.
run() {
  local name="$1"
  shift
  setsid "$@" </dev/null >"$DIR/logs/$name.log" 2>&1 &
  echo "$! $name" >>"$DIR/cluster.pids"
}

# ---------------------------------------------------- host state saved ----
# Everything stop.sh must undo is recorded before it is changed: this
# cluster's own changes in DIR/host-state; the host-wide ones (sysctls the
# kubelet and CNI set, host dirs they create) once for all clusters running
# at a time, in $REG/host, which the last one to stop restores.
ID="$(echo -n "$DIR" | sha256sum | cut -c1-12)"
STATE="$DIR/host-state"
printf 'CRICTL=%q\nCTR=%q\nKUBE_PROXY=%q\n' "$CRICTL" "$CTR" "$KUBE_PROXY" >"$STATE"
REG=/run/wasmover-clusters
mkdir -p "$REG"
exec 7<"$REG"
flock 7
others=0
for f in "$REG"/*.dir; do
  [[ -f "$f" ]] || continue
  if [[ -f "$(cat "$f")/host-state" ]]; then others=$((others + 1)); else rm -f "$f"; fi
done
if (( others == 0 )) || [[ ! -f "$REG/host" ]]; then
  saved=()
  for key in vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops \
    kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.ip_forward \
    net.ipv4.conf.all.route_localnet net.bridge.bridge-nf-call-iptables; do
    v="$(sysctl -n "$key" 2>/dev/null)" && saved+=("$key=$v")
  done
  created=()
  for d in /run/containerd /run/containerd/s /var/log/containers /var/log/pods; do
    [[ -e "$d" ]] || created+=("$d")
  done
  printf "SYSCTLS='%s'\nCREATED_DIRS='%s'\n" "${saved[*]}" "${created[*]}" >"$REG/host"
fi
echo "$DIR" >"$REG/$ID.dir"

# The apiserver reaches the kubelet by the node's Hostname address, which must
# be loopback (the kubelet refuses a loopback node IP). Each cluster adds its
# own line unless the host's own lines resolve the name.
if ! awk -v n="$NODE_NAME" '!/# wasmover-cluster / && $1 == "127.0.0.1" { for (i = 2; i <= NF && $i !~ /^#/; i++) if ($i == n) f = 1 } END { exit !f }' /etc/hosts; then
  echo "127.0.0.1 $NODE_NAME # wasmover-cluster $DIR" >>/etc/hosts
  echo "HOSTS_LINE='127.0.0.1 $NODE_NAME # wasmover-cluster $DIR'" >>"$STATE"
fi

flock -u 7

# The bridge is created here, so that two clusters claim different ones.
if [[ -n "${BRIDGE:-}" ]]; then
  [[ -n "${POD_CIDR:-}" ]] || die "BRIDGE given without POD_CIDR"
  if ip link add name "$BRIDGE" type bridge 2>/dev/null; then
    echo "BRIDGE=$BRIDGE" >>"$STATE"
  else
    log "bridge $BRIDGE exists; using it as it is (stop.sh leaves it)"
  fi
else
  for i in $(seq 1 250); do
    if ip link add name "wasmover$i" type bridge 2>/dev/null; then
      BRIDGE="wasmover$i"
      POD_CIDR="${POD_CIDR:-10.244.$i.0/24}"
      echo "BRIDGE=$BRIDGE" >>"$STATE"
      break
    fi
  done
  [[ -n "${BRIDGE:-}" ]] || die "no free bridge name wasmover1..250"
fi

# The kubelet's pods go under a cgroup of this cluster's own (cgroupRoot), in
# each cgroup v1 hierarchy; stop.sh removes it.
CGROUP_ROOT="/wasmover-$ID"
echo "CGROUP_ROOT=$CGROUP_ROOT" >>"$STATE"
for h in /sys/fs/cgroup/*/; do
  [[ "$(stat -f -c %T "$h")" == cgroupfs ]] || continue   # v1 hierarchies only
  mkdir -p "$h${CGROUP_ROOT#/}"
  if [[ -f "$h/cpuset.cpus" ]]; then # a new cpuset cgroup starts empty
    cat "$h/cpuset.cpus" >"$h${CGROUP_ROOT#/}/cpuset.cpus"
    cat "$h/cpuset.mems" >"$h${CGROUP_ROOT#/}/cpuset.mems"
  fi
done

# ---------------------------------------------------------------- ports ----
read -r p_api p_etcd p_peer p_kubelet p_healthz p_stream p_kcm p_sched p_proxy_m p_proxy_h < <(python3 - <<'EOF'
import socket
ss = [socket.socket() for _ in range(10)]
for s in ss:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])
EOF
)
APISERVER_PORT="${APISERVER_PORT:-$p_api}"
KUBELET_PORT="${KUBELET_PORT:-$p_kubelet}"
STREAM_PORT="${STREAM_PORT:-$p_stream}"

# ------------------------------------------------- etcd, kube-apiserver ----
t=$(ms)
PKI="$DIR/pki"
KUBECONFIG_ADMIN="$(
  APISERVER_PORT="$APISERVER_PORT" ETCD_CLIENT_PORT="${ETCD_CLIENT_PORT:-$p_etcd}" \
  ETCD_PEER_PORT="${ETCD_PEER_PORT:-$p_peer}" KUBE_APISERVER_DISABLE_ADMISSION="" \
  KUBE_APISERVER_AUTHORIZATION_MODE=Node,RBAC KUBE_APISERVER_FLAGS="--enable-admission-plugins=NodeRestriction
    --kubelet-preferred-address-types=Hostname
    --kubelet-client-certificate=$PKI/client.crt --kubelet-client-key=$PKI/client.key" \
  "$HERE/../apiserver/start.sh" "$DIR"
)"
log "etcd + kube-apiserver on :$APISERVER_PORT in $(since "$t")"
K=("$KUBECTL" --kubeconfig "$KUBECONFIG_ADMIN")
API_URL="https://127.0.0.1:$APISERVER_PORT"

# --------------------------------------------------------- snapshot CRDs ----
# Before the snapshot sidecars start, so that they find them at once.
"${K[@]}" apply -f "$SNAPSHOT_CRDS" >/dev/null

# ------------------------------------------- component certs, kubeconfigs ----
# cert NAME SUBJECT: a client certificate signed by the cluster CA, and NAME.kubeconfig.
cert() {
  (
    cd "$PKI"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key" 2>/dev/null
    openssl req -new -key "$1.key" -subj "$2" -out "$1.csr"
    printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 -days 3650 \
      -extfile "$1.ext" -out "$1.crt" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
    chmod 600 "$1.key"
  )
  cat >"$DIR/$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: wasmover-test
  cluster: {server: "$API_URL", certificate-authority: "$PKI/ca.crt"}
users:
- name: $1
  user: {client-certificate: "$PKI/$1.crt", client-key: "$PKI/$1.key"}
contexts:
- name: $1
  context: {cluster: wasmover-test, user: $1}
current-context: $1
EOF
  chmod 600 "$DIR/$1.kubeconfig"
}
cert kubelet "/O=system:nodes/CN=system:node:$NODE_NAME"
cert controller-manager "/CN=system:kube-controller-manager"
cert scheduler "/CN=system:kube-scheduler"
cert kube-proxy "/CN=system:kube-proxy"

# --------------------------------------- controller-manager, scheduler ----
run kube-controller-manager "$KUBE_CONTROLLER_MANAGER" \
  --kubeconfig="$DIR/controller-manager.kubeconfig" \
  --authentication-kubeconfig="$DIR/controller-manager.kubeconfig" \
  --authorization-kubeconfig="$DIR/controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port="$p_kcm" --cert-dir="$DIR/controller-manager-certs" \
  --leader-elect=false --use-service-account-credentials=true \
  --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
  --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
  --service-cluster-ip-range=10.0.0.0/24 --profiling=false
run kube-scheduler "$KUBE_SCHEDULER" \
  --kubeconfig="$DIR/scheduler.kubeconfig" \
  --authentication-kubeconfig="$DIR/scheduler.kubeconfig" \
  --authorization-kubeconfig="$DIR/scheduler.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port="$p_sched" --cert-dir="$DIR/scheduler-certs" \
  --leader-elect=false --profiling=false

# ----------------------------------------------------------- containerd ----
t=$(ms)
CD="$DIR/containerd"
CONTAINERD_SOCK="$CD/containerd.sock"
mkdir -p "$CD" "$DIR/cni/net.d" "$DIR/cni/ipam"
cat >"$CD/config.toml" <<EOF
version = 2
root = "$CD/root"
state = "$CD/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]

[grpc]
  address = "$CONTAINERD_SOCK"
[ttrpc]
  address = "$CONTAINERD_SOCK.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "$CD/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # this VM's bounding set lacks CAP_SYS_RESOURCE: nothing may lower oom_score_adj
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  tolerate_missing_hugetlb_controller = true
  disable_hugetlb_controller = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "$STREAM_PORT"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$CD/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$DIR/cni/net.d"
EOF
run containerd containerd --config "$CD/config.toml"
ctr_k8s=("$CTR" --address "$CONTAINERD_SOCK" --namespace k8s.io)
wait_for "containerd" "${ctr_k8s[@]}" version
log "containerd in $(since "$t")"

t=$(ms)
for tar in "$PAUSE_TAR" "$BUSYBOX_TAR" ${IMAGES:-}; do
  [[ -f "$tar" ]] || die "image tarball $tar not found"
  "${ctr_k8s[@]}" images import "$tar" >&2 ||
    die "importing $tar failed"
done
log "images imported in $(since "$t")"

# ------------------------------------------------------------------ CNI ----
# One bridge, host-local addresses; no masquerading. Without WITH_KUBE_PROXY the bridge
# has no address and Pods no route off it: their traffic stays on the bridge.
# With it, the bridge is their gateway to the Service range (10.0.0.0/24, see
# tests/apiserver/start.sh) only, where kube-proxy's DNAT sends it back onto the bridge.
GATEWAY=false ROUTES=""
if [[ -n "$WITH_KUBE_PROXY" ]]; then
  GATEWAY=true ROUTES=', "routes": [{"dst": "10.0.0.0/24"}]'
fi
cat >"$DIR/cni/net.d/10-wasmover.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "wasmover-$BRIDGE",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": $GATEWAY,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$POD_CIDR"}]],
        "dataDir": "$DIR/cni/ipam"$ROUTES
      }
    }
  ]
}
EOF

# -------------------------------------------------------------- kubelet ----
KL="$DIR/kubelet"
mkdir -p "$KL" "$DIR/static-pods" "$DIR/pod-logs"
echo "nameserver 127.0.0.1" >"$DIR/resolv.conf"
cat >"$DIR/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: $KUBELET_PORT
healthzBindAddress: 127.0.0.1
healthzPort: $p_healthz
readOnlyPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: "$PKI/ca.crt"}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
cgroupDriver: cgroupfs
cgroupRoot: $CGROUP_ROOT
failCgroupV1: false
failSwapOn: false
makeIPTablesUtilChains: false
staticPodPath: $DIR/static-pods
podLogsDir: $DIR/pod-logs
volumePluginDir: $DIR/volume-plugins
resolvConf: $DIR/resolv.conf
imageGCHighThresholdPercent: 100
evictionHard: {memory.available: "50Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
serializeImagePulls: false
EOF
t_kubelet=$(ms)
run kubelet "$KUBELET" --config="$DIR/kubelet.yaml" --kubeconfig="$DIR/kubelet.kubeconfig" \
  --root-dir="$KL" --cert-dir="$KL/pki" --hostname-override="$NODE_NAME"

# ----------------------------------------------------------- kube-proxy ----
if [[ -n "$WITH_KUBE_PROXY" ]]; then
  # kube-proxy's nftables tables are named kube-proxy: one per host
  ! nft list table ip kube-proxy >/dev/null 2>&1 ||
    die "nftables table 'ip kube-proxy' exists: another cluster runs kube-proxy (one per host)"
  # The host forwards now (the bridge plugin sets ip_forward for a gateway);
  # this table keeps Pod traffic on the bridge and off the host's services.
  echo "NFT_TABLE='inet wasmover-$BRIDGE'" >>"$STATE"
  nft -f - <<EOF
table inet wasmover-$BRIDGE {
  chain forward {
    type filter hook forward priority filter; policy accept;
    iifname "$BRIDGE" oifname != "$BRIDGE" drop
    oifname "$BRIDGE" iifname != "$BRIDGE" drop
  }
  chain input {
    type filter hook input priority filter; policy accept;
    iifname "$BRIDGE" ct state established,related accept
    iifname "$BRIDGE" drop
  }
}
EOF
  cat >"$DIR/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
clientConnection: {kubeconfig: "$DIR/kube-proxy.kubeconfig"}
hostnameOverride: $NODE_NAME
clusterCIDR: $POD_CIDR
bindAddress: 127.0.0.1
metricsBindAddress: 127.0.0.1:$p_proxy_m
healthzBindAddress: 127.0.0.1:$p_proxy_h
nftables: {masqueradeAll: true}
conntrack: {maxPerCore: 0}
EOF
  run kube-proxy "$KUBE_PROXY" --config="$DIR/kube-proxy.yaml"
fi

# ------------------------------------------- the CSI driver and sidecars ----
CSI_DRIVER="${CSI_DRIVER:-hostdir.csi.wasmover.dev}"
WITH_PLAIN_CSI="${WITH_PLAIN_CSI:-}"
[[ -z "$WITH_PLAIN_CSI" || -n "${CSI_HOSTDIR:-}" ]] || die "WITH_PLAIN_CSI=1 needs csi-hostdir (tests/cluster/go)"
PLAIN_CSI_DRIVER=plain.csi.wasmover.dev
PLAIN_STORAGE_CLASS=wasmover-plain
PLAIN_SNAPSHOT_CLASS=wasmover-plain
if [[ -n "${CSI_HOSTDIR:-}" ]]; then
  CSI_SOCK="$KL/plugins/$CSI_DRIVER/csi.sock"
  mkdir -p "$(dirname "$CSI_SOCK")" "$KL/plugins_registry" "$DIR/csi"
  run csi-hostdir "$CSI_HOSTDIR" --name="$CSI_DRIVER" --node-id="$NODE_NAME" \
    --endpoint="unix://$CSI_SOCK" --state-dir="$DIR/csi" \
    --registration-dir="$KL/plugins_registry"
  wait_for "the CSI socket" test -S "$CSI_SOCK"
  run csi-provisioner "$CSI_PROVISIONER" --csi-address="$CSI_SOCK" --kubeconfig="$KUBECONFIG_ADMIN" \
    --leader-election=false --extra-create-metadata --timeout=60s
  run csi-snapshotter "$CSI_SNAPSHOTTER" --csi-address="$CSI_SOCK" --kubeconfig="$KUBECONFIG_ADMIN" \
    --leader-election=false --extra-create-metadata --timeout=60s \
    --feature-gates=CSIVolumeGroupSnapshot=true
  if [[ -n "$WITH_PLAIN_CSI" ]]; then
    # the same driver under another name, without the GroupController, and its
    # sidecars as a deployment without group snapshots runs them
    PLAIN_SOCK="$KL/plugins/$PLAIN_CSI_DRIVER/csi.sock"
    mkdir -p "$(dirname "$PLAIN_SOCK")" "$DIR/csi-plain"
    run csi-hostdir-plain "$CSI_HOSTDIR" --name="$PLAIN_CSI_DRIVER" --node-id="$NODE_NAME" \
      --endpoint="unix://$PLAIN_SOCK" --state-dir="$DIR/csi-plain" \
      --registration-dir="$KL/plugins_registry" --no-group-snapshots
    wait_for "the plain CSI socket" test -S "$PLAIN_SOCK"
    run csi-provisioner-plain "$CSI_PROVISIONER" --csi-address="$PLAIN_SOCK" --kubeconfig="$KUBECONFIG_ADMIN" \
      --leader-election=false --extra-create-metadata --timeout=60s
    run csi-snapshotter-plain "$CSI_SNAPSHOTTER" --csi-address="$PLAIN_SOCK" --kubeconfig="$KUBECONFIG_ADMIN" \
      --leader-election=false --extra-create-metadata --timeout=60s
  fi
  # Its client's default limit (5 requests/s, burst 10) paced a group snapshot
  # at ~2 s per member (each takes some ten API calls); one test node can take more.
  run snapshot-controller "$SNAPSHOT_CONTROLLER" --kubeconfig="$KUBECONFIG_ADMIN" \
    --leader-election=false --feature-gates=CSIVolumeGroupSnapshot=true \
    --kube-api-qps=100 --kube-api-burst=200
fi

# ------------------------------------------------ API objects of storage ----
t=$(ms)
wait_for "the snapshot CRDs" "${K[@]}" wait --for=condition=Established --timeout=2s \
  crd/volumesnapshots.snapshot.storage.k8s.io crd/volumesnapshotclasses.snapshot.storage.k8s.io \
  crd/volumesnapshotcontents.snapshot.storage.k8s.io \
  crd/volumegroupsnapshots.groupsnapshot.storage.k8s.io \
  crd/volumegroupsnapshotclasses.groupsnapshot.storage.k8s.io \
  crd/volumegroupsnapshotcontents.groupsnapshot.storage.k8s.io
STORAGE_CLASS=wasmover-hostdir
SNAPSHOT_CLASS=wasmover-hostdir
GROUP_SNAPSHOT_CLASS=wasmover-hostdir
"${K[@]}" apply -f - >/dev/null <<EOF
apiVersion: storage.k8s.io/v1
kind: CSIDriver
metadata: {name: $CSI_DRIVER}
spec:
  attachRequired: false
  podInfoOnMount: false
  fsGroupPolicy: File
  volumeLifecycleModes: [Persistent]
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: $STORAGE_CLASS
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: $CSI_DRIVER
reclaimPolicy: Delete
volumeBindingMode: Immediate
---
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshotClass
metadata:
  name: $SNAPSHOT_CLASS
  annotations: {snapshot.storage.kubernetes.io/is-default-class: "true"}
driver: $CSI_DRIVER
deletionPolicy: Delete
---
apiVersion: groupsnapshot.storage.k8s.io/v1beta2
kind: VolumeGroupSnapshotClass
metadata:
  name: $GROUP_SNAPSHOT_CLASS
  annotations: {groupsnapshot.storage.kubernetes.io/is-default-class: "true"}
driver: $CSI_DRIVER
deletionPolicy: Delete
EOF
if [[ -n "$WITH_PLAIN_CSI" ]]; then
  "${K[@]}" apply -f - >/dev/null <<EOF
apiVersion: storage.k8s.io/v1
kind: CSIDriver
metadata: {name: $PLAIN_CSI_DRIVER}
spec:
  attachRequired: false
  podInfoOnMount: false
  fsGroupPolicy: File
  volumeLifecycleModes: [Persistent]
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: $PLAIN_STORAGE_CLASS}
provisioner: $PLAIN_CSI_DRIVER
reclaimPolicy: Delete
volumeBindingMode: Immediate
---
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshotClass
metadata: {name: $PLAIN_SNAPSHOT_CLASS}
driver: $PLAIN_CSI_DRIVER
deletionPolicy: Delete
EOF
fi
log "snapshot CRDs, CSIDriver and storage classes in $(since "$t")"

# ---------------------------------------------------------------- ready ----
t=$(ms)
wait_for "node $NODE_NAME" "${K[@]}" get node "$NODE_NAME"
wait_for "node $NODE_NAME Ready" "${K[@]}" wait --for=condition=Ready --timeout=2s node "$NODE_NAME"
log "node Ready $(since "$t_kubelet") after the kubelet started"
wait_for "the default ServiceAccount" "${K[@]}" -n default get serviceaccount default
wait_for "ConfigMap kube-root-ca.crt" "${K[@]}" -n default get configmap kube-root-ca.crt
if [[ -n "${CSI_HOSTDIR:-}" ]]; then
  for driver in "$CSI_DRIVER" ${WITH_PLAIN_CSI:+"$PLAIN_CSI_DRIVER"}; do
    wait_for "CSINode $NODE_NAME with $driver" \
      sh -c "'$KUBECTL' --kubeconfig '$KUBECONFIG_ADMIN' get csinode '$NODE_NAME' -o jsonpath='{.spec.drivers[*].name}' | grep -qw '$driver'"
  done
fi
alive

cat >>"$DIR/env" <<EOF
APISERVER_PORT=$APISERVER_PORT
NODE_NAME=$NODE_NAME
CONTAINERD=$CONTAINERD_SOCK
KUBECTL=$KUBECTL
CRICTL=$CRICTL
CTR=$CTR
PAUSE_IMAGE=$PAUSE_IMAGE
BUSYBOX_IMAGE=$BUSYBOX_IMAGE
CSI_DRIVER=${CSI_HOSTDIR:+$CSI_DRIVER}
STORAGE_CLASS=${CSI_HOSTDIR:+$STORAGE_CLASS}
SNAPSHOT_CLASS=${CSI_HOSTDIR:+$SNAPSHOT_CLASS}
GROUP_SNAPSHOT_CLASS=${CSI_HOSTDIR:+$GROUP_SNAPSHOT_CLASS}
PLAIN_CSI_DRIVER=${WITH_PLAIN_CSI:+$PLAIN_CSI_DRIVER}
PLAIN_STORAGE_CLASS=${WITH_PLAIN_CSI:+$PLAIN_STORAGE_CLASS}
PLAIN_SNAPSHOT_CLASS=${WITH_PLAIN_CSI:+$PLAIN_SNAPSHOT_CLASS}
BRIDGE=$BRIDGE
POD_CIDR=$POD_CIDR
WITH_KUBE_PROXY=$WITH_KUBE_PROXY
EOF
trap - EXIT
log "cluster up in $(since "$t_start") (node $NODE_NAME, API $API_URL, bridge $BRIDGE $POD_CIDR)"
echo "$KUBECONFIG_ADMIN"
