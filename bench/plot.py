#!/usr/bin/env python3
"""Plots the convergence curves of the fleet benchmark (bench/results/curve-<N>.csv) as the
fraction of clinics Ready over time, one line per fleet size.

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


def main():
    results, out = sys.argv[1], sys.argv[2]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    files = sorted(glob.glob(os.path.join(results, "curve-*.csv")), key=lambda p: int(p.split("-")[-1][:-4]))
    for path in files:
        n = int(path.split("-")[-1][:-4])
        with open(path) as f:
            rows = list(csv.DictReader(f))
        t = [float(r["seconds"]) for r in rows]
        ready = [int(r["ready"]) for r in rows]
        ax.plot(t, ready, label=f"{n} clinics", linewidth=2)
    ax.axvline(180, color="grey", linestyle="--", linewidth=1)
    ax.text(182, 5, "3 min target", color="grey")
    ax.set_xlabel("seconds since the first ClinicPlatform was applied")
    ax.set_ylabel("ClinicPlatforms Ready")
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
