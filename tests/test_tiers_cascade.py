"""tier_staleness and cascade on hand-built histories: each passes the clean case and flags its fault."""

from __future__ import annotations

from analysis.cascade import check_cascade
from analysis.checks import NS_PER_S, run_checks
from analysis.console import render
from analysis.report import build_report
from analysis.tiers import check_tier_staleness, tier_of
from tests.histories import history, row


def test_sources_map_to_tiers() -> None:
    assert [tier_of(s) for s in ("hit:l1", "hit:l2", "miss", "hit", None)] == [
        "l1",
        "l2",
        "db",
        "cache",
        "unknown",
    ]


def test_tier_staleness_skips_without_tier_data() -> None:
    result = check_tier_staleness(history(row("write", 0, 10, 1), row("read", 20, 21, 0, process=2)))
    assert result.skipped and result.reason is not None and "no tier data" in result.reason


def tiered_reads(l1_version: int) -> list[dict[str, object]]:
    return [
        row("write", 0, 10, 1),
        row("read", 5, 6, 0, process=2, source="hit:l1"),  # concurrent with the write: not stale
        row("read", 20, 21, l1_version, process=2, source="hit:l1"),
        row("read", 22, 23, 1, process=3, source="hit:l2"),
        row("read", 24, 25, 1, process=3, source="miss"),
    ]


def test_fresh_tiers_pass() -> None:
    result = check_tier_staleness(history(*tiered_reads(1)))
    assert result.passed and not result.skipped
    tiers = result.figures["tiers"]
    assert {t: tiers[t]["reads"] for t in tiers} == {"db": 1, "l1": 2, "l2": 1}
    assert all(tiers[t]["stale"] == 0 for t in tiers)


def test_a_stale_l1_read_is_flagged_in_l1_only() -> None:
    result = check_tier_staleness(history(*tiered_reads(0)))
    assert not result.passed and result.violations == 1
    tiers = result.figures["tiers"]
    assert (tiers["l1"]["stale"], tiers["l2"]["stale"], tiers["db"]["stale"]) == (1, 0, 0)
    # Invoked at 20 ms, 10 ms after the write it missed completed.
    assert tiers["l1"]["age_max_us"] == 10_000
    assert result.examples[0]["tier"] == "l1" and result.examples[0]["version"] == 0


def test_plain_hit_and_miss_are_the_cache_and_the_database() -> None:
    h = history(
        row("write", 0, 10, 1), row("read", 20, 21, 0, source="hit"), row("read", 22, 23, 1, source="miss")
    )
    result = check_tier_staleness(h)
    assert result.figures["tiers"]["cache"]["stale"] == 1 and result.figures["tiers"]["db"]["stale"] == 0


def test_tab_reads_are_judged_beyond_the_grace_only() -> None:
    tiered = row("read", 20, 21, 1, source="hit:l1")
    within = history(row("write", 0, 10, 1), tiered, row("ui_read", 500, 500, 0, process=9))
    result = check_tier_staleness(within, grace_ns=NS_PER_S)
    assert result.passed and result.figures["tiers"]["tab"]["stale"] == 1
    assert result.figures["tiers"]["tab"]["stale_beyond_grace"] == 0
    beyond = history(row("write", 0, 10, 1), tiered, row("ui_read", 1500, 1500, 0, process=9))
    result = check_tier_staleness(beyond, grace_ns=NS_PER_S)
    assert not result.passed and result.figures["tiers"]["tab"]["stale_beyond_grace"] == 1


def test_a_target_without_named_tiers_is_broken_down_not_judged_twice() -> None:
    """Plain hit and miss: stale_read judges the stale read; the breakdown only reports it."""
    h = history(row("write", 0, 10, 1), row("read", 20, 21, 0, source="hit"))
    result = check_tier_staleness(h)
    assert result.passed and result.figures["named_tiers"] is False
    assert result.figures["tiers"]["cache"]["stale"] == 1
    named = check_tier_staleness(history(row("write", 0, 10, 1), row("read", 20, 21, 0, source="hit:l1")))
    assert not named.passed and named.figures["tiers"]["l1"]["stale"] == 1


def test_a_tiered_sweep_entry_behind_the_database_is_flagged() -> None:
    rows = [
        row("write", 0, 10, 1),
        row("sweep", 30, 30, 1, process=0, value=1, source="entry:l2"),
        row("sweep", 30, 30, None, process=0, value=1, source="absent:l1"),
    ]
    assert check_tier_staleness(history(*rows)).passed
    rows[2] = row("sweep", 30, 30, 0, process=0, value=1, source="entry:l1")
    result = check_tier_staleness(history(*rows))
    assert not result.passed and result.figures["sweep"]["l1"]["divergent"] == 1
    assert result.figures["sweep"]["l2"]["divergent"] == 0


def cascade_rows(drop_l1: bool = True, commit_event: bool = True) -> list[dict[str, object]]:
    rows = [
        row("ws_open", 0, 0, process=9, key=None),
        row("write", 0, 10, 1),
        row("read", 20, 21, 1, process=2, source="hit:l1"),
        row("tier_event", 6, 6, 1, process=0, source="drop:l2"),
        row("tier_event", 8, 8, 1, process=0, source="push:frontend"),
        row("ws_recv", 9, 9, 1, process=9),
    ]
    if commit_event:
        rows.append(row("tier_event", 5, 5, 1, process=0, source="commit:auth"))
    if drop_l1:
        rows.append(row("tier_event", 7, 7, 1, process=0, source="drop:l1"))
    return rows


def test_cascade_skips_without_tier_events() -> None:
    result = check_cascade(history(row("write", 0, 10, 1), row("read", 20, 21, 1, source="hit:l1")))
    assert result.skipped and result.reason is not None and "tier events" in result.reason


def test_cascade_legs_from_the_commit_event() -> None:
    result = check_cascade(history(*cascade_rows()))
    assert result.passed and result.figures["commit_from_event"] == 1
    legs = result.figures["legs"]
    assert list(legs) == ["drop:l1", "drop:l2", "push:frontend", "recv:tab"]
    assert [legs[leg]["p50_us"] for leg in legs] == [2000, 1000, 3000, 4000]
    assert all(legs[leg]["missing"] == 0 for leg in legs)


def test_a_tier_that_never_drops_is_missing_not_absent() -> None:
    result = check_cascade(history(*cascade_rows(drop_l1=False)))
    assert not result.passed and result.violations == 1
    assert result.figures["legs"]["drop:l1"]["missing"] == 1
    assert result.examples[0]["missing_legs"] == ["drop:l1"]


def test_cascade_falls_back_on_the_write_completion() -> None:
    result = check_cascade(history(*cascade_rows(commit_event=False)))
    assert result.figures["commit_from_write_complete"] == 1
    # Events logged before the write answered (auth waits for the L1's acknowledgement) show as such.
    assert result.figures["legs"]["drop:l1"]["before_commit"] == 1


def test_a_missing_tab_receipt_is_reported_not_judged() -> None:
    rows = [r for r in cascade_rows() if r["f"] != "ws_recv"]
    result = check_cascade(history(*rows))
    assert result.passed and result.figures["legs"]["recv:tab"]["missing"] == 1


def test_both_reach_the_verdict_console_and_report() -> None:
    verdict = run_checks(history(*cascade_rows(drop_l1=False)))
    assert {"tier_staleness", "cascade"} <= {c.name for c in verdict.checks}
    assert "cascade" in verdict.failed
    text = render(verdict)
    assert "STALENESS BY TIER" in text and "CASCADE" in text
    assert "Tiers and invalidation cascade" in build_report(verdict, None)


def test_tiered_hits_count_as_hits() -> None:
    from analysis.checks import check_hit_ratio, check_latency  # noqa: PLC0415

    h = history(*tiered_reads(1))
    assert check_hit_ratio(h).figures["hits"] == 3 and check_hit_ratio(h).figures["misses"] == 1
    assert check_latency(h).figures["read_hit"]["count"] == 3
