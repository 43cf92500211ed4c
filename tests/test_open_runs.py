"""Open-model runs (--arrival-rate) on real services: the schedule is kept, and a stall shows.

The positive control: Redis is paused for a second in the middle of a run (CLIENT PAUSE). The
operations due during the pause start late and then run fast, so their uncorrected latency is small
while their corrected latency (from the intended start) holds the pause. The analysis must report
the corrected figure far above the uncorrected one; a run without the pause must not.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import redis

from analysis import load_history
from cachestorm.arrival import Schedule
from cachestorm.options import parse_schedule
from cachestorm.services import ServiceURLs
from tests.conftest import ROOT, run_analysis, run_locust

pytestmark = pytest.mark.integration

NS = 1_000_000_000


def urls(s: ServiceURLs) -> list[str]:
    return ["--redis-url", s.redis_url, "--pg-dsn", s.pg_dsn, "--ws-url", s.ws_url]


def open_args(results: Path, run_id: str, rate: str, hold: float) -> list[str]:
    args = "-f locustfile.py --headless --only-summary --keys 200 --listeners 2 --open-users 30"
    args += f" --quiesce-time 1 --hold-time {hold} --arrival-rate {rate}"
    return [*args.split(), "--results-dir", str(results), "--run-id", run_id]


def analyse(results: Path) -> dict[str, Any]:
    out = run_analysis(results, "--thresholds", "none")
    assert out.returncode in (0, 1), out.stderr[-2000:]
    summary: dict[str, Any] = json.loads((results / "summary.json").read_text())
    return summary


def scheduled_ops(history: pd.DataFrame) -> pd.DataFrame:
    ops = history.loc[history["f"].isin(["read", "write"])]
    return ops.loc[ops["status"] == "ok"]


def test_an_open_model_run_follows_its_schedule(services: ServiceURLs, tmp_path: Path) -> None:
    rate = "0:50,4:300"
    out = run_locust([*open_args(tmp_path, "ramp", rate, hold=4), *urls(services)])
    assert out.returncode == 0, out.stderr[-3000:]
    # OpenModel was chosen: all 30 open users and the 2 listeners at once, not StepRamp's 10% step.
    assert "Shape test updating to 32 users" in out.stderr
    history = load_history(tmp_path / "ramp")
    ops = history.loc[history["f"].isin(["read", "write"])]
    assert len(ops) > 0 and ops["t_intended"].notna().all()
    run = json.loads((tmp_path / "ramp" / "run.json").read_text())
    assert run["options"]["arrival_rate"] == rate
    # Arrivals per second of the schedule, counted by intended start, against the schedule itself:
    # the ramp (4 s from 50/s to 300/s) and then the hold at 300/s. Time zero is the node's own
    # schedule start, which comes after the run's reset and pool warm-up (a loaded machine once put
    # it 0.5 s after started_ns). Users start within about a second, so the first second is left out.
    intended = ops["t_intended"].to_numpy(dtype="int64")
    (node,) = run["nodes"].values()
    start = node["schedule_started_ns"]
    assert start > run["started_ns"]
    assert intended.min() >= start
    schedule = Schedule(parse_schedule(rate))
    for a, b in ((1, 3), (3, 5), (5, 8)):
        due = int(((intended >= start + a * NS) & (intended < start + b * NS)).sum())
        expected = schedule.count(b) - schedule.count(a)
        assert due == pytest.approx(expected, rel=0.15), (a, b, due, expected)
    # Nearly every operation started on time: the machine keeps up with 300/s.
    lag = ops["t_invoke"].to_numpy(dtype="int64") - intended
    assert np.median(lag) < 5_000_000
    summary = analyse(tmp_path / "ramp")
    check = summary["checks"]["open_model_latency"]
    assert not check.get("skipped"), check
    figures = check  # summary.json holds a check's figures beside its verdict
    assert figures["scheduled"] == len(ops)
    assert figures["achieved_per_s"] == pytest.approx(figures["scheduled_per_s"], rel=0.1)
    hit = figures["read_hit"]
    assert hit["count"] > 100
    assert hit["corrected_p50_us"] >= hit["uncorrected_p50_us"]


def test_two_workers_share_one_schedule(services: ServiceURLs, tmp_path: Path) -> None:
    """With --processes 2 each worker's users take their share of the arrivals: together they follow
    the schedule once, not once per worker, and every node records its own time zero."""
    rate = "200"
    args = [*open_args(tmp_path, "two", rate, hold=6), "--processes", "2", *urls(services)]
    out = run_locust(args)
    assert out.returncode == 0, out.stderr[-3000:]
    run = json.loads((tmp_path / "two" / "run.json").read_text())
    workers = {n: v for n, v in run["nodes"].items() if n != "master"}
    assert len(workers) == 2 and run["history_complete"] is True
    zeros = {n: v["schedule_started_ns"] for n, v in workers.items()}
    assert all(z is not None and z > run["started_ns"] for z in zeros.values()), zeros
    history = load_history(tmp_path / "two")
    ops = history.loc[history["f"].isin(["read", "write"])]
    assert set(ops["node"]) == set(workers)
    # Counted from the later of the two time zeros, seconds 1 to 5 of the 200/s hold: 800 arrivals
    # in all, however the two workers' users split them.
    start = max(zeros.values())
    intended = ops["t_intended"].to_numpy(dtype="int64")
    due = int(((intended >= start + 1 * NS) & (intended < start + 5 * NS)).sum())
    assert due == pytest.approx(800, rel=0.15), due
    per_node = ops.groupby("node", observed=True).size()
    assert per_node.min() > 0.25 * per_node.sum(), per_node.to_dict()


def test_a_stall_shows_in_corrected_latency_only(services: ServiceURLs, tmp_path: Path) -> None:
    args = [*open_args(tmp_path, "stall", "200", hold=7), *urls(services)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "locust", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    r = redis.Redis.from_url(services.redis_url)
    try:
        # The run's directory appears when the test starts; how long Locust takes to get there
        # depends on the machine's load, so wait for it, then give the schedule 3 s of steady load.
        deadline = time.monotonic() + 60
        while not (tmp_path / "stall").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(3.0)
        paused = time.time_ns()
        r.execute_command("CLIENT", "PAUSE", 1000, "ALL")
        _, stderr = proc.communicate(timeout=120)
    finally:
        r.close()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    history = load_history(tmp_path / "stall")
    ops = scheduled_ops(history)
    t_intended = ops["t_intended"].to_numpy(dtype="int64")
    corrected = ops["t_complete"].to_numpy(dtype="int64") - t_intended
    uncorrected = ops["t_complete"].to_numpy(dtype="int64") - ops["t_invoke"].to_numpy(dtype="int64")
    due_in_pause = (t_intended >= paused) & (t_intended < paused + NS // 2)
    assert due_in_pause.sum() > 50
    # Due in the first half of the pause: they waited at least the rest of it, measured from when
    # they were due, though most of them, started late, ran much faster than that.
    assert np.median(corrected[due_in_pause]) > 400_000_000
    # Once Redis resumes, the backlog runs at once on two cores: tens of milliseconds each, not 1 s.
    assert np.median(uncorrected[due_in_pause]) < np.median(corrected[due_in_pause]) / 4
    summary = analyse(tmp_path / "stall")
    hit = summary["checks"]["open_model_latency"]["read_hit"]
    assert hit["corrected_p99_us"] > 300_000
    assert hit["corrected_p99_us"] > 5 * hit["uncorrected_p90_us"]
    assert hit["late_over_1ms"] > 50


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--arrival-rate", "fast"], "--arrival-rate is 'fast': not a rate; write a rate like 500"),
        (
            ["--arrival-rate", "100", "--shape", "Spike"],
            "--shape is 'Spike' but --arrival-rate sets the load",
        ),
        (
            ["--arrival-rate", "100", "--scenario", "contention"],
            "--arrival-rate drives the coherence workload",
        ),
        (["--probe-delays", "soon"], "--probe-delays is 'soon': 'soon' is not a duration"),
    ],
)
def test_bad_open_model_options_get_one_line(args: list[str], line: str) -> None:
    out = run_locust(["-f", "locustfile.py", "--headless", *args], timeout=60)
    assert out.returncode == 2
    assert line in out.stderr
    assert "Traceback" not in out.stderr
