"""Chunk-by-key analysis (analysis/chunked.py) gives the in-memory verdict."""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
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
    # The synthetic run is closed-model: no t_intended, so both skip the corrected latency.
    assert chunked.check("open_model_latency").skipped and in_memory.check("open_model_latency").skipped
    # Planted anomalies: 40 of each kind, found the same way.
    assert chunked.check("stale_read").violations == 40
    # Latency figures are recomputed from kept durations, exactly, in every group.
    for group, stats in in_memory.check("latency").figures.items():
        assert chunked.check("latency").figures[group] == stats, group


@pytest.fixture(scope="module")
def open_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic run made open-model: every read and write given a ``t_intended`` before its start.

    Most start within a millisecond of being due; a few are held up for up to two seconds, as behind a
    stall, so the corrected tail reaches beyond the histogram's exact range.
    """
    out = tmp_path_factory.mktemp("chunked-open") / "run"
    synthesize(out, ops=60_000, keys=2_000, seed=5, anomalies=5)
    rng = np.random.default_rng(5)
    for part in sorted((out / "history").glob("part-*.parquet")):
        table = pq.read_table(part)
        f = table.column("f").cast(pa.string())
        scheduled = pc.fill_null(pc.is_in(f, value_set=pa.array(["read", "write"])), False).to_numpy(
            zero_copy_only=False
        )
        lag = rng.integers(0, 1_000_000, table.num_rows)
        held = rng.random(table.num_rows) < 0.005
        lag[held] += rng.integers(0, 2_000_000_000, int(held.sum()))
        intended = table.column("t_invoke").to_numpy() - lag
        column = pa.array(intended, pa.int64(), mask=~scheduled)
        table = table.set_column(table.schema.get_field_index("t_intended"), "t_intended", column)
        pq.write_table(table, part)
    return out


def test_chunked_open_model_latency_equals_in_memory(open_results: Path) -> None:
    expected = run_checks(load_history(open_results), load_run(open_results)).check("open_model_latency")
    assert not expected.skipped
    assert expected.figures["read_hit"]["count"] > 10_000
    assert expected.figures["read_hit"]["corrected_max_us"] > 1_000_000
    for n_chunks in (1, 3):
        chunked = run_checks_chunked(open_results, n_chunks).check("open_model_latency")
        assert chunked.figures == expected.figures, n_chunks
        assert (chunked.passed, chunked.skipped, chunked.violations) == (True, False, 0)


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
    from analysis.chunked import BROADCAST, _Source  # noqa: PLC0415

    assert set(BROADCAST) == {"redis_stat", "ws_open", "ws_close", "ws_gap"}
    source = _Source(results, 4)
    try:
        sizes = [len(frame) for frame, _ in source.partitions()]
    finally:
        source.close()
    everywhere = int(load_history(results)["f"].isin(BROADCAST).sum())
    assert everywhere > 200
    assert sum(sizes) == source.rows + 3 * everywhere  # broadcast rows go to every partition
    assert max(sizes) < 0.5 * source.rows


def test_bad_chunk_count(results: Path) -> None:
    with pytest.raises(ValueError):
        run_checks_chunked(results, 0)


def test_latency_of_sorted_runs_equals_the_whole() -> None:
    """The partitions' sorted runs give numpy's percentiles of the concatenation, digit for digit."""
    from analysis.kernels import Run, latency_stats, latency_stats_of_runs  # noqa: PLC0415

    rng = np.random.default_rng(3)
    for n, splits in ((1, 1), (2, 2), (7, 3), (10_001, 4), (250_000, 9)):
        values = (rng.lognormal(13, 1.5, n)).astype("int64")
        values[: n // 10] = values[0]  # ties
        rng.shuffle(values)
        cuts = np.sort(rng.integers(0, n + 1, splits - 1))
        runs = [Run.of(part) for part in np.split(values, cuts)]
        assert latency_stats_of_runs(runs) == latency_stats(values), (n, splits)
    assert latency_stats_of_runs([Run.of(np.zeros(0, dtype="int64"))])["p50"] is None


def test_restarted_versions_are_refused_in_memory_and_in_chunks(tmp_path: Path) -> None:
    """The generator defect of issue 11: one key's versions start again from 1 (..., 3, 1, ...).
    Refused before anything is judged, naming the key and the two rows, in both modes."""
    from analysis.load import InputError, load_results  # noqa: PLC0415

    synthesize(tmp_path, ops=30_000, keys=200, seed=2, anomalies=0)
    parts = sorted((tmp_path / "history").glob("part-*.parquet"))
    table = pq.read_table(parts[-1])
    f = table.column("f").to_numpy(zero_copy_only=False)
    status = table.column("status").to_numpy(zero_copy_only=False)
    version = table.column("version").to_numpy(zero_copy_only=False)
    third = int(np.flatnonzero((f == "write") & (status == "ok") & (version == 3))[0])
    key = table.column("key")[third].as_py()
    version = table.column("version").to_pylist()
    version[third] = 1
    table = table.set_column(
        table.schema.get_field_index("version"), "version", pa.array(version, pa.int64())
    )
    pq.write_table(table, parts[-1])
    spills = set(Path(tempfile.gettempdir()).glob("cachestorm-chunks-*"))
    for refuse in (lambda: load_results(tmp_path), lambda: run_checks_chunked(tmp_path, 3)):
        with pytest.raises(InputError, match="both committed version 1") as refused:
            refuse()
        line = str(refused.value)
        assert f"key {key!r}" in line and "\n" not in line
        assert len(re.findall(r"part-\d+\.parquet row \d+", line)) == 2, line
    # The refused chunked run removed its spill files.
    assert set(Path(tempfile.gettempdir()).glob("cachestorm-chunks-*")) <= spills
