"""Tests of the ``open_model_latency`` check (analysis/open_model.py) and its thresholds.

Histories are synthetic: a schedule of operations at a fixed rate served by a simulated closed-loop
client, with and without a stall, so the expected shape of every figure follows from the schedule;
and random durations whose exact percentiles numpy computes, to hold HdrHistogram to its precision.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hdrh.histogram import HdrHistogram

from analysis import check_open_model_latency, normalise, parse_thresholds, run_checks
from analysis.__main__ import main
from analysis.console import render
from analysis.open_model import (
    CLOSED_MODEL,
    GROUPS,
    MEASURES,
    SIGNIFICANT_FIGURES,
    Distribution,
    collect,
    figures,
    lowest_equivalent,
    merge,
)
from analysis.thresholds import ThresholdsError
from analysis.verdict import dumps
from tests.histories import MS, complete_run, history, row

US = 1_000
S = 1_000_000_000
#: HdrHistogram's stated precision for this many significant digits, relative.
RELATIVE = 10.0**-SIGNIFICANT_FIGURES
LEVELS = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99_9", 99.9), ("p99_99", 99.99), ("max", 100.0))


def scheduled(
    f: str, intended_ms: float, t0: float, t1: float, version: int = 0, **kw: Any
) -> dict[str, Any]:
    """A history row (see tests/histories.py) due at ``intended_ms``."""
    return {**row(f, t0, t1, version, **kw), "t_intended": round(intended_ms * MS)}


def closed_loop(
    n: int,
    interval_ms: float,
    service_ms: np.ndarray,
    stall: tuple[float, float] | None = None,
) -> pd.DataFrame:
    """One client on a fixed schedule that can run one operation at a time (a closed loop).

    Operation k is due at ``k * interval_ms``; it starts when due or, if the client is still busy,
    when the previous one completes, and takes ``service_ms[k]``. An operation that starts inside
    ``stall = (start_ms, end_ms)`` gets no answer until the stall ends.
    """
    rows = []
    free = 0.0
    for k in range(n):
        due = k * interval_ms
        start = max(due, free)
        end = start + service_ms[k]
        if stall is not None and stall[0] <= start < stall[1]:
            end = stall[1] + service_ms[k]
        rows.append(scheduled("read", due, start, end, 0, key=f"cs:e:{k % 50}", source="hit"))
        free = end
    return history(*rows)


def om(h: pd.DataFrame) -> dict[str, Any]:
    result = check_open_model_latency(h)
    assert result.passed and not result.skipped, result.reason
    assert result.violations == 0
    return result.figures


# --------------------------------------------------------------------------------------------------
# Coordinated omission: the positive control and its counterpart


def test_a_stall_shows_in_corrected_latency_only() -> None:
    rng = np.random.default_rng(3)
    service = rng.uniform(0.5, 1.5, 2000)  # ms, against one operation due every 10 ms
    stalled = om(closed_loop(2000, 10.0, service, stall=(5000.0, 6000.0)))["read_hit"]
    assert stalled["count"] == 2000
    # Only the one operation caught in the stall took long, 1 in 2000: the uncorrected tail misses it.
    assert stalled["uncorrected_p99_us"] <= 1_600
    assert stalled["uncorrected_max_us"] >= 990_000
    # About 100 operations were due during the 1 s stall and started late behind it, up to ~1 s late:
    # more than 1 % of all, so the corrected p99 is of the stall's order.
    assert stalled["corrected_p99_us"] >= 500_000
    assert stalled["corrected_max_us"] >= 990_000
    assert stalled["start_lag_p99_us"] >= 500_000
    assert 95 <= stalled["late_over_1ms"] <= 130
    assert stalled["late_over_1ms_ratio"] == pytest.approx(stalled["late_over_1ms"] / 2000)
    assert stalled["corrected_p99_us"] > 100 * stalled["uncorrected_p99_us"]


def test_without_a_stall_corrected_equals_uncorrected() -> None:
    rng = np.random.default_rng(3)
    service = rng.uniform(0.5, 1.5, 2000)
    calm = om(closed_loop(2000, 10.0, service))["read_hit"]
    # Every operation started when due, so both latencies are the same durations.
    for name, _ in LEVELS:
        assert calm[f"corrected_{name}_us"] == calm[f"uncorrected_{name}_us"], name
    assert calm["corrected_mean_us"] == calm["uncorrected_mean_us"]
    assert calm["start_lag_max_us"] == 0
    assert calm["late_over_1ms"] == 0
    assert 500 <= calm["uncorrected_p50_us"] <= 1_500


def test_rates_of_a_schedule_kept_and_of_one_fallen_behind() -> None:
    kept = om(closed_loop(1001, 10.0, np.full(1001, 1.0)))
    assert kept["scheduled"] == 1001
    assert kept["schedule_span_s"] == pytest.approx(10.0)
    assert kept["scheduled_per_s"] == pytest.approx(100.0)
    assert kept["achieved_per_s"] == pytest.approx(100.0)
    # Each operation takes 20 ms against one due every 10 ms: the client starts only half of them
    # on time, falls further behind, and achieves half the rate.
    behind = om(closed_loop(1001, 10.0, np.full(1001, 20.0)))
    assert behind["scheduled_per_s"] == pytest.approx(100.0)
    assert behind["achieved_per_s"] == pytest.approx(50.0)
    lag = behind["read_hit"]
    assert lag["start_lag_max_us"] == pytest.approx(10_000 * 1000, rel=RELATIVE)
    assert lag["uncorrected_max_us"] == pytest.approx(20_000, abs=1)


# --------------------------------------------------------------------------------------------------
# Percentiles against numpy's exact ones


def random_history(n: int, seed: int) -> tuple[pd.DataFrame, dict[str, dict[str, np.ndarray]]]:
    """Reads (hit and miss) and writes with random lags and service times; also their durations."""
    rng = np.random.default_rng(seed)
    intended = np.sort(rng.integers(0, 60 * S, n))
    lag = rng.exponential(200 * US, n).astype("int64")
    late = rng.random(n) < 0.01  # held up behind a slow operation: milliseconds to seconds late
    lag[late] += rng.integers(5 * MS, 2 * S, int(late.sum()))
    service = rng.lognormal(np.log(400 * US), 0.8, n).astype("int64")
    service[rng.random(n) < 0.002] += 800 * MS  # a slow tail above the histogram's exact range
    f = np.where(rng.random(n) < 0.2, "write", "read")
    source = np.where(f == "read", np.where(rng.random(n) < 0.7, "hit", "miss"), None)
    invoke = intended + lag
    complete = invoke + service
    frame = pd.DataFrame(
        {
            "process": rng.integers(0, 100, n),
            "node": "local",
            "f": f,
            "key": [f"cs:e:{k}" for k in rng.integers(0, 1000, n)],
            "status": "ok",
            "t_invoke": invoke,
            "t_complete": complete,
            "version": pd.array(rng.integers(0, 10, n), dtype="Int64"),
            "value": pd.array([None] * n, dtype="Int64"),
            "source": source,
            "t_intended": pd.array(intended, dtype="Int64"),
        }
    )
    groups = {
        "read_hit": (f == "read") & (source == "hit"),
        "read_miss": (f == "read") & (source == "miss"),
        "write": f == "write",
    }
    durations = {
        g: {
            "corrected": complete[m] - intended[m],
            "uncorrected": complete[m] - invoke[m],
            "start_lag": invoke[m] - intended[m],
        }
        for g, m in groups.items()
    }
    return normalise(frame), durations


def test_percentiles_agree_with_numpy_within_the_histogram_precision() -> None:
    h, durations = random_history(100_000, seed=5)
    found = om(h)
    for group in GROUPS:
        stats = found[group]
        assert stats["count"] == len(durations[group]["corrected"])
        for measure in MEASURES:
            us = durations[group][measure] / US
            for name, q in LEVELS:
                got = stats[f"{measure}_{name}_us"]
                # HdrHistogram answers with a sample at the rank, not an interpolation: its answer lies
                # between numpy's neighbouring order statistics, within the histogram's precision
                # and the rounding to whole microseconds.
                lo = float(np.percentile(us, q, method="lower"))
                hi = float(np.percentile(us, q, method="higher"))
                assert lo * (1 - RELATIVE) - 0.5 <= got <= hi * (1 + RELATIVE) + 0.5, (group, measure, name)
            mean = stats[f"{measure}_mean_us"]
            assert mean == pytest.approx(us.mean(), abs=0.5), (group, measure)


def test_values_below_32768_us_are_exact_to_the_microsecond() -> None:
    rng = np.random.default_rng(9)
    us = rng.integers(0, 32_768, 50_000)
    stats = Distribution.of(us * US).stats()
    ordered = np.sort(us)
    for name, q in LEVELS:
        # The rank HdrHistogram uses: the count at the percentile, rounded half up, at least 1.
        rank = max(int(q * len(us) / 100 + 0.5), 1)
        assert stats[name] == ordered[rank - 1], name
    assert stats["mean"] == pytest.approx(us.mean(), abs=1e-3)


def test_lowest_equivalent_matches_hdrhistogram() -> None:
    rng = np.random.default_rng(1)
    values = np.concatenate(
        [
            np.arange(0, 70_000),
            rng.integers(0, 1 << 40, 20_000),
            2 ** np.arange(1, 45) - 1,
            2 ** np.arange(1, 45),
        ]
    )
    reference = HdrHistogram(1, 1 << 46, SIGNIFICANT_FIGURES)
    expected = np.array([reference.get_lowest_equivalent_value(int(v)) for v in values])
    assert (lowest_equivalent(values) == expected).all()


def test_aggregated_recording_builds_the_same_histogram() -> None:
    rng = np.random.default_rng(2)
    ns = np.concatenate([rng.lognormal(np.log(1e6), 2.0, 20_000).astype("int64"), [0, 499, 500, 10**12]])
    aggregated = Distribution.of(ns).histogram()
    direct = HdrHistogram(1, 10**9 + 1, SIGNIFICANT_FIGURES)
    for value in ((ns + 500) // 1000).tolist():
        direct.record_value(value)
    levels = [50, 90, 99, 99.9, 99.99, 100]
    assert aggregated.get_percentile_to_value_dict(levels) == direct.get_percentile_to_value_dict(levels)
    assert aggregated.get_total_count() == direct.get_total_count() == len(ns)
    assert aggregated.get_max_value() == direct.get_max_value()
    assert aggregated.get_min_value() == direct.get_min_value()


def test_parts_merge_to_the_whole() -> None:
    h, _ = random_history(30_000, seed=8)
    whole = figures(collect(h))
    cuts = [0, 7_000, 7_001, 19_000, len(h)]
    parts = [collect(h.iloc[a:b]) for a, b in itertools.pairwise(cuts)]
    assert figures(merge(parts)) == whole
    values = np.arange(0, 5_000_000, 7)
    merged = Distribution.merge([Distribution.of(values[:100]), Distribution.of(values[100:])])
    single = Distribution.of(values)
    assert (merged.values == single.values).all() and (merged.counts == single.counts).all()
    assert merged.total_us == single.total_us


# --------------------------------------------------------------------------------------------------
# What is measured, and what is not


def test_closed_model_run_is_skipped_with_the_caveat() -> None:
    rows = [row("read", i * 10, i * 10 + 1, 0, source="hit") for i in range(10)]
    result = check_open_model_latency(history(*rows))  # t_intended absent: loads as nulls
    assert result.skipped and result.passed
    assert result.reason == CLOSED_MODEL
    assert "closed-model run" in CLOSED_MODEL and "coordinated omission" in CLOSED_MODEL
    with_nulls = [{**r, "t_intended": None} for r in rows]
    assert check_open_model_latency(history(*with_nulls)).reason == CLOSED_MODEL


def test_probes_groups_and_statuses() -> None:
    h = history(
        scheduled("read", 0, 0, 1, source="hit"),
        scheduled("read", 10, 12, 15, source="miss"),
        scheduled("write", 20, 20, 22, 1),
        scheduled("read", 30, 31, 5000, status="fail", source="hit"),  # scheduled, but not timed
        # Probes carry t_intended in every run; a probe 9 s "late" must change nothing.
        scheduled("probe", 40, 9040, 9041, 1, value=1, source="entry"),
        row("fill", 12, 13, 1),  # no t_intended
    )
    found = om(h)
    assert found["scheduled"] == 4
    assert [found[g]["count"] for g in GROUPS] == [1, 1, 1]
    assert found["read_hit"]["corrected_max_us"] == 1000
    miss = found["read_miss"]
    assert (miss["corrected_p50_us"], miss["uncorrected_p50_us"], miss["start_lag_p50_us"]) == (
        5000,
        3000,
        2000,
    )
    assert miss["late_over_1ms"] == 1
    assert found["write"]["corrected_max_us"] == 2000
    only_probes = history(scheduled("probe", 40, 9040, 9041, 1, value=1, source="entry"))
    assert check_open_model_latency(only_probes).reason == CLOSED_MODEL
    failed = history(scheduled("read", 0, 0, 1, status="fail", source="hit"))
    assert check_open_model_latency(failed).skipped


def test_an_early_start_is_counted_and_recorded_as_zero() -> None:
    found = om(
        history(scheduled("read", 10, 9.5, 11, source="hit"), scheduled("read", 20, 20, 21, source="hit"))
    )
    hit = found["read_hit"]
    assert hit["early"] == 1
    assert hit["start_lag_p50_us"] == 0  # -500 us cannot be recorded: it counts as 0
    assert hit["uncorrected_max_us"] == 1500
    assert hit["corrected_max_us"] == 1000


def test_sub_microsecond_durations_round_to_the_nearest_microsecond() -> None:
    base = {"process": 1, "node": "local", "f": "read", "key": "cs:e:1", "status": "ok", "version": 0}
    rows = [
        {**base, "t_intended": 0, "t_invoke": 0, "t_complete": 1_499, "value": None, "source": "hit"},
        {**base, "t_intended": 0, "t_invoke": 0, "t_complete": 1_500, "value": None, "source": "hit"},
    ]
    hit = om(history(*rows))["read_hit"]
    assert (hit["uncorrected_p50_us"], hit["uncorrected_max_us"]) == (1, 2)


# --------------------------------------------------------------------------------------------------
# In the verdict, the console, summary.json and thresholds


def test_in_the_verdict_and_the_console() -> None:
    h = closed_loop(500, 10.0, np.full(500, 1.0), stall=(1000.0, 2000.0))
    verdict = run_checks(h, complete_run(run_id="open"))
    check = verdict.check("open_model_latency")
    assert not check.skipped and verdict.passed
    json.loads(dumps(verdict.to_summary()))  # plain JSON
    text = render(verdict)
    assert "OPEN-MODEL LATENCY" in text
    assert "corrected, from t_intended" in text and "uncorrected, from t_invoke" in text
    assert "scheduled 100.0 ops/s" in text
    closed = render(run_checks(history(row("read", 0, 1, 0, source="hit")), {"run_id": "closed"}))
    assert "OPEN-MODEL LATENCY" not in closed
    assert CLOSED_MODEL in " ".join(closed.split())  # the reason is wrapped in the check table


def test_thresholds_on_corrected_percentiles() -> None:
    limits = parse_thresholds({"corrected_latency_p99_ms": {"read_hit": 50}}, "t.toml")
    assert limits.corrected_latency_ms == {"p99": {"read_hit": 50.0}}
    stalled = closed_loop(500, 10.0, np.full(500, 1.0), stall=(1000.0, 2000.0))
    verdict = run_checks(stalled, {"run_id": "open"}, thresholds=limits)
    (judged,) = verdict.thresholds
    assert judged.name == "threshold:corrected_latency_p99_ms.read_hit"
    assert judged.status == "FAIL" and judged.figure is not None and judged.figure >= 500
    assert judged.describe().startswith("FAIL threshold read_hit corrected p99 ")
    assert verdict.failed == ["threshold:corrected_latency_p99_ms.read_hit"]
    calm = run_checks(closed_loop(500, 10.0, np.full(500, 1.0)), {"run_id": "open"}, thresholds=limits)
    assert calm.thresholds[0].status == "PASS"
    assert calm.thresholds[0].figure == pytest.approx(1.0)
    closed = run_checks(history(row("read", 0, 1, 0, source="hit")), {"run_id": "c"}, thresholds=limits)
    assert closed.thresholds[0].skipped and closed.thresholds[0].reason == CLOSED_MODEL
    writes = parse_thresholds({"corrected_latency_p50_ms": {"write": 1}}, "t.toml")
    no_writes = run_checks(stalled, {"run_id": "open"}, thresholds=writes)
    assert no_writes.thresholds[0].reason == "no ok write operations with t_intended"


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"corrected_latency_p99_ms": {"fill": 3}}, ["unknown key", "corrected_latency_p99_ms", "fill"]),
        ({"corrected_latency_p99_ms": 3}, ["corrected_latency_p99_ms", "table"]),
        ({"corrected_latency_p90_ms": {"write": -1}}, ["corrected_latency_p90_ms.write", "milliseconds"]),
        ({"corrected_latency_p95_ms": {"write": 1}}, ["unknown key", "corrected_latency_p95_ms"]),
    ],
)
def test_bad_corrected_latency_thresholds(data: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(ThresholdsError) as err:
        parse_thresholds(data, "sla.toml")
    message = str(err.value)
    assert "\n" not in message and message.startswith("thresholds file sla.toml: ")
    for word in words:
        assert word in message


def test_cli_on_an_open_model_run(tmp_path: Path) -> None:
    h = closed_loop(300, 10.0, np.full(300, 1.0), stall=(1000.0, 2000.0))
    (tmp_path / "history").mkdir()
    h.to_parquet(tmp_path / "history" / "part-00000.parquet", index=False)
    (tmp_path / "run.json").write_text(
        json.dumps({"schema_version": 2, "run_id": "o", "history_complete": True})
    )
    sla = tmp_path / "sla.toml"
    sla.write_text("[corrected_latency_p99_ms]\nread_hit = 5000\n")
    assert main([str(tmp_path), "--thresholds", str(sla)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    entry = summary["checks"]["open_model_latency"]
    assert entry["skipped"] is False and entry["read_hit"]["count"] == 300
    assert summary["thresholds"]["threshold:corrected_latency_p99_ms.read_hit"]["passed"] is True


# --------------------------------------------------------------------------------------------------
# Speed


def test_a_million_scheduled_operations_take_seconds() -> None:
    h, _ = random_history(1_000_000, seed=4)
    started = time.perf_counter()
    result = check_open_model_latency(h)
    elapsed = time.perf_counter() - started
    assert sum(result.figures[g]["count"] for g in GROUPS) == 1_000_000
    assert elapsed < 10, f"open_model_latency took {elapsed:.1f} s on 1M operations"
