#!/usr/bin/env bash
# Renders charts/wasmover for `kubectl apply` users: the default values,
# release "wasmover" in namespace "wasmover", and a placeholder image
# digest (sha256:0…0) to replace with the real one. The CRDs stay beside it
# in operator/yaml/crds.yaml.
#
#   tests/helm/render.sh > operator/yaml/wasmover.yaml
#
# Prints the manifests on stdout and writes nothing; helm comes from
# install.sh (built once, cached). tests/chart.rs checks that
# operator/yaml/wasmover.yaml is what this prints.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CHART="$HERE/../../charts/wasmover"
PLACEHOLDER="sha256:$(printf '0%.0s' {1..64})"

eval "$("$HERE/install.sh")"
cat <<HEADER
# The wasmover operator, rendered from charts/wasmover with its default
# values (tests/helm/render.sh); see docs/install.md. Install the CRDs
# (crds.yaml, beside this file) and the namespace first, and put the
# image's digest in place of the placeholder:
#
#   kubectl apply -f operator/yaml/crds.yaml
#   kubectl create namespace wasmover
#   sed 's/$PLACEHOLDER/sha256:<digest>/' operator/yaml/wasmover.yaml | kubectl apply -f -
HEADER
"$HELM" template wasmover "$CHART" --namespace wasmover --set "image.digest=$PLACEHOLDER"
