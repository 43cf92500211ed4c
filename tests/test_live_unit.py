"""The live view's pure parts: the watermark, the failures it logs once, the tab's rows."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
from locust.env import Environment

from analysis import live
from analysis.live import FIRST_ROWS_GRACE_S, REQUEST_TYPE, SETTLE_S, LiveView, Snapshot, table_rows
from cachestorm.history import ROW_COLUMNS, SCHEMA

S = 1_000_000_000


def batch(node: str, *rows: tuple[int, int]) -> pa.RecordBatch:
    """Reads by ``(process, t_complete)``."""
    cols: dict[str, list[Any]] = {c: [] for c in ROW_COLUMNS}
    for process, t in rows:
        for c, v in zip(
            ROW_COLUMNS, (process, "read", "k", "ok", t - 10, t, 0, None, "hit", None), strict=True
        ):
            cols[c].append(v)
    arrays = [pa.array(cols["process"], pa.int64()), pa.array([node] * len(rows), pa.string())]
    arrays += [pa.array(cols[c], SCHEMA.field(c).type) for c in ROW_COLUMNS[1:]]
    return pa.RecordBatch.from_arrays(arrays, schema=SCHEMA)


def view(expected: tuple[str, ...] = ()) -> LiveView:
    v = LiveView(Environment())
    v.expected = set(expected)
    v.started = time.monotonic()
    return v


def test_nothing_is_judged_until_every_expected_node_has_shipped() -> None:
    v = view(("w1", "w2"))
    v.on_rows("w1", batch("w1", (1, 10 * S)))
    assert v.watermark() is None
    v.on_rows("w2", batch("w2", (2, 7 * S)))
    assert v.watermark() == 7 * S - int(SETTLE_S * S)


def test_a_node_that_ships_nothing_holds_the_judging_back_only_for_a_while() -> None:
    v = view(("w1", "w2"))
    v.on_rows("w1", batch("w1", (1, 10 * S)))
    assert v.watermark() is None
    v.started -= FIRST_ROWS_GRACE_S
    assert v.watermark() == 10 * S - int(SETTLE_S * S)


def test_the_slowest_running_node_holds_the_watermark_and_a_finished_one_does_not() -> None:
    v = view()
    v.on_rows("w1", batch("w1", (1, 10 * S), (1, 12 * S)))
    v.on_rows("w2", batch("w2", (2, 8 * S)))
    assert v.watermark() == 8 * S - int(SETTLE_S * S)
    v.on_node_finished("w2")
    assert v.watermark() == 12 * S - int(SETTLE_S * S)
    v.on_node_finished("w1")
    assert v.watermark() == 12 * S  # every node done: every row is in


def test_the_masters_own_rows_do_not_move_the_watermark() -> None:
    v = view()
    v.on_rows("w1", batch("w1", (1, 5 * S)))
    v.on_rows("w1", batch("w1", (0, 50 * S)))  # process 0: the master's stats sample
    assert v.watermark() == 5 * S - int(SETTLE_S * S)


def test_each_violation_is_one_locust_failure_logged_once() -> None:
    v = view()
    seen: list[tuple[str, str, bool]] = []
    v.environment.events.request.add_listener(
        lambda request_type, name, exception=None, **_kw: seen.append(
            (request_type, name, exception is not None)
        )
    )
    v.log_failures({"stale_read": 2})
    v.log_failures({"stale_read": 3, "monotonic_read": 0})
    v.log_failures({"stale_read": 3})
    assert seen == [(REQUEST_TYPE, "stale_read", True)] * 3


def test_the_tab_starts_with_the_verdict_so_far() -> None:
    snap = Snapshot(
        state="running", run_id="r1", verdict="fail", verdict_reason="so far: violations of stale_read"
    )
    snap.checks = {
        "stale_read": {
            "outcome": "fail",
            "violations": 4,
            "checked": 100,
            "reason": None,
            "figures": {"stale": 4, "stale_after_unconfirmed": 0, "age_max_us": 1500.0},
            "examples": [{"key": "k", "process": 3, "version": 1, "age_us": 1500.0}],
        }
    }
    rows = table_rows(snap)
    assert rows[0]["check"] == "verdict so far" and rows[0]["outcome"] == "FAIL"
    assert rows[1] == {
        "check": "stale_read",
        "outcome": "FAIL",
        "violations": "4",
        "checked": "100",
        "figures": "stale 4, stale_after_unconfirmed 0, age_max 1.5 ms",
        "example": "key=k process=3 version=1 age=1.5 ms",
    }


def test_past_its_row_limit_the_view_lets_go_of_its_rows_and_ends_on_the_runs_analysis(
    monkeypatch: Any, tmp_path: Path
) -> None:
    monkeypatch.setattr(live, "MAX_ROWS", 3)
    v = view()
    v.on_rows("w1", batch("w1", (1, 1 * S), (1, 2 * S)))
    assert len(v.batches) == 1  # below the limit the rows are kept to be judged
    v.on_rows("w1", batch("w1", (1, 3 * S), (1, 4 * S)))
    assert v.batches == [] and v.rows == 4
    v.judge_window()
    assert v.snapshot.verdict == "unknown" and "stopped judging" in v.snapshot.verdict_reason
    # No analysis at the end: nothing the view kept can judge the run, so it says unknown.
    v.judge_final(tmp_path)
    assert v.snapshot.verdict == "unknown" and "python -m analysis" in v.snapshot.verdict_reason
    # The run's analysis wrote summary.json: its verdict and counts are the view's final figures.
    summary = {
        "verdict": "fail",
        "failed": ["stale_read"],
        "run": {"rows": 4},
        "checks": {"stale_read": {"outcome": "fail", "violations": 2, "reads_checked": 4, "examples": []}},
    }
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    v.judge_final(tmp_path)
    snap = v.snapshot.to_json()
    assert (snap["state"], snap["verdict"]) == ("finished", "fail")
    assert snap["checks"]["stale_read"]["violations"] == 2
    assert v.logged["stale_read"] == 2  # and they are Locust failures


def test_with_no_analysis_at_the_end_a_broken_run_is_bad_input_not_judged(tmp_path: Path) -> None:
    """The rows in memory would pass; the run's own record says its target broke the contract."""
    v = view()
    v.on_rows("w1", batch("w1", (1, 1 * S), (1, 2 * S)))
    run = {"rows": 2, "history_complete": True, "contract_broken": "write returned None for key k"}
    (tmp_path / "run.json").write_text(json.dumps(run))
    v.judge_final(tmp_path)
    snap = v.snapshot.to_json()
    assert (snap["state"], snap["verdict"]) == ("finished", "bad input")
    assert "broke cachestorm's contract" in snap["verdict_reason"]
    assert v.logged == {}


def test_versions_that_go_back_are_bad_input_mid_run_not_a_flood_of_stale_reads() -> None:
    def writes(*rows: tuple[int, int, int]) -> pa.RecordBatch:
        """Ok writes of key k by ``(process, t_complete, version)``."""
        n = len(rows)
        cols = {
            "process": pa.array([r[0] for r in rows], pa.int64()),
            "node": pa.array(["w1"] * n, pa.string()),
            "f": pa.array(["write"] * n, SCHEMA.field("f").type),
            "key": pa.array(["k"] * n, SCHEMA.field("key").type),
            "status": pa.array(["ok"] * n, SCHEMA.field("status").type),
            "t_invoke": pa.array([r[1] - 10 for r in rows], SCHEMA.field("t_invoke").type),
            "t_complete": pa.array([r[1] for r in rows], SCHEMA.field("t_complete").type),
            "version": pa.array([r[2] for r in rows], SCHEMA.field("version").type),
        }
        arrays = [cols[c] if c in cols else pa.nulls(n, SCHEMA.field(c).type) for c in SCHEMA.names]
        return pa.RecordBatch.from_arrays(arrays, schema=SCHEMA)

    good, bad = view(), view()
    good.on_rows("w1", writes((1, 1 * S, 1), (1, 2 * S, 2), (1, 3 * S, 3)))
    bad.on_rows("w1", writes((1, 1 * S, 1), (1, 2 * S, 2), (1, 3 * S, 1)))  # 1, 2, then 1 again
    for v in (good, bad):
        v.on_node_finished("w1")
        v.judge_window()
    assert good.snapshot.verdict != "bad input"
    assert bad.snapshot.verdict == "bad input" and "of key 'k'" in bad.snapshot.verdict_reason
    assert bad.logged == {}
