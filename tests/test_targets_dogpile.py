"""dogpile.cache's get_or_create on its Redis backend, with and without its distributed lock.

Four regions per node stand for four app servers. After each write's delete, readers of every
region miss at once: without the lock each region recomputes (the positive control: more than one
recomputation per epoch), with it exactly one recomputes per epoch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from analysis import check_stampede, load_history
from analysis.live import LIVE_CHECKS
from tests.conftest import run_analysis, run_locust

pytestmark = pytest.mark.integration

TARGET = "examples/dogpile_target.py:DogpileApp"


def dogpile_run(results: Path, guard: str) -> dict[str, Any]:
    args = f"-f locustfile.py --headless --only-summary --target {TARGET}"
    args += " --dogpile-lock" if guard == "lock" else ""
    args += " --dogpile-instances 4 --dogpile-load-delay-ms 50 --ramp-users 20 --ramp-time 0"
    args += " --hold-time 6 --quiesce-time 1 --keys 2 --listeners 0"
    out = run_locust([*args.split(), "--results-dir", str(results), "--run-id", guard])
    run_analysis(results / guard)
    summary: dict[str, Any] = json.loads((results / guard / "summary.json").read_text())
    # The live view logged a Locust failure (COHERENCE <check>) for each check the analysis failed
    # among those it judges (the app's own fills race its writes: stale reads), so Locust's exit
    # code says whether there was one.
    logged = [n for n in (*LIVE_CHECKS, "divergence") if summary["checks"][n]["outcome"] == "fail"]
    assert out.returncode == (1 if logged else 0), (logged, out.stderr[-3000:])
    return summary["checks"]["stampede"]


def test_without_the_lock_an_epoch_recomputes_more_than_once(tmp_path: Path) -> None:
    stampede = dogpile_run(tmp_path, "none")
    assert stampede["loads_from"] == "read_misses" and not stampede.get("skipped")
    assert stampede["epochs_opened"] >= 5
    assert stampede["max_loads_per_epoch"] > 1 and stampede["multi_load_epochs"] > 0
    # Reported, not failed: the verdict cannot tell a target's own guard (docs/targets.md). Judged
    # as a target that claims one load per epoch, it fails.
    assert stampede["passed"] is True
    judged = check_stampede(load_history(tmp_path / "none"), expect_single_reads=True)
    assert not judged.passed and judged.violations == stampede["multi_load_epochs"]


def test_with_the_distributed_lock_each_epoch_recomputes_once(tmp_path: Path) -> None:
    stampede = dogpile_run(tmp_path, "lock")
    assert not stampede.get("skipped") and stampede["passed"] is True
    judged = check_stampede(load_history(tmp_path / "lock"), expect_single_reads=True)
    assert judged.passed and judged.violations == 0
    assert stampede["epochs_opened"] >= 5 and stampede["epochs_loaded"] >= 5
    assert stampede["max_loads_per_epoch"] == 1 and stampede["multi_load_epochs"] == 0
