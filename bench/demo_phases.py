"""Cache-hit latency of StepRamp runs, split into the seconds users were spawning and the rest.

    python bench/demo_phases.py RESULTS/RUN_ID [RESULTS/RUN_ID ...]

StepRamp (the demo's shape) spends the first half of each of its four steps spawning users and the
second half steady; after the ramp it holds the peak. A load generator whose own work grows while
it spawns users (Locust's spawn messages, each user's set-up) shows it here as a p95 far above the
steady one. Prints one line per run: ok cache hits, their p95 over the whole run, while spawning,
and at the held peak, in milliseconds, from the history at nanosecond resolution.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analysis import load_history  # noqa: E402  (after the sys.path entry)
from shapes.ramp import STEPS, StepRamp  # noqa: E402


def phases(run_dir: Path) -> dict[str, float]:
    run = json.loads((run_dir / "run.json").read_text())
    options = run["options"]
    ramp = float(options.get("ramp_time") or StepRamp.default_ramp_time)
    hold = float(options.get("hold_time") or StepRamp.default_hold_time)
    h = load_history(run_dir)
    hits = h.loc[(h["f"] == "read") & (h["source"] == "hit") & (h["status"] == "ok")]
    t = (hits["t_invoke"].to_numpy("int64") - run["started_ns"]) / 1e9
    latency_ms = (hits["t_complete"].to_numpy("int64") - hits["t_invoke"].to_numpy("int64")) / 1e6
    step = ramp / len(STEPS)
    spawning = np.zeros(len(t), dtype=bool)
    for i in range(len(STEPS)):
        spawning |= (t >= i * step) & (t < i * step + step / 2)
    peak = (t >= ramp) & (t < ramp + hold)
    return {
        "hits": float(len(t)),
        "p95_all_ms": float(np.percentile(latency_ms, 95)),
        "p95_spawning_ms": float(np.percentile(latency_ms[spawning], 95)),
        "p95_peak_ms": float(np.percentile(latency_ms[peak], 95)),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path, help="results directories of StepRamp runs")
    a = p.parse_args()
    for run_dir in a.runs:
        if not (run_dir / "run.json").is_file():
            sys.exit(f"bench: {run_dir} has no run.json: give the directory of a finished run")
        f = phases(run_dir)
        print(
            f"{run_dir.name}: {f['hits']:.0f} hits, p95 {f['p95_all_ms']:.2f} ms in all, "
            f"{f['p95_spawning_ms']:.2f} ms while spawning, {f['p95_peak_ms']:.2f} ms at the peak"
        )


if __name__ == "__main__":
    main()
