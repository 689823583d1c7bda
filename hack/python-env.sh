#!/usr/bin/env bash
# Prints the path of a Python virtualenv with a requirements file installed (default
# docs/requirements.txt), cached outside the clone by the file's hash (a warm machine reuses it;
# a cold one builds it from PyPI).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
requirements=${1:-$root/docs/requirements.txt}
name=$(basename "$(dirname "$requirements")")
key=$( (cat "$requirements"; python3 --version) | sha256sum | cut -c1-16)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/clinic-operator
venv="$cache/venv-$name-$key"
if [ ! -f "$venv/.complete" ]; then
  rm -rf "$venv"
  find "$cache" -maxdepth 1 -name "venv-$name-*" -exec rm -rf {} + 2>/dev/null || true
  mkdir -p "$cache"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements" >&2
  touch "$venv/.complete"
fi
echo "$venv"
