"""The HTTP target on a real Flask + Flask-Caching app over real Redis and PostgreSQL.

examples/flask_target.py starts the app as its own server process. With ``--flask-mode
cache-aside`` and a fill delay, the stale-set race must show as stale reads and divergence (the
positive control); with ``locked-fill`` under the same load and delay, none may show.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.conftest import run_analysis, run_locust

pytestmark = pytest.mark.integration

TARGET = "examples/flask_target.py:FlaskCachingApp"


def flask_run(results: Path, mode: str, *extra: str) -> dict[str, Any]:
    # 5 s of 20 users on 30 keys, then 1 s of reads only: a stale entry left by the last write of a
    # key stays, and the sweep must find it.
    args = f"-f tests/locustfiles/contention.py --headless --only-summary --target {TARGET}"
    args += f" --flask-mode {mode} --flask-fill-delay-ms 50 --ramp-users 20 --ramp-time 0 --hold-time 5"
    args += " --quiesce-time 1 --keys 30 --listeners 0"
    out = run_locust([*args.split(), *extra, "--results-dir", str(results), "--run-id", mode])
    # The live view logs each violation as a Locust failure (COHERENCE <check>): exit-code-on-error.
    assert out.returncode == (1 if mode == "cache-aside" else 0), out.stderr[-3000:]
    # No latency SLAs: the app is a single werkzeug process on a shared machine; coherence is judged.
    verdict = run_analysis(results / mode, "--thresholds", "none")
    summary: dict[str, Any] = json.loads((results / mode / "summary.json").read_text())
    summary["exit_code"] = verdict.returncode
    summary["output"] = out.stdout + out.stderr
    return summary


def test_the_stale_set_race_of_cache_aside_is_flagged(tmp_path: Path) -> None:
    s = flask_run(tmp_path, "cache-aside")
    checks = s["checks"]
    assert s["exit_code"] == 1 and s["passed"] is False
    assert checks["stale_read"]["violations"] > 0
    assert checks["divergence"]["violations"] > 0
    # The swept entries came from the app's sweep endpoint, one per key.
    assert checks["divergence"]["keys_swept"] == 30
    # The requests are Locust's HTTP statistics, named by path template.
    assert "GET      /items/{index}" in s["output"] and "PUT      /items/{index}" in s["output"]
    run = json.loads((tmp_path / "cache-aside" / "run.json").read_text())
    assert "Flask-Caching" in run["target"]["description"]


def test_locked_fill_under_the_same_load_passes(tmp_path: Path) -> None:
    # The sweep goes through the per-key peek path this time.
    s = flask_run(tmp_path, "locked-fill", "--http-sweep-path=")
    checks = s["checks"]
    assert s["exit_code"] == 0, {k: v.get("violations") for k, v in checks.items()}
    for name in ("stale_read", "future_read", "monotonic_read", "divergence", "history_complete", "stampede"):
        assert checks[name]["passed"] is True and checks[name]["violations"] == 0, name
        assert not checks[name].get("skipped"), name
    assert checks["divergence"]["keys_swept"] == 30
    # The run did contend: many reads, misses that raced writes, and the app said which was which.
    assert checks["hit_ratio"]["reads"] > 500
    assert checks["hit_ratio"]["misses"] > 50 and checks["hit_ratio"]["hits"] > 50
    history = pd.read_parquet(tmp_path / "locked-fill" / "history")
    writes = history[history.f == "write"]
    assert (writes.status == "ok").sum() > 100
    assert "GET      /_cachestorm/peek/{index}" in s["output"]


def test_an_unreachable_service_gets_one_line(tmp_path: Path) -> None:
    args = "-f locustfile.py --headless -t 3s --target cachestorm.http_target:HttpTarget"
    args += " --http-base-url http://user:s3cret@127.0.0.1:1"
    out = run_locust([*args.split(), "--results-dir", str(tmp_path)], timeout=60)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("cachestorm:")]
    assert len(lines) == 1 and "unreachable" in lines[0] and "--http-base-url" in lines[0], out.stderr[-2000:]
    assert "s3cret" not in out.stderr + out.stdout
