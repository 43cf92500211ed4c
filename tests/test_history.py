"""The history's recorder, shipper and collector, without Locust: batches in, Parquet and run.json out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from analysis import load_history
from analysis.chunked import run_checks_chunked
from cachestorm import history
from cachestorm.history import MSG_BATCH, MSG_END, Collector, Recorder, Shipper


def wire(collector: Collector) -> Any:
    def send(kind: str, data: Any) -> None:
        {MSG_BATCH: collector.add_batch, MSG_END: collector.add_end}[kind](data)

    return send


def record_reads(rec: Recorder, n: int, process: int = 1) -> None:
    for i in range(n):
        rec.record(process, "read", f"cs:e:{i}", "ok", 1000 + i, 2000 + i, i, None, "hit")


def test_rows_reach_parquet_with_the_schema(tmp_path: Path) -> None:
    c = Collector(tmp_path / "run", "r1")
    rec = Recorder()
    s = Shipper(rec, wire(c), "local", "r1")
    record_reads(rec, 3)
    s.ship()
    rec.record(2, "write", "cs:e:1", "info", 5, 9, None)
    s.end()
    run = c.finalize({"options": {}})
    df = pd.read_parquet(tmp_path / "run" / "history")
    assert list(df.columns) == [f.name for f in history.SCHEMA]
    assert len(df) == 4 and run["rows"] == 4
    assert run["history_complete"] is True
    info = df[df.status == "info"].iloc[0]
    assert info.node == "local" and pd.isna(info.version) and info.t_complete == 9
    assert json.loads((tmp_path / "run" / "run.json").read_text())["schema_version"] == 2


def test_a_lost_batch_makes_the_run_incomplete(tmp_path: Path) -> None:
    c = Collector(tmp_path / "run", "r1")
    sent: list[tuple[str, Any]] = []
    rec = Recorder()
    s = Shipper(rec, lambda kind, data: sent.append((kind, data)), "w1", "r1")
    for _ in range(3):
        record_reads(rec, 2)
        s.ship()
    s.end()
    for kind, data in sent:
        if kind == MSG_BATCH and data["seq"] == 2:
            continue  # lost on the way
        wire(c)(kind, data)
    run = c.finalize({})
    assert run["history_complete"] is False
    assert run["nodes"]["w1"]["missing_batches"] == [2]
    assert run["nodes"]["w1"]["missing_rows"] == 2


def test_a_node_that_never_reports_makes_the_run_incomplete(tmp_path: Path) -> None:
    c = Collector(tmp_path / "run", "r1")
    c.expected_nodes = {"w1", "w2"}
    rec = Recorder()
    s = Shipper(rec, wire(c), "w1", "r1")
    record_reads(rec, 1)
    s.end()
    assert c.waiting_for() == {"w2"}
    run = c.finalize({})
    assert run["history_complete"] is False
    assert run["nodes"]["w2"]["reported_final_count"] is False


def test_batches_from_another_run_and_duplicates_are_not_counted(tmp_path: Path) -> None:
    c = Collector(tmp_path / "run", "r2")
    rec = Recorder()
    old = Shipper(rec, wire(c), "w1", "r1")
    record_reads(rec, 5)
    old.ship()
    assert c.rejected_batches == 1
    sent: list[Any] = []
    s = Shipper(rec, lambda kind, data: sent.append(data), "w1", "r2")
    record_reads(rec, 2)
    s.ship()
    c.add_batch(sent[0])
    c.add_batch(sent[0])
    assert c.finalize({})["rows"] == 2


def test_clock_offset_is_applied_on_the_way_out(tmp_path: Path) -> None:
    c = Collector(tmp_path / "run", "r1")
    rec = Recorder()
    s = Shipper(rec, wire(c), "remote", "r1", clock_offset_ns=-500, clock_uncertainty_ns=40)
    s.schedule_started_ns = 800
    record_reads(rec, 1)
    rec.record(2, "probe", "cs:e:1", "ok", 3000, 3100, 1, 1, "entry", t_intended=2900)
    s.end()
    local = Shipper(rec, wire(c), "local", "r1")  # a closed-model node: no schedule
    local.end()
    run = c.finalize({})
    assert run["nodes"]["remote"]["schedule_started_ns"] == 300
    assert run["nodes"]["local"]["schedule_started_ns"] is None
    df = pd.read_parquet(tmp_path / "run" / "history")
    assert (df.t_invoke.iloc[0], df.t_complete.iloc[0]) == (500, 1500)
    # t_intended is on the same clock; a null stays null.
    assert pd.isna(df.t_intended.iloc[0]) and df.t_intended.iloc[1] == 2400
    assert run["clock_uncertainty_ns"] == 40


def test_a_schema_v1_history_loads_with_no_intended_times(tmp_path: Path) -> None:
    c = Collector(tmp_path / "run", "r1")
    rec = Recorder()
    s = Shipper(rec, wire(c), "local", "r1")
    record_reads(rec, 5)
    s.end()
    c.finalize({})
    part = tmp_path / "run" / "history" / "part-00000.parquet"
    pq.write_table(pq.read_table(part).drop(["t_intended"]), part)  # as schema v1 wrote it
    loaded = load_history(tmp_path / "run")
    assert len(loaded) == 5 and loaded["t_intended"].isna().all()
    assert str(loaded["t_intended"].dtype) == "Int64"
    result = run_checks_chunked(tmp_path / "run", n_chunks=2)
    assert result.check("stale_read").figures["reads_checked"] == 5


def test_parts_are_written_whole_as_rows_accumulate(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(history, "PART_ROWS", 10)
    c = Collector(tmp_path / "run", "r1")
    rec = Recorder()
    s = Shipper(rec, wire(c), "local", "r1")
    for _ in range(6):  # parts after the 3rd and the 6th batch: 12 rows each
        record_reads(rec, 4)
        s.ship()
    parts = sorted((tmp_path / "run" / "history").iterdir())
    assert [p.name for p in parts] == ["part-00000.parquet", "part-00001.parquet"]
    assert not list((tmp_path / "run" / "history").glob("*.tmp"))
    s.end()
    assert c.finalize({})["rows"] == 24


def test_a_disabled_recorder_records_nothing() -> None:
    rec = Recorder(enabled=False)
    record_reads(rec, 3)
    assert rec.take() == []
