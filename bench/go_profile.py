#!/usr/bin/env python3
"""Where a Go process of the bench's control plane spent its CPU, from `perf record -g`.

The control-plane binaries are built without a symbol table (and the API server's
`/debug/pprof` is off), so `perf report` shows addresses only; `go tool addr2line` resolves them
from the binary's pclntab. Prints the functions by share of samples, on top of the stack
("self") and anywhere in it ("inclusive"); with `--compare`, the API server's CPU seconds of
two recordings side by side, by the kind of work each sample was doing.

usage:
  perf record -F 49 -g -p <pid> -o perf.data -- sleep 300
  go_profile.py perf.data path/to/kube-apiserver [top]
  go_profile.py --compare floor.data operator.data path/to/kube-apiserver

Only the samples of the binary's processes count (by command name), so a machine-wide
recording (`perf record -a`) serves too: it sees every thread, also those a process starts
after the recording began, and lets two runs be sampled over the same phase. Seconds are
samples over the recording's sampling frequency (`perf record -F`), read from the file.
"""
import collections
import os
import re
import subprocess
import sys

# Where a non-PIE Go binary's text is mapped: perf reports offsets into the file, addr2line
# wants addresses.
TEXT_BASE = 0x400000

# The API server's work, by a frame that marks it; a sample counts for the first that matches.
# Deep stacks may be cut short by perf, so the request's storage layer is matched as well as
# its handler.
API_SERVER_WORK = [
    ("custom resources (ClinicPlatforms, monitors, ...)", r"apiextensions-apiserver/pkg/(registry/customresource|apiserver\.)"),
    ("serving watches", r"WatchServer\)\.HandleHTTP|cacher\.\(\*cacheWatcher\)|cacher\.\(\*Cacher\)\.dispatch|watchCache\)\.processEvent|watchEncoder"),
    ("patches, server-side applies among them", r"patchResource|PatchResource|applyPatcher|jsonPatcher|smpPatcher"),
    ("updates", r"StatusREST\)\.Update|UpdateResource|registry\.\(\*Store\)\.Update"),
    ("creates", r"CreateResource|registry\.\(\*Store\)\.Create|BindingREST"),
    ("gets", r"GetResource|registry\.\(\*Store\)\.Get"),
    ("lists", r"ListResource|registry\.\(\*Store\)\.List"),
    ("garbage collection (background)", r"gcBgMarkWorker"),
    ("etcd client", r"go\.etcd\.io"),
    ("HTTP/2 and TLS", r"golang\.org/x/net/http2|crypto/tls|net/http\.\(\*conn\)"),
]


def samples(data, comm):
    """Each sample's stack of a process named `comm`, innermost first, as (offset, dso) pairs."""
    out = subprocess.run(
        ["perf", "script", "-i", data, "--comm", comm, "-F", "ip,dso"], capture_output=True, text=True, check=True
    )
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


def sample_frequency(data):
    """The sampling frequency `data` was recorded at (`perf record -F`), in Hz."""
    out = subprocess.run(["perf", "evlist", "-F", "-i", data], capture_output=True, text=True, check=True)
    found = re.search(r"sample_freq=(\d+)", out.stdout)
    if not found:
        sys.exit(f"{data}: not recorded at a fixed frequency (perf record -F): {out.stdout.strip()}")
    return int(found.group(1))


def resolved_stacks(data, binary):
    """Each sample's stack of `binary`'s processes as function names, innermost first."""
    name = binary.rsplit("/", 1)[-1]
    # The kernel keeps 15 characters of a command's name.
    stacks = samples(data, name[:15])
    offsets = sorted({offset for stack in stacks for offset, dso in stack if name in dso})
    resolved = subprocess.run(
        ["go", "tool", "addr2line", binary],
        input="".join(f"{hex(int(o, 16) + TEXT_BASE)}\n" for o in offsets),
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    functions = {o: resolved[2 * i] for i, o in enumerate(offsets)}  # function, then file:line
    return [[functions.get(o, dso) for o, dso in stack] for stack in stacks]


def by_work(stacks):
    counts = collections.Counter()
    for frames in stacks:
        work = next((w for w, pattern in API_SERVER_WORK if any(re.search(pattern, f) for f in frames)), "other")
        counts[work] += 1
    return counts


def compare(first, second, binary):
    a, b = resolved_stacks(first, binary), resolved_stacks(second, binary)
    fa, fb = sample_frequency(first), sample_frequency(second)
    ca, cb = by_work(a), by_work(b)
    print(f"| CPU seconds | {os.path.basename(first)} | {os.path.basename(second)} | difference |")
    print("|---|---|---|---|")
    rows = [(work, ca[work] / fa, cb[work] / fb) for work in [w for w, _ in API_SERVER_WORK] + ["other"]]
    rows.append(("total", len(a) / fa, len(b) / fb))
    for work, x, y in rows:
        print(f"| {work} | {x:.1f} | {y:.1f} | {y - x:+.1f} |")


def main():
    if sys.argv[1] == "--compare":
        compare(sys.argv[2], sys.argv[3], sys.argv[4])
        return
    data, binary = sys.argv[1], sys.argv[2]
    top = int(sys.argv[3]) if len(sys.argv) > 3 else 40
    stacks = resolved_stacks(data, binary)
    own, anywhere = collections.Counter(), collections.Counter()
    for frames in stacks:
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
