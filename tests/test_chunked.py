"""Chunk-by-key analysis (analysis/chunked.py) gives the in-memory verdict."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from analysis import CHECK_NAMES, load_history, load_run, run_checks
from analysis.chunked import run_checks_chunked

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.synthetic import synthesize  # noqa: E402

#: Figures whose merge is exact (sums of disjoint partitions, maxima, recomputed ratios).
EXACT = {
    "stale_read": ["reads_checked", "stale", "age_max_us", "by_source"],
    "future_read": ["reads_checked", "future", "negative", "writes_considered"],
    "monotonic_read": ["reads_checked", "regressions", "processes", "max_regression"],
    "divergence": ["keys_swept", "cached_entries", "tombstones", "absent", "divergent", "max_gap"],
    "hit_ratio": ["reads", "hits", "misses", "ratio"],
    "counter": [
        "reads_checked",
        "counters",
        "below_lower_bound",
        "lost_updates",
        "max_shortfall",
        "by_source",
    ],
    "stampede": ["epochs", "epochs_loaded", "db_loads", "max_loads_per_epoch", "peak_db_loads_per_s"],
    "tx_atomicity": ["reads", "groups", "transfers_ok", "transfers_fail", "nonzero_sums", "max_abs_sum"],
    "lock_safety": ["acquisitions_ok", "intervals", "overlaps", "stale_token_accepts"],
    "ws_delivery": ["expected", "missing", "received", "duplicates", "out_of_order"],
    "eviction": ["samples", "reads_checked", "stale_reads", "stale_during_eviction"],
    "invalidation_latency": ["count", "p95_ms"],
    "history_complete": ["rows_loaded", "rows_reported"],
}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("chunked") / "run"
    synthesize(out, ops=200_000, keys=5_000, seed=11, anomalies=40)
    return out


@pytest.fixture(scope="module")
def in_memory(results: Path):
    return run_checks(load_history(results), load_run(results))


@pytest.mark.parametrize("n_chunks", [1, 4])
def test_chunked_verdict_equals_in_memory(results: Path, in_memory, n_chunks: int) -> None:
    chunked = run_checks_chunked(results, n_chunks)
    assert [c.name for c in chunked.checks] == list(CHECK_NAMES)
    assert chunked.failed == in_memory.failed
    for name in CHECK_NAMES:
        mine, theirs = chunked.check(name), in_memory.check(name)
        assert (mine.violations, mine.passed, mine.skipped) == (
            theirs.violations,
            theirs.passed,
            theirs.skipped,
        ), name
        for figure in EXACT.get(name, []):
            assert mine.figures[figure] == theirs.figures[figure], (name, figure)
    # Planted anomalies: 40 of each kind, found the same way.
    assert chunked.check("stale_read").violations == 40
    # Latency figures are recomputed from kept durations: exact for every group but the notification
    # one, where load_history passes commit nanoseconds through float64.
    for group, stats in in_memory.check("latency").figures.items():
        if group != "notification":
            assert chunked.check("latency").figures[group] == stats, group


def test_examples_point_at_history_rows(results: Path, in_memory) -> None:
    history = load_history(results)
    chunked = run_checks_chunked(results, 4)
    for name in ("stale_read", "counter", "lock_safety", "ws_delivery", "divergence"):
        examples = chunked.check(name).examples
        assert examples, name
        for example in examples:
            row = history.iloc[example["row"]]
            assert (row["f"], row["process"], row["t_invoke"]) == (
                example["f"],
                example["process"],
                example["t_invoke"],
            ), name


def test_partitions_split_the_rows(results: Path) -> None:
    from analysis.chunked import _Source  # noqa: PLC0415

    source = _Source(results, 4)
    sizes = [len(frame) for frame, _ in source.partitions()]
    stats = int((load_history(results)["f"] == "redis_stat").sum())
    assert sum(sizes) == source.rows + 3 * stats  # redis_stat rows go to every partition
    assert max(sizes) < 0.5 * source.rows


def test_bad_chunk_count(results: Path) -> None:
    with pytest.raises(ValueError):
        run_checks_chunked(results, 0)
