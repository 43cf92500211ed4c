"""Tests of the thresholds (SLAs): the schema, the seed file, breaches, skips and bad files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from analysis import ThresholdsError, load_thresholds, normalise, parse_thresholds, run_checks
from analysis.__main__ import main
from analysis.thresholds import DEFAULT_FILE
from tests.histories import clean_rows, complete_run, row

ROOT = Path(__file__).resolve().parent.parent

STATS_CSV = """\
Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,Min Response Time,\
Max Response Time,Average Content Size,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%
cache,read,100,20,2,2.5,0.4,40,0,120.0,0.3,2,3,3,3,4,6,9,12,30,40,40
,Aggregated,100,20,2,2.5,0.4,40,0,120.0,0.3,2,3,3,3,4,6,9,12,30,40,40
"""


def slow_incr_rows(ms: float) -> list[dict[str, Any]]:
    """Counter rows whose increments all take ``ms`` milliseconds (so their p95 is ``ms``)."""
    rows = [row("incr", i * 100, i * 100 + ms, key="cs:c:1", value=1, source="atomic") for i in range(10)]
    rows.append(row("counter_read", 2000, 2001, key="cs:c:1", value=10, process=2))
    return rows


def write_results(results: Path, rows: list[dict[str, Any]], **options: Any) -> None:
    (results / "history").mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows)
    frame["version"] = frame["version"].astype("Int64")
    frame["value"] = frame["value"].astype("Int64")
    frame.to_parquet(results / "history" / "part-00000.parquet", index=False)
    run = {"schema_version": 1, "run_id": "t", "history_complete": True, "nodes": {}, "options": options}
    (results / "run.json").write_text(json.dumps(run))


def summary(results: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((results / "summary.json").read_text())
    return data


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "analysis", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# --------------------------------------------------------------------------------------------------
# The file


def test_default_file_is_the_seed_slas() -> None:
    t = load_thresholds()
    assert DEFAULT_FILE.name == "thresholds.toml" and DEFAULT_FILE.parent.name == "analysis"
    assert t.max_violations == 0
    assert t.success_rate_min == 0.95 and t.hit_ratio_min == 0.80 and t.ws_delivery_ratio_min == 1.0
    assert t.latency_ms == {
        "p95": {"incr": 15, "read_hit": 20, "tx_transfer": 75, "tx_read": 75, "invalidate_batch": 100}
    }


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"max_violation": 0}, ["unknown key", "max_violation"]),
        ({"latency_p95_ms": {"reads": 3}}, ["unknown key", "reads"]),
        ({"max_violations": "0"}, ["max_violations", "integer"]),
        ({"max_violations": True}, ["max_violations"]),
        ({"success_rate_min": 95}, ["success_rate_min", "between 0 and 1"]),
        ({"latency_p95_ms": 15}, ["latency_p95_ms", "table"]),
        ({"latency_p95_ms": {"incr": "15ms"}}, ["latency_p95_ms.incr", "milliseconds"]),
    ],
)
def test_bad_values_are_refused(data: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(ThresholdsError) as err:
        parse_thresholds(data, "x.toml")
    message = str(err.value)
    assert "x.toml" in message and "\n" not in message
    for word in words:
        assert word in message


# --------------------------------------------------------------------------------------------------
# Judging, from the command line


def test_healthy_coherence_run_passes_the_default_thresholds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_results(tmp_path, clean_rows())
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "PASS threshold read_hit p95" in out
    s = summary(tmp_path)
    assert s["passed"] is True
    entry = s["thresholds"]["threshold:latency_p95_ms.read_hit"]
    assert entry["passed"] is True and entry["skipped"] is False
    assert entry["figure"] == pytest.approx(1.0) and entry["limit"] == 20
    # The hit ratio is 0.5, but the run does not say it is a coherence run: not judged.
    hit = s["thresholds"]["threshold:hit_ratio_min"]
    assert hit["skipped"] is True and "coherence" in hit["reason"]
    assert s["options"]["thresholds"] == str(DEFAULT_FILE)


def test_a_latency_breach_fails_naming_the_figure_and_the_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_results(tmp_path, slow_incr_rows(17.2))
    assert main([str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "FAIL threshold incr p95 17.2 ms > 15 ms" in out
    assert out.rstrip().splitlines()[-1] == "VERDICT: FAIL (threshold:latency_p95_ms.incr)"
    s = summary(tmp_path)
    assert s["passed"] is False
    assert s["failed"] == ["threshold:latency_p95_ms.incr"]
    entry = s["thresholds"]["threshold:latency_p95_ms.incr"]
    assert entry == {
        "passed": False,
        "figure": pytest.approx(17.2),
        "limit": 15,
        "skipped": False,
        "comparison": "max",
        "unit": "ms",
    }
    assert s["checks"]["counter"]["passed"] is True  # the checks themselves are fine


def test_an_absent_figure_is_skipped_not_failed(tmp_path: Path) -> None:
    write_results(tmp_path, clean_rows())
    assert main([str(tmp_path)]) == 0
    entry = summary(tmp_path)["thresholds"]["threshold:latency_p95_ms.incr"]
    assert entry["skipped"] is True and entry["passed"] is True and entry["figure"] is None
    assert "incr" in entry["reason"]


def test_thresholds_none_disables_them(tmp_path: Path) -> None:
    write_results(tmp_path, slow_incr_rows(40))
    assert main([str(tmp_path)]) == 1
    assert main([str(tmp_path), "--thresholds", "none"]) == 0
    s = summary(tmp_path)
    assert s["thresholds"] == {} and s["options"]["thresholds"] is None


def test_a_custom_file_replaces_the_default(tmp_path: Path) -> None:
    results = tmp_path / "r"
    write_results(results, slow_incr_rows(40))
    custom = tmp_path / "sla.toml"
    custom.write_text("[latency_p95_ms]\nincr = 50\n")
    assert main([str(results), "--thresholds", str(custom)]) == 0
    assert list(summary(results)["thresholds"]) == ["threshold:latency_p95_ms.incr"]
    custom.write_text("[latency_p99_ms]\nincr = 30\n")
    assert main([str(results), "--thresholds", str(custom)]) == 1


def test_hit_ratio_judged_on_coherence_runs_only(tmp_path: Path) -> None:
    write_results(tmp_path, clean_rows(), scenario="coherence")
    assert main([str(tmp_path)]) == 1
    s = summary(tmp_path)
    assert s["failed"] == ["threshold:hit_ratio_min"]
    assert s["thresholds"]["threshold:hit_ratio_min"]["figure"] == pytest.approx(0.5)
    write_results(tmp_path, clean_rows(), scenario="contention")
    # Not judged on a contention run; that run exercised none of its contention checks: unknown.
    assert main([str(tmp_path)]) == 3
    s = summary(tmp_path)
    assert s["thresholds"]["threshold:hit_ratio_min"]["skipped"] is True
    assert s["verdict"] == "unknown" and "counter" in s["unknown"] and s["failed"] == []


def test_hit_ratio_not_judged_when_a_locustfile_chose_its_own_users(tmp_path: Path) -> None:
    write_results(tmp_path, clean_rows(), scenario="coherence")
    run = json.loads((tmp_path / "run.json").read_text())
    run["locust"] = {"user_classes": ["FastReader", "FastWriter", "Listener"]}
    (tmp_path / "run.json").write_text(json.dumps(run))
    assert main([str(tmp_path)]) == 0
    hit = summary(tmp_path)["thresholds"]["threshold:hit_ratio_min"]
    assert hit["skipped"] is True and "FastReader" in hit["reason"]
    run["locust"] = {"user_classes": ["CacheReader", "CacheWriter"]}
    (tmp_path / "run.json").write_text(json.dumps(run))
    assert main([str(tmp_path)]) == 1


def test_refusals_by_design_do_not_lower_the_success_rate(tmp_path: Path) -> None:
    refused = [row("fill", 40 + i, 41 + i, 1, status="fail") for i in range(10)]
    refused += [row("tx_transfer", 60, 61, key="cs:g:1", value=1, status="fail")]
    write_results(tmp_path, clean_rows() + refused)
    assert main([str(tmp_path)]) == 0
    entry = summary(tmp_path)["thresholds"]["threshold:success_rate_min.history"]
    assert entry["figure"] == 1.0
    write_results(tmp_path, clean_rows() + [row("write", 40, 41, None, status="info")] * 2)
    assert main([str(tmp_path)]) == 1  # 3 of 5 counted operations ok
    assert summary(tmp_path)["failed"] == ["threshold:success_rate_min.history"]


def test_success_rate_of_the_history_and_of_locust(tmp_path: Path) -> None:
    rows = clean_rows() + [row("read", 40, 41, None, process=3, status="fail") for _ in range(3)]
    write_results(tmp_path, rows)
    assert main([str(tmp_path)]) == 1  # 3 ok of 6 counted operations (the sweep is not counted)
    s = summary(tmp_path)
    assert s["thresholds"]["threshold:success_rate_min.history"]["figure"] == pytest.approx(0.5)
    assert s["thresholds"]["threshold:success_rate_min.locust"]["skipped"] is True
    write_results(tmp_path, clean_rows())
    (tmp_path / "locust_stats.csv").write_text(STATS_CSV)
    assert main([str(tmp_path)]) == 1
    s = summary(tmp_path)
    assert s["failed"] == ["threshold:success_rate_min.locust"]
    assert s["thresholds"]["threshold:success_rate_min.locust"]["figure"] == pytest.approx(0.8)


def test_the_live_views_coherence_failures_are_not_locusts_failed_requests(tmp_path: Path) -> None:
    """COHERENCE rows are the checks' findings, logged by the live view: counted as failed requests
    they would fail the Locust success rate of a run whose requests all succeeded."""
    header = STATS_CSV.splitlines()[:1]
    stats = [
        *header,
        "cache,read,100,0,2,2.5,0.4,40,0,120.0,0,2,3,3,3,4,6,9,12,30,40,40",
        "COHERENCE,stale_read,40,40,0,0,0,0,0,1.0,1.0,0,0,0,0,0,0,0,0,0,0,0",
        ",Aggregated,140,40,2,2.5,0.4,40,0,121.0,1.0,2,3,3,3,4,6,9,12,30,40,40",
    ]
    write_results(tmp_path, clean_rows())
    (tmp_path / "locust_stats.csv").write_text("\n".join(stats) + "\n")
    failures = "Method,Name,Error,Occurrences\nCOHERENCE,stale_read,CoherenceViolation('stale_read'),40\n"
    (tmp_path / "locust_failures.csv").write_text(failures)
    assert main([str(tmp_path)]) == 0
    s = summary(tmp_path)
    assert s["thresholds"]["threshold:success_rate_min.locust"]["figure"] == pytest.approx(1.0)
    assert [r["type"] for r in s["locust"]["stats"]] == ["cache", ""]
    assert s["locust"]["failures"] == []
    # The positive control: the same CSV with the rows named as a request type fails the rate.
    (tmp_path / "locust_stats.csv").write_text("\n".join(stats).replace("COHERENCE,", "cache,") + "\n")
    assert main([str(tmp_path)]) == 1


def test_a_failed_check_is_not_named_twice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_results(tmp_path, [*clean_rows(), row("read", 40, 41, 0, process=3, source="hit")])
    assert main([str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert out.rstrip().splitlines()[-1] == "VERDICT: FAIL (stale_read)"
    assert "FAIL threshold stale_read violations 1 > 0" in out
    s = summary(tmp_path)
    assert s["failed"] == ["stale_read"]
    assert s["thresholds"]["threshold:max_violations.stale_read"]["passed"] is False
    assert s["thresholds"]["threshold:max_violations.counter"]["skipped"] is True


def test_run_checks_applies_thresholds_only_when_given() -> None:
    frame = pd.DataFrame(slow_incr_rows(40))
    frame["version"] = frame["version"].astype("Int64")
    frame["value"] = frame["value"].astype("Int64")
    h = normalise(frame)
    assert run_checks(h, complete_run()).passed
    verdict = run_checks(h, complete_run(), thresholds=load_thresholds())
    assert verdict.failed == ["threshold:latency_p95_ms.incr"]
    assert verdict.to_summary()["thresholds"]["threshold:latency_p95_ms.incr"]["figure"] == pytest.approx(40)


# --------------------------------------------------------------------------------------------------
# Bad files: exit 2, one line naming the file and the problem, no traceback


def expect_bad_file(results: Path, file: Path, *words: str) -> None:
    out = run_cli(str(results), "--thresholds", str(file))
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert str(file) in lines[0]
    for word in words:
        assert word in lines[0]


def test_bad_thresholds_files_exit_2(tmp_path: Path) -> None:
    results = tmp_path / "r"
    write_results(results, clean_rows())
    expect_bad_file(results, tmp_path / "missing.toml", "does not exist")
    broken = tmp_path / "broken.toml"
    broken.write_text("max_violations = = 0\n")
    expect_bad_file(results, broken, "not valid TOML")
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("max_violations = 0\nlatency_p95 = 3\n")
    expect_bad_file(results, unknown, "unknown key", "latency_p95")
    wrong = tmp_path / "wrong.toml"
    wrong.write_text('hit_ratio_min = "high"\n')
    expect_bad_file(results, wrong, "hit_ratio_min")
    assert not (results / "summary.json").exists()
