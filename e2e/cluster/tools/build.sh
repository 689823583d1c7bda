#!/usr/bin/env bash
# Builds the check tools the tests call (promtool, helm, kubeconform, actionlint, kube-score, and
# the load generator vegeta) from the Go modules in this folder (one module per tool, so their
# dependency graphs never meet), into a cache keyed by the module files and this script, and
# prints that directory.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tools=(promtool helm kubeconform actionlint kube-score vegeta)
key=$(for t in "${tools[@]}"; do cat "$here/$t/go.mod" "$here/$t/go.sum"; done | cat - "$here/build.sh" |
      sha256sum | cut -c1-16)
cache=${E2E_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/clinic-operator-e2e}
bin="$cache/tools-$key"
if [ -f "$bin/.complete" ]; then echo "$bin"; exit 0; fi

export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=readonly
mkdir -p "$bin"
start=$SECONDS
for t in "${tools[@]}"; do
  # `go build tool` builds the module's `tool` directives; each module declares exactly one.
  (cd "$here/$t" && go build -trimpath -ldflags "-s -w" -o "$bin/$t" tool) >&2
done
echo "built ${tools[*]} in $((SECONDS - start)) s" >&2
touch "$bin/.complete"
echo "$bin"
