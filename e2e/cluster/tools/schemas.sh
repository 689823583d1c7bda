#!/usr/bin/env bash
# Prints a directory of kubeconform schemas for the pinned Kubernetes release and every CRD the
# tests use (upstream Velero, Prometheus Operator, cert-manager, and ours), generated offline by
# schemas.py and cached by the content of its inputs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
export GOTOOLCHAIN=local
k8s=$(cd "$here/.." && go list -m -f '{{.Dir}}' k8s.io/kubernetes)
swagger="$k8s/api/openapi-spec/swagger.json"
mapfile -t crds < <("$here/../crds.sh")
crds+=("$root/crds/clinicplatform.yaml")
key=$(cat "$swagger" "${crds[@]}" "$here/schemas.py" | sha256sum | cut -c1-16)
cache=${E2E_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/clinic-operator-e2e}
out="$cache/schemas-$key"
if [ ! -f "$out/.complete" ]; then
  find "$cache" -maxdepth 1 -name 'schemas-*' ! -name "schemas-$key" -exec rm -rf {} + 2>/dev/null || true
  "${PYTHON:-python3}" "$here/schemas.py" "$out" "$swagger" "${crds[@]}" >&2
  touch "$out/.complete"
fi
echo "$out"
