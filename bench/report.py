#!/usr/bin/env python3
"""Prints the Markdown tables of docs/benchmarks.md from bench/results/fleet-<N>.json and, when
present, the floor beside it (floor-<N>.json).

usage: report.py RESULTS_DIR
"""
import csv
import glob
import json
import os
import sys


def fmt(v, digits=1):
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v + 0.0:.{digits}f}"  # no "-0"
    return str(v)


def main():
    results = sys.argv[1]
    runs = []
    for path in glob.glob(os.path.join(results, "fleet-*.json")):
        with open(path) as f:
            runs.append(json.load(f))
    runs.sort(key=lambda r: r["clinics"])
    head = "| | " + " | ".join(f"{r['clinics']} clinics" for r in runs) + " | target |"
    print(head)
    print("|---|" + "---|" * len(runs) + "---|")
    floors = {}
    for path in glob.glob(os.path.join(results, "floor-*.json")):
        with open(path) as f:
            floor = json.load(f)
            floors[floor["clinics"]] = floor

    def floor_of(r, key):
        return floors.get(r["clinics"], {}).get(key)

    def time_to(path, count):
        """First time the curve at `path` reaches `count` clinics ready, if it does."""
        if not os.path.exists(path):
            return None
        with open(path) as f:
            for row in csv.DictReader(f):
                if int(row["ready"]) >= count:
                    return float(row["seconds"])
        return None

    def half_ratio(r):
        n = r["clinics"]
        operator = time_to(os.path.join(results, f"curve-{n}.csv"), n / 2)
        floor = time_to(os.path.join(results, f"floor-curve-{n}.csv"), n / 2)
        if not (operator and floor):
            return "—"
        return f"{fmt(operator)} / {fmt(floor)} = {fmt(operator / floor, 2)}"

    def last_ready(path):
        if not os.path.exists(path):
            return None
        with open(path) as f:
            rows = list(csv.DictReader(f))
        return int(rows[-1]["ready"]) if rows else None

    def at_end(r):
        n = r["clinics"]
        operator = last_ready(os.path.join(results, f"curve-{n}.csv"))
        floor = last_ready(os.path.join(results, f"floor-curve-{n}.csv"))
        return f"{fmt(operator)} / {fmt(floor)}"

    def ratio(r):
        floor = floor_of(r, "converged_in_seconds")
        if not (r["converged"] and floor):
            return "—"
        return fmt(r["converged_in_seconds"] / floor, 2)

    rows = [
        ("floor: workloads of all clinics ready, no operator (s)", lambda r: fmt(floor_of(r, "converged_in_seconds")), ""),
        ("operator / floor", ratio, "≤ 1.1"),
        ("half the fleet ready, operator / floor (s)", half_ratio, ""),
        ("clinics ready at the end, operator / floor", at_end, ""),
        ("all Ready after (s)", lambda r: fmt(r["converged_in_seconds"]) if r["converged"] else "not all in time", "≤ 180 at 1,000"),
        ("ClinicPlatforms applied in (s)", lambda r: fmt(r["created_in_seconds"]), ""),
        ("operator writes per clinic", lambda r: fmt(r["operator_writes_per_clinic"], 2), "≤ children + 2 = " + str(runs[0]["children_per_clinic"] + 2)),
        ("… of which status", lambda r: fmt(r["operator_writes"].get("status", 0) / r["clinics"], 2), ""),
        ("API server writes on the operator's resources per clinic", lambda r: fmt(r["api_writes_on_operator_resources_per_clinic"], 2), ""),
        ("API server writes, all components, per clinic", lambda r: fmt(r["api_writes_all"] / r["clinics"], 1), ""),
        ("writes in a forced full resync (operator / API server)", lambda r: f"{fmt(r['resync']['operator_writes_total'], 0)} / {fmt(r['resync']['api_writes_on_operator_resources'], 0)}", "0"),
        ("resync: reconciles, seconds", lambda r: f"{fmt(r['resync']['reconciles'], 0)}, {fmt(r['resync']['seconds'])}", ""),
        ("reconcile p50 / p99 (s), convergence", lambda r: f"{fmt(r['reconcile_p50_seconds'], 3)} / {fmt(r['reconcile_p99_seconds'], 2)}", "p99 ≤ 0.2"),
        ("reconcile p50 / p99 (s), resync", lambda r: f"{fmt(r['resync']['reconcile_p50_seconds'], 3)} / {fmt(r['resync']['reconcile_p99_seconds'], 2)}", ""),
        ("operator peak RSS (MiB), convergence / resync", lambda r: f"{fmt(r['operator_peak_rss_mib'])} / {fmt(r['resync']['operator_peak_rss_mib'])}", "≤ 64 at 1,000"),
        ("operator CPU (s), convergence / resync", lambda r: f"{fmt(r['operator_cpu_seconds'])} / {fmt(r['resync']['operator_cpu_seconds'])}", ""),
        ("reconciles during convergence", lambda r: fmt(r["reconciles"], 0), ""),
        ("fake nodes", lambda r: fmt(r["fake_nodes"]), ""),
    ]
    for name, get, target in rows:
        print(f"| {name} | " + " | ".join(get(r) for r in runs) + f" | {target} |")
    print()
    for r in runs:
        cpu, floor_cpu = r.get("cpu_seconds"), floor_of(r, "cpu_seconds")
        if not cpu:
            continue
        print(f"CPU seconds by process until all were ready, {r['clinics']} clinics:")
        print()
        print("| process | floor | operator run |")
        print("|---|---|---|")
        names = sorted(set(cpu) | set(floor_cpu or {}), key=lambda k: (k == "machine", -cpu.get(k, 0)))
        for name in names:
            print(f"| {name} | {fmt((floor_cpu or {}).get(name))} | {fmt(cpu.get(name))} |")
        print()
    for r in runs:
        sent = {w["kind"]: w for w in r.get("watch_events_sent", [])}
        if not sent:
            continue
        floor_sent = {w["kind"]: w for w in floor_of(r, "watch_events_sent") or []}
        print(f"Watch events the API server sent, by resource, until all were ready, {r['clinics']} clinics (floor / operator run):")
        print()
        print("| resource | events | MiB | watchers closed as too slow |")
        print("|---|---|---|---|")
        kinds = sorted(set(sent) | set(floor_sent), key=lambda k: -sent.get(k, {}).get("bytes", 0))
        for kind in kinds[:12]:
            f, o = floor_sent.get(kind, {}), sent.get(kind, {})
            mib = lambda w: fmt(w["bytes"] / 2**20) if w else "—"
            events = lambda w: fmt(w["events"], 0) if w else "—"
            closed = lambda w: fmt(w.get("terminated_watchers"), 0) if w else "—"
            print(f"| {kind} | {events(f)} / {events(o)} | {mib(f)} / {mib(o)} | {closed(f)} / {closed(o)} |")
        total = lambda ws: sum(w["bytes"] for w in ws.values()) / 2**20
        print(f"| all | {fmt(sum(w['events'] for w in floor_sent.values()), 0)} / {fmt(sum(w['events'] for w in sent.values()), 0)} | {fmt(total(floor_sent))} / {fmt(total(sent))} | |")
        print()
    for r in runs:
        print(f"Top API requests during convergence, {r['clinics']} clinics:")
        print()
        print("| verb | resource | count | per clinic |")
        print("|---|---|---|---|")
        for row in r["api_requests"][:12]:
            print(f"| {row['verb']} | {row['resource']} | {row['count']:.0f} | {row['count'] / r['clinics']:.1f} |")
        print()


if __name__ == "__main__":
    main()
