"""Unit tests of the analysis checks on small hand-built histories.

Each check gets at least one planted anomaly that must be caught and the legitimate concurrent
cases that must not be flagged. Times are written in milliseconds for readability.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
import pytest

from analysis import (
    CHECK_NAMES,
    Options,
    check_divergence,
    check_future_read,
    check_generator_cpu,
    check_history_complete,
    check_hit_ratio,
    check_latency,
    check_monotonic_read,
    check_stale_read,
    check_ws_delivery,
    normalise,
    run_checks,
)
from analysis.checks import NO_HISTORY, generator_note
from cachestorm.history import cpu_summary
from tests.histories import MS, complete_run, history, op

S = 1_000_000_000


def read(t0: float, t1: float, version: int | None, **kw: Any) -> dict[str, Any]:
    kw.setdefault("source", "hit")
    kw.setdefault("process", 2)
    return op("read", kw.pop("key", "cs:e:1"), t0, t1, version, **kw)


def write(t0: float, t1: float, version: int | None, **kw: Any) -> dict[str, Any]:
    return op("write", kw.pop("key", "cs:e:1"), t0, t1, version, **kw)


# --- stale_read -------------------------------------------------------------------------------------


def test_stale_read_catches_read_after_completed_write() -> None:
    h = history(
        write(0, 10, 1),
        write(20, 30, 2),
        read(40, 41, 1, process=7),
        read(50, 51, 0, process=8),
        read(60, 61, 2, process=9),
    )
    r = check_stale_read(h)
    assert not r.passed
    assert r.violations == 2
    assert r.figures["reads_checked"] == 3
    # The v0 read missed v1, completed at 10 ms: 40 ms old; the v1 read missed v2: 10 ms old.
    assert r.examples[0]["process"] == 8
    assert r.examples[0]["age_us"] == pytest.approx(40_000)
    assert r.examples[0]["missed_write"]["version"] == 1
    assert r.examples[1]["missed_write"]["version"] == 2
    assert r.examples[1]["age_us"] == pytest.approx(10_000)
    assert r.figures["age_max_us"] == pytest.approx(40_000)
    assert r.figures["age_p50_us"] == pytest.approx(25_000)


def test_stale_read_concurrent_read_may_see_old_version() -> None:
    # Invoked before the write completed: either version is a legal answer.
    h = history(write(10, 30, 1), read(20, 35, 0), read(29, 31, 0, process=3))
    r = check_stale_read(h)
    assert r.passed and r.violations == 0
    assert r.figures["reads_checked"] == 2


def test_stale_read_write_completing_exactly_at_invoke_is_not_before() -> None:
    h = history(write(0, 30, 1), read(30, 31, 0))
    assert check_stale_read(h).passed


def test_stale_read_tolerance_excludes_write_completed_within_it() -> None:
    h = history(write(0, 30, 1), read(31, 32, 0))
    assert check_stale_read(h, tolerance_ns=0).violations == 1
    assert check_stale_read(h, tolerance_ns=2 * MS).violations == 0


def test_stale_read_uses_highest_version_even_if_acknowledged_out_of_order() -> None:
    # v2's acknowledgement arrived before v1's; a read after v2 completed must see at least v2.
    h = history(write(0, 20, 1), write(5, 10, 2), read(15, 16, 1))
    r = check_stale_read(h)
    assert r.violations == 1
    assert r.examples[0]["missed_write"]["version"] == 2
    assert r.examples[0]["age_us"] == pytest.approx(5_000)


def test_stale_read_ignores_unversioned_info_and_fail_writes_and_other_keys() -> None:
    h = history(
        write(0, 10, None, status="info"),
        write(0, 10, None, status="fail"),
        write(0, 10, 1, key="cs:e:2"),
        read(20, 21, 0),
    )
    r = check_stale_read(h)
    assert r.passed and r.figures["reads_checked"] == 1
    assert r.figures["stale_after_unconfirmed"] == 0


def test_stale_read_counts_a_commit_whose_invalidation_is_unconfirmed() -> None:
    # An info write with a version raised AfterCommit: the commit happened, so older reads after it
    # are stale; the read concurrent with it and the read of its version are not.
    h = history(
        write(0, 10, 1, status="info"),
        read(5, 6, 0),
        read(20, 21, 0),
        read(22, 23, 1),
        write(30, 40, 2),
        read(50, 51, 1),
    )
    r = check_stale_read(h)
    assert not r.passed and r.violations == 2
    assert r.figures["stale"] == 2 and r.figures["stale_after_unconfirmed"] == 1
    unconfirmed = [e for e in r.examples if not e["missed_write"]["invalidation_confirmed"]]
    assert [e["t_invoke"] for e in unconfirmed] == [20 * MS]


def test_stale_read_unconfirmed_figure_leaves_reads_an_ok_write_made_stale() -> None:
    # Control: a read stale against an ok write is not counted as "after an unconfirmed one" even
    # when an unconfirmed write of a lower version preceded it.
    h = history(write(0, 10, 1, status="info"), write(12, 14, 2), read(20, 21, 0))
    r = check_stale_read(h)
    assert r.violations == 1 and r.figures["stale_after_unconfirmed"] == 0


def test_stale_read_by_source() -> None:
    h = history(write(0, 10, 1), read(20, 21, 0, source="miss"), read(20, 21, 1), read(22, 23, 0))
    by = check_stale_read(h).figures["by_source"]
    assert by == {"hit": {"reads": 2, "stale": 1}, "miss": {"reads": 1, "stale": 1}}


def test_stale_read_skipped_without_reads() -> None:
    r = check_stale_read(history(write(0, 10, 1)))
    assert r.skipped and r.passed and r.reason


# --- future_read ------------------------------------------------------------------------------------


def test_future_read_catches_version_beyond_invoked_writes() -> None:
    h = history(write(0, 10, 1), write(20, 30, 2), read(40, 41, 3))
    r = check_future_read(h)
    assert not r.passed and r.violations == 1
    assert r.examples[0]["version"] == 3
    assert r.examples[0]["writes_invoked_before"] == 2


def test_future_read_in_flight_write_explains_read() -> None:
    # The write was invoked before the read completed and finishes later: the read may see it.
    h = history(write(10, 50, 1), read(20, 30, 1))
    assert check_future_read(h).passed


def test_future_read_write_invoked_after_read_completed_is_caught() -> None:
    h = history(write(40, 50, 1), read(20, 30, 1))
    assert check_future_read(h).violations == 1
    # Within tolerance the order of the two stamps is not known.
    assert check_future_read(h, tolerance_ns=15 * MS).violations == 0


def test_future_read_info_write_explains_read_but_fail_write_does_not() -> None:
    explained = history(write(0, 10, 1), write(15, 99, None, status="info"), read(20, 30, 2))
    assert check_future_read(explained).passed
    unexplained = history(write(0, 10, 1), write(15, 18, None, status="fail"), read(20, 30, 2))
    assert check_future_read(unexplained).violations == 1


def test_future_read_negative_version_and_per_key_counts() -> None:
    h = history(write(0, 10, 1, key="cs:e:2"), read(20, 30, -1), read(20, 30, 1, process=3))
    r = check_future_read(h)
    assert r.violations == 2
    assert r.figures["negative"] == 1
    assert r.figures["future"] == 1


# --- monotonic_read ---------------------------------------------------------------------------------


def test_monotonic_read_catches_process_going_backwards() -> None:
    h = history(
        read(0, 1, 3, process=4),
        read(2, 3, 5, process=4),
        read(4, 5, 4, process=4),
        read(6, 7, 5, process=4),
    )
    r = check_monotonic_read(h)
    assert not r.passed and r.violations == 1
    assert r.examples[0]["version"] == 4
    assert r.examples[0]["previously_seen"] == 5


def test_monotonic_read_orders_by_invoke_not_row_order() -> None:
    h = history(read(4, 5, 4, process=4), read(0, 1, 5, process=4))
    assert check_monotonic_read(h).violations == 1
    h = history(read(4, 5, 5, process=4), read(0, 1, 4, process=4))
    assert check_monotonic_read(h).passed


def test_monotonic_read_different_processes_or_keys_may_differ() -> None:
    h = history(
        read(0, 1, 5, process=4),
        read(2, 3, 4, process=5),
        read(4, 5, 1, process=4, key="cs:e:2"),
        read(6, 7, 5, process=4),
    )
    r = check_monotonic_read(h)
    assert r.passed and r.violations == 0
    assert r.figures["reads_checked"] == 4


def test_monotonic_read_ignores_failed_reads() -> None:
    h = history(read(0, 1, 5, process=4), read(2, 3, 1, process=4, status="info"))
    assert check_monotonic_read(h).passed


# --- ws_delivery ------------------------------------------------------------------------------------

L = 100  # listener process


def ws(f: str, t0: float, t1: float | None = None, **kw: Any) -> dict[str, Any]:
    kw.setdefault("process", L)
    return op(f, kw.pop("key", None), t0, t1, kw.pop("version", None), **kw)


def recv(t: float, version: int, commit_ms: float, **kw: Any) -> dict[str, Any]:
    kw.setdefault("process", L)
    return op("ws_recv", kw.pop("key", "cs:e:1"), t, t, version, value=int(commit_ms * MS), **kw)


def test_ws_delivery_catches_missing_write() -> None:
    h = history(
        ws("ws_open", 0, 1000),
        write(2900, 3000, 1),
        write(3900, 4000, 2),
        recv(3010, 1, 3000),
        ws("ws_close", 10_000, 10_001),
    )
    r = check_ws_delivery(h, grace_ns=1 * S)
    assert not r.passed and r.violations == 1
    assert r.figures["expected"] == 2
    assert r.figures["delivered"] == 1
    assert r.figures["delivery_ratio"] == pytest.approx(0.5)
    assert r.examples[0]["f"] == "write" and r.examples[0]["version"] == 2
    assert r.examples[0]["missed_by_listener"] == L
    assert r.figures["latency_p50_us"] == pytest.approx(10_000)


def _gap(t0: float, t1: float, source: str = "reconnect", value: int | None = None) -> dict[str, Any]:
    return op("ws_gap", None, t0, t1, process=L, source=source, value=value)


def _with_lost_write(*extra: dict[str, Any]) -> pd.DataFrame:
    # Version 2 (written 5,900-6,000 ms) never reaches the listener; versions 1 and 3 do.
    return history(
        ws("ws_open", 0, 1000),
        write(2900, 3000, 1),
        recv(3010, 1, 3000),
        write(5900, 6000, 2),
        write(8900, 9000, 3),
        recv(9010, 3, 9000),
        *extra,
        ws("ws_close", 20_000, 20_001),
    )


def test_ws_delivery_loss_while_the_notifier_reconnected_is_unknown_not_a_failure() -> None:
    control = check_ws_delivery(_with_lost_write(), grace_ns=1 * S)
    assert control.outcome == "fail" and control.violations == 1
    r = check_ws_delivery(_with_lost_write(_gap(5500, 5800)), grace_ns=1 * S)
    assert r.passed and r.violations == 0 and r.outcome == "unknown"
    assert r.figures["missing"] == 0 and r.figures["missing_during_notifier_gap"] == 1
    assert r.figures["notifier_gaps"] == 1 and r.figures["delivered"] == 2
    assert r.figures["judged"] == 2 and r.figures["delivery_ratio"] == 1.0
    assert "reconnecting" in (r.reason or "")


def test_ws_delivery_a_gap_elsewhere_or_a_seq_hole_excuses_nothing() -> None:
    # A reconnect window far from the lost write, and a hole in seq (a live notifier that did not
    # send), leave the loss blamed.
    r = check_ws_delivery(
        _with_lost_write(_gap(12_000, 12_500), _gap(3010, 9010, source="seq", value=1)), grace_ns=1 * S
    )
    assert r.outcome == "fail" and r.violations == 1
    assert r.figures["missing_during_notifier_gap"] == 0
    assert r.figures["seq_holes"] == 1 and r.figures["seq_missed"] == 1
    assert r.examples[0]["version"] == 2


def test_ws_delivery_a_gap_excuses_only_its_own_losses() -> None:
    # Two losses, one inside a reconnect window: the other still fails the check.
    h = _with_lost_write(_gap(5500, 5800), write(14_900, 15_000, 4))
    r = check_ws_delivery(h, grace_ns=1 * S)
    assert r.outcome == "fail" and r.violations == 1
    assert r.figures["missing_during_notifier_gap"] == 1 and r.examples[0]["version"] == 4


def test_ws_delivery_a_gap_with_nothing_lost_passes() -> None:
    r = check_ws_delivery(
        history(
            ws("ws_open", 0, 1000),
            write(2900, 3000, 1),
            recv(3010, 1, 3000),
            _gap(2000, 2500),
            ws("ws_close", 20_000, 20_001),
        ),
        grace_ns=1 * S,
    )
    assert r.outcome == "pass" and r.figures["notifier_gaps"] == 1


def test_ws_delivery_writes_within_grace_are_not_expected() -> None:
    h = history(
        ws("ws_open", 0, 1000),
        write(1400, 1500, 1),  # within grace of the open
        write(8000, 9500, 2),  # within grace of the close
        write(20_000, 20_001, 3),  # after the close
        ws("ws_close", 10_000, 10_001),
    )
    r = check_ws_delivery(h, grace_ns=1 * S)
    assert r.passed and r.figures["expected"] == 0
    # Without grace both writes inside the connection are expected and missing.
    assert check_ws_delivery(h, grace_ns=0).violations == 2


def test_ws_delivery_duplicates_and_out_of_order_are_reported_not_violations() -> None:
    h = history(
        ws("ws_open", 0, 1000),
        write(2900, 3000, 1),
        write(3900, 4000, 2),
        recv(4010, 2, 4000),
        recv(4020, 1, 3000),  # older than one already received: out of order
        recv(4030, 2, 4000),  # delivered twice: a duplicate
        ws("ws_close", 10_000, 10_001),
    )
    r = check_ws_delivery(h)
    assert r.passed and r.violations == 0
    assert r.figures["duplicates"] == 1
    assert r.figures["out_of_order"] == 1
    assert r.figures["received"] == 3


def test_ws_delivery_without_close_runs_to_end_of_history_and_per_listener() -> None:
    h = history(
        ws("ws_open", 0, 1000),
        ws("ws_open", 0, 1000, process=101),
        write(2900, 3000, 1),
        recv(3010, 1, 3000),
        write(5000, 6000, 2, key="cs:e:2"),
        recv(6010, 2, 6000, key="cs:e:2", process=101),
        read(9000, 9001, 2, key="cs:e:2"),  # the end of the history is 9001 ms
    )
    r = check_ws_delivery(h)
    assert r.figures["listeners"] == 2
    assert r.figures["expected"] == 4
    # Listener 100 missed key 2's write, listener 101 key 1's.
    assert r.violations == 2
    assert {e["missed_by_listener"] for e in r.examples} == {100, 101}


def test_ws_delivery_reopened_connection_closes_previous_window() -> None:
    h = history(
        ws("ws_open", 0, 1000),
        ws("ws_open", 20_000, 20_001),
        write(10_000, 10_001, 1),  # between the two connections only if the first ended at the reopen
        ws("ws_close", 30_000, 30_001),
    )
    assert check_ws_delivery(h).violations == 1
    h2 = history(
        ws("ws_open", 0, 1000),
        ws("ws_close", 5000, 5001),
        ws("ws_open", 20_000, 20_001),
        write(10_000, 10_001, 1),
        ws("ws_close", 30_000, 30_001),
    )
    assert check_ws_delivery(h2).passed


def test_ws_delivery_ui_reads_reported_only() -> None:
    h = history(
        ws("ws_open", 0, 1000),
        write(2900, 3000, 1),
        recv(3010, 1, 3000),
        ws("ui_read", 3100, 3101, key="cs:e:1", version=0),  # stale, but within grace
        ws("ui_read", 5000, 5001, key="cs:e:1", version=0),  # stale beyond grace
        ws("ui_read", 5000, 5001, key="cs:e:1", version=1),
        ws("ws_close", 10_000, 10_001),
    )
    r = check_ws_delivery(h)
    assert r.passed
    assert r.figures["ui_reads"] == 3
    assert r.figures["ui_stale"] == 2
    assert r.figures["ui_stale_beyond_grace"] == 1


def test_ws_delivery_skipped_without_ws_rows() -> None:
    r = check_ws_delivery(history(write(0, 1, 1), read(2, 3, 1)))
    assert r.skipped and r.passed and "ws_open" in (r.reason or "")


# --- divergence -------------------------------------------------------------------------------------


def sweep(key: str, cached: int | None, db: int, source: str) -> dict[str, Any]:
    return op("sweep", key, 99_000, 99_001, cached, value=db, source=source, process=0)


def test_divergence_catches_cached_version_older_than_database() -> None:
    h = history(
        sweep("cs:e:1", 3, 5, "entry"),
        sweep("cs:e:2", 5, 5, "entry"),
        sweep("cs:e:3", 1, 2, "entry"),
    )
    r = check_divergence(h)
    assert not r.passed and r.violations == 2
    assert r.figures["max_gap"] == 2
    assert r.examples[0]["key"] == "cs:e:1"
    assert r.examples[0]["version_gap"] == 2
    assert r.figures["keys_swept"] == 3


def test_divergence_tombstones_and_absent_are_not_divergent() -> None:
    h = history(
        sweep("cs:e:1", None, 5, "tombstone"),
        sweep("cs:e:2", None, 2, "absent"),
        sweep("cs:e:3", 4, 4, "entry"),
    )
    r = check_divergence(h)
    assert r.passed and r.violations == 0
    assert (r.figures["tombstones"], r.figures["absent"], r.figures["cached_entries"]) == (1, 1, 1)


def test_divergence_skipped_without_sweep() -> None:
    assert check_divergence(history(read(0, 1, 0))).skipped


# --- hit_ratio, latency, history_complete -----------------------------------------------------------


def test_hit_ratio() -> None:
    h = history(
        read(0, 1, 0),
        read(0, 1, 0),
        read(0, 1, 0),
        read(0, 1, 0, source="miss"),
        read(0, 1, 0, source="miss", status="fail"),
    )
    r = check_hit_ratio(h)
    assert r.passed
    assert r.figures == {"reads": 4, "hits": 3, "misses": 1, "ratio": pytest.approx(0.75)}


def test_latency_microsecond_percentiles() -> None:
    h = history(
        read(0, 0.001, 0),  # 1 us
        read(0, 0.003, 0),  # 3 us
        read(0, 0.0105, 0, source="miss"),  # 10.5 us
        read(0, 500, 0, status="fail"),  # not ok: excluded
        write(0, 2, 1),
        recv(5, 1, 4.5),
    )
    r = check_latency(h)
    assert r.passed
    hit = r.figures["read_hit"]
    assert hit["count"] == 2
    assert hit["p50"] == pytest.approx(2.0)
    assert hit["max"] == pytest.approx(3.0)
    assert hit["mean"] == pytest.approx(2.0)
    assert hit["p99_9"] == pytest.approx(np.percentile([1.0, 3.0], 99.9))
    assert r.figures["read_miss"]["p99"] == pytest.approx(10.5)
    assert r.figures["write"]["p50"] == pytest.approx(2000.0)
    assert r.figures["fill"]["count"] == 0
    assert r.figures["notification"]["max"] == pytest.approx(500.0)


def test_history_complete() -> None:
    assert check_history_complete(None).skipped
    ok = check_history_complete({"history_complete": True, "rows": 5, "nodes": {"local": {}}}, 5)
    assert ok.passed and not ok.skipped
    bad = check_history_complete(
        {
            "history_complete": False,
            "nodes": {"a": {"missing_batches": [3, 4]}, "b": {"missing_batches": []}},
        },
        10,
    )
    assert not bad.passed and bad.violations == 2
    assert bad.figures["missing_batches"] == {"a": [3, 4]}
    silent = check_history_complete(
        {"history_complete": False, "nodes": {"w": {"missing_batches": [], "reported_final_count": False}}}
    )
    assert not silent.passed and silent.violations == 1
    assert silent.figures["nodes_without_final_count"] == ["w"]


# --- composition ------------------------------------------------------------------------------------


def test_run_checks_composes_verdict() -> None:
    h = history(
        write(0, 10, 1),
        read(20, 21, 0),
        sweep("cs:e:1", 0, 1, "entry"),
    )
    v = run_checks(h, None, Options())
    assert [c.name for c in v.checks] == list(CHECK_NAMES)
    assert not v.passed
    # tier_staleness breaks the stale read down by tier, without failing it a second time.
    assert v.failed == ["stale_read", "divergence"]
    assert v.check("tier_staleness").figures["tiers"]["cache"]["stale"] == 1
    assert v.notes  # run.json missing is said
    summary = v.to_summary()
    assert summary["passed"] is False
    assert summary["checks"]["stale_read"]["violations"] == 1
    assert summary["checks"]["history_complete"]["skipped"] is True


def test_run_checks_clean_history_passes() -> None:
    h = history(write(0, 10, 1), read(5, 6, 0), read(20, 21, 1), sweep("cs:e:1", 1, 1, "entry"))
    v = run_checks(h, {"history_complete": True, "run_id": "x"})
    assert v.passed, v.failed
    assert not v.notes


def test_run_checks_without_history_skips_history_checks() -> None:
    v = run_checks(None, None)
    # Nothing was judged, and without run.json the history may be partial: unknown, not a pass.
    assert not v.passed and v.outcome == "unknown" and v.unknown == ["history_complete"]
    for c in v.checks:
        assert c.skipped
        if c.name not in ("history_complete", "generator_cpu"):  # these two read run.json
            assert c.reason == NO_HISTORY


def cpu_run(**nodes: list[float]) -> dict[str, object]:
    """A run.json whose nodes sampled these CPU figures, one a second."""
    return {"nodes": {n: {"rows": 1, "cpu_percent": cpu_summary(v)} for n, v in nodes.items()}}


def test_a_busy_generator_is_reported_and_noted_but_never_fails() -> None:
    # The positive control: a process at 90% or more for 3 of its samples.
    busy = check_generator_cpu(cpu_run(w1=[40.0, 95.0, 99.0, 100.0, 60.0], w2=[30.0, 35.0]))
    assert busy.passed and not busy.skipped
    assert busy.figures["busy_seconds"] == 3 and busy.figures["busy_nodes"] == ["w1"]
    assert busy.figures["max_percent"] == 100.0 and busy.figures["nodes"] == 2
    note = generator_note(busy)
    assert note is not None and "w1" in note and "3 s" in note and "--processes" in note
    # A generator that kept up: the same figures, no note.
    calm = check_generator_cpu(cpu_run(local=[40.0, 89.9, 20.0]))
    assert calm.passed and calm.figures["busy_seconds"] == 0 and generator_note(calm) is None
    # run_checks carries the note into the verdict, with or without a history.
    assert any("load generator was busy" in n for n in run_checks(None, cpu_run(w1=[99.0])).notes)
    assert not any("load generator" in n for n in run_checks(None, cpu_run(w1=[9.0])).notes)


def test_a_saturated_host_is_reported_and_noted_though_no_process_was_busy() -> None:
    # Two workers on one host, each at half a core, with the host's every core busy meanwhile.
    run = cpu_run(w1=[50.0, 48.0, 52.0], w2=[49.0, 51.0, 47.0])
    nodes = run["nodes"]
    assert isinstance(nodes, dict)
    nodes["w1"]["host_cpu_percent"] = cpu_summary([97.0, 99.0, 60.0])
    nodes["w2"]["host_cpu_percent"] = cpu_summary([96.0, 99.5, 61.0])
    saturated = check_generator_cpu(run)
    assert saturated.passed and saturated.figures["busy_seconds"] == 0
    assert saturated.figures["host_saturated_seconds"] == 2  # the host's, not the sum of its nodes'
    assert saturated.figures["host_saturated_nodes"] == ["w1", "w2"]
    assert saturated.figures["host_max_percent"] == 99.5
    note = generator_note(saturated)
    assert note is not None and "host was saturated" in note and "2 s" in note
    assert "load generator was busy" not in note
    # The positive control's other side: a host with CPU to spare gives no note.
    nodes["w1"]["host_cpu_percent"] = cpu_summary([70.0, 80.0])
    nodes["w2"]["host_cpu_percent"] = cpu_summary([71.0, 89.0])
    calm = check_generator_cpu(run)
    assert calm.figures["host_saturated_seconds"] == 0 and generator_note(calm) is None


def test_generator_cpu_is_skipped_for_runs_without_samples() -> None:
    assert check_generator_cpu(None).skipped
    assert check_generator_cpu({"nodes": {"local": {"rows": 5}}}).skipped
    assert generator_note(check_generator_cpu(None)) is None


def test_options_resolve_tolerance_default_from_run() -> None:
    assert Options.resolve(None).tolerance_ns == 0
    assert Options.resolve({"clock_uncertainty_ns": 2500}).tolerance_ns == 2500
    assert Options.resolve({"clock_uncertainty_ns": 2500}, tolerance_ms=0).tolerance_ns == 0
    assert Options.resolve(None, tolerance_ms=1.5).tolerance_ns == 1_500_000
    assert Options.resolve(None, ws_grace_s=0.25).ws_grace_ns == 250_000_000
    # The run's default applies through run_checks.
    h = history(write(0, 30, 1), read(31, 32, 0))
    assert run_checks(h, {"clock_uncertainty_ns": 2 * MS}).check("stale_read").passed
    assert not run_checks(h, {"clock_uncertainty_ns": 0}).check("stale_read").passed


# --- scale ------------------------------------------------------------------------------------------


def synthetic(n: int, keys: int = 10_000, seed: int = 7) -> pd.DataFrame:
    """A large, coherent history: per key, writes and reads alternate and never overlap."""
    rng = np.random.default_rng(seed)
    key = rng.integers(0, keys, n)
    is_write = rng.random(n) < 0.2
    order = np.lexsort((np.arange(n), key))
    key, is_write = key[order], is_write[order]
    starts = np.r_[True, key[1:] != key[:-1]]
    group = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    writes_so_far: np.ndarray = np.cumsum(is_write) - np.repeat(
        np.cumsum(is_write)[first] - is_write[first], np.diff(np.r_[first, n])
    )
    step = np.arange(n) - first[group]
    t0 = step.astype("int64") * 10 * MS + key * 1000
    frame = pd.DataFrame(
        {
            "process": np.where(is_write, 1, 2 + key % 50),
            "node": "local",
            "f": np.where(is_write, "write", "read"),
            "key": pd.Series(key).map(lambda k: f"cs:e:{k}"),
            "status": "ok",
            "t_invoke": t0,
            "t_complete": t0 + 5 * MS,
            "version": pd.array(writes_so_far, dtype="Int64"),
            "value": pd.array([None] * n, dtype="Int64"),
            "source": pd.Series(np.where(key % 3 == 0, "miss", "hit")).where(~is_write),
        }
    )
    return normalise(frame)


def test_one_million_rows_checked_in_seconds() -> None:
    h = synthetic(1_000_000)
    started = time.perf_counter()
    v = run_checks(h, complete_run(), Options())
    elapsed = time.perf_counter() - started
    assert v.passed, v.failed
    assert v.check("stale_read").figures["reads_checked"] > 700_000
    assert elapsed < 30, f"checks took {elapsed:.1f}s"
