"""A versioned run at 500 users across three hosts, emulated by Linux network namespaces.

    python bench/multihost.py [--users 500] [--ramp-time 30] [--hold-time 15] [--rounds 1]

Three namespaces on 10.79.0.0/24 behind a bridge (bench/netns.py): the master (.2) with its
embedded services bound to and advertised on their own address (.1), and two workers (.3, .4),
each in its own namespace, so that every operation and every clock ping crosses a veth pair and a
bridge. locustfile.py runs its StepRamp to ``--users`` with ``--strategy versioned``; the run
marker is checked and the clocks are synced, as in any real multi-host run. Needs root.

Per round it prints, and at the end as medians: throughput (ok operations of the latency check,
per second of the run), read_hit p95 (summary.json, latency check), each worker's clock offset
and uncertainty (run.json ``nodes[...].clock``) and the analysis verdict. The master's Locust port
is 15579, away from the default 5557 and from tests/test_multihost.py's 15571.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import netns  # noqa: E402

SUBNET = "10.79.0"
NODES = {"m": 2, "w1": 3, "w2": 4}
SERVICES_IP = f"{SUBNET}.1"
MASTER_PORT = "15579"
WORKERS = ("w1", "w2")


def locust(*args: str) -> list[str]:
    return [sys.executable, "-m", "locust", "-f", "locustfile.py", *args]


def one_run(h: netns.Hosts, a: argparse.Namespace, tmp: Path, run_id: str) -> dict[str, Any]:
    results = tmp / "results"
    log = tmp / f"{run_id}-master.log"
    master = h.start(
        "m",
        locust(
            "--master",
            "--master-bind-host", f"{SUBNET}.2",
            "--master-bind-port", MASTER_PORT,
            "--expect-workers", str(len(WORKERS)),
            "--headless", "--only-summary",
            "--ramp-users", str(a.users),
            "--ramp-time", str(a.ramp_time),
            "--hold-time", str(a.hold_time),
            "--strategy", "versioned",
            "--services-bind", SERVICES_IP,
            "--services-advertise", SERVICES_IP,
            "--results-dir", str(results),
            "--run-id", run_id,
            *a.extra.split(),
        ),
        log,
    )  # fmt: skip
    workers = [
        h.start(
            w,
            locust("--worker", "--master-host", f"{SUBNET}.2", "--master-port", MASTER_PORT),
            tmp / f"{run_id}-{w}.log",
        )
        for w in WORKERS
    ]
    timeout = a.ramp_time + a.hold_time + 90
    try:
        code = master.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        sys.exit(f"multihost: the master still runs after {timeout:g} s:\n{log.read_text()[-3000:]}")
    for w in workers:
        try:
            w.wait(timeout=30)
        except subprocess.TimeoutExpired:
            w.terminate()
    if code != 0:
        sys.exit(f"multihost: the master exited {code}:\n{log.read_text()[-3000:]}")
    run_dir = results / run_id
    analysis = subprocess.run(
        [sys.executable, "-m", "analysis", str(run_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
        check=False,
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    run = json.loads((run_dir / "run.json").read_text())
    latency = summary["checks"]["latency"]
    ok_ops = sum(g.get("count") or 0 for g in latency.values() if isinstance(g, dict))
    seconds = (run["stopped_ns"] - run["started_ns"]) / 1e9
    clocks = {
        name: {
            "offset_ms": node["clock_offset_ns"] / 1e6,
            "uncertainty_ms": node["clock_uncertainty_ns"] / 1e6,
            "rounds": (node.get("clock") or {}).get("rounds"),
            "max_half_rtt_ms": ((node.get("clock") or {}).get("max_half_rtt_ns") or 0) / 1e6,
        }
        for name, node in run["nodes"].items()
        if name != "master"
    }
    return {
        "ops_per_s": ok_ops / seconds,
        "seconds": seconds,
        "read_hit_p95_us": latency["read_hit"]["p95"],
        "clocks": clocks,
        "verdict": summary.get("verdict"),
        "failed_checks": sorted(
            n for n, c in summary["checks"].items() if isinstance(c, dict) and c.get("outcome") == "fail"
        ),
        "analysis_exit": analysis.returncode,
        "analysis_said": analysis.stderr.strip().splitlines()[-3:] if analysis.returncode else [],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=500)
    p.add_argument("--ramp-time", type=float, default=30.0)
    p.add_argument("--hold-time", type=float, default=15.0)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--keep", action="store_true", help="print each round's raw figures as it ends")
    p.add_argument("--extra", default="", help="more options for the master, space-separated")
    a = p.parse_args()
    why = netns.missing()
    if why:
        sys.exit(f"multihost: {why}")
    rows = []
    keep = contextlib.nullcontext(tempfile.mkdtemp(prefix="multihost-")) if a.keep else None
    with (
        keep or tempfile.TemporaryDirectory() as tmp_s,
        netns.hosts(f"csb{os.getpid()}", SUBNET, NODES, ROOT, {"m": [SERVICES_IP]}) as h,
    ):
        for i in range(a.rounds):
            started = time.monotonic()
            row = one_run(h, a, Path(tmp_s), f"mh{i + 1}")
            rows.append(row)
            if a.keep:
                print(tmp_s, json.dumps(row), flush=True)
            clocks = "  ".join(
                f"{n}: offset {c['offset_ms']:+.3f} ms ± {c['uncertainty_ms']:.3f} ms ({c['rounds']} rounds)"
                for n, c in sorted(row["clocks"].items())
            )
            print(
                f"round {i + 1} ({time.monotonic() - started:.0f} s): {row['ops_per_s']:.0f} ops/s, "
                f"read_hit p95 {row['read_hit_p95_us']} us, "
                f"verdict {row['verdict']} {row['failed_checks'] or ''} "
                f"(analysis exit {row['analysis_exit']}); {clocks}",
                flush=True,
            )
    if len(rows) > 1:
        print(
            f"median: {statistics.median(r['ops_per_s'] for r in rows):.0f} ops/s, "
            f"read_hit p95 {statistics.median(r['read_hit_p95_us'] for r in rows):.0f} us"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
