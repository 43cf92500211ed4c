"""Tests of ``python -m analysis compare``: the pure comparison, the CLI's exit codes, HTML and JSON."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from analysis.compare import IMPROVEMENT, REGRESSION, WITHIN, compare, load_summary, main

ROOT = Path(__file__).resolve().parent.parent
MS = 1_000_000
SECOND = 1_000_000_000

STATS_HEADER = (
    "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,Min Response Time,"
    "Max Response Time,Average Content Size,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%,"
    "99.99%,100%\n"
)


def latency_group(count: int, p50: float, p95: float, p99: float, p99_9: float) -> dict[str, Any]:
    return {"count": count, "p50": p50, "p95": p95, "p99": p99, "p99_9": p99_9, "max": p99_9, "mean": p50}


def make_summary(
    *,
    scale: float = 1.0,
    count: int = 1000,
    violations: int = 0,
    ratio: float = 0.8,
    duration_s: float = 10.0,
) -> dict[str, Any]:
    """A hand-built summary: latency scaled by ``scale``, ``count`` read hits over ``duration_s``."""
    empty = {"count": 0, "p50": None, "p95": None, "p99": None, "p99_9": None, "max": None, "mean": None}
    return {
        "passed": violations == 0,
        "run": {"run_id": "r", "started_ns": 0, "stopped_ns": int(duration_s * SECOND)},
        "checks": {
            "stale_read": {"passed": violations == 0, "violations": violations, "skipped": False},
            "ws_delivery": {"passed": True, "violations": 0, "skipped": True, "reason": "no ws rows"},
            "hit_ratio": {"passed": True, "violations": 0, "skipped": False, "ratio": ratio},
            "latency": {
                "passed": True,
                "violations": 0,
                "skipped": False,
                "read_hit": latency_group(count, 100 * scale, 400 * scale, 900 * scale, 2000 * scale),
                "write": empty,
            },
        },
        "thresholds": {},
        "locust": {"skipped": True, "reason": "no Locust CSV exports (locust_stats.csv)"},
    }


def find(rows: list[Any], section: str, item: str, metric: str) -> Any:
    matches = [r for r in rows if (r.section, r.item, r.metric) == (section, item, metric)]
    assert len(matches) == 1, (section, item, metric, rows)
    return matches[0]


# ---- the pure comparison ------------------------------------------------------------------------


def test_slower_b_is_a_regression() -> None:
    result = compare(make_summary(), make_summary(scale=1.5))
    p95 = find(result.rows, "latency", "read_hit", "p95")
    assert (p95.a, p95.b, p95.delta) == (400.0, 600.0, 200.0)
    assert p95.rel == pytest.approx(0.5)
    assert p95.verdict == REGRESSION
    assert result.regressed
    assert {r.metric for r in result.regressions} == {"p50", "p95", "p99", "p99.9"}
    # A group without operations in either run is left out.
    assert not [r for r in result.rows if r.item == "write"]


def test_faster_b_is_an_improvement_not_a_regression() -> None:
    result = compare(make_summary(), make_summary(scale=0.5))
    assert not result.regressed
    assert find(result.rows, "latency", "read_hit", "p99").verdict == IMPROVEMENT


def test_within_tolerance_is_not_judged() -> None:
    result = compare(make_summary(), make_summary(scale=1.09, count=920, ratio=0.75))
    assert not result.regressed
    assert all(r.verdict == WITHIN for r in result.rows)
    # The same change counts with a tighter tolerance.
    tight = compare(make_summary(), make_summary(scale=1.09, count=920, ratio=0.75), tolerance_pct=5)
    assert {(r.section, r.metric) for r in tight.regressions} >= {
        ("latency", "p50"),
        ("throughput", "ops/s"),
        ("hit_ratio", "hit ratio"),
    }


def test_throughput_is_count_over_duration() -> None:
    # Same count over twice the time: half the throughput.
    result = compare(make_summary(), make_summary(duration_s=20.0))
    row = find(result.rows, "throughput", "read_hit", "ops/s")
    assert (row.a, row.b) == (100.0, 50.0)
    assert row.verdict == REGRESSION


def test_hit_ratio_down_is_a_regression() -> None:
    row = find(compare(make_summary(), make_summary(ratio=0.6)).rows, "hit_ratio", "reads", "hit ratio")
    assert row.verdict == REGRESSION
    assert row.rel == pytest.approx(-0.25)


def test_any_rise_of_violations_is_a_regression_whatever_the_tolerance() -> None:
    a, b = make_summary(violations=1000), make_summary(violations=1001)
    result = compare(a, b, tolerance_pct=500)
    assert [(r.section, r.item) for r in result.regressions] == [("violations", "stale_read")]
    # From zero too, and fewer violations is an improvement.
    assert compare(make_summary(), make_summary(violations=1)).regressed
    assert find(compare(b, a).rows, "violations", "stale_read", "violations").verdict == IMPROVEMENT


def test_skipped_checks_are_reported_not_compared() -> None:
    b = make_summary()
    b["checks"]["hit_ratio"] = {"passed": True, "violations": 0, "skipped": True, "reason": "no reads"}
    result = compare(make_summary(), b)
    whats = dict(result.not_compared)
    assert whats["hit_ratio"] == "skipped: no reads in B"
    assert whats["ws_delivery"] == "skipped: no ws rows in A and B"
    assert "locust" in whats
    assert not [r for r in result.rows if r.section == "hit_ratio"]


def test_unknown_duration_leaves_throughput_out() -> None:
    b = make_summary()
    del b["run"]["stopped_ns"]
    result = compare(make_summary(), b)
    assert not [r for r in result.rows if r.section == "throughput"]
    assert "throughput" in dict(result.not_compared)


def open_model(corrected_p99: float, count: int = 1000) -> dict[str, Any]:
    """An ``open_model_latency`` entry: read hits with the given corrected p99 (µs), no writes."""
    hit = {"count": count, "late_over_1ms": 3, "early": 0}
    for measure, scale in (("corrected", 1.0), ("uncorrected", 0.5), ("start_lag", 0.5)):
        hit.update(
            {
                f"{measure}_p50_us": 100 * scale,
                f"{measure}_p90_us": 300 * scale,
                f"{measure}_p99_us": corrected_p99 * scale,
                f"{measure}_p99_9_us": 2 * corrected_p99 * scale,
                f"{measure}_max_us": 3 * corrected_p99 * scale,
            }
        )
    write = {"count": 0, "corrected_p50_us": None, "corrected_p99_us": None}
    return {
        "passed": True,
        "violations": 0,
        "skipped": False,
        "read_hit": hit,
        "write": write,
        "scheduled": count,
        "scheduled_per_s": 100.0,
    }


CLOSED = {
    "passed": True,
    "violations": 0,
    "skipped": True,
    "reason": "closed-model run: no t_intended; latencies may hide coordinated omission",
}


def test_corrected_latency_is_compared_when_both_runs_have_it() -> None:
    a, b = make_summary(), make_summary()
    a["checks"]["open_model_latency"] = open_model(1000)
    b["checks"]["open_model_latency"] = open_model(5000)
    result = compare(a, b)
    p99 = find(result.rows, "corrected latency", "read_hit", "p99")
    assert (p99.a, p99.b, p99.unit, p99.verdict) == (1000.0, 5000.0, "us", REGRESSION)
    assert find(result.rows, "corrected latency", "read_hit", "p50").verdict == WITHIN
    assert find(result.rows, "corrected latency", "read_hit", "p99.9").verdict == REGRESSION
    corrected = {r.metric for r in result.rows if r.section == "corrected latency"}
    assert corrected == {"p50", "p90", "p99", "p99.9"}
    assert not [r for r in result.rows if r.section == "corrected latency" and r.item == "write"]
    # Uncorrected latency stays the latency check's: the same in both summaries, so within.
    assert find(result.rows, "latency", "read_hit", "p99").verdict == WITHIN
    assert find(compare(b, a).rows, "corrected latency", "read_hit", "p99").verdict == IMPROVEMENT


def test_corrected_latency_of_a_closed_model_run_is_not_compared() -> None:
    a, b = make_summary(), make_summary()
    a["checks"]["open_model_latency"] = CLOSED
    b["checks"]["open_model_latency"] = open_model(5000)
    result = compare(a, b)
    assert not [r for r in result.rows if r.section == "corrected latency"]
    whats = dict(result.not_compared)
    assert whats["open_model_latency"] == f"skipped: {CLOSED['reason']} in A"
    assert [w for w, _ in result.not_compared].count("open_model_latency") == 1
    # Summaries written before the check existed do not have it at all.
    older = make_summary()
    assert dict(compare(older, b).not_compared)["open_model_latency"] == "absent in A"


# ---- the command line ---------------------------------------------------------------------------


def write_run_dir(path: Path, summary: dict[str, Any] | None = None, stats_csv: str | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    if stats_csv is not None:
        (path / "locust_stats.csv").write_text(STATS_HEADER + stats_csv)
    if summary is not None:
        (path / "summary.json").write_text(json.dumps(summary))
        (path / "run.json").write_text(json.dumps({"run_id": path.name, **summary["run"]}))
    return path


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "analysis", "compare", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_regression_exits_1(tmp_path: Path) -> None:
    a = write_run_dir(tmp_path / "a", make_summary())
    b = write_run_dir(tmp_path / "b", make_summary(scale=2.0))
    proc = run_cli(str(a), str(b))
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.rstrip().splitlines()[-1].startswith("COMPARE: REGRESSION")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("latency") and " p95 " in x)
    assert line.split()[4:] == ["400", "800", "+400", "+100.0%", "WORSE"]


def test_cli_within_tolerance_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write_run_dir(tmp_path / "a", make_summary())
    b = write_run_dir(tmp_path / "b", make_summary(scale=1.05))
    assert main([str(a), str(b)]) == 0
    assert capsys.readouterr().out.rstrip().splitlines()[-1].startswith("COMPARE: no regression")
    # ... and exits 1 once the tolerance is below the change.
    assert main([str(a), str(b), "--tolerance", "2"]) == 1


def test_cli_tiny_violation_rise_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write_run_dir(tmp_path / "a", make_summary())
    b = write_run_dir(tmp_path / "b", make_summary(violations=1))
    assert main([str(a), str(b), "--tolerance", "1000"]) == 1
    assert "stale_read" in capsys.readouterr().out.splitlines()[-1]


def test_cli_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write_run_dir(tmp_path / "a", make_summary())
    b = write_run_dir(tmp_path / "b", make_summary(ratio=0.4))
    assert main([str(a), str(b), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["regressed"] is True and data["regressions"] == 1
    (bad,) = [r for r in data["rows"] if r["verdict"] == "regression"]
    assert (bad["section"], bad["a"], bad["b"]) == ("hit_ratio", 0.8, 0.4)


def test_cli_html_is_self_contained_with_regression_highlighted(tmp_path: Path) -> None:
    a = write_run_dir(tmp_path / "a", make_summary())
    b = write_run_dir(tmp_path / "b", make_summary(violations=3))
    out = tmp_path / "cmp.html"
    proc = run_cli(str(a), str(b), "--html", str(out))
    assert proc.returncode == 1
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page
    assert "http" not in page and "src=" not in page and "<link" not in page
    regression_rows = [x for x in page.splitlines() if x.startswith('<tr class="regression">')]
    assert len(regression_rows) == 1 and "stale_read" in regression_rows[0]
    assert "tr.regression td { background" in page
    # The console table is printed as well.
    assert "stale_read" in proc.stdout


CSV_A = (
    "cache,read,1000,0,2,2.5,0.4,40,0,100.0,0.0,2,3,3,3,4,6,9,12,30,40,40\n"
    ",Aggregated,1000,0,2,2.5,0.4,40,0,100.0,0.0,2,3,3,3,4,6,9,12,30,40,40\n"
)
CSV_B_WORSE = (
    "cache,read,1000,50,2,2.5,0.4,40,0,100.0,5.0,2,3,3,3,4,20,9,40,30,40,40\n"
    ",Aggregated,1000,50,2,2.5,0.4,40,0,100.0,5.0,2,3,3,3,4,20,9,40,30,40,40\n"
)


def test_csv_only_runs_compare_locust_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write_run_dir(tmp_path / "a", stats_csv=CSV_A)
    b = write_run_dir(tmp_path / "b", stats_csv=CSV_B_WORSE)
    assert main([str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "failure ratio" in out and "requests/s" in out
    assert "no op history" in out  # says which cachestorm figures could not be compared
    assert not (a / "summary.json").exists() and not (b / "summary.json").exists()
    result = compare(load_summary(a), load_summary(b))
    assert find(result.rows, "locust", "Aggregated", "failure ratio").verdict == REGRESSION
    assert find(result.rows, "locust", "Aggregated", "failures/s").b == pytest.approx(5.0)
    assert find(result.rows, "locust", "cache read", "p95").verdict == REGRESSION
    assert find(result.rows, "locust", "cache read", "p50").verdict == WITHIN
    assert [w for w, _ in result.not_compared].count("latency") == 1
    # The same CSVs on both sides: nothing changed.
    assert main([str(a), str(write_run_dir(tmp_path / "c", stats_csv=CSV_A))]) == 0


def test_locust_rounding_is_not_a_regression(tmp_path: Path) -> None:
    a = write_run_dir(tmp_path / "a", stats_csv=CSV_A.replace(",2,3,3,3,4,6,", ",1,3,3,3,4,6,"))
    b = write_run_dir(tmp_path / "b", stats_csv=CSV_A)
    row = find(compare(load_summary(a), load_summary(b)).rows, "locust", "cache read", "p50")
    assert (row.a, row.b, row.verdict) == (1.0, 2.0, WITHIN)


def test_stale_summary_is_recomputed_without_writing(tmp_path: Path) -> None:
    results = write_run_dir(tmp_path / "a", make_summary(violations=7))
    history = results / "history"
    history.mkdir()
    frame = pd.DataFrame(
        {
            "process": [1, 2],
            "node": ["local", "local"],
            "f": ["write", "read"],
            "key": ["cs:e:1", "cs:e:1"],
            "status": ["ok", "ok"],
            "t_invoke": [0, 20 * MS],
            "t_complete": [10 * MS, 21 * MS],
            "version": pd.array([1, 1], dtype="Int64"),
            "value": pd.array([None, None], dtype="Int64"),
            "source": [None, "hit"],
        }
    )
    frame.to_parquet(history / "part-00000.parquet", index=False)
    old = (results / "summary.json").stat().st_mtime - 100
    os.utime(results / "summary.json", (old, old))
    before = (results / "summary.json").read_text()
    summary = load_summary(results)
    assert summary["checks"]["stale_read"]["violations"] == 0  # computed, not the stale 7
    assert summary["checks"]["latency"]["read_hit"]["count"] == 1
    assert (results / "summary.json").read_text() == before
    # A fresh summary.json is used as it is.
    os.utime(results / "summary.json")
    assert load_summary(results)["checks"]["stale_read"]["violations"] == 7


def _bad_inputs(tmp_path: Path) -> list[Path]:
    empty = tmp_path / "empty"
    empty.mkdir()
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "summary.json").write_text("{not json")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("hello")
    return [tmp_path / "missing", empty, corrupt, junk]


def test_bad_input_exits_2_with_one_line(tmp_path: Path) -> None:
    good = write_run_dir(tmp_path / "good", make_summary())
    for bad in _bad_inputs(tmp_path):
        for args in ((str(good), str(bad)), (str(bad), str(good))):
            proc = run_cli(*args)
            assert proc.returncode == 2, (bad, proc.stdout, proc.stderr)
            assert "Traceback" not in proc.stderr
            lines = proc.stderr.strip().splitlines()
            assert len(lines) == 1 and str(bad) in lines[0], lines
            assert proc.stdout == ""


def test_bad_tolerance_exits_2(tmp_path: Path) -> None:
    good = write_run_dir(tmp_path / "good", make_summary())
    proc = run_cli(str(good), str(good), "--tolerance", "-1")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_comparison_is_symmetric_in_shape() -> None:
    a, b = make_summary(), make_summary(scale=2.0)
    forward, backward = compare(a, b), compare(b, a)
    assert len(forward.rows) == len(backward.rows)
    assert len(forward.regressions) == len(backward.improvements)
    assert a == copy.deepcopy(make_summary())  # the inputs are not modified
