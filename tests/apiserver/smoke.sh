#!/usr/bin/env bash
# Talks to a running start.sh DIR with curl and the admin client cert:
# /version, /api, /apis, then creates a namespace and a ConfigMap and reads it back.
#   tests/apiserver/smoke.sh DIR
set -euo pipefail
[[ $# -eq 1 ]] || { echo "usage: $0 DIR" >&2; exit 2; }
# shellcheck disable=SC1091
source "$1/env"
C=(curl -fsS --cacert "$CA" --cert "$CLIENT_CERT" --key "$CLIENT_KEY")
J=(-H 'Content-Type: application/json')
ns="smoke-$$"

echo "== /version";  "${C[@]}" "$APISERVER_URL/version"; echo
echo "== /api";      "${C[@]}" "$APISERVER_URL/api"; echo
echo "== /apis (group names)"
"${C[@]}" "$APISERVER_URL/apis" | python3 -c 'import json,sys; print(" ".join(g["name"] for g in json.load(sys.stdin)["groups"]))'
echo "== whoami"
"${C[@]}" "${J[@]}" -X POST "$APISERVER_URL/apis/authentication.k8s.io/v1/selfsubjectreviews" \
  -d '{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["status"]["userInfo"])'
echo "== create namespace $ns"
"${C[@]}" "${J[@]}" -X POST "$APISERVER_URL/api/v1/namespaces" \
  -d "{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"metadata\":{\"name\":\"$ns\"}}" -o /dev/null -w '%{http_code}\n'
echo "== create configmap $ns/smoke"
"${C[@]}" "${J[@]}" -X POST "$APISERVER_URL/api/v1/namespaces/$ns/configmaps" \
  -d '{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"smoke"},"data":{"hello":"wasmover"}}' -o /dev/null -w '%{http_code}\n'
echo "== read it back"
got="$("${C[@]}" "$APISERVER_URL/api/v1/namespaces/$ns/configmaps/smoke" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["hello"])')"
echo "data.hello=$got"
[[ "$got" == wasmover ]]
echo "== delete namespace $ns"
"${C[@]}" -X DELETE "$APISERVER_URL/api/v1/namespaces/$ns" -o /dev/null -w '%{http_code}\n'
echo "smoke: OK"
