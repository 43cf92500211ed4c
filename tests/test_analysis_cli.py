"""Tests of ``python -m analysis``: exit codes, messages on bad input, summary.json, output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest

from analysis import __main__ as cli
from analysis.__main__ import main
from analysis.checks import CHECK_NAMES, NO_HISTORY
from analysis.verdict import write_text_atomic
from tests.histories import MS, clean_rows, row

ROOT = Path(__file__).resolve().parent.parent

STATS_CSV = """\
Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,Min Response Time,\
Max Response Time,Average Content Size,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%
cache,read,1200,3,2,2.5,0.4,40,0,120.0,0.3,2,3,3,3,4,6,9,12,30,40,40
cache,write,300,0,5,5.2,1,60,0,30.0,0.0,5,6,6,7,8,10,20,30,60,60,60
,Aggregated,1500,3,2,3.1,0.4,60,0,150.0,0.3,2,3,4,4,5,7,10,15,40,60,60
"""
FAILURES_CSV = """\
Method,Name,Error,Occurrences,First Seen,Last Seen
cache,read,TimeoutError(),3,,
"""


def write_history(results: Path, rows: list[dict[str, Any]], parts: int = 1) -> None:
    """Write ``rows`` as ``parts`` Parquet part files under ``results/history``."""
    directory = results / "history"
    directory.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows)
    frame["version"] = frame["version"].astype("Int64")
    frame["value"] = frame["value"].astype("Int64")
    size = -(-len(frame) // parts)
    for i in range(parts):
        frame.iloc[i * size : (i + 1) * size].to_parquet(directory / f"part-{i:05d}.parquet", index=False)


def write_run(results: Path, **fields: Any) -> None:
    """A complete run.json; its ``rows`` those of the history written, unless given."""
    rows = sum(len(pd.read_parquet(p)) for p in (results / "history").glob("*.parquet"))
    run = {
        "schema_version": 1,
        "run_id": "20261121-013000-ab12cd",
        "clock_uncertainty_ns": 0,
        "nodes": {"local": {"batches": 1, "rows": rows, "missing_batches": []}},
        "history_complete": True,
        "rows": rows,
    }
    run.update(fields)
    (results / "run.json").write_text(json.dumps(run))


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "analysis", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def summary(results: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((results / "summary.json").read_text())
    return data


def test_clean_history_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_history(tmp_path, clean_rows(), parts=2)
    write_run(tmp_path)
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().splitlines()[-1] == "VERDICT: PASS"
    assert "read_hit" in out and "stale_read" in out
    assert max(len(line) for line in out.splitlines()) <= 100
    s = summary(tmp_path)
    assert s["passed"] is True
    assert s["run"]["run_id"] == "20261121-013000-ab12cd"
    assert s["checks"]["history_complete"]["passed"] is True
    assert s["checks"]["history_complete"]["skipped"] is False


def test_anomalous_history_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [
        *clean_rows(),
        row("read", 40, 41, 0, process=3, source="hit"),  # stale: v1 completed at 10 ms
        row("sweep", 50, 51, 2, key="cs:e:2", process=0, value=4, source="entry"),  # divergent
    ]
    write_history(tmp_path, rows)
    write_run(tmp_path)
    assert main([str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert out.rstrip().splitlines()[-1] == "VERDICT: FAIL (stale_read, divergence)"
    s = summary(tmp_path)
    assert s["passed"] is False
    stale = s["checks"]["stale_read"]
    assert stale["violations"] == 1 and stale["passed"] is False
    assert stale["examples"][0]["t_invoke"] == 40 * MS
    assert s["checks"]["divergence"]["examples"][0]["key"] == "cs:e:2"


def test_tolerance_option_changes_verdict(tmp_path: Path) -> None:
    rows = [row("write", 0, 30, 1), row("read", 31, 32, 0, process=2, source="hit")]
    write_history(tmp_path, rows)
    write_run(tmp_path)
    assert main([str(tmp_path)]) == 1
    assert main([str(tmp_path), "--tolerance", "2"]) == 0
    assert summary(tmp_path)["options"]["tolerance_ns"] == 2 * MS


def test_summary_json_structure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_history(tmp_path, clean_rows())
    write_run(tmp_path, clock_uncertainty_ns=500)
    assert main([str(tmp_path), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    s = summary(tmp_path)
    assert printed == s
    assert set(s) >= {"passed", "checks", "run", "options", "notes", "locust"}
    assert list(s["checks"]) == list(CHECK_NAMES)
    for name, entry in s["checks"].items():
        assert isinstance(entry["passed"], bool), name
        assert isinstance(entry["violations"], int), name
        assert isinstance(entry["skipped"], bool), name
        assert isinstance(entry["examples"], list), name
    assert s["options"]["tolerance_ns"] == 500
    assert s["checks"]["hit_ratio"]["ratio"] == pytest.approx(0.5)
    assert s["checks"]["latency"]["write"]["count"] == 1
    assert s["checks"]["ws_delivery"]["skipped"] is True
    assert s["checks"]["ws_delivery"]["reason"]
    assert s["locust"]["skipped"] is True
    assert not list(tmp_path.glob(".summary.*"))  # the temporary file was renamed away


def test_only_parquet_dir_works_and_says_run_unfinished(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_history(tmp_path, clean_rows())
    # Without run.json the history may be partial: nothing failed, but nothing can pass.
    assert main([str(tmp_path)]) == 3
    out = capsys.readouterr().out
    assert out.rstrip().splitlines()[-1].startswith("VERDICT: UNKNOWN (stale_read, ")
    assert "did not finish collecting" in out
    s = summary(tmp_path)
    assert s["run"] is None and s["verdict"] == "unknown" and s["passed"] is False
    assert s["checks"]["history_complete"]["skipped"] is True
    assert "did not finish" in s["checks"]["history_complete"]["reason"]
    assert any("did not finish" in note for note in s["notes"])


def test_incomplete_history_is_unknown(tmp_path: Path) -> None:
    write_history(tmp_path, clean_rows())
    write_run(
        tmp_path,
        history_complete=False,
        nodes={"w1": {"missing_batches": [2, 5]}, "w2": {"missing_batches": []}},
    )
    assert main([str(tmp_path)]) == 3
    s = summary(tmp_path)
    entry = s["checks"]["history_complete"]
    assert entry["passed"] is False and entry["outcome"] == "unknown"
    assert entry["missing_batches"] == {"w1": [2, 5]}
    assert "batches missing (w1 2)" in entry["reason"]
    assert s["verdict"] == "unknown" and s["failed"] == []


def test_only_csv_dir_reports_locust(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "locust_stats.csv").write_text(STATS_CSV)
    (tmp_path / "locust_failures.csv").write_text(FAILURES_CSV)
    assert main([str(tmp_path)]) == 3  # no history, no run.json: nothing was judged
    out = capsys.readouterr().out
    assert "Aggregated" in out
    s = summary(tmp_path)
    read = next(r for r in s["locust"]["stats"] if r["name"] == "read")
    assert read["requests"] == 1200 and read["failures"] == 3
    assert read["percentiles_ms"]["99%"] == 12
    assert s["locust"]["failures"][0]["occurrences"] == 3
    for name, entry in s["checks"].items():
        assert entry["skipped"] is True, name
        if name not in ("history_complete", "generator_cpu"):  # these two read run.json
            assert entry["reason"] == NO_HISTORY


def expect_input_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0]
    assert result.stdout == ""


def test_missing_dir_exits_2(tmp_path: Path) -> None:
    expect_input_error(run_cli(str(tmp_path / "nope")), "does not exist", "nope")


def test_empty_dir_exits_2(tmp_path: Path) -> None:
    expect_input_error(run_cli(str(tmp_path)), "empty")


def test_dir_without_history_or_csv_exits_2(tmp_path: Path) -> None:
    write_run(tmp_path)
    expect_input_error(run_cli(str(tmp_path)), "history/*.parquet", "locust_stats.csv")


def test_corrupt_parquet_exits_2(tmp_path: Path) -> None:
    write_history(tmp_path, clean_rows())
    (tmp_path / "history" / "part-00001.parquet").write_bytes(b"PAR1 this is not parquet")
    expect_input_error(run_cli(str(tmp_path)), "part-00001.parquet", "Parquet")


def test_unreadable_run_json_exits_2(tmp_path: Path) -> None:
    write_history(tmp_path, clean_rows())
    (tmp_path / "run.json").write_text("{not json")
    expect_input_error(run_cli(str(tmp_path)), "run.json")


def test_parquet_missing_columns_exits_2(tmp_path: Path) -> None:
    (tmp_path / "history").mkdir()
    pd.DataFrame({"process": [1], "f": ["read"]}).to_parquet(tmp_path / "history" / "part-00000.parquet")
    expect_input_error(run_cli(str(tmp_path)), "lacks column")


def test_subprocess_exit_codes_and_table(tmp_path: Path) -> None:
    write_history(tmp_path, clean_rows())
    write_run(tmp_path)
    result = run_cli(str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith("VERDICT: PASS")
    write_history(tmp_path, [*clean_rows(), row("read", 40, 41, 5, process=3, source="hit")])
    write_run(tmp_path)
    result = run_cli(str(tmp_path), "--json")
    assert result.returncode == 1
    assert json.loads(result.stdout)["failed"] == ["future_read"]
    # The same history without run.json, so perhaps partial: version 5 is above the sweep's database
    # version 1, so no missing write explains it, and the fail stands.
    (tmp_path / "run.json").unlink()
    result = run_cli(str(tmp_path), "--json")
    assert result.returncode == 1
    assert json.loads(result.stdout)["verdict"] == "fail"


def test_results_files_get_the_usual_mode_not_a_private_one(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "summary.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "summary.json").stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temporary file left


def anomalous(results: Path) -> None:
    rows = [
        *clean_rows(),
        row("read", 40, 41, 0, process=3, source="hit"),  # stale: v1 completed at 10 ms
        row("sweep", 50, 51, 2, key="cs:e:2", process=0, value=4, source="entry"),  # divergent
        row("read", 60, 61, 0, process=4, key="cs:e:3", status="fail"),
    ]
    write_history(results, rows)
    write_run(results)


def test_chunks_give_the_same_verdict_and_thresholds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    for d in (whole, parts):
        anomalous(d)
    assert main([str(whole), "--chunks", "1"]) == 1
    assert main([str(parts), "--chunks", "3"]) == 1
    capsys.readouterr()
    a, b = summary(whole), summary(parts)
    violations = [{n: c["violations"] for n, c in x["checks"].items()} for x in (a, b)]
    assert violations[0] == violations[1]
    # Thresholds judged the same way, the history's success rate (a failed read) included.
    assert a["thresholds"] == b["thresholds"]
    assert b["thresholds"]["threshold:success_rate_min.history"]["figure"] < 1
    assert a["nines"]["reads_fresh"]["bad"] == 1
    assert b["nines"] == {"skipped": True, "reason": "checked in 3 partitions by key"}
    assert any("3 partitions by key" in note for note in b["notes"])


def test_auto_chunks_when_the_history_would_not_fit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    anomalous(tmp_path)
    # Pretend 7 rows at 300 bytes need twice half of 2 kB of memory: the analysis must partition.
    monkeypatch.setattr(cli.psutil, "virtual_memory", lambda: SimpleNamespace(available=2000))
    assert main([str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "checking them in 4 partitions by key" in err
    assert summary(tmp_path)["checks"]["stale_read"]["violations"] == 1


@pytest.mark.parametrize(
    ("rows", "available", "chunks"),
    [
        (0, 10, 1),
        (10_000_000, 8 * 2**30, 1),
        (10_000_000, 2**30, 7),
        (10**12, 2**30, 254),
        # Partitioned, each partition at most 2 GiB (300 bytes a row) however much is free.
        (100_000_000, 20 * 2**30, 15),
        (100_000_000, 64 * 2**30, 1),
    ],
)
def test_chunks_for(rows: int, available: int, chunks: int) -> None:
    assert cli.chunks_for(rows, available) == chunks


def test_bad_chunks_is_one_line(tmp_path: Path) -> None:
    anomalous(tmp_path)
    out = run_cli(str(tmp_path), "--chunks", "many")
    assert out.returncode == 2
    assert "--chunks is 'many': give auto or a number from 1 to 254" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_killed_run_says_when_it_stopped_and_is_unknown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """run.started.json without run.json: a run killed mid-way, however clean its rows look."""
    rows = clean_rows()
    write_history(tmp_path, rows, parts=2)
    started = min(r["t_invoke"] for r in rows)
    write_text_atomic(tmp_path / "run.started.json", json.dumps({"state": "running", "started_ns": started}))
    assert main([str(tmp_path)]) == 3
    assert "the run did not finish" in capsys.readouterr().out
    note = summary(tmp_path)["notes"][0]
    newest_s = (max(r["t_complete"] for r in rows) - started) / 1e9
    assert note.startswith("the run did not finish")
    assert f"{len(rows):,} rows in 2 parts" in note
    assert f"({newest_s:.1f} s in)" in note
    # The control: the same rows from a run that finished say nothing of the kind.
    (tmp_path / "run.started.json").unlink()
    write_run(tmp_path, rows=len(rows))
    main([str(tmp_path)])
    assert "the run did not finish" not in capsys.readouterr().out
