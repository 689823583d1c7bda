#!/usr/bin/env bash
# Regenerates e2e/cluster/go.mod for one Kubernetes release: K8S=v1.34.4 e2e/cluster/hack/pin-k8s.sh
# or the floor's (the oldest API server the docs promise): DIR=floor K8S=v1.31.14 TOOLS="..."
# k8s.io/kubernetes requires its staging modules at v0.0.0 and resolves them with ./staging
# replaces that consumers ignore, so each one is pinned to the matching v0.Y.Z tag. The list
# comes from the published go.mod, never by hand (new staging modules appear between minors).
set -euo pipefail
cd "$(dirname "$0")/../${DIR:-.}"
K8S=${K8S:?set K8S, e.g. K8S=v1.34.4}
STG="v0.${K8S#v1.}"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod
GOMOD=$(go mod download -json "k8s.io/kubernetes@${K8S}" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
for m in $(sed -n 's#^[[:space:]]*\(k8s\.io/[a-z0-9-]*\) => \./staging/.*#\1#p' "$GOMOD"); do
  go mod edit -replace="${m}=${m}@${STG}"
done
# Always with @version: a bare `go get` means @upgrade.
go get "k8s.io/kubernetes@${K8S}"
for t in ${TOOLS:-k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
         k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl go.etcd.io/etcd/server/v3}; do
  go mod edit -tool="$t"
done
go mod tidy
go list -m k8s.io/kubernetes
