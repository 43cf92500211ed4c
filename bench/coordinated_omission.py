"""What a 1 s stall does to reported latency, closed model against open model, side by side.

    python bench/coordinated_omission.py [--rounds 3] [--hold 16] [--users 60] [--stall-ms 1000]

Each round makes four runs on the same embedded services: the closed model (the StepRamp shape
with ``--ramp-time 0``, ``--users`` users with their usual waits) and the open model at the
closed run's measured rate (``--arrival-rate``, with the default ``--open-users``: one per 20
operations a second), each once undisturbed and once with Redis paused
(``CLIENT PAUSE <stall-ms> ALL``) half way through the hold. It prints the cache-hit latency
percentiles each run reports: the closed model's (uncorrected, all Locust can see) and the open
model's uncorrected and corrected ones (``open_model_latency``), with medians over the rounds and
each stalled figure as a ratio to the same model's undisturbed run of the same round.

The point it measures: the closed model's p99 barely moves with the stall, because the users
stuck behind it simply send fewer requests; the open model's corrected p99 shows the stall.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cachestorm.services import EmbeddedServices, ServiceURLs  # noqa: E402  (after the sys.path entry)

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
PCTS = ("p50", "p99", "p99_9")


def run(
    svc: ServiceURLs, results: Path, name: str, model: str, a: argparse.Namespace, rate: float, stall: bool
) -> dict[str, Any]:
    args = "-f locustfile.py --headless --only-summary --listeners 0 --keys 2000 --quiesce-time 1"
    args += f" --hold-time {a.hold} --results-dir {results} --run-id {name}"
    args += f" --redis-url {svc.redis_url} --pg-dsn {svc.pg_dsn} --ws-url {svc.ws_url}"
    if model == "open":
        args += f" --arrival-rate {rate:.0f}"  # and the default --open-users: one per 20/s
    else:
        args += f" --ramp-users {a.users} --ramp-time 0"
    proc = subprocess.Popen(
        [sys.executable, "-m", "locust", *args.split()],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    pauser = None
    if stall:

        def pause() -> None:
            time.sleep(1.5 + a.hold / 2)  # past the start-up, half way through the hold
            r = redis.Redis.from_url(svc.redis_url)
            r.execute_command("CLIENT", "PAUSE", a.stall_ms, "ALL")
            r.close()

        pauser = threading.Thread(target=pause)
        pauser.start()
    _, err = proc.communicate(timeout=a.hold + 120)
    if pauser is not None:
        pauser.join()
    if proc.returncode not in (0, 1):
        sys.exit(f"bench: the {name} run failed (exit {proc.returncode}):\n{err[-2000:]}")
    subprocess.run(
        [sys.executable, "-m", "analysis", str(results / name), "--thresholds", "none"],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        check=False,
    )
    summary: dict[str, Any] = json.loads((results / name / "summary.json").read_text())
    meta = json.loads((results / name / "run.json").read_text())
    checks = summary["checks"]
    hit = checks["latency"]["read_hit"]
    figures: dict[str, Any] = {
        "rate": (
            checks["latency"]["read_hit"]["count"]
            + checks["latency"]["read_miss"]["count"]
            + checks["latency"]["write"]["count"]
        )
        / ((meta["stopped_ns"] - meta["started_ns"]) / 1e9)
    }
    figures.update({f"uncorrected {p}": hit[p] for p in PCTS})
    open_hit = checks.get("open_model_latency", {}).get("read_hit")
    if isinstance(open_hit, dict):
        figures.update({f"uncorrected {p}": open_hit[f"uncorrected_{p}_us"] for p in PCTS})
        figures.update({f"corrected {p}": open_hit[f"corrected_{p}_us"] for p in PCTS})
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hold", type=float, default=16.0, help="seconds of steady load per run")
    parser.add_argument("--users", type=int, default=60, help="closed-model users")
    parser.add_argument("--stall-ms", type=int, default=1000)
    a = parser.parse_args()
    table: dict[str, list[dict[str, Any]]] = {}
    with EmbeddedServices() as services, tempfile.TemporaryDirectory(prefix="cachestorm-co-") as tmp:
        svc = services.start()
        for i in range(a.rounds):
            closed = run(svc, Path(tmp), f"closed-{i}", "closed", a, 0, stall=False)
            rate = closed["rate"]
            runs = {
                "closed": closed,
                "closed, stalled": run(svc, Path(tmp), f"closed-stall-{i}", "closed", a, 0, stall=True),
                "open": run(svc, Path(tmp), f"open-{i}", "open", a, rate, stall=False),
                "open, stalled": run(svc, Path(tmp), f"open-stall-{i}", "open", a, rate, stall=True),
            }
            for name, figures in runs.items():
                table.setdefault(name, []).append(figures)
                base = runs[name.split(",")[0]]
                print(
                    f"round {i + 1} {name:16} "
                    + "  ".join(
                        f"{k} {v / 1000:8.2f} ms (x{v / base[k]:.2f})" if k != "rate" else f"{v:6.0f} ops/s"
                        for k, v in figures.items()
                        if v is not None
                    ),
                    flush=True,
                )
    print(f"\nmedians over {a.rounds} rounds; x = stalled / undisturbed, same model, same round")
    for name, rows in table.items():
        base = table[name.split(",")[0]]
        cells = []
        for k in rows[0]:
            values = [r[k] for r in rows if r.get(k) is not None]
            if not values:
                continue
            if k == "rate":
                cells.append(f"{statistics.median(values):6.0f} ops/s")
                continue
            ratios = [r[k] / b[k] for r, b in zip(rows, base, strict=True) if r.get(k) and b.get(k)]
            cells.append(f"{k} {statistics.median(values) / 1000:8.2f} ms (x{statistics.median(ratios):.2f})")
        print(f"{name:16} " + "  ".join(cells))


if __name__ == "__main__":
    main()
