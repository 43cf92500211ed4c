"""A user's own Python cache code judged through --target, and targets that break the contract.

The profile service (examples/profiles/) has its own table, key format and JSON values; its
target file is the one docs/targets.md shows. Its textbook cache-aside fill, widened by a delay,
must be flagged; its guarded fill under the same load must pass.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_analysis, run_locust

pytestmark = pytest.mark.integration

PROFILES = "examples/profiles/target.py:Profiles"
FAST = "tests/locustfiles/contention.py"


def test_the_docs_show_the_example_target_as_it_is() -> None:
    doc = (ROOT / "docs" / "targets.md").read_text()
    shown = re.search(r"## Your own Python cache code.*?```python\n(.*?)```", doc, re.S)
    assert shown is not None
    assert shown.group(1) == (ROOT / "examples" / "profiles" / "target.py").read_text()


def profiles_run(tmp_path: Path, fill: str) -> dict:
    run_id = f"profiles-{fill}"
    args = f"-f {FAST} --headless --only-summary --target {PROFILES} --profiles-fill {fill}"
    args += " --profiles-fill-delay-ms 30 --ramp-users 30 --ramp-time 0 --hold-time 6 --quiesce-time 2"
    args += f" --keys 12 --listeners 0 --results-dir {tmp_path} --run-id {run_id}"
    out = run_locust(args.split(), timeout=120)
    # The live view logs each violation as a Locust failure (COHERENCE <check>): exit-code-on-error.
    assert out.returncode == (1 if fill == "textbook" else 0), out.stderr[-3000:]
    verdict = run_analysis(tmp_path / run_id)
    summary = json.loads((tmp_path / run_id / "summary.json").read_text())
    summary["exit_code"] = verdict.returncode
    run = json.loads((tmp_path / run_id / "run.json").read_text())
    assert run["target"]["spec"] == PROFILES
    return summary


def test_the_textbook_fill_of_a_users_own_code_is_flagged(tmp_path: Path) -> None:
    s = profiles_run(tmp_path, "textbook")
    assert s["exit_code"] == 1
    checks = s["checks"]
    assert checks["stale_read"]["violations"] + checks["divergence"]["violations"] > 0
    # The sweep looked at the target's own keys, not cachestorm's.
    assert checks["divergence"]["keys_swept"] == 12
    assert checks["divergence"]["cached_entries"] > 0
    # The report names the user's target, not the reference cache's strategy.
    report = (tmp_path / "profiles-textbook" / "report.html").read_text()
    assert f"target: {PROFILES}" in report
    assert "strategy" not in report.split("<h2")[0]


def test_the_guarded_fill_under_the_same_load_passes(tmp_path: Path) -> None:
    s = profiles_run(tmp_path, "guarded")
    checks = s["checks"]
    assert checks["stale_read"]["violations"] == 0
    assert checks["stale_read"]["reads_checked"] > 200
    assert checks["divergence"]["violations"] == 0
    assert checks["divergence"]["cached_entries"] > 0
    assert checks["future_read"]["violations"] == checks["monotonic_read"]["violations"] == 0


@pytest.mark.parametrize(
    ("target", "says"),
    [
        ("RepeatsVersions", "returned version 4, but version 4 was already committed"),
        ("ReturnsNothing", "returned nothing"),
        ("ReadsText", "returned 'hello'"),
    ],
)
def test_a_target_that_breaks_the_contract_stops_the_run(tmp_path: Path, target: str, says: str) -> None:
    args = f"-f {FAST} --headless --only-summary --target tests/targets/broken.py:{target}"
    args += f" --ramp-users 10 --ramp-time 0 --hold-time 30 --keys 3 --listeners 0 --results-dir {tmp_path}"
    out = run_locust([*args.split(), "--run-id", "broken"], timeout=90)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = [line for line in out.stderr.splitlines() if "broke the contract" in line]
    assert lines and says in lines[0], out.stderr[-2000:]
    run = json.loads((tmp_path / "broken" / "run.json").read_text())
    assert says in run["contract_broken"]
    # The run stopped at once, not after its 30 s hold.
    assert run["stopped_ns"] - run["started_ns"] < 15e9
    # And the analysis refuses to judge it.
    verdict = run_analysis(tmp_path / "broken")
    assert verdict.returncode == 2
    assert "broke cachestorm's contract" in verdict.stderr


def test_the_correct_in_memory_target_runs_to_its_end(tmp_path: Path) -> None:
    args = f"-f {FAST} --headless --only-summary --target tests/targets/broken.py:Correct"
    args += " --ramp-users 10 --ramp-time 0 --hold-time 2 --quiesce-time 0 --keys 3 --listeners 0"
    args += f" --results-dir {tmp_path}"
    out = run_locust([*args.split(), "--run-id", "ok"], timeout=90)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "broke the contract" not in out.stderr
    assert json.loads((tmp_path / "ok" / "run.json").read_text())["contract_broken"] is None


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("nowhere.py:X", "not a file"),
        ("tests/targets/broken.py:Missing", "has no class 'Missing'"),
        ("tests/targets/broken.py:LacksSweep", "lacks read, write, reset, sweep, close"),
        ("no_such_module:X", "cannot import 'no_such_module'"),
        ("justaname", "give --target FILE.py:Class"),
    ],
)
def test_a_target_that_cannot_be_loaded_gets_one_line(tmp_path: Path, spec: str, says: str) -> None:
    out = run_locust(["-f", "locustfile.py", "--headless", "-t", "3s", "--target", spec], timeout=60)
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("cachestorm: --target") and says in lines[-1], out.stderr[-2000:]
    assert "Traceback" not in out.stderr
