#!/usr/bin/env python3
"""Medians of a bench/run.sh results file as Markdown tables, and the two plots.

usage: bench/report.py RESULTS.jsonl OUT_DIR
"""
import json
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def median(values):
    return statistics.median(values) if values else float("nan")


def grouped(rows, tool, *keys):
    groups = defaultdict(list)
    for row in rows:
        if row.get("tool") == tool:
            groups[tuple(row.get(k) for k in keys)].append(row)
    return groups


def summary(rows):
    """Median requests/s, p50, p99 (ms) and total errors of repeated runs."""
    return {
        "rps": median([r["requests_per_s"] for r in rows]),
        "p50": median([r["latency_ms"]["p50"] for r in rows]),
        "p99": median([r["latency_ms"]["p99"] for r in rows]),
        "errors": sum(r["errors"] for r in rows),
        "codes": sorted({c for r in rows for c in r["errors_by_code"]}),
        "runs": len(rows),
    }


def listed(ratios):
    """Each run's ratio, in run order."""
    return ", ".join(f"{ratio:.2f}" for ratio in ratios)


def print_tables(results):
    bench = grouped(results, "grantd-bench", "backend", "scenario", "clients", "batch")
    ceilings = grouped(results, "pgbench", "scenario", "clients")

    print("### Throughput and latency against concurrency (medians)\n")
    print("| backend | scenario | clients | req/s | p50 ms | p99 ms | errors | runs |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for (backend, scenario, clients, batch), rows in sorted(bench.items(), key=lambda kv: tuple(map(str, kv[0][:2])) + (kv[0][2],)):
        if scenario not in ("check", "add") or rows[0]["run"] == 0:
            continue
        s = summary(rows)
        errors = f"{s['errors']} ({', '.join(s['codes'])})" if s["errors"] else "0"
        print(f"| {backend} | {scenario} | {clients} | {s['rps']:.0f} | {s['p50']:.3f} | {s['p99']:.3f} | {errors} | {s['runs']} |")

    print("\n### grantd against the pgbench ceilings (PostgreSQL, medians)\n")
    print("check: grantd's check statement (bench/sql/check.sql); add: the same inserts as grantd's add,")
    print("a grant row and a change row, with no revision counter (bench/sql/add.sql). Each run's ratio")
    print("pairs grantd with the pgbench run measured right after it (bench/run.sh).\n")
    print("| scenario | clients | grantd req/s | pgbench tx/s | grantd / pgbench, median of runs | each run |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for (scenario, clients), rows in sorted(ceilings.items()):
        grantd = bench.get(("postgres", scenario, clients, None))
        if not grantd:
            continue
        g = summary(grantd)["rps"]
        p = median([r["requests_per_s"] for r in rows])
        by_run = {r["run"]: r["requests_per_s"] for r in rows}
        ratios = [r["requests_per_s"] / by_run[r["run"]] for r in grantd if by_run.get(r["run"])]
        print(f"| {scenario} | {clients} | {g:.0f} | {p:.0f} | {median(ratios):.2f} | {listed(ratios)} |")
    health = bench.get(("postgres", "health", 1, None))
    if health:
        h = summary(health)["rps"]
        print(f"\nAt 1 client a call takes at least one bare gRPC round trip (health, 1 client: {h:.0f}/s)")
        print("plus pgbench's transaction, so grantd can reach at most 1 / (1/pgbench + 1/health):\n")
        for (scenario, clients), rows in sorted(ceilings.items()):
            p = median([r["requests_per_s"] for r in rows])
            if clients == 1 and p > 0:
                bound = 1 / (1 / p + 1 / h)
                print(f"- {scenario}: {bound:.0f}/s, {bound / p:.2f} of pgbench's {p:.0f} tx/s")

    sqlx = grouped(results, "sqlx-ceiling", "scenario", "clients")
    if sqlx:
        print("\n### grantd against the sqlx ceiling (SQLite add: a grant row and a change row per transaction, medians)\n")
        print("| clients | grantd req/s | statements, one sqlx call each (tx/s) | one call (tx/s) | grantd / statements |")
        print("| ---: | ---: | ---: | ---: | ---: |")
        for clients in sorted({c for (_, c) in sqlx}):
            grantd = bench.get(("sqlite", "add", clients, None))
            each = sqlx.get(("sqlite-ceiling", clients))
            one = sqlx.get(("sqlite-ceiling-one-call", clients))
            if not (grantd and each and one):
                continue
            g = summary(grantd)["rps"]
            e = median([r["requests_per_s"] for r in each])
            o = median([r["requests_per_s"] for r in one])
            print(f"| {clients} | {g:.0f} | {e:.0f} | {o:.0f} | {g / e:.2f} |")

    print("\n### Latency against batch size (AddUserPermissions, 1 client, medians)\n")
    print("| backend | batch | p50 ms | p99 ms | p50 ms per permission |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for (backend, scenario, clients, batch), rows in sorted(bench.items(), key=lambda kv: (kv[0][0], kv[0][3] or 0)):
        if scenario != "add-batch":
            continue
        s = summary(rows)
        print(f"| {backend} | {batch} | {s['p50']:.3f} | {s['p99']:.3f} | {s['p50'] / batch:.4f} |")

    print("\n### Other scenarios (medians)\n")
    print("| backend | scenario | clients | req/s | p50 ms | p99 ms | errors |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for (backend, scenario, clients, batch), rows in sorted(bench.items(), key=lambda kv: tuple(map(str, kv[0]))):
        if scenario in ("check", "add", "add-batch") and rows[0]["run"] != 0:
            continue
        s = summary(rows)
        label = scenario if rows[0]["run"] != 0 else f"{scenario} (memory run)"
        errors = f"{s['errors']} ({', '.join(s['codes'])})" if s["errors"] else "0"
        print(f"| {backend} | {label} | {clients} | {s['rps']:.1f} | {s['p50']:.3f} | {s['p99']:.3f} | {errors} |")

    print("\n### Resident memory\n")
    print("| backend | state | RSS MiB |")
    print("| --- | --- | ---: |")
    for row in results:
        if row.get("tool") == "rss":
            print(f"| {row['backend']} | {row['state']} | {row['rss_kib'] / 1024:.1f} |")


def pyplot():
    try:
        import matplotlib
    except ImportError:
        venv = Path("target/bench/venv")
        if not venv.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "matplotlib"], check=True)
        site = next((venv / "lib").glob("python3*/site-packages"))
        sys.path.insert(0, str(site))
        import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot(results, out):
    plt = pyplot()
    bench = grouped(results, "grantd-bench", "backend", "scenario", "clients", "batch")
    fig, (throughput, p99) = plt.subplots(1, 2, figsize=(12, 4.5))
    for backend in ("postgres", "sqlite"):
        for scenario, marker in (("check", "o"), ("add", "s")):
            points = sorted(
                (clients, summary(rows))
                for (b, s, clients, _), rows in bench.items()
                if b == backend and s == scenario and rows[0]["run"] != 0
            )
            if not points:
                continue
            xs = [c for c, _ in points]
            label = f"{scenario} ({backend})"
            throughput.plot(xs, [s["rps"] for _, s in points], marker=marker, label=label)
            p99.plot(xs, [s["p99"] for _, s in points], marker=marker, label=label)
    for axis, title, unit in ((throughput, "Throughput", "requests/s"), (p99, "p99 latency", "ms")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("concurrent clients")
        axis.set_ylabel(unit)
        axis.set_title(f"{title} against concurrency")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    p99.set_yscale("log")
    fig.tight_layout()
    fig.savefig(out / "throughput_p99_vs_clients.png", dpi=110)

    fig, axis = plt.subplots(figsize=(7, 4.5))
    for backend in ("postgres", "sqlite"):
        points = sorted(
            (batch, summary(rows))
            for (b, s, _, batch), rows in bench.items()
            if b == backend and s == "add-batch"
        )
        if not points:
            continue
        xs = [b for b, _ in points]
        axis.plot(xs, [s["p50"] for _, s in points], marker="o", label=f"p50 ({backend})")
        axis.plot(xs, [s["p99"] for _, s in points], marker="x", linestyle="--", label=f"p99 ({backend})")
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("permissions per AddUserPermissions")
    axis.set_ylabel("ms")
    axis.set_title("Latency against batch size (1 client)")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend()
    fig.tight_layout()
    fig.savefig(out / "latency_vs_batch.png", dpi=110)


def main():
    results = load(sys.argv[1])
    out = Path(sys.argv[2])
    print_tables(results)
    plot(results, out)
    print(f"\nplots: {out / 'throughput_p99_vs_clients.png'}, {out / 'latency_vs_batch.png'}")


if __name__ == "__main__":
    main()
