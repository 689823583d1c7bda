#!/usr/bin/env bash
# Builds the images of the real-node tests (see build.py) into a cache directory keyed by every
# input in this folder and the node add-ons, and prints that directory: images.oci.tar,
# images.json, packages.txt. A warm cache returns at once. Needs apt-get and dpkg-deb (Debian),
# gcc with a static libc, Go.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
node_bin=$("$here/../node/build.sh")
key=$( (cd "$here" && find . -type f ! -name '*.pyc' | LC_ALL=C sort | xargs sha256sum; echo "$node_bin") |
      sha256sum | cut -c1-16)
cache=${E2E_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/clinic-operator-e2e}
out="$cache/images-$key"
if [ -f "$out/.complete" ]; then echo "$out"; exit 0; fi
find "$cache" -maxdepth 1 -name 'images-*' ! -name "images-$key" -exec rm -rf {} + 2>/dev/null || true
start=$SECONDS
mkdir -p "$out/bin"
(cd "$here/openmrs-standin" && CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=readonly \
  go build -trimpath -ldflags "-s -w" -o "$out/bin/openmrs-standin" .) >&2
gcc -static -Os -s -o "$out/bin/pause" "$here/pause.c" >&2
python3 "$here/build.py" "$out" --standin "$out/bin/openmrs-standin" --pause "$out/bin/pause" \
  --coredns "$node_bin/coredns" --traefik "$node_bin/traefik" >&2
echo "built the test images in $((SECONDS - start)) s" >&2
touch "$out/.complete"
echo "$out"
