#!/usr/bin/env bash
# Stops the cluster tests/cluster/start.sh DIR started and leaves the host as it
# found it: the kubelet first (so nothing restarts Pods), then every pod sandbox
# through containerd's CRI (crictl: containers stopped, CNI torn down), then
# kube-proxy (and --cleanup of its rules), the CSI driver and its sidecars, the
# scheduler and controller-manager, containerd and its shims, kube-apiserver and
# etcd (tests/apiserver/stop.sh); then unmounts everything under DIR, removes the
# cluster's cgroups and bridge, restores the saved sysctls, drops the /etc/hosts
# line start.sh added, deletes its nftables table (WITH_KUBE_PROXY), and removes
# shim sockets and host dirs it created.
# Processes are stopped by the pids start.sh recorded, each checked against its
# command line. Idempotent, and safe after a failed or partial start.
#
#   tests/cluster/stop.sh DIR [--clean]   # --clean also removes DIR
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
[[ $# -ge 1 ]] || { echo "usage: $0 DIR [--clean]" >&2; exit 2; }
DIR="$(cd "$1" 2>/dev/null && pwd)" || exit 0   # nothing to stop
log() { echo "cluster/stop.sh: $*" >&2; }
t0=$(date +%s%3N)

HOSTS_LINE="" NFT_TABLE="" BRIDGE="" CGROUP_ROOT="" CRICTL="" CTR="" KUBE_PROXY=""
SYSCTLS="" CREATED_DIRS=""   # in host-state only from a start.sh before the shared record
if [[ -f "$DIR/host-state" ]]; then
  # shellcheck disable=SC1091
  source "$DIR/host-state"
fi
SOCK="$DIR/containerd/containerd.sock"

ours() { # pid still alive (not a zombie) and its command line mentions DIR
  [[ -r /proc/$1/stat ]] || return 1
  [[ "$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)" != Z ]] || return 1
  { tr '\0' ' ' <"/proc/$1/cmdline"; } 2>/dev/null | grep -qF "$DIR"
}
# stop PID NAME TENTHS: TERM, then KILL if still there after TENTHS/10 s.
stop() {
  local pid="$1" name="$2" _
  ours "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 "$3"); do ours "$pid" || return 0; sleep 0.1; done
  log "$name ($pid) ignored TERM for $(( $3 / 10 ))s: KILL"
  kill -KILL "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do ours "$pid" || return 0; sleep 0.1; done
  log "$name ($pid) still running after KILL"
}
pid_of() { [[ ! -f "$DIR/cluster.pids" ]] || awk -v n="$1" '$2 == n { print $1 }' "$DIR/cluster.pids"; }

# ------------------------------------------------------------- kubelet ----
for pid in $(pid_of kubelet); do stop "$pid" kubelet 100; done

# A frozen container neither stops nor dies until thawed: csi-hostdir freezes
# the containers using a volume while it copies it, and a driver that died
# meanwhile leaves them frozen.
if [[ -n "$CGROUP_ROOT" ]]; then
  while read -r f; do echo THAWED >"$f" 2>/dev/null || true; done < <(
    find "/sys/fs/cgroup/freezer$CGROUP_ROOT" -name freezer.state 2>/dev/null)
fi

# ------------------------------------------ pod sandboxes (containerd) ----
# Task ids, for the shim sockets under /run/containerd/s that outlive a killed shim.
tasks=()
for d in "$DIR/containerd/state/io.containerd.runtime.v2.task"/*/*/; do
  [[ -d "$d" ]] || continue
  id="$(basename "$d")"; ns="$(basename "$(dirname "$d")")"
  tasks+=("$ns/$id")
done
containerd_pid="$(pid_of containerd)"
if [[ -n "$containerd_pid" ]] && ours "$containerd_pid" && [[ -S "$SOCK" ]]; then
  if [[ -x "$CRICTL" ]]; then
    # stopp: containers killed, netns torn down through CNI (veth, IP lease); rmp: gone
    C=(timeout 60 "$CRICTL" --runtime-endpoint "unix://$SOCK" --image-endpoint "unix://$SOCK" --timeout 30s)
    pods="$("${C[@]}" pods -q 2>/dev/null || true)"
    if [[ -n "$pods" ]]; then
      # shellcheck disable=SC2086
      "${C[@]}" stopp $pods >/dev/null 2>&1 || log "crictl stopp failed for some pod sandboxes"
      # shellcheck disable=SC2086
      "${C[@]}" rmp -f $pods >/dev/null 2>&1 || log "crictl rmp failed for some pod sandboxes"
    fi
  elif [[ -x "$CTR" ]]; then
    for t in $("$CTR" --address "$SOCK" -n k8s.io tasks ls -q 2>/dev/null); do
      "$CTR" --address "$SOCK" -n k8s.io tasks kill -s KILL "$t" >/dev/null 2>&1 || true
    done
  fi
fi

# ---------------------------------------------------------- kube-proxy ----
for pid in $(pid_of kube-proxy); do
  stop "$pid" kube-proxy 50
  # its nftables table (and any iptables/ipvs rules) go with it
  [[ -x "$KUBE_PROXY" ]] && { "$KUBE_PROXY" --cleanup >/dev/null 2>&1 || log "kube-proxy --cleanup failed"; }
done

# --------------------------- CSI, scheduler, controller-manager, containerd ----
if [[ -f "$DIR/cluster.pids" ]]; then
  while read -r pid name; do
    [[ "$name" == kubelet || "$name" == kube-proxy ]] && continue
    stop "$pid" "$name" 100
  done < <(tac "$DIR/cluster.pids")
fi
# shims that outlived containerd, and whatever still runs in the cluster's cgroups
for pid in $(pgrep -f -- "-address $SOCK" 2>/dev/null || true); do stop "$pid" containerd-shim 30; done
if [[ -n "$CGROUP_ROOT" ]]; then
  while read -r pid; do kill -KILL "$pid" 2>/dev/null || true; done < <(
    find /sys/fs/cgroup/*"$CGROUP_ROOT" -name cgroup.procs -exec cat {} + 2>/dev/null)
fi
for t in "${tasks[@]}"; do
  # a shim listens on /run/containerd/s/sha256(<containerd address>/<namespace>/<id>)
  rm -f "/run/containerd/s/$(printf '%s' "$SOCK/$t" | sha256sum | cut -d' ' -f1)"
done

# --------------------------------------------- kube-apiserver and etcd ----
"$HERE/../apiserver/stop.sh" "$DIR"

# -------------------------------------------------------------- mounts ----
# Deepest first (pod volumes, rootfs overlays, netns, the kubelet's own
# shared bind mount); a lazy unmount when a busy one will not go.
for _ in 1 2 3 4 5; do
  mapfile -t mnts < <(awk -v d="$DIR" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo |
    awk '{ print length, $0 }' | sort -rn | cut -d' ' -f2-)
  (( ${#mnts[@]} )) || break
  for m in "${mnts[@]}"; do
    m="$(printf '%b' "$m")"   # mountinfo escapes a space as \040, which %b reads as octal
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
done
left="$(awk -v d="$DIR" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo)"
[[ -z "$left" ]] || log "still mounted under $DIR: $left"

# ------------------------------------------------------------- cgroups ----
if [[ -n "$CGROUP_ROOT" ]]; then
  for h in /sys/fs/cgroup/*/; do
    [[ -d "$h${CGROUP_ROOT#/}" ]] || continue
    for _ in $(seq 1 50); do
      find "$h${CGROUP_ROOT#/}" -depth -type d -exec rmdir {} + 2>/dev/null || true
      [[ -d "$h${CGROUP_ROOT#/}" ]] || break
      sleep 0.1
    done
    [[ ! -d "$h${CGROUP_ROOT#/}" ]] || log "cgroup $h${CGROUP_ROOT#/} is still there"
  done
fi

# ------------------------------------------- nftables, bridge, veths ----
if [[ -n "$NFT_TABLE" ]]; then
  # shellcheck disable=SC2086  # "inet NAME"
  ! nft list table $NFT_TABLE >/dev/null 2>&1 || nft delete table $NFT_TABLE ||
    log "could not delete nftables table $NFT_TABLE"
fi
if [[ -n "$BRIDGE" ]] && ip link show "$BRIDGE" >/dev/null 2>&1; then
  for veth in $(ip -o link show master "$BRIDGE" 2>/dev/null | awk -F': ' '{ print $2 }' | cut -d@ -f1); do
    ip link del "$veth" 2>/dev/null || true
  done
  ip link del "$BRIDGE" || log "could not delete bridge $BRIDGE"
fi

# ------------------------------------------------ host dirs and files ----
if [[ -d /var/log/containers ]]; then
  # the kubelet links each container's log there, into DIR's pod logs
  find /var/log/containers -maxdepth 1 -type l -lname "$DIR/*" -delete 2>/dev/null || true
fi

# ------------------------------------------ sysctls, shared host dirs ----
# Restored by the last of the clusters running at a time (see start.sh).
# Under the lock start.sh takes too (/etc/hosts is rewritten here).
REG=/run/wasmover-clusters
locked=""
if [[ -d "$REG" ]] && exec 7<"$REG" && flock 7; then locked=1; fi

if [[ -n "$HOSTS_LINE" ]] && grep -qxF "$HOSTS_LINE" /etc/hosts; then
  # rewritten in place: /etc/hosts may be a bind mount
  kept="$(grep -vxF "$HOSTS_LINE" /etc/hosts || true)"
  printf '%s\n' "$kept" >/etc/hosts
fi

if [[ -n "$locked" ]]; then
  rm -f "$REG/$(echo -n "$DIR" | sha256sum | cut -c1-12).dir"
  others=0
  for f in "$REG"/*.dir; do
    [[ -f "$f" ]] || continue
    if [[ -f "$(cat "$f")/host-state" ]]; then others=$((others + 1)); else rm -f "$f"; fi
  done
  if (( others == 0 )); then
    # shellcheck disable=SC1091
    [[ -f "$REG/host" ]] && source "$REG/host"
    for kv in $SYSCTLS; do
      [[ "$(sysctl -n "${kv%%=*}" 2>/dev/null)" == "${kv#*=}" ]] ||
        sysctl -qw "$kv" >/dev/null 2>&1 || log "could not restore sysctl $kv"
    done
    for d in $(tr ' ' '\n' <<<"$CREATED_DIRS" | sort -r); do
      [[ -d "$d" ]] && rmdir "$d" 2>/dev/null || true
    done
    rm -f "$REG/host"
    rmdir "$REG"
  else
    log "$others other cluster(s) still running: the last to stop restores sysctls and host dirs"
  fi
  exec 7<&-
elif [[ -n "$SYSCTLS" ]]; then
  for kv in $SYSCTLS; do sysctl -qw "$kv" >/dev/null 2>&1 || log "could not restore sysctl $kv"; done
fi

rm -f "$DIR/cluster.pids" "$DIR/host-state"
log "stopped in $(( ($(date +%s%3N) - t0) / 1000 )).$(printf '%03d' $(( ($(date +%s%3N) - t0) % 1000 )))s"
if [[ "${2:-}" == "--clean" ]]; then
  if [[ -z "$left" ]]; then rm -rf "$DIR"; else log "not removing $DIR: mounts remain"; fi
fi
