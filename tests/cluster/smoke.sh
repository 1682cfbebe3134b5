#!/usr/bin/env bash
# Smoke test of tests/cluster/: starts a cluster in a temporary directory, runs
# a busybox Job to completion, then (with the CSI driver) writes into a PVC of
# the default StorageClass, snapshots it, restores the snapshot into a new PVC
# and clones the PVC, reading the data back from each; takes one
# VolumeGroupSnapshot of two PVCs labelled alike while a Pod writes to both,
# checks its members, that their restores show one instant, and that deleting
# it removes its members, their contents and the driver's copies; with
# WITH_KUBE_PROXY=1 a Pod fetches a page from another Pod through a ClusterIP
# Service. Then it stops the cluster and checks the host is as before (mounts,
# sysctls, links, cgroups, processes, host files). Prints the time of each
# phase. Needs root.
#
#   tests/cluster/smoke.sh               # KEEP=1: leave the cluster running (no stop, no host check)
#   WITH_KUBE_PROXY=1 tests/cluster/smoke.sh
#   WITH_PLAIN_CSI=1 tests/cluster/smoke.sh   # also the driver without group snapshots
#
# Writes only into a mktemp -d directory (removed at the end unless KEEP=1 or a
# check failed: then its path is printed for the logs).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log() { echo "smoke: $*" >&2; }
ms() { date +%s%3N; }
secs() { local d=$(( $(ms) - $1 )); printf '%d.%03ds' $((d / 1000)) $((d % 1000)); }
timings=()
phase_start=0 phase_name=""
phase() { # ends the running phase (recording its time) and starts the next
  [[ -z "$phase_name" ]] || timings+=("$(printf '%-28s %s' "$phase_name" "$(secs "$phase_start")")")
  phase_name="${1:-}" phase_start=$(ms)
  [[ -z "$phase_name" ]] || log "== $phase_name"
}

# host_state: what a cluster may change on the host, as text to compare.
sysctls="vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys
  kernel.keys.root_maxbytes net.ipv4.ip_forward net.ipv4.conf.all.route_localnet net.bridge.bridge-nf-call-iptables"
host_state() {
  echo "## mounts"; awk '{ print $5 }' /proc/self/mountinfo | sort
  echo "## links"; ip -o link show | awk -F': ' '{ print $2 }' | cut -d@ -f1 | sort
  echo "## sysctls"; for k in $sysctls; do echo "$k=$(sysctl -n "$k" 2>/dev/null || echo -)"; done
  echo "## cgroups"; find /sys/fs/cgroup -mindepth 2 -maxdepth 2 -type d | sort
  echo "## hosts"; cat /etc/hosts
  echo "## files"
  find /run/containerd /var/log/containers /var/log/pods /var/lib/cni /var/lib/kubelet /opt/containerd \
    /var/run/kubernetes /etc/kubernetes /var/lib/containerd /etc/cni /run/wasmover-clusters 2>/dev/null | sort
  echo "## nftables"; nft list tables 2>/dev/null || true
}

# other_clusters: kubelets these scripts started for other directories (other
# people's clusters, parallel tests), which change the host-wide state too.
other_clusters() {
  local p
  for p in $(pgrep -f -- '--config=.*/kubelet.yaml' || true); do
    { tr '\0' ' ' <"/proc/$p/cmdline"; } 2>/dev/null | grep -qF -- "--config=$DIR/" || echo "$p"
  done
}

DIR="$(mktemp -d /tmp/wasmover-cluster.XXXXXX)"
others="$(other_clusters)"
before="$(host_state)"
keep_dir=""
finish() {
  local rc=$?
  if [[ -n "${KEEP:-}" && $rc -eq 0 ]]; then
    log "cluster left running: export KUBECONFIG=$DIR/kubeconfig; stop with tests/cluster/stop.sh $DIR --clean"
    return
  fi
  [[ $rc -eq 0 ]] || { log "FAILED (rc=$rc); logs in $DIR"; keep_dir=1; }
  if [[ -f "$DIR/host-state" || -f "$DIR/pids" ]]; then "$HERE/stop.sh" "$DIR" || true; fi
  [[ -n "$keep_dir" ]] || rm -rf "$DIR"
}
trap finish EXIT

phase "start cluster"
export KUBECONFIG
KUBECONFIG="$("$HERE/start.sh" "$DIR")"
# shellcheck disable=SC1091
source "$DIR/env"
k() { "$KUBECTL" "$@"; }
wait_phase() { # OBJECT JSONPATH VALUE: waits up to 120 s
  k wait --for=jsonpath="$2"="$3" --timeout=120s "$1" >/dev/null ||
    { k describe "$1" >&2 || true; return 1; }
}
# pod NAME PVC COMMAND: a busybox Pod that runs COMMAND once, with PVC at /data.
pod() {
  k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: $1}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: $BUSYBOX_IMAGE
    imagePullPolicy: Never
    command: [sh, -c, '$3']
    volumeMounts: [{name: data, mountPath: /data}]
  volumes: [{name: data, persistentVolumeClaim: {claimName: $2}}]
EOF
  wait_phase "pod/$1" '{.status.phase}' Succeeded
}
# pvc NAME [DATASOURCE-KIND DATASOURCE-NAME [LABEL]]: LABEL is `key: value`
pvc() {
  local source="" labels="smoke: \"true\"${4:+, $4}"
  if [[ -n "${2:-}" ]]; then
    local group=""
    [[ "$2" == VolumeSnapshot ]] && group="apiGroup: snapshot.storage.k8s.io, "
    source="  dataSource: {${group}kind: $2, name: $3}"
  fi
  k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: $1, labels: {$labels}}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 16Mi}}
$source
EOF
}

phase "busybox Job"
k apply -f - >/dev/null <<EOF
apiVersion: batch/v1
kind: Job
metadata: {name: hello}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: $BUSYBOX_IMAGE
        imagePullPolicy: Never
        command: [sh, -c, 'echo hello from \$(hostname)']
EOF
k wait --for=condition=Complete --timeout=120s job/hello >/dev/null || { k describe job/hello pods >&2; exit 1; }
out="$(k logs job/hello)"
[[ "$out" == "hello from hello-"* ]] || { log "unexpected Job log: $out"; exit 1; }
log "Job log: $out"

if [[ -n "$STORAGE_CLASS" ]]; then
  phase "PVC: provision + write"
  pvc data
  wait_phase pvc/data '{.status.phase}' Bound
  pod writer data 'echo wasmover-smoke >/data/hello && sync'

  phase "VolumeSnapshot"
  k apply -f - >/dev/null <<EOF
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshot
metadata: {name: snap}
spec: {source: {persistentVolumeClaimName: data}}
EOF
  wait_phase volumesnapshot/snap '{.status.readyToUse}' true
  # the snapshot holds the data as it was: a later write must not show in the restore
  pod overwriter data 'echo changed >/data/hello && sync'

  phase "restore snapshot + read"
  pvc restored VolumeSnapshot snap
  pod reader restored 'cat /data/hello'
  got="$(k logs reader)"
  [[ "$got" == wasmover-smoke ]] || { log "restored PVC holds '$got', not wasmover-smoke"; exit 1; }

  phase "clone PVC + read"
  pvc clone PersistentVolumeClaim data
  pod clone-reader clone 'cat /data/hello'
  got="$(k logs clone-reader)"
  [[ "$got" == changed ]] || { log "cloned PVC holds '$got', not changed"; exit 1; }

  # Two PVCs labelled alike, written by one Pod as fast as it can (a line with
  # the next number appended to a, then to b, by shell builtins: one write(2)
  # each, so no instant shows half a line), captured by one VolumeGroupSnapshot
  # while it writes.
  # The other PVCs (data, restored, clone) are not in the group.
  phase "group: 2 PVCs + writer"
  pvc group-a "" "" "smoke-group: one"
  pvc group-b "" "" "smoke-group: one"
  k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: group-writer}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: $BUSYBOX_IMAGE
    imagePullPolicy: Never
    command: [sh, -c, 'i=0; while :; do i=\$((i+1)); echo \$i >>/a/seq; echo \$i >>/b/seq; done']
    readinessProbe: {exec: {command: [test, -s, /b/seq]}, periodSeconds: 1}
    volumeMounts: [{name: a, mountPath: /a}, {name: b, mountPath: /b}]
  volumes:
  - {name: a, persistentVolumeClaim: {claimName: group-a}}
  - {name: b, persistentVolumeClaim: {claimName: group-b}}
EOF
  k wait --for=condition=Ready --timeout=120s pod/group-writer >/dev/null || { k describe pod/group-writer >&2; exit 1; }

  phase "VolumeGroupSnapshot"
  k apply -f - >/dev/null <<EOF
apiVersion: groupsnapshot.storage.k8s.io/v1beta2
kind: VolumeGroupSnapshot
metadata: {name: group}
spec: {source: {selector: {matchLabels: {smoke-group: one}}}}
EOF
  wait_phase volumegroupsnapshot/group '{.status.readyToUse}' true
  k delete pod group-writer --wait=false >/dev/null
  gsc="$(k get volumegroupsnapshot group -o jsonpath='{.status.boundVolumeGroupSnapshotContentName}')"
  handle="$(k get volumegroupsnapshotcontent "$gsc" -o jsonpath='{.status.volumeGroupSnapshotHandle}')"
  [[ -n "$handle" && -f "$DIR/csi/groups/$handle/meta.json" ]] ||
    { log "group snapshot content '$gsc' has handle '$handle', not one of the driver's"; exit 1; }
  # one ready VolumeSnapshot per labelled PVC, owned by the group snapshot
  members="$(k get volumesnapshot -o jsonpath='{range .items[?(@.metadata.ownerReferences[0].name=="group")]}{.spec.source.persistentVolumeClaimName} {.metadata.name} {.status.readyToUse} {.status.boundVolumeSnapshotContentName}{"\n"}{end}' | sort)"
  [[ "$(awk '{ print $1 }' <<<"$members" | paste -sd' ')" == "group-a group-b" &&
     "$(awk '{ print $3 }' <<<"$members" | sort -u)" == true ]] ||
    { log "group snapshot members (PVC, snapshot, ready, content):"$'\n'"$members"$'\n'"want group-a and group-b, ready"; exit 1; }
  member_snaps=() member_contents=() member_handles=()
  while read -r _ snap _ content; do
    member_snaps+=("$snap") member_contents+=("$content")
    member_handles+=("$(k get volumesnapshotcontent "$content" -o jsonpath='{.status.snapshotHandle}')")
  done <<<"$members"
  log "group snapshot $handle: PVCs group-a, group-b as ${member_snaps[*]} (driver snapshots ${member_handles[*]})"

  phase "restore group + read"
  pvc group-a-restored VolumeSnapshot "${member_snaps[0]}"
  pvc group-b-restored VolumeSnapshot "${member_snaps[1]}"
  k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: group-reader}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: $BUSYBOX_IMAGE
    imagePullPolicy: Never
    command: [sh, -c, 'echo \$(tail -n1 /a/seq),\$(tail -n1 /b/seq)']
    volumeMounts: [{name: a, mountPath: /a}, {name: b, mountPath: /b}]
  volumes:
  - {name: a, persistentVolumeClaim: {claimName: group-a-restored}}
  - {name: b, persistentVolumeClaim: {claimName: group-b-restored}}
EOF
  wait_phase pod/group-reader '{.status.phase}' Succeeded
  IFS=, read -r seq_a seq_b <<<"$(k logs group-reader)"
  log "group snapshot holds a=$seq_a b=$seq_b (last lines)"
  # One instant of the writer has a = b, or a = b + 1 (a written, b not yet).
  # Tearing (copies of different instants) shows as b > a or a > b + 1.
  if ! [[ "$seq_a" =~ ^[0-9]+$ && "$seq_b" =~ ^[0-9]+$ ]] || (( seq_a != seq_b && seq_a != seq_b + 1 )); then
    log "torn group snapshot: a=$seq_a b=$seq_b (the writer writes a first, then b)"; exit 1
  fi

  phase "delete group snapshot"
  k delete volumegroupsnapshot group --wait=true >/dev/null
  # its member snapshots, their contents, its content and the driver's copies go with it
  gone=""
  for _ in $(seq 1 300); do
    left="$(k get volumegroupsnapshotcontent "$gsc" -o name 2>/dev/null || true)"
    for i in 0 1; do
      left+="$(k get volumesnapshot "${member_snaps[i]}" -o name 2>/dev/null || true)"
      left+="$(k get volumesnapshotcontent "${member_contents[i]}" -o name 2>/dev/null || true)"
      [[ ! -e "$DIR/csi/snapshots/${member_handles[i]}" ]] || left+=" driver snapshot ${member_handles[i]}"
    done
    [[ ! -e "$DIR/csi/groups/$handle" ]] || left+=" driver group $handle"
    [[ -n "$left" ]] || { gone=1; break; }
    sleep 0.2
  done
  [[ -n "$gone" ]] || { log "left after deleting the group snapshot: $left"; exit 1; }

  if [[ -n "$PLAIN_CSI_DRIVER" ]]; then
    # The second driver has no group snapshots: its PVCs provision and snapshot,
    # and a group of them fails with snapshot-controller's reason (no default
    # class for their driver; a group mixing drivers: "mismatch").
    phase "plain driver: PVC + snapshot"
    k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: plain, labels: {smoke: "true", smoke-plain: one}}
spec:
  storageClassName: $PLAIN_STORAGE_CLASS
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 16Mi}}
---
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshot
metadata: {name: plain}
spec: {volumeSnapshotClassName: $PLAIN_SNAPSHOT_CLASS, source: {persistentVolumeClaimName: plain}}
EOF
    wait_phase volumesnapshot/plain '{.status.readyToUse}' true

    phase "plain driver: group refused"
    k apply -f - >/dev/null <<EOF
apiVersion: groupsnapshot.storage.k8s.io/v1beta2
kind: VolumeGroupSnapshot
metadata: {name: plain}
spec: {source: {selector: {matchLabels: {smoke-plain: one}}}}
EOF
    k wait --for=jsonpath='{.status.error.message}' --timeout=120s volumegroupsnapshot/plain >/dev/null
    msg="$(k get volumegroupsnapshot plain -o jsonpath='{.status.error.message}')"
    [[ "$msg" == *"cannot find default group snapshot class"* ]] ||
      { log "group snapshot of the plain driver's PVC: '$msg'"; exit 1; }
    log "group snapshot of the plain driver's PVC: $msg"
    k delete volumegroupsnapshot plain --wait=true >/dev/null
  fi

  phase "delete PVCs and snapshots"
  k delete pod writer overwriter reader clone-reader group-writer group-reader --ignore-not-found --wait=true >/dev/null
  k delete volumesnapshot --all --wait=true >/dev/null
  k delete pvc --all --wait=true >/dev/null
  wait_phase_none() { for _ in $(seq 1 300); do [[ -z "$(k get pv -o name)" ]] && return; sleep 0.2; done; return 1; }
  wait_phase_none || { log "PVs left after deleting the PVCs: $(k get pv -o name)"; exit 1; }
  others+="$(other_clusters)"
else
  log "no CSI driver (tests/cluster/go not built): skipping the storage phases"
fi

if [[ -n "$WITH_KUBE_PROXY" ]]; then
  phase "Pod -> ClusterIP -> Pod"
  k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: server, labels: {app: server}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: $BUSYBOX_IMAGE
    imagePullPolicy: Never
    command: [sh, -c, 'mkdir /www && echo pong >/www/index.html && exec httpd -f -p 8080 -h /www']
    readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: server}
spec:
  selector: {app: server}
  ports: [{port: 80, targetPort: 8080}]
EOF
  k wait --for=condition=Ready --timeout=120s pod/server >/dev/null
  ip="$(k get service server -o jsonpath='{.spec.clusterIP}')"
  k run client --image="$BUSYBOX_IMAGE" --image-pull-policy=Never --restart=Never -- \
    sh -c "for i in \$(seq 1 30); do timeout 2 wget -qO- http://$ip/ && exit 0; sleep 1; done; exit 1" >/dev/null
  wait_phase pod/client '{.status.phase}' Succeeded
  got="$(k logs client)"
  [[ "$got" == pong ]] || { log "client got '$got' from http://$ip/"; exit 1; }
  log "client got '$got' from Service server ($ip)"
fi

if [[ -n "${KEEP:-}" ]]; then # the cluster stays up: no stop, no host check
  phase
  printf '%s\n' "${timings[@]}" >&2
  echo "smoke: OK"
  exit 0
fi
others+="$(other_clusters)"
phase "stop cluster"
"$HERE/stop.sh" "$DIR"
phase

# This cluster's own traces must be gone in any case.
cgroup="wasmover-$(echo -n "$DIR" | sha256sum | cut -c1-12)"
traces="$(
  pgrep -af -- "$DIR" | grep -v pgrep || true
  awk -v d="$DIR" 'index($5, d) == 1 { print "mount " $5 }' /proc/self/mountinfo
  ip link show "$BRIDGE" 2>/dev/null | head -1
  ls -d /sys/fs/cgroup/*/"$cgroup" 2>/dev/null || true
  grep -F "wasmover-cluster $DIR" /etc/hosts || true
  find /var/log/containers -maxdepth 1 -lname "$DIR/*" 2>/dev/null || true
  nft list table inet "wasmover-$BRIDGE" 2>/dev/null | head -1 || true
)"
[[ -z "$traces" ]] || { log "left behind: $traces"; exit 1; }
# And the host as a whole as before, unless other clusters ran meanwhile.
others+="$(other_clusters)"
after="$(host_state)"
if [[ "$before" != "$after" ]]; then
  if [[ -z "$others" ]]; then
    log "the host differs from before the cluster:"
    diff <(echo "$before") <(echo "$after") >&2 || true
    exit 1
  fi
  log "other clusters ran meanwhile (kubelet pids $(echo "$others" | paste -sd" ")): host-wide differences not checked"
else
  log "host as before: mounts, links, sysctls, cgroups, /etc/hosts, host dirs, nftables"
fi
printf '%s\n' "${timings[@]}" >&2
echo "smoke: OK"
