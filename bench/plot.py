#!/usr/bin/env python3
"""Plots the convergence curves of the fleet benchmark: clinics Ready over time through the
operator (bench/results/curve-<N>.csv, solid) and, beside each, the floor — the same children
written by server-side apply with no operator, clinics whose workloads are ready
(floor-curve-<N>.csv, dashed, same colour).

usage: plot.py RESULTS_DIR OUT_PNG
"""
import csv
import glob
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_curve(path):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return [float(r["seconds"]) for r in rows], [int(r["ready"]) for r in rows]


def main():
    results, out = sys.argv[1], sys.argv[2]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    files = sorted(glob.glob(os.path.join(results, "curve-*.csv")), key=lambda p: int(p.split("-")[-1][:-4]))
    for path in files:
        n = int(path.split("-")[-1][:-4])
        t, ready = read_curve(path)
        (line,) = ax.plot(t, ready, label=f"{n} clinics, operator", linewidth=2)
        floor = os.path.join(results, f"floor-curve-{n}.csv")
        if os.path.exists(floor):
            t, ready = read_curve(floor)
            ax.plot(t, ready, label=f"{n} clinics, floor (no operator)", linewidth=1.5,
                    linestyle="--", color=line.get_color())
    ax.axvline(180, color="grey", linestyle="--", linewidth=1)
    ax.text(182, 5, "3 min target", color="grey")
    ax.set_xlabel("seconds since the first object was applied")
    ax.set_ylabel("clinics Ready")
    summary = os.path.join(results, "summary.json")
    if os.path.exists(summary):
        with open(summary) as f:
            machine = json.load(f).get("machine", {})
        ax.set_title(f"Fleet convergence, {machine.get('cores', '?')} cores, {machine.get('cpu', '')}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
