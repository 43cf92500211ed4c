"""Checks of a history too large for memory: key-local checks per key-hash partition, merged.

    from analysis.chunked import run_checks_chunked
    verdict = run_checks_chunked("RESULTS", n_chunks=4)

The history is read ``n_chunks`` times, one row group at a time, keeping each time only the rows
whose key hashes (CRC-32 of the key string) into the partition; rows without a key go to partition
0. Only one partition (plus one row group) is in memory at once. Two more passes read the keys (to
assign partitions) and the rows of the global checks below. The checks of one partition share its
derived arrays (:func:`analysis.checks.sharing`). Strings are read as dictionaries
(pandas categoricals, no Python string objects) and nullable integers straight into ``Int64``.

Per partition (exact: every row a check compares with another shares its key):
``stale_read``, ``future_read``, ``monotonic_read`` (per process and key), ``divergence``,
``hit_ratio``, ``counter``, ``stampede``, ``tx_atomicity``, ``lock_safety`` and ``eviction`` (the
``redis_stat`` rows, a few per second, are given to every partition so each sees the same eviction
window; its stale reads are key-local). Global, on subsets that fit in memory: ``ws_delivery`` (ok
writes and ``ws_*`` rows, plus the row that ends the history, which bounds open connections),
``invalidation_latency`` (``invalidate_batch`` rows), ``latency`` (the durations of every group are
kept from the partitions, one int64 per ok operation, and the figures computed once over all of
them, so they are exact) and ``history_complete`` (``run.json`` and the row count).
``open_model_latency`` is aggregated per partition (:func:`analysis.open_model.collect`: counts per
HdrHistogram bucket, sums, first and last stamps) and the aggregates merged, which is exact: its
figures equal the in-memory ones.

Merging partition results: ``violations`` and counts are summed; maxima take the maximum; ratios and
means are recomputed from the merged counts. Where the exact figure cannot be rebuilt from the
partitions' figures it is an approximation, listed in the check's ``merged_approx`` figure:
``stale_read`` age percentiles p50/p99 (the largest partition value, an upper bound; the max is
exact), ``stampede`` ``p99_loads_per_epoch`` (largest partition value), ``lock_safety``
``by_source`` ``span_s`` (largest partition span, a lower bound, hence rates an upper bound) and a
guarded write's mode when it has no ``source`` (looked up among the partition's acquisitions only).
``monotonic_read`` ``processes`` and ``stampede`` ``peak_db_loads_per_s`` are exact (kept values).
Examples are the first ones of the partitions, with ``row`` remapped to the row number in
:func:`analysis.load_history` order, not necessarily the worst overall.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from analysis import checks, contention, open_model
from analysis.cascade import check_cascade
from analysis.checks import CHECK_NAMES, LATENCY_GROUPS, NS_PER_S, Options, latency_stats
from analysis.load import (
    ADDED_IN_V2,
    CATEGORICAL,
    COLUMNS,
    InputError,
    frame_from_tables,
    history_files,
    load_run,
    present_columns,
    with_added_columns,
)
from analysis.tiers import check_tier_staleness
from analysis.verdict import CheckResult, Verdict

#: Checks run per partition and merged.
LOCAL_CHECKS = (
    "stale_read",
    "future_read",
    "monotonic_read",
    "divergence",
    "hit_ratio",
    "counter",
    "stampede",
    "tx_atomicity",
    "lock_safety",
    "eviction",
    "tier_staleness",
    "cascade",
)
#: Figures that are the same in every partition (options, or computed from broadcast rows).
SAME = {
    "tolerance_ns",
    "ttl_ms",
    "expect_single",
    "samples",
    "evictions",
    "eviction_window_s",
    "keyspace_hits",
    "keyspace_misses",
    "hit_ratio",
    "used_memory_max",
    "grace_s",
}
EVERY = 255  # the partition of rows that go to every partition
APPROX = {
    "stale_read": ["age_p50_us", "age_p99_us"],
    "stampede": ["p99_loads_per_epoch"],
    "lock_safety": ["by_source.span_s", "by_source.ops_per_s", "by_source.accepted_per_s"],
    "tier_staleness": ["tiers.age_p50_us", "tiers.age_p99_us"],
    "cascade": ["legs.p50_us", "legs.p99_us", "legs.recv:tab (partitions without ws_recv rows)"],
}


# --------------------------------------------------------------------------------------------------
# Reading


class _Source:
    """The history's row groups, each with its first row number and each row's partition."""

    def __init__(self, path: str | Path, n_chunks: int) -> None:
        self.files = history_files(path)
        if not self.files:
            raise InputError(f"{path}: no history/*.parquet found; pass a results directory written by a run")
        self.n_chunks = n_chunks
        self.parts: list[tuple[pq.ParquetFile, int, int]] = []  # (file, row group, first row)
        offset = 0
        for file in self.files:
            pf = pq.ParquetFile(file, read_dictionary=list(CATEGORICAL))
            missing = [c for c in COLUMNS if c not in pf.schema_arrow.names and c not in ADDED_IN_V2]
            if missing:
                raise InputError(
                    f"{file}: lacks column(s) {', '.join(missing)}; expected op history schema v2"
                )
            for i in range(pf.num_row_groups):
                self.parts.append((pf, i, offset))
                offset += pf.metadata.row_group(i).num_rows
        self.rows = offset
        self._buckets: list[np.ndarray] | None = None

    def buckets(self) -> list[np.ndarray]:
        """Per row group, each row's partition (computed once, one byte per row).

        ``redis_stat`` rows get :data:`EVERY`: they belong to every partition.
        """
        if self._buckets is None:
            self._buckets = []
            memo: dict[str, int] = {}
            for pf, i, _ in self.parts:
                table = pf.read_row_group(i, columns=["key", "f"])
                bucket = _bucket_of(table.column("key").combine_chunks(), self.n_chunks, memo)
                bucket[_f_in(table, ["redis_stat"])] = EVERY
                self._buckets.append(bucket)
        return self._buckets

    def select(
        self, columns: list[str], keep: Callable[[pa.Table, int], np.ndarray]
    ) -> tuple[pd.DataFrame, np.ndarray]:
        """The rows ``keep(row_group_table, index)`` selects, as a normalised frame, and row numbers."""
        tables, rows = [], []
        for index, (pf, i, first) in enumerate(self.parts):
            table = pf.read_row_group(i, columns=present_columns(pf.schema_arrow.names, columns))
            table = with_added_columns(table) if set(ADDED_IN_V2) & set(columns) else table
            mask = keep(table, index)
            tables.append(table.filter(pa.array(mask)))
            rows.append(first + np.flatnonzero(mask))
            del table
        numbers = np.concatenate(rows) if rows else np.zeros(0, dtype="int64")
        return _frame(tables or [pa.table({})]), numbers

    def partitions(self) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
        """Each partition in turn; ``redis_stat`` rows are in every one."""
        buckets = self.buckets()
        for b in range(self.n_chunks):

            def keep(table: pa.Table, index: int, b: int = b) -> np.ndarray:
                return (buckets[index] == b) | (buckets[index] == EVERY)

            yield self.select(list(COLUMNS), keep)


def _bucket_of(key: pa.Array, n_chunks: int, memo: dict[str, int] | None = None) -> np.ndarray:
    """Partition of each row: CRC-32 of its key modulo ``n_chunks`` (0 for a null key).

    ``memo`` keeps each key's partition across calls: every part file repeats most keys.
    """
    if not isinstance(key, pa.DictionaryArray):
        key = pc.dictionary_encode(key)
    memo = {} if memo is None else memo
    words = key.dictionary.to_pylist()
    per_word = np.empty(len(words), dtype="uint8")
    for i, word in enumerate(words):
        bucket = memo.get(word)
        if bucket is None:
            bucket = memo[word] = zlib.crc32(str(word).encode()) % n_chunks
        per_word[i] = bucket
    indices = key.indices.to_numpy(zero_copy_only=False)
    valid = key.is_valid().to_numpy(zero_copy_only=False)
    out = np.zeros(len(key), dtype="uint8")
    out[valid] = per_word[indices[valid].astype("int64")]
    return out


def _frame(tables: list[pa.Table]) -> pd.DataFrame:
    """Tables of the schema's columns (strings as dictionaries) as one normalised history frame.

    :func:`analysis.load.frame_from_tables` without unifying dictionaries (pandas does, building the
    categoricals); ``tables`` is emptied so each Arrow column is freed once converted.
    """
    return frame_from_tables(tables, unify=False)


# --------------------------------------------------------------------------------------------------
# Merging


def _merge_figures(values: list[Any], name: str) -> Any:
    present = [v for v in values if v is not None]
    if not present:
        return None
    first = present[0]
    if isinstance(first, dict):
        keys: list[str] = []
        for v in present:
            keys += [k for k in v if k not in keys]
        return {k: _merge_figures([v.get(k) for v in present], k) for k in keys}
    if name in SAME or isinstance(first, bool | str):
        return first
    if name.startswith(("max", "age_", "p50", "p99")) or name.endswith("_max") or name in ("span_s",):
        return max(present)
    if name.startswith(("mean", "ops_per_s", "accepted_per_s", "watch_abort_rate", "ratio", "stale_ratio")):
        return None  # recomputed from the merged counts
    return sum(present)


def _remap(examples: list[dict[str, Any]], rows: np.ndarray) -> list[dict[str, Any]]:
    out = []
    for original in examples:
        example = dict(original)
        if "row" in example:
            example["row"] = int(rows[example["row"]])
        missed = example.get("missed_write")
        if isinstance(missed, dict) and "row" in missed:
            example["missed_write"] = {**missed, "row": int(rows[missed["row"]])}
        out.append(example)
    return out


def _merge(name: str, parts: list[tuple[CheckResult, np.ndarray]], examples: int) -> CheckResult:
    ran = [(r, rows) for r, rows in parts if not r.skipped]
    if not ran:
        return parts[0][0]
    figures = _merge_figures([r.figures for r, _ in ran], name)
    violations = sum(r.violations for r, _ in ran)
    shown: list[dict[str, Any]] = []
    for r, rows in ran:
        shown += _remap(r.examples, rows)
    _recompute(name, figures)
    if name in APPROX:
        figures["merged_approx"] = APPROX[name]
    passed = all(r.passed for r, _ in ran)
    return CheckResult(name, passed=passed, violations=violations, figures=figures, examples=shown[:examples])


def _recompute(name: str, figures: dict[str, Any]) -> None:
    """Ratios and means from merged counts."""
    if name == "hit_ratio":
        total = figures["hits"] + figures["misses"]
        figures["ratio"] = figures["hits"] / total if total else None
    elif name == "tx_atomicity":
        transfers = figures["transfers_ok"] + figures["transfers_fail"] + figures["transfers_info"]
        figures["watch_abort_rate"] = figures["transfers_fail"] / transfers if transfers else None
    elif name == "stampede":
        loaded = figures["epochs_loaded"]
        figures["mean_loads_per_epoch"] = round(figures["db_loads"] / loaded, 3) if loaded else None
        for guard in (figures.get("by_guard") or {}).values():
            n = guard["epochs_loaded"]
            guard["mean_loads_per_epoch"] = round(guard["db_loads"] / n, 3) if n else None
    elif name == "tier_staleness":
        figures["tiers_seen"] = len(figures.get("tiers") or {})
        for tier in (figures.get("tiers") or {}).values():
            tier["stale_ratio"] = tier["stale"] / tier["reads"] if tier.get("reads") else None
    elif name == "cascade":
        figures["legs_count"] = len(figures.get("legs") or {})
    elif name == "lock_safety":
        for mode in (figures.get("by_source") or {}).values():
            span = mode.get("span_s")
            mode["ops_per_s"] = round(mode["guarded_writes"] / span, 3) if span else None
            mode["accepted_per_s"] = round(mode["accepted"] / span, 3) if span else None


# --------------------------------------------------------------------------------------------------
# The checks


def _local(name: str, h: pd.DataFrame, run: dict[str, Any] | None, o: Options) -> CheckResult:
    tol, n = o.tolerance_ns, o.examples
    if name == "stale_read":
        return checks.check_stale_read(h, tol, n)
    if name == "future_read":
        return checks.check_future_read(h, tol, n)
    if name == "monotonic_read":
        return checks.check_monotonic_read(h, n)
    if name == "divergence":
        return checks.check_divergence(h, n)
    if name == "hit_ratio":
        return checks.check_hit_ratio(h)
    if name == "counter":
        return contention.check_counter(h, tol, n)
    if name == "stampede":
        return contention.check_stampede(h, o.stampede_guard == "lock", n)
    if name == "tx_atomicity":
        return contention.check_tx_atomicity(h, n)
    if name == "lock_safety":
        return contention.check_lock_safety(h, o.lock_ttl_ns, tol, n)
    if name == "eviction":
        return contention.check_eviction(h, tol, n)
    if name == "tier_staleness":
        return check_tier_staleness(h, tol, o.ws_grace_ns, n)
    if name == "cascade":
        return check_cascade(h, n)
    raise ValueError(name)


def _durations(h: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per latency group, the durations (ns) of this frame's ok operations, as check_latency groups them."""
    f, status = h["f"], h["status"]
    ok = (status == "ok").to_numpy()
    duration = h["t_complete"].to_numpy() - h["t_invoke"].to_numpy()
    read = ok & (f == "read").to_numpy()
    masks = {
        "read_hit": read & (h["source"] == "hit").to_numpy(),
        "read_miss": read & (h["source"] == "miss").to_numpy(),
        "write": ok & (f == "write").to_numpy(),
        "fill": ok & (f == "fill").to_numpy(),
    }
    masks.update({g: ok & (f == g).to_numpy() for g in checks.CONTENTION_LATENCY_OPS})
    out = {g: duration[m] for g, m in masks.items()}
    recv = ok & (f == "ws_recv").to_numpy() & h["value"].notna().to_numpy()
    out["notification"] = (
        h["t_complete"].to_numpy()[recv] - h["value"].to_numpy(dtype="int64", na_value=0)[recv]
    )
    return out


def run_checks_chunked(
    path: str | Path,
    n_chunks: int = 4,
    options: Options | None = None,
    run: dict[str, Any] | None = None,
) -> Verdict:
    """Every check of :func:`analysis.run_checks` on the history under ``path``, by key partitions.

    ``run`` defaults to ``path``'s ``run.json``. Thresholds are not judged here. Violations equal
    those of the in-memory analysis; see the module docstring for which figures are merged how.
    """
    if n_chunks < 1 or n_chunks >= EVERY:
        raise ValueError("n_chunks must be in [1, 254]")
    if run is None:
        run = load_run(path)
    options = options or Options.resolve(run)
    n = options.examples
    source = _Source(path, n_chunks)

    results: dict[str, list[tuple[CheckResult, np.ndarray]]] = {name: [] for name in LOCAL_CHECKS}
    kept: dict[str, list[np.ndarray]] = {g: [] for g in LATENCY_GROUPS}
    readers: list[np.ndarray] = []
    scheduled: list[open_model.Sample] = []
    load_seconds: list[np.ndarray] = []
    for frame, rows in source.partitions():
        # Checks of one partition share its derived arrays (stale flags for stale_read and eviction).
        with checks.sharing(frame):
            for name in LOCAL_CHECKS:
                results[name].append((_local(name, frame, run, options), rows))
        for group, values in _durations(frame).items():
            kept[group].append(values)
        scheduled.append(open_model.collect(frame))
        read = (frame["f"] == "read") & (frame["status"] == "ok")
        read &= frame["key"].notna() & frame["version"].notna()
        readers.append(np.unique(frame.loc[read, "process"].to_numpy()))
        loads = (frame["f"] == "db_load") & (frame["status"] == "ok") & frame["key"].notna()
        load_seconds.append(frame.loc[loads, "t_invoke"].to_numpy() // NS_PER_S)
        del frame

    merged = {name: _merge(name, parts, n) for name, parts in results.items()}
    if not merged["monotonic_read"].skipped:
        merged["monotonic_read"].figures["processes"] = len(np.unique(np.concatenate(readers)))
    if not merged["stampede"].skipped:
        seconds = np.concatenate(load_seconds)
        merged["stampede"].figures["peak_db_loads_per_s"] = int(
            np.unique(seconds, return_counts=True)[1].max()
        )
    # stale_read's worst-first examples: keep the oldest across partitions.
    stale = merged["stale_read"]
    if stale.examples:
        pool = [e for parts in results["stale_read"] for e in _remap(parts[0].examples, parts[1])]
        stale.examples = sorted(pool, key=lambda e: -(e.get("age_us") or 0))[:n]

    groups = {g: latency_stats(np.concatenate(kept[g])) for g in LATENCY_GROUPS}
    latency = (
        CheckResult.skip("latency", "no ok operations to time", groups)
        if all(s["count"] == 0 for s in groups.values())
        else CheckResult("latency", passed=True, figures=groups)
    )

    ws_frame, ws_rows, ib_frame = _global_subsets(source)
    ws = checks.check_ws_delivery(ws_frame, options.ws_grace_ns, options.tolerance_ns, n)
    ws.examples = _remap(ws.examples, ws_rows)
    del ws_frame
    invalidation = contention.check_invalidation_latency(ib_frame)

    by_name: dict[str, CheckResult] = {
        **merged,
        "latency": latency,
        "open_model_latency": open_model.result(open_model.merge(scheduled)),
        "ws_delivery": ws,
        "invalidation_latency": invalidation,
        "history_complete": checks.check_history_complete(run, source.rows),
        "generator_cpu": checks.check_generator_cpu(run),
    }
    notes = [] if run is not None else [checks.NO_RUN_NOTE]
    busy = checks.generator_note(by_name["generator_cpu"])
    if busy is not None:
        notes.append(busy)
    summary_options = options.to_dict()
    summary_options["thresholds"] = None
    summary_options["chunks"] = n_chunks
    return Verdict(checks=[by_name[c] for c in CHECK_NAMES], run=run, options=summary_options, notes=notes)


def _f_in(table: pa.Table, names: list[str]) -> np.ndarray:
    """Whether each row's ``f`` is one of ``names`` (False for a null ``f``)."""
    return _in(table.column("f"), names)


def _in(column: pa.ChunkedArray, names: list[str]) -> np.ndarray:
    """Whether each value of a string column is one of ``names`` (False for null).

    A dictionary column is tested once per dictionary entry, not once per row.
    """
    out = np.zeros(len(column), dtype=bool)
    start = 0
    for chunk in column.chunks:
        if pa.types.is_dictionary(chunk.type):
            per_entry = pc.fill_null(pc.is_in(chunk.dictionary, value_set=pa.array(names)), False)
            indices = chunk.indices.fill_null(0).to_numpy(zero_copy_only=False)
            hit = per_entry.to_numpy(zero_copy_only=False)[indices]
            hit &= chunk.is_valid().to_numpy(zero_copy_only=False)
        else:
            hit = pc.fill_null(pc.is_in(chunk, value_set=pa.array(names)), False).to_numpy(
                zero_copy_only=False
            )
        out[start : start + len(chunk)] = hit
        start += len(chunk)
    return out


def _global_subsets(source: _Source) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
    """The rows of the checks run once over the whole history, read in one pass.

    Returns the ``ws_delivery`` subset (ok writes and WebSocket rows, plus the row with the latest
    ``t_complete``, which ends open connections) with its row numbers, and the ``invalidate_batch``
    rows.
    """
    latest, where = None, (0, 0)
    for index, (pf, i, _) in enumerate(source.parts):
        stats = pf.metadata.row_group(i).column(pf.schema_arrow.get_field_index("t_complete")).statistics
        if stats is not None and stats.has_min_max:
            value = int(stats.max)
        else:
            value = int(pc.max(pf.read_row_group(i, columns=["t_complete"]).column(0)).as_py())
        if latest is None or value > latest:
            latest, where = value, (index, value)
    ws_ops = ["ws_open", "ws_recv", "ws_close", "ui_read"]
    ws_keep: list[np.ndarray] = []

    def keep(table: pa.Table, index: int) -> np.ndarray:
        status_ok = _in(table.column("status"), ["ok"])
        mask = _f_in(table, ws_ops) | (_f_in(table, ["write"]) & status_ok)
        if index == where[0]:
            last = np.flatnonzero(table.column("t_complete").to_numpy() == where[1])
            mask[last[:1]] = True
        both = mask | _f_in(table, ["invalidate_batch"])
        ws_keep.append(mask[both])
        return both

    frame, rows = source.select(list(COLUMNS), keep)
    ws = np.concatenate(ws_keep) if ws_keep else np.zeros(0, dtype=bool)
    batches = (frame["f"] == "invalidate_batch").to_numpy()
    ws_frame = frame.loc[ws].reset_index(drop=True)
    return ws_frame, rows[ws], frame.loc[batches].reset_index(drop=True)


__all__ = ["LOCAL_CHECKS", "run_checks_chunked"]
