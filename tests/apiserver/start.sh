#!/usr/bin/env bash
# Starts a real etcd + kube-apiserver on free loopback ports for a test.
#
#   tests/apiserver/start.sh DIR     # DIR: a fresh or empty scratch directory
#   export KUBECONFIG=DIR/kubeconfig
#   ...
#   tests/apiserver/stop.sh DIR
#
# Writes into DIR:
#   kubeconfig                 admin kubeconfig (client cert with O=system:masters, data embedded)
#   env                        APISERVER_URL=, ETCD_URL=, CA/CLIENT_CERT/CLIENT_KEY paths (sourceable)
#   pids                       "<pid> <name>" of etcd and kube-apiserver (used by stop.sh)
#   pki/                       ca, serving, client and service-account keys (openssl)
#   etcd.log, kube-apiserver.log
# Binaries: $ETCD and $KUBE_APISERVER if both are set, else install.sh (cached build).
# Optional environment (tests/cluster/start.sh uses these for a whole cluster):
#   APISERVER_PORT, ETCD_CLIENT_PORT, ETCD_PEER_PORT   fixed ports (default: free ones)
#   KUBE_APISERVER_DISABLE_ADMISSION   admission plugins to disable (default
#       ServiceAccount,StorageObjectInUseProtection: nothing else runs here; "" = none)
#   KUBE_APISERVER_AUTHORIZATION_MODE   default RBAC (a cluster: Node,RBAC)
#   KUBE_APISERVER_FLAGS   extra flags, split on whitespace (newlines too), appended last
# Prints the kubeconfig path on stdout; everything else goes to stderr.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
[[ $# -eq 1 ]] || { echo "usage: $0 DIR" >&2; exit 2; }
mkdir -p "$1"
DIR="$(cd "$1" && pwd)"
READY_TIMEOUT="${READY_TIMEOUT:-180}"
log() { echo "start.sh: $*" >&2; }

if [[ -f "$DIR/pids" ]]; then
  log "$DIR/pids exists: already started? run stop.sh $DIR first"
  exit 1
fi

if [[ -z "${ETCD:-}" || -z "${KUBE_APISERVER:-}" ]]; then
  eval "$("$HERE/install.sh")"
fi
for b in "$ETCD" "$KUBE_APISERVER"; do
  [[ -x "$b" ]] || { log "missing binary $b"; exit 1; }
done

t0=$(date +%s%3N)

# ------------------------------------------------------------------ PKI ----
PKI="$DIR/pki"
mkdir -p "$PKI"
if [[ ! -f "$PKI/client.crt" ]]; then
  (
    cd "$PKI"
    ec() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
    ec ca.key
    openssl req -x509 -new -key ca.key -sha256 -days 3650 -subj "/CN=wasmover-test-ca" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
      -addext "subjectKeyIdentifier=hash" -out ca.crt
    sign() { # name subject extfile-lines
      ec "$1.key"
      openssl req -new -key "$1.key" -subj "$2" -out "$1.csr"
      printf '%b\n' "$3" >"$1.ext"
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
        -sha256 -days 3650 -extfile "$1.ext" -out "$1.crt" 2>/dev/null
      rm -f "$1.csr" "$1.ext"
    }
    sign serving "/CN=kube-apiserver" \
      "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,IP:::1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    sign client "/O=system:masters/CN=wasmover-admin" \
      "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth"
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa.key 2>/dev/null
    openssl pkey -in sa.key -pubout -out sa.pub
    chmod 600 ./*.key
  )
fi

# ---------------------------------------------------------------- ports ----
# Bind three ephemeral loopback ports at once, then release them.
read -r ETCD_PORT PEER_PORT API_PORT < <(python3 - <<'EOF'
import socket
ss = [socket.socket() for _ in range(3)]
for s in ss:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])
EOF
)
ETCD_PORT="${ETCD_CLIENT_PORT:-$ETCD_PORT}"
PEER_PORT="${ETCD_PEER_PORT:-$PEER_PORT}"
API_PORT="${APISERVER_PORT:-$API_PORT}"

pids=()
rm -f "$DIR/pids"
cleanup_on_error() {
  local rc=$?
  if [[ $rc -ne 0 ]]; then
    log "failed (rc=$rc); stopping what was started"
    "$HERE/stop.sh" "$DIR" || true   # TERM, wait up to 10 s, then KILL
    for f in etcd.log kube-apiserver.log; do
      [[ -f "$DIR/$f" ]] && { echo "--- tail $DIR/$f" >&2; tail -n 30 "$DIR/$f" >&2; }
    done
  fi
}
trap cleanup_on_error EXIT

# ----------------------------------------------------------------- etcd ----
ETCD_URL="http://127.0.0.1:$ETCD_PORT"
# etcd takes ETCD_* environment variables as flags: start it without them.
etcd_env=(env)
while IFS= read -r v; do etcd_env+=(-u "$v"); done < <(compgen -e | grep '^ETCD_' || true)
setsid "${etcd_env[@]}" "$ETCD" \
  --name wasmover-test \
  --data-dir "$DIR/etcd-data" \
  --listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
  --listen-peer-urls "http://127.0.0.1:$PEER_PORT" \
  --initial-advertise-peer-urls "http://127.0.0.1:$PEER_PORT" \
  --initial-cluster "wasmover-test=http://127.0.0.1:$PEER_PORT" \
  --unsafe-no-fsync --log-level warn \
  </dev/null >"$DIR/etcd.log" 2>&1 &
pids+=($!)
echo "$! etcd" >"$DIR/pids"

for _ in $(seq 1 200); do
  curl -fsS "$ETCD_URL/health" 2>/dev/null | grep -q '"health":"true"' && break
  kill -0 "${pids[0]}" 2>/dev/null || { log "etcd exited"; exit 1; }
  sleep 0.1
done
curl -fsS "$ETCD_URL/health" >/dev/null || { log "etcd not healthy"; exit 1; }

# -------------------------------------------------------- kube-apiserver ----
API_URL="https://127.0.0.1:$API_PORT"
# No kube-controller-manager runs here to lift the pvc-protection finalizer,
# so that admission plugin would keep deleted PVCs Terminating forever.
disable="${KUBE_APISERVER_DISABLE_ADMISSION-ServiceAccount,StorageObjectInUseProtection}"
extra=()
[[ -n "$disable" ]] && extra+=(--disable-admission-plugins="$disable")
read -r -d '' -a more <<<"${KUBE_APISERVER_FLAGS:-}" || true   # all lines
extra+=("${more[@]}")
setsid "$KUBE_APISERVER" \
  --etcd-servers="$ETCD_URL" \
  --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$API_PORT" \
  --cert-dir="$DIR/apiserver-certs" \
  --tls-cert-file="$PKI/serving.crt" --tls-private-key-file="$PKI/serving.key" \
  --client-ca-file="$PKI/ca.crt" \
  --service-cluster-ip-range=10.0.0.0/24 \
  --allow-privileged=true \
  --authorization-mode="${KUBE_APISERVER_AUTHORIZATION_MODE:-RBAC}" \
  --service-account-issuer=https://localhost \
  --service-account-key-file="$PKI/sa.pub" \
  --service-account-signing-key-file="$PKI/sa.key" \
  --endpoint-reconciler-type=none \
  --profiling=false \
  "${extra[@]}" \
  </dev/null >"$DIR/kube-apiserver.log" 2>&1 &
pids+=($!)
echo "$! kube-apiserver" >>"$DIR/pids"

CURL=(curl -sS --cacert "$PKI/ca.crt" --cert "$PKI/client.crt" --key "$PKI/client.key")
ready=""
deadline=$(( $(date +%s) + READY_TIMEOUT ))
while (( $(date +%s) < deadline )); do
  if [[ "$("${CURL[@]}" -o /dev/null -w '%{http_code}' "$API_URL/readyz" 2>/dev/null)" == 200 ]]; then
    ready=1; break
  fi
  kill -0 "${pids[1]}" 2>/dev/null || { log "kube-apiserver exited"; exit 1; }
  sleep 0.2
done
[[ -n "$ready" ]] || { log "kube-apiserver not ready after ${READY_TIMEOUT}s"; exit 1; }
t1=$(date +%s%3N)

# ------------------------------------------------------------ kubeconfig ----
b64() { base64 -w0 <"$1"; }
cat >"$DIR/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: wasmover-test
  cluster:
    server: $API_URL
    certificate-authority-data: $(b64 "$PKI/ca.crt")
users:
- name: wasmover-admin
  user:
    client-certificate-data: $(b64 "$PKI/client.crt")
    client-key-data: $(b64 "$PKI/client.key")
contexts:
- name: wasmover-test
  context:
    cluster: wasmover-test
    user: wasmover-admin
    namespace: default
current-context: wasmover-test
EOF
chmod 600 "$DIR/kubeconfig"
cat >"$DIR/env" <<EOF
APISERVER_URL=$API_URL
ETCD_URL=$ETCD_URL
CA=$PKI/ca.crt
CLIENT_CERT=$PKI/client.crt
CLIENT_KEY=$PKI/client.key
KUBECONFIG=$DIR/kubeconfig
EOF

trap - EXIT
log "etcd $ETCD_URL, kube-apiserver $API_URL ready in $(( (t1 - t0) / 1000 )).$(printf '%03d' $(( (t1 - t0) % 1000 )))s (certs + etcd + apiserver)"
echo "$DIR/kubeconfig"
