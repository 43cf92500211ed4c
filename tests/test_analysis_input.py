"""The analysis checks its input: each defect gets exit 2 and one line naming the part file."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from analysis.__main__ import main
from analysis.load import InputError, normalise
from analysis.validate import check_versions
from tests.histories import history, row

READER = {"user_classes": ["CacheReader", "CacheWriter"]}


def clean() -> list[dict[str, Any]]:
    """Two writes of one key, reads around them, a sweep that agrees: a passing history."""
    return [
        row("write", 0, 10, 1),
        row("write", 20, 30, 2, process=3),
        row("read", 5, 6, 0, process=2, source="hit"),
        row("read", 40, 41, 2, process=2, source="miss"),
        row("sweep", 50, 51, 2, process=0, value=2, source="entry"),
    ]


def frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    data = pd.DataFrame(rows)
    for column in ("version", "value"):
        data[column] = data[column].astype("Int64")
    return data


def write(results: Path, data: pd.DataFrame, parts: int = 1, rows: int | None = None) -> Path:
    directory = results / "history"
    directory.mkdir(parents=True, exist_ok=True)
    size = -(-len(data) // parts)
    for i in range(parts):
        data.iloc[i * size : (i + 1) * size].to_parquet(directory / f"part-{i:05d}.parquet", index=False)
    run = {
        "run_id": "input",
        "history_complete": True,
        "nodes": {"local": {"missing_batches": []}},
        "rows": len(data) if rows is None else rows,
        "locust": READER,
    }
    (results / "run.json").write_text(json.dumps(run))
    return directory


def refused(results: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    """Exit 2 and the one line on stderr, in memory and in chunks alike."""
    lines = []
    for chunks in ("1", "2"):
        assert main([str(results), "--thresholds", "none", "--chunks", chunks, *extra]) == 2, chunks
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        lines.append(err.strip())
    assert lines[0] == lines[1]
    assert not (results / "summary.json").exists()  # nothing was judged
    return lines[0]


def test_the_clean_history_passes(tmp_path: Path) -> None:
    write(tmp_path, frame(clean()), parts=2)
    assert main([str(tmp_path), "--thresholds", "none"]) == 0
    assert main([str(tmp_path), "--thresholds", "none", "--chunks", "2"]) == 0


def test_completing_before_invoking_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = clean()
    rows[3] = row("read", 41, 40, 2, process=2, source="miss")
    write(tmp_path, frame(rows), parts=2)
    line = refused(tmp_path, capsys)
    assert "part-00001.parquet: row 0 completed before it was invoked" in line
    assert "t_complete 40000000 < t_invoke 41000000" in line


def test_a_status_outside_ok_fail_info_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = clean()
    rows[2] = row("read", 5, 6, 0, process=2, source="hit", status="maybe")
    write(tmp_path, frame(rows))
    line = refused(tmp_path, capsys)
    assert "part-00000.parquet: row 2 has status 'maybe'; a status is ok, fail or info" in line


@pytest.mark.parametrize(
    ("column", "make", "named"),
    [
        ("version", lambda s: s.astype("float64"), "'version' is double, not an integer"),
        ("version", lambda s: s.astype("string"), "'version' is |string, not an integer"),
        ("t_invoke", lambda s: s.astype(str), "'t_invoke' is |string, not an integer"),
        (
            "key",
            lambda s: s.map(lambda k: hash(k) % 7 if k else None).astype("Int64"),
            "'key' is int64, not a",
        ),
    ],
)
def test_a_column_of_the_wrong_type_is_refused(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    column: str,
    make: Callable[[pd.Series], pd.Series],
    named: str,
) -> None:
    data = frame(clean())
    data[column] = make(data[column])
    write(tmp_path, data)
    line = refused(tmp_path, capsys)
    # pandas writes text as string or large_string: either is named.
    for piece in named.split("|"):
        assert piece in line, line
    assert "part-00000.parquet: column " in line


def test_numeric_text_is_never_converted_in_a_frame_either() -> None:
    data = frame(clean())
    data["version"] = data["version"].astype(str)
    with pytest.raises(InputError, match="'version' holds text where integers belong"):
        normalise(data)
    assert len(normalise(frame(clean()))) == 5  # the positive control


def test_a_copied_part_is_refused_without_run_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = write(tmp_path, frame(clean()), parts=2)
    (tmp_path / "run.json").unlink()
    assert main([str(tmp_path), "--thresholds", "none"]) == 3  # no copy: unknown, as without run.json
    capsys.readouterr()
    (tmp_path / "summary.json").unlink()
    (tmp_path / "report.html").unlink()
    shutil.copy(directory / "part-00000.parquet", directory / "part-00002.parquet")
    line = refused(tmp_path, capsys)
    assert "part-00002.parquet: a copy of part-00000.parquet" in line


def test_more_rows_than_run_json_reports_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, frame(clean()), rows=4)
    line = refused(tmp_path, capsys)
    assert "the part files hold 5 rows but run.json reports 4" in line


def test_a_repeated_write_version_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = clean()
    rows[1] = row("write", 20, 30, 1, process=3)
    write(tmp_path, frame(rows), parts=2)
    line = refused(tmp_path, capsys)
    assert "part-00000.parquet row 0 and " in line and "part-00000.parquet row 1" in line
    assert "ok writes of key 'cs:e:1': both committed version 1" in line


def test_a_write_version_going_back_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Version 1 began at 20 ms, after version 2 had committed at 10 ms.
    rows = clean()
    rows[0] = row("write", 0, 10, 2)
    rows[1] = row("write", 20, 30, 1, process=3)
    write(tmp_path, frame(rows), parts=2)
    line = refused(tmp_path, capsys)
    assert "version 1 began after version 2 had committed" in line
    assert line.index("part-00000.parquet row 0") < line.index("part-00000.parquet row 1")
    # Within the clock tolerance the order is not certain: not refused.
    assert main([str(tmp_path), "--thresholds", "none", "--tolerance", "15"]) != 2


def test_version_checks_ignore_what_is_not_an_ok_write() -> None:
    h = history(
        row("write", 0, 10, 1),
        row("write", 20, 30, 1, process=3, status="info"),  # maybe committed: no version claim
        row("write", 40, 50, 2, process=3, key="cs:e:2"),  # another key
        row("read", 60, 61, 1, process=2, source="hit"),
    )
    check_versions(h)
    with pytest.raises(InputError, match="both committed version 1"):
        check_versions(history(row("write", 0, 10, 1), row("write", 20, 30, 1, process=3)))


def test_a_run_stopped_for_wrong_services_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, frame(clean()))
    run = json.loads((tmp_path / "run.json").read_text())
    # The same clean history, but a worker ran on services that were not the master's.
    (tmp_path / "run.json").write_text(
        json.dumps({**run, "stopped_for": "worker w1: Redis at redis://x: no"})
    )
    line = refused(tmp_path, capsys)
    assert "the run was stopped before its end (worker w1: Redis at redis://x: no)" in line
