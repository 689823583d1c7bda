#!/usr/bin/env bash
# Builds the real test node's add-ons from their Go modules — CoreDNS (cluster DNS), kube-router
# (only its NetworkPolicy firewall is used) and Traefik (a Gateway API implementation) — into a
# cache directory keyed by the module files and this script, and prints that directory. A warm
# cache returns at once.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
key=$(cat "$here"/coredns/go.mod "$here"/coredns/go.sum "$here"/kube-router/go.mod "$here"/kube-router/go.sum \
      "$here"/traefik/go.mod "$here"/traefik/go.sum "$here/build.sh" | sha256sum | cut -c1-16)
cache=${E2E_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/clinic-operator-e2e}
bin="$cache/node-$key"
if [ -f "$bin/.complete" ]; then echo "$bin"; exit 0; fi
export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=readonly
mkdir -p "$bin"
start=$SECONDS
(cd "$here/coredns" && go build -trimpath -ldflags "-s -w" -o "$bin/coredns" github.com/coredns/coredns) >&2
(cd "$here/kube-router" && go build -trimpath -ldflags "-s -w" -o "$bin/kube-router" \
  github.com/cloudnativelabs/kube-router/v2/cmd/kube-router) >&2
(cd "$here/traefik" && go build -trimpath -ldflags "-s -w" -o "$bin/traefik" \
  github.com/traefik/traefik/v3/cmd/traefik) >&2
echo "built the node add-ons in $((SECONDS - start)) s" >&2
touch "$bin/.complete"
echo "$bin"
