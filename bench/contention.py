"""The contention scenario at 500 and 5,000 concurrent users, on embedded services.

    python bench/contention.py [--users 500 5000] [--ramp 30] [--hold 30] [--processes 2]

For each user count, a run of ``--scenario contention`` (atomic counters, WATCH transactions,
fenced locks, stampedes under the lock guard, bulk invalidation). At the first user count, a
second run with locked counters and lock-free guarded updates gives the lock-free/locked
throughput ratios, side by side at the same load. Prints, per run: operations per second and p95
per operation (from the history, at microsecond precision), and each check's result. Each run
starts its own embedded services, on this machine, with Locust's master and ``--processes``
workers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analysis.ops import CONTENTION_LATENCY_OPS  # noqa: E402  (after the sys.path entry)

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
OPS = ("read_hit", "read_miss", *CONTENTION_LATENCY_OPS)


def run(users: int, a: argparse.Namespace, results: Path, name: str, extra: str = "") -> dict[str, Any]:
    args = f"-f locustfile.py --headless --only-summary --scenario contention --ramp-users {users}"
    args += f" --ramp-time {a.ramp} --hold-time {a.hold} --quiesce-time 2 --processes {a.processes}"
    args += f" --results-dir {results} --run-id {name} --csv {results}/{name}/locust {extra}"
    out = subprocess.run(
        [sys.executable, "-m", "locust", *args.split()],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode not in (0, 1) or not (results / name / "run.json").exists():
        sys.exit(f"bench: the {name} run failed (exit {out.returncode}):\n{out.stderr[-2000:]}")
    subprocess.run(
        [sys.executable, "-m", "analysis", str(results / name), "--json"],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        check=False,
    )
    summary: dict[str, Any] = json.loads((results / name / "summary.json").read_text())
    meta = json.loads((results / name / "run.json").read_text())
    summary["seconds"] = (meta["stopped_ns"] - meta["started_ns"]) / 1e9
    return summary


def group(summary: dict[str, Any], op: str) -> dict[str, Any]:
    """The latency check's figures for ``op`` (count, and percentiles in µs)."""
    found = summary["checks"]["latency"].get(op)
    return found if isinstance(found, dict) else {}


def rate(summary: dict[str, Any], op: str) -> float:
    return float(group(summary, op).get("count") or 0) / summary["seconds"]


def p95_ms(summary: dict[str, Any], op: str) -> float | None:
    p95 = group(summary, op).get("p95")
    return None if p95 is None else float(p95) / 1000


def report(name: str, s: dict[str, Any]) -> None:
    print(f"\n== {name}: {s['seconds']:.0f} s, verdict {'PASS' if s['passed'] else 'FAIL'}")
    for op in OPS:
        r, p = rate(s, op), p95_ms(s, op)
        if r:
            print(f"  {op:18s} {r:9.1f} ops/s   p95 {p:9.3f} ms")
    failed = [n for n, c in s["checks"].items() if not c.get("passed", True)]
    skipped = [n for n, c in s["checks"].items() if c.get("skipped")]
    print(
        f"  checks: {len(s['checks']) - len(failed) - len(skipped)} passed, failed {failed or '-'},"
        f" skipped {skipped or '-'}"
    )
    breached = [
        n for n, t in s.get("thresholds", {}).items() if not t.get("passed", True) and not t.get("skipped")
    ]
    print(f"  thresholds breached: {breached or '-'}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, nargs="+", default=[500, 5000])
    p.add_argument("--ramp", type=int, default=30)
    p.add_argument("--hold", type=int, default=30)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--keep", type=Path, default=None, help="keep the results here")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = a.keep or Path(tmp)
        first = a.users[0]
        base = run(first, a, results, f"contention-{first}")
        report(f"contention, {first} users", base)
        variant = run(first, a, results, f"variant-{first}", "--counter-mode locked --lock-mode unlocked")
        report(f"locked counters + lock-free updates, {first} users", variant)
        free, locked = rate(base, "incr"), rate(variant, "incr")
        print(f"\nlock-free/locked counter increments: {free / max(locked, 1e-9):.2f}", end="")
        print(f" (atomic INCRBY {free:.0f}/s, locked {locked:.0f}/s)")
        print(
            f"lock-free/locked guarded updates:   "
            f"{rate(variant, 'guarded_write') / max(rate(base, 'guarded_write'), 1e-9):.2f}"
            f" (unlocked {rate(variant, 'guarded_write'):.0f}/s, locked {rate(base, 'guarded_write'):.0f}/s)"
        )
        for users in a.users[1:]:
            report(f"contention, {users} users", run(users, a, results, f"contention-{users}"))


if __name__ == "__main__":
    main()
