#!/usr/bin/env bash
# Builds (or finds cached) the floor's kube-apiserver — the oldest Kubernetes the docs and the
# chart promise — from the module in this folder, into a cache directory keyed by the module
# files and this script, and prints that directory. A warm cache returns at once.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
key=$(cat "$here/go.mod" "$here/go.sum" "$here/build.sh" | sha256sum | cut -c1-16)
cache=${E2E_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/clinic-operator-e2e}
bin="$cache/floor-$key/bin"
if [ -f "$bin/.complete" ]; then echo "$bin"; exit 0; fi

export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=readonly
k8s=$(cd "$here" && go list -m -f '{{.Version}}' k8s.io/kubernetes)
minor=$(echo "$k8s" | cut -d. -f2)
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags="$ldflags -X $pkg.gitVersion=$k8s -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
done
mkdir -p "$bin"
start=$SECONDS
(cd "$here" && go build -trimpath -ldflags "$ldflags" -o "$bin/" k8s.io/kubernetes/cmd/kube-apiserver) >&2
echo "built the floor's kube-apiserver $k8s in $((SECONDS - start)) s" >&2
touch "$bin/.complete"
echo "$bin"
