"""Three outcomes: pass, fail, unknown (and not applicable), per check and for the verdict."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest

from analysis import at_run_end
from analysis.__main__ import main
from analysis.checks import run_checks
from analysis.chunked import run_checks_chunked
from analysis.console import render
from analysis.outcomes import SCENARIO_CLASSES, classes_run, needed_checks
from analysis.verdict import Verdict
from cachestorm.coordinator import needed_checks as recorded_needs
from tests.histories import MS, complete_run, history, row

S = 1000 * MS
READER = {"locust": {"user_classes": ["CacheReader", "CacheWriter"]}}


def coherent() -> list[dict[str, Any]]:
    """A write, reads before and after it, and a sweep that agrees."""
    return [
        row("write", 0, 10, 1),
        row("read", 5, 6, 0, process=2, source="hit"),
        row("read", 20, 21, 1, process=2, source="miss"),
        row("sweep", 30, 31, 1, process=0, value=1, source="entry"),
    ]


def incomplete(**fields: Any) -> dict[str, Any]:
    """A run.json that lost batch 2 of node w1."""
    return {
        "run_id": "lost",
        "history_complete": False,
        "nodes": {"w1": {"missing_batches": [2]}},
        **READER,
        **fields,
    }


def judged(rows: list[dict[str, Any]], run: dict[str, Any] | None) -> Verdict:
    return run_checks(history(*rows), run)


# --- needed or not applicable -----------------------------------------------------------------------


def test_a_skipped_check_is_unknown_when_needed_and_not_applicable_otherwise() -> None:
    no_sweep = coherent()[:3]
    # Not needed: only a locustfile's own classes ran, which the registry knows nothing of.
    mine = judged(no_sweep, complete_run(locust={"user_classes": ["MyReader"]}))
    assert mine.check("divergence").outcome == "not applicable" and mine.outcome == "pass"
    # Needed: CacheReader ran, so the missing sweep leaves divergence unjudged.
    v = judged(no_sweep, complete_run(**READER))
    d = v.check("divergence")
    assert d.outcome == "unknown" and d.status == "UNKNOWN" and "needed by CacheReader" in (d.reason or "")
    assert v.outcome == "unknown" and v.unknown == ["divergence"] and v.failed == []
    assert not v.passed
    summary = v.to_summary()
    assert summary["verdict"] == "unknown" and summary["passed"] is False
    assert summary["unknown"] == ["divergence"]
    assert summary["checks"]["divergence"]["outcome"] == "unknown"
    assert summary["checks"]["divergence"]["passed"] is False
    assert summary["checks"]["ws_delivery"]["outcome"] == "not applicable"  # no listener ran
    assert render(v).splitlines()[-1] == "VERDICT: UNKNOWN (divergence)"


def test_a_subclass_needs_what_its_base_needs() -> None:
    run = complete_run(locust={"user_classes": ["FastReader"], "user_class_bases": ["CacheReader"]})
    assert judged(coherent()[:3], run).check("divergence").outcome == "unknown"


def test_the_scenario_says_what_ran_when_the_classes_are_not_listed() -> None:
    contention = {"options": {"scenario": "contention"}}
    assert "counter" in needed_checks(contention)
    assert "eviction" not in needed_checks(contention)
    assert "eviction" in needed_checks({"options": {"scenario": "all", "redis_maxmemory": "64mb"}})
    assert "ws_delivery" in needed_checks({"options": {"scenario": "coherence"}})
    # Neither says: nothing but the history's completeness is known to be needed.
    assert list(needed_checks({"options": {"scenario": "synthetic"}})) == ["history_complete"]
    assert classes_run(None) is None


def test_scenario_classes_match_users_scenarios() -> None:
    from users.scenarios import user_classes  # noqa: PLC0415

    for scenario, classes in SCENARIO_CLASSES.items():
        assert classes == tuple(c.__name__ for c in user_classes(scenario)), scenario
    assert classes_run({"options": {"scenario": "contention", "redis_maxmemory": "1mb"}}) == tuple(
        c.__name__ for c in user_classes("contention", "1mb")
    )


def test_a_target_adds_and_drops_checks() -> None:
    no_sweep = coherent()[:3]
    dropped = complete_run(**READER, target={"needed_checks": {"divergence": False}})
    assert judged(no_sweep, dropped).outcome == "pass"
    added = complete_run(**READER, target={"needed_checks": ["ws_delivery"]})
    v = judged(coherent(), added)
    assert v.unknown == ["ws_delivery"] and "the target declares it needed" in (
        v.check("ws_delivery").reason or ""
    )
    # A check this analysis does not have cannot be judged: unknown, never silently passed.
    strange = judged(coherent(), complete_run(**READER, target={"needed_checks": ["tier_staleness_x"]}))
    assert strange.unknown == ["tier_staleness_x"] and strange.outcome == "unknown"


def test_cachestorm_records_what_the_target_needs() -> None:
    class Pushes:
        needed_checks = ("tier_staleness",)

        def notifications_url(self) -> str:
            return "ws://x"

    class Silent:
        needed_checks = {"divergence": False}

    assert recorded_needs(Pushes()) == {"tier_staleness": True}
    assert recorded_needs(Silent()) == {"divergence": False, "ws_delivery": False}
    assert recorded_needs(SimpleNamespace(notifications_url=lambda: "ws://x")) is None


# --- incomplete histories, per check --------------------------------------------------------------------


def test_an_incomplete_history_is_never_a_pass() -> None:
    v = judged(coherent(), incomplete())
    assert v.outcome == "unknown" and v.failed == []
    assert v.check("history_complete").outcome == "unknown"
    assert v.check("stale_read").outcome == "unknown"
    assert "could hold violations" in (v.check("stale_read").reason or "")
    # The sweep is the master's own: no lost batch touches it.
    assert v.check("divergence").outcome == "pass"
    # Reporting checks stay reports.
    assert v.check("hit_ratio").outcome == "pass"
    # The same history, complete: the positive control.
    assert judged(coherent(), complete_run(**READER)).outcome == "pass"


def test_rows_missing_from_history_dir_make_it_incomplete() -> None:
    v = judged(coherent(), complete_run(**READER, rows=9))
    assert v.check("history_complete").outcome == "unknown"
    assert "5 of the 9 rows" in (v.check("history_complete").reason or "")
    assert judged(coherent(), complete_run(**READER, rows=4)).outcome == "pass"


def test_a_stale_read_stays_a_fail_with_rows_missing() -> None:
    stale = [*coherent(), row("read", 40, 41, 0, process=3, source="hit")]
    v = judged(stale, incomplete())
    assert v.check("stale_read").outcome == "fail" and v.outcome == "fail"
    assert v.failed == ["stale_read"]  # the unknown ones are not listed as failed
    assert render(v).splitlines()[-1] == "VERDICT: FAIL (stale_read)"


def test_a_future_read_is_unknown_unless_the_sweep_bounds_it() -> None:
    # Version 2 read, one write seen: a missing write may explain it, as the sweep's v2 allows.
    explainable = [
        row("write", 0, 10, 1),
        row("read", 20, 21, 2, process=2, source="hit"),
        row("sweep", 30, 31, 2, process=0, value=2, source="entry"),
    ]
    v = judged(explainable, incomplete())
    assert v.check("future_read").violations == 1
    assert v.check("future_read").outcome == "unknown"
    assert "could explain its violations" in (v.check("future_read").reason or "")
    # Complete, the same read is a fail.
    assert judged(explainable, complete_run(**READER)).check("future_read").outcome == "fail"
    # Version 5 when the database ended at 2: it never existed, whatever is missing.
    beyond = [*explainable, row("read", 22, 23, 5, process=3, source="hit")]
    f = judged(beyond, incomplete()).check("future_read")
    assert f.figures["beyond_final_version"] == 1 and f.outcome == "fail"


def test_a_monotonic_regression_stays_a_fail() -> None:
    rows = [
        row("write", 0, 10, 1),
        row("read", 20, 21, 1, process=2, source="hit"),
        row("read", 22, 23, 0, process=2, source="hit", key="cs:e:1"),
        row("sweep", 30, 31, 1, process=0, value=1, source="entry"),
    ]
    v = judged(rows, incomplete(rows=4))
    assert v.check("monotonic_read").outcome == "fail"


def test_a_missed_delivery_is_unknown_with_rows_missing() -> None:
    listener = [
        row("ws_open", 0, 1000, process=7, key=None),
        row("write", 2900, 3000, 1),
        row("ws_close", 10_000, 10_001, process=7, key=None),
        row("sweep", 11_000, 11_001, 1, process=0, value=1, source="entry"),
    ]
    classes = {"locust": {"user_classes": ["WebSocketListener", "CacheWriter"]}}
    complete = judged(listener, complete_run(**classes))
    assert complete.check("ws_delivery").outcome == "fail"
    partial = judged(listener, incomplete(**classes))
    assert partial.check("ws_delivery").outcome == "unknown" and partial.outcome == "unknown"


def test_divergence_depends_on_the_sweep_not_the_batches() -> None:
    divergent = [*coherent()[:3], row("sweep", 30, 31, 0, process=0, value=1, source="entry")]
    assert judged(divergent, incomplete()).check("divergence").outcome == "fail"
    failed_sweep = complete_run(**READER, sweep_complete=False)
    d = judged(coherent(), failed_sweep).check("divergence")
    assert d.outcome == "unknown" and "sweep failed" in (d.reason or "")
    partial_sweep = complete_run(**READER, options={"keys": 3})
    d = judged(coherent(), partial_sweep).check("divergence")
    assert d.outcome == "unknown" and "covered 1 of the run's 3 keys" in (d.reason or "")
    assert judged(coherent(), complete_run(**READER, options={"keys": 1})).outcome == "pass"


def test_counter_lost_updates_stand_but_unexplained_values_do_not() -> None:
    c = "cs:c:1"
    lost = [row("incr", 0, 1, key=c, value=1), row("counter_read", 5, 6, key=c, value=0, process=9)]
    above = [row("incr", 0, 1, key=c, value=1), row("counter_read", 5, 6, key=c, value=3, process=9)]
    classes = {"locust": {"user_classes": ["CounterUser"]}}
    assert judged(lost, incomplete(**classes)).check("counter").outcome == "fail"
    assert judged(above, complete_run(**classes)).check("counter").outcome == "fail"
    assert judged(above, incomplete(**classes)).check("counter").outcome == "unknown"


def test_lock_overlaps_are_unknown_but_stale_tokens_stand() -> None:
    lk = "cs:l:1"
    overlap = [
        row("lock_acquire", 0, 1, key=lk, value=1, process=1, source="locked"),
        row("lock_acquire", 5, 6, key=lk, value=2, process=2, source="locked"),
    ]
    stale = [
        row("guarded_write", 0, 1, key=lk, value=2, process=1),
        row("guarded_write", 5, 6, key=lk, value=1, process=2),
    ]
    classes = {"locust": {"user_classes": ["LockUser"]}, "options": {"lock_ttl_ms": 1000}}
    assert judged(overlap, complete_run(**classes)).check("lock_safety").outcome == "fail"
    assert judged(overlap, incomplete(**classes)).check("lock_safety").outcome == "unknown"
    assert judged(stale, incomplete(**classes)).check("lock_safety").outcome == "fail"


def test_no_run_json_is_an_incomplete_history() -> None:
    v = judged(coherent(), None)
    assert v.outcome == "unknown" and "history_complete" in v.unknown
    assert v.check("stale_read").outcome == "unknown"


# --- the same in chunked mode, on the command line and at the run's end ------------------------------


def write_results(results: Path, rows: list[dict[str, Any]], run: dict[str, Any] | None) -> None:
    (results / "history").mkdir(parents=True)
    frame = pd.DataFrame(rows)
    frame["version"] = frame["version"].astype("Int64")
    frame["value"] = frame["value"].astype("Int64")
    frame.to_parquet(results / "history" / "part-00000.parquet", index=False)
    if run is not None:
        (results / "run.json").write_text(json.dumps(run))


@pytest.mark.parametrize(
    ("run", "code", "verdict"),
    [
        (complete_run(**READER, rows=4), 0, "pass"),
        (incomplete(rows=4), 3, "unknown"),
        (complete_run(rows=3, locust={"user_classes": ["WebSocketListener"]}), 3, "unknown"),
    ],
)
def test_exit_codes_in_memory_and_chunked(
    tmp_path: Path, run: dict[str, Any], code: int, verdict: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = coherent() if run.get("rows") == 4 else coherent()[:3]
    write_results(tmp_path, rows, run)
    assert main([str(tmp_path), "--thresholds", "none"]) == code
    assert json.loads((tmp_path / "summary.json").read_text())["verdict"] == verdict
    assert main([str(tmp_path), "--thresholds", "none", "--chunks", "2"]) == code
    assert run_checks_chunked(tmp_path, 2).outcome == verdict
    last = capsys.readouterr().out.rstrip().splitlines()[-1]
    assert last.startswith(f"VERDICT: {verdict.upper()}")


def test_the_run_ends_with_the_verdicts_exit_code(tmp_path: Path) -> None:
    write_results(tmp_path, coherent(), incomplete(rows=4))
    environment = SimpleNamespace(process_exit_code=None)
    at_run_end.judge(environment, tmp_path, SimpleNamespace(verdict=True))
    assert environment.process_exit_code == 3
    (tmp_path / "run.json").write_text(json.dumps(complete_run(**READER, rows=4)))
    at_run_end.judge(environment, tmp_path, SimpleNamespace(verdict=True))
    assert environment.process_exit_code == 0
    # A run stopped for bad input keeps its 2.
    environment.process_exit_code = 2
    (tmp_path / "run.json").write_text(json.dumps(incomplete(rows=4)))
    at_run_end.judge(environment, tmp_path, SimpleNamespace(verdict=True))
    assert environment.process_exit_code == 2
