#!/usr/bin/env python3
"""Where a Go process of the bench's control plane spent its CPU, from `perf record -g`.

The control-plane binaries are built without a symbol table (and the API server's
`/debug/pprof` is off), so `perf report` shows addresses only; `go tool addr2line` resolves them
from the binary's pclntab. Prints the functions by share of samples, on top of the stack
("self") and anywhere in it ("inclusive").

usage:
  perf record -F 49 -g -p <pid> -o perf.data -- sleep 300
  go_profile.py perf.data path/to/kube-apiserver [top]
"""
import collections
import subprocess
import sys

# Where a non-PIE Go binary's text is mapped: perf reports offsets into the file, addr2line
# wants addresses.
TEXT_BASE = 0x400000


def samples(data):
    """Each sample's stack, innermost first, as (offset, dso) pairs."""
    out = subprocess.run(["perf", "script", "-i", data, "-F", "ip,dso"], capture_output=True, text=True, check=True)
    stacks, current = [], []
    for line in out.stdout.splitlines():
        parts = line.split()
        if not parts:
            if current:
                stacks.append(current)
            current = []
        elif len(parts) >= 2:
            current.append((parts[0], parts[1]))
    if current:
        stacks.append(current)
    return stacks


def main():
    data, binary = sys.argv[1], sys.argv[2]
    top = int(sys.argv[3]) if len(sys.argv) > 3 else 40
    stacks = samples(data)
    name = binary.rsplit("/", 1)[-1]
    offsets = sorted({offset for stack in stacks for offset, dso in stack if name in dso})
    resolved = subprocess.run(
        ["go", "tool", "addr2line", binary],
        input="".join(f"{hex(int(o, 16) + TEXT_BASE)}\n" for o in offsets),
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    functions = {o: resolved[2 * i] for i, o in enumerate(offsets)}  # function, then file:line
    own, anywhere = collections.Counter(), collections.Counter()
    for stack in stacks:
        frames = [functions.get(o, dso) for o, dso in stack]
        own[frames[0]] += 1
        anywhere.update(set(frames))
    total = len(stacks)
    print(f"samples {total}")
    print("== self")
    for function, count in own.most_common(top):
        print(f"{100 * count / total:5.1f}% {function}")
    print("== inclusive")
    for function, count in anywhere.most_common(top * 10):
        print(f"{100 * count / total:5.1f}% {function}")


if __name__ == "__main__":
    main()
