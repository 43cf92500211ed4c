"""Checks of a history too large for memory: key-local checks per key-hash partition, merged.

    from analysis.chunked import run_checks_chunked
    verdict = run_checks_chunked("RESULTS", n_chunks=4)

The history is read once, one row group at a time (:class:`_Source`): each row group's rows are
checked and appended to the spill file of the partition their key hashes into (a hash of the key's
bytes, per dictionary entry; rows without a key go to partition 0), with their row numbers. Then
the partitions are read back one at a time; only one partition (or, during the split, one row
group) is in memory at once. The checks of one partition share its derived arrays
(:func:`analysis.kernels.sharing`). Strings become categoricals (no Python string objects per row)
and nullable integers go straight into ``Int64``.

Per partition (exact: every row a check compares with another shares its key): ``stale_read``,
``future_read``, ``monotonic_read`` (per process and key), ``ws_delivery`` (the keyless
``ws_open``, ``ws_close`` and ``ws_gap`` rows go to every partition, and the end of the whole
history, which ends the connections still open, is given as ``Context.horizon_ns``),
``divergence``, ``hit_ratio``, ``counter``, ``stampede``, ``tx_atomicity``, ``lock_safety``,
``eviction`` (the ``redis_stat`` rows, a few per second, go to every partition so each sees the
same eviction window; its stale reads are key-local), ``tier_staleness`` and ``cascade``. Once, on
the rows it reads: ``invalidation_latency`` (``invalidate_batch`` rows). Aggregated per partition
and combined exactly: ``latency`` (each partition's durations sorted and spilled to a
memory-mapped file; the percentiles found over those runs equal numpy's over all of them) and
``open_model_latency`` (:func:`analysis.open_model.collect`: counts per HdrHistogram bucket, sums,
first and last stamps). ``history_complete`` comes from ``run.json`` and the row count.

Merging partition results: ``violations`` and counts are summed; maxima take the maximum; ratios and
means are recomputed from the merged counts. Where the exact figure cannot be rebuilt from the
partitions' figures it is an approximation, listed in the check's ``merged_approx`` figure:
``stale_read`` age percentiles p50/p99 (the largest partition value, an upper bound; the max is
exact), ``ws_delivery`` notification latency p50/p95/p99 (likewise), ``stampede``
``p99_loads_per_epoch`` (largest partition value), ``lock_safety`` ``by_source`` ``span_s``
(largest partition span, a lower bound, hence rates an upper bound) and a guarded write's mode
when it has no ``source`` (looked up among the partition's acquisitions only).
``monotonic_read`` ``processes`` and ``stampede`` ``peak_db_loads_per_s`` are exact (kept values).
Examples are the first ones of the partitions, with ``row`` remapped at once to the row number in
:func:`analysis.load_history` order, not necessarily the worst overall.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from analysis.kernels import Run, sharing
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
from analysis.options import Options
from analysis.outcomes import judge
from analysis.registry import CHECKS, Check, Chunking, Context
from analysis.runinfo import NO_RUN_NOTE, generator_note
from analysis.validate import check_copies, check_rows, check_schema, check_versions, locate
from analysis.verdict import CheckResult, Verdict
from cachestorm.history import SCHEMA

#: Checks run per partition and merged, in the registry's order.
LOCAL_CHECKS = tuple(c.name for c in CHECKS if c.chunking is Chunking.PARTITION)
#: Operations whose rows go to every partition.
BROADCAST = sorted({f for c in CHECKS for f in c.broadcast})
EVERY = 255  # the partition of rows that go to every partition


# --------------------------------------------------------------------------------------------------
# Reading


class _Source:
    """The history's row groups, each with its first row number, split once into key partitions.

    The split is one pass over the Parquet parts: each row group is read once, its rows checked
    (:func:`analysis.validate.check_rows`), and its rows appended to their partition's spill file
    (Arrow IPC, LZ4, in a temporary directory), with their row numbers; the rows the
    :attr:`Chunking.WHOLE` checks read go to one more spill file. Reading the parts once per
    partition instead cost one full Parquet decode per partition (16 of them at 100M rows: 9 of the
    11 minutes). Only one row group is in memory during the split, one partition afterwards.
    """

    def __init__(self, path: str | Path, n_chunks: int, whole: Sequence[Check] = ()) -> None:
        self.files = history_files(path)
        if not self.files:
            raise InputError(f"{path}: no history/*.parquet found; pass a results directory written by a run")
        self.n_chunks = n_chunks
        self.whole = list(whole)
        #: (file, row group, first row). Files are opened while read only: an open ParquetFile
        #: holds about 12 MB, 1.2 GB over the 100 parts of 100M rows.
        self.parts: list[tuple[Path, int, int]] = []
        check_copies(self.files)
        offset = 0
        counts = []
        #: The row group holding the history's latest ``t_complete`` (which ends the history, and
        #: with it the open WebSocket connections), and that time.
        self.latest = (0, 0)
        latest: int | None = None
        for file in self.files:
            with _open(file) as pf:
                missing = [c for c in COLUMNS if c not in pf.schema_arrow.names and c not in ADDED_IN_V2]
                if missing:
                    raise InputError(
                        f"{file}: lacks column(s) {', '.join(missing)}; expected op history schema v2"
                    )
                check_schema(pf.schema_arrow, file)
                in_file = 0
                t_complete = pf.schema_arrow.get_field_index("t_complete")
                for i in range(pf.num_row_groups):
                    stats = pf.metadata.row_group(i).column(t_complete).statistics
                    if stats is not None and stats.has_min_max:
                        value = int(stats.max)
                    else:
                        value = int(pc.max(pf.read_row_group(i, columns=["t_complete"]).column(0)).as_py())
                    if latest is None or value > latest:
                        latest, self.latest = value, (len(self.parts), value)
                    self.parts.append((file, i, offset))
                    rows = pf.metadata.row_group(i).num_rows
                    offset += rows
                    in_file += rows
            counts.append((file, in_file))
        self.rows = offset
        #: A row number of the history as its part file and row within it.
        self.where = locate(counts)
        self._spill: Path | None = None
        self._spilled = 0
        self.horizon_ns = latest
        self.sizes: list[int] = []

    def split(self) -> None:
        """The one pass: every row checked and written to its partition's spill file."""
        if self._spill is not None:
            return
        self._spill = Path(tempfile.mkdtemp(prefix="cachestorm-chunks-"))
        writers: list[pa.ipc.RecordBatchStreamWriter | None] = [None] * (self.n_chunks + 1)
        sinks: list[Any] = [None] * (self.n_chunks + 1)
        self.sizes = [0] * (self.n_chunks + 1)
        options = pa.ipc.IpcWriteOptions(compression="lz4")
        latest = self.latest
        file_rows: dict[Path, int] = {}
        try:
            pf: pq.ParquetFile | None = None
            for index, (file, i, first) in enumerate(self.parts):
                if pf is None or i == 0:
                    if pf is not None:
                        pf.close()
                    pf = _open(file)
                table = pf.read_row_group(i, columns=present_columns(pf.schema_arrow.names, list(COLUMNS)))
                in_file = file_rows.get(file, 0)
                check_rows(table, file, in_file)
                file_rows[file] = in_file + table.num_rows
                table = with_added_columns(table).select(list(COLUMNS))
                bucket = _bucket_of(table.column("key").combine_chunks(), self.n_chunks)
                bucket[_f_in(table, BROADCAST)] = EVERY
                table = table.append_column(ROW, pa.array(first + np.arange(table.num_rows, dtype="int64")))
                selections = _selections(bucket, self.n_chunks)
                tables = [table.take(pa.array(picked)) for picked in selections]
                if self.whole:
                    masks = _whole_masks(table, self.whole, latest if index == latest[0] else None)
                    picked = np.flatnonzero(np.logical_or.reduce(masks))
                    part = table.take(pa.array(picked))
                    for j, mask in enumerate(masks):
                        part = part.append_column(f"{WHOLE}{j}", pa.array(mask[picked]))
                    selections.append(picked)
                    tables.append(part)
                for b, (picked, taken) in enumerate(zip(selections, tables, strict=True)):
                    if not len(picked):
                        continue
                    # Keys as plain strings: each partition's keys are then encoded once, as one
                    # dictionary, instead of carrying every row group's whole key dictionary along.
                    # Cast after the take: taking dictionary indices is cheaper than taking strings.
                    key = pc.cast(taken.column("key"), pa.string())
                    part = taken.set_column(COLUMNS.index("key"), "key", key)
                    if writers[b] is None:
                        sinks[b] = pa.OSFile(str(self._spill / f"{b}.arrows"), "wb")
                        writers[b] = pa.ipc.new_stream(sinks[b], part.schema, options=options)
                    writer = writers[b]
                    assert writer is not None
                    writer.write_table(part)
                    self.sizes[b] += len(picked)
                del table, tables
            if pf is not None:
                pf.close()
            # Arrow's allocator keeps what it freed unless asked; the partitions come next.
            pa.default_memory_pool().release_unused()
        except BaseException:
            self.close()
            raise
        finally:
            for writer, sink in zip(writers, sinks, strict=True):
                if writer is not None:
                    writer.close()
                    sink.close()

    def read(self, b: int) -> tuple[pd.DataFrame, np.ndarray, list[np.ndarray]]:
        """Spilled partition ``b`` (``n_chunks``: the rows of the whole checks) as a frame, the
        history row number of each of its rows and, for the whole checks' file, which rows each
        of them reads; its spill file is removed once read."""
        assert self._spill is not None
        spilled = self._spill / f"{b}.arrows"
        if not spilled.exists():
            masks = [np.zeros(0, dtype=bool) for _ in self.whole] if b == self.n_chunks else []
            return _frame([_empty()]), np.zeros(0, dtype="int64"), masks
        with pa.memory_map(str(spilled)) as source:
            table = pa.ipc.open_stream(source).read_all()
        spilled.unlink()
        rows = table.column(ROW).to_numpy()
        extra = [name for name in table.column_names if name.startswith(WHOLE)]
        masks = [table.column(name).to_numpy() for name in extra]
        table = table.drop_columns([ROW, *extra])
        return _frame([table]), rows, masks

    def partitions(self) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
        """Each partition in turn; :data:`BROADCAST` rows are in every one."""
        self.split()
        for b in range(self.n_chunks):
            frame, rows, _ = self.read(b)
            yield frame, rows

    def whole_subsets(self) -> list[tuple[pd.DataFrame, np.ndarray]]:
        """Per :attr:`Chunking.WHOLE` check, the rows it reads (:func:`_whole_masks`), with their
        row numbers."""
        self.split()
        frame, rows, masks = self.read(self.n_chunks)
        out = []
        for mask in masks:
            out.append((frame.loc[mask].reset_index(drop=True), rows[mask]))
        return out

    def spilled(self, collected: Any) -> Any:
        """``collected`` with the values of each :class:`analysis.kernels.Run` in it (at the top or
        in a dict) moved to a spill file: one int64 per operation is not kept in memory."""
        assert self._spill is not None
        if isinstance(collected, Run):
            self._spilled += 1
            return collected.spill(self._spill / f"run-{self._spilled}.npy")
        if isinstance(collected, dict):
            return {k: self.spilled(v) for k, v in collected.items()}
        return collected

    def close(self) -> None:
        """Removes the spill files."""
        if self._spill is not None:
            shutil.rmtree(self._spill, ignore_errors=True)


def _selections(bucket: np.ndarray, n_chunks: int) -> list[np.ndarray]:
    """Per partition, its rows' indices in row order, those of :data:`EVERY` included.

    One stable sort by partition, not one pass over every row per partition.
    """
    order = np.argsort(bucket, kind="stable")
    bounds = np.searchsorted(bucket[order], np.arange(n_chunks + 1), side="left")
    every = order[bounds[n_chunks] :]
    every = every[bucket[every] == EVERY]
    out = []
    for b in range(n_chunks):
        mine = order[bounds[b] : bounds[b + 1]]
        out.append(np.sort(np.concatenate([mine, every])) if len(every) else mine)
    return out


def _open(file: Path) -> pq.ParquetFile:
    return pq.ParquetFile(file, read_dictionary=list(CATEGORICAL))


ROW = "__row"
WHOLE = "__whole"


def _empty() -> pa.Table:
    return pa.table({c: pa.array([], SCHEMA.field(c).type) for c in COLUMNS})


def _bucket_of(key: pa.Array, n_chunks: int) -> np.ndarray:
    """Partition of each row: a hash of its key string modulo ``n_chunks`` (0 for a null key).

    The hash (:func:`_hashes`) is computed once per dictionary entry, with numpy, not per row.
    """
    if not isinstance(key, pa.DictionaryArray):
        key = pc.dictionary_encode(key)
    per_word = (_hashes(key.dictionary) % np.uint64(n_chunks)).astype("uint8")
    indices = key.indices.to_numpy(zero_copy_only=False)
    valid = key.is_valid().to_numpy(zero_copy_only=False)
    out = np.zeros(len(key), dtype="uint8")
    out[valid] = per_word[indices[valid].astype("int64")]
    return out


_POWERS = np.zeros(0, dtype="uint64")


def _hashes(words: pa.Array) -> np.ndarray:
    """A 64-bit hash of each string, the same for the same bytes in any row group, computed from
    Arrow's buffers: the bytes weighted by powers of an odd constant (wrapping), summed per string,
    then mixed (splitmix64's finaliser) so that the low bits are well spread."""
    global _POWERS
    words = pc.cast(words, pa.large_string())
    n = len(words)
    if n == 0:
        return np.zeros(0, dtype="uint64")
    _, offsets_buf, data_buf = words.buffers()
    offsets = np.frombuffer(offsets_buf, dtype="int64")[words.offset : words.offset + n + 1]
    data = np.frombuffer(data_buf, dtype="uint8") if data_buf is not None else np.zeros(0, "uint8")
    start, stop = int(offsets[0]), int(offsets[-1])
    lengths = np.diff(offsets)
    longest = int(lengths.max())
    if len(_POWERS) < longest:
        with np.errstate(over="ignore"):
            _POWERS = np.cumprod(np.full(max(longest, 64), 0x100000001B3, dtype="uint64"))
    position = np.arange(start, stop, dtype="int64") - np.repeat(offsets[:-1], lengths)
    with np.errstate(over="ignore"):
        weighted = (data[start:stop].astype("uint64") + np.uint64(1)) * _POWERS[position]
        nonempty = lengths > 0
        h = np.zeros(n, dtype="uint64")
        if stop > start:
            h[nonempty] = np.add.reduceat(weighted, (offsets[:-1] - start)[nonempty])
        h ^= lengths.astype("uint64")
        h ^= h >> np.uint64(30)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(27)
        h *= np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(31)
    return h


def _frame(tables: list[pa.Table]) -> pd.DataFrame:
    """Tables of the schema's columns (strings as dictionaries) as one normalised history frame.

    :func:`analysis.load.frame_from_tables` without unifying dictionaries (pandas does, building the
    categoricals); ``tables`` is emptied so each Arrow column is freed once converted.
    """
    return frame_from_tables(tables, unify=False)


# --------------------------------------------------------------------------------------------------
# Merging


def _merge_figures(values: list[Any], name: str, same: tuple[str, ...]) -> Any:
    present = [v for v in values if v is not None]
    if not present:
        return None
    first = present[0]
    if isinstance(first, dict):
        keys: list[str] = []
        for v in present:
            keys += [k for k in v if k not in keys]
        return {k: _merge_figures([v.get(k) for v in present], k, same) for k in keys}
    if name in same or isinstance(first, bool | str):
        return first
    if name.startswith(("max", "age_", "p99", "latency_p")) or name.endswith("_max") or name in ("span_s",):
        return max(present)
    if name.startswith(("mean", "ops_per_s", "accepted_per_s", "watch_abort_rate", "ratio")):
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


def _merge(check: Check, parts: list[CheckResult], kept: list[Any], examples: int) -> CheckResult:
    """One check's partition results (their examples' rows already history rows) as one: see the
    module docstring for how figures merge."""
    name = check.name
    ran = [r for r in parts if not r.skipped]
    if not ran:
        return parts[0]
    figures = _merge_figures([r.figures for r in ran], name, check.same)
    violations = sum(r.violations for r in ran)
    shown: list[dict[str, Any]] = []
    for r in ran:
        shown += r.examples
    if check.recompute is not None:
        check.recompute(figures)
    if check.approx:
        figures["merged_approx"] = list(check.approx)
    passed = all(r.passed for r in ran)
    if check.worst_first is not None:
        shown = sorted(shown, key=check.worst_first)
    shown = shown[:examples]
    merged = CheckResult(name, passed=passed, violations=violations, figures=figures, examples=shown)
    if check.finish is not None:
        check.finish(merged, kept)
    return merged


# --------------------------------------------------------------------------------------------------
# The checks


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
    whole = [c for c in CHECKS if c.chunking is Chunking.WHOLE]
    source = _Source(path, n_chunks, whole)
    try:
        by_name = _judge_parts(source, run, options)
    finally:
        source.close()
    context = Context(None, run, options, source.rows)
    for check in CHECKS:
        if check.chunking is Chunking.RUN:
            by_name[check.name] = check.call(context)
    notes = [] if run is not None else [NO_RUN_NOTE]
    busy = generator_note(by_name["generator_cpu"])
    if busy is not None:
        notes.append(busy)
    summary_options = options.to_dict()
    summary_options["thresholds"] = None
    summary_options["chunks"] = n_chunks
    checks = judge([by_name[c.name] for c in CHECKS], run)
    return Verdict(checks=checks, run=run, options=summary_options, notes=notes)


def _judge_parts(source: _Source, run: dict[str, Any] | None, options: Options) -> dict[str, CheckResult]:
    """The partition, aggregate and whole checks' results, by name.

    Of a partition, only its checks' results (their few examples' rows made history rows at once)
    and what :attr:`Check.keep` and :attr:`Check.collect` ask for outlive it: nothing per row.
    """
    n = options.examples
    local = [c for c in CHECKS if c.chunking is Chunking.PARTITION]
    aggregates = [c for c in CHECKS if c.chunking is Chunking.AGGREGATE]
    results: dict[str, list[CheckResult]] = {c.name: [] for c in local}
    kept: dict[str, list[Any]] = {c.name: [] for c in local}
    collected: dict[str, list[Any]] = {c.name: [] for c in aggregates}
    for frame, rows in source.partitions():
        # Every write of a key is in its partition, so the contract is checked whole, as in memory.
        check_versions(frame, options.tolerance_ns, _placed(source, rows))
        # Checks of one partition share its derived arrays (stale flags for stale_read and eviction).
        with sharing(frame):
            context = Context(frame, run, options, len(frame), horizon_ns=source.horizon_ns)
            for check in local:
                result = check.call(context)
                result.examples = _remap(result.examples, rows)
                results[check.name].append(result)
        for check in local:
            if check.keep is not None:
                kept[check.name].append(check.keep(frame))
        for check in aggregates:
            assert check.collect is not None
            collected[check.name].append(source.spilled(check.collect(frame)))
        del frame, rows

    by_name: dict[str, CheckResult] = {c.name: _merge(c, results[c.name], kept[c.name], n) for c in local}
    for check in aggregates:
        assert check.combine is not None
        by_name[check.name] = check.combine(collected[check.name])
    whole = source.whole
    for check, (frame, rows) in zip(whole, source.whole_subsets(), strict=True):
        result = check.call(Context(frame, run, options, len(frame)))
        result.examples = _remap(result.examples, rows)
        by_name[check.name] = result
        del frame
    return by_name


def _placed(source: _Source, rows: np.ndarray) -> Callable[[int], str]:
    """A partition's row number as its part file and row within it."""
    return lambda row: source.where(int(rows[row]))


def _f_in(table: pa.Table, names: list[str]) -> np.ndarray:
    """Whether each row's ``f`` is one of ``names`` (False for a null ``f``)."""
    return _in(table.column("f"), names)


def _in(column: pa.ChunkedArray, names: list[str]) -> np.ndarray:
    """Whether each value of a string column is one of ``names`` (False for null).

    A dictionary column is tested once per dictionary entry, not once per row.
    """
    out = np.zeros(len(column), dtype=bool)
    if not names:
        return out
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


def _whole_masks(table: pa.Table, whole: Sequence[Check], latest: tuple[int, int] | None) -> list[np.ndarray]:
    """Per check run once over the whole history, the rows of ``table`` it reads.

    Each check gets the rows of its :attr:`Check.reads` (ok ones only for :attr:`Check.ok_only`),
    plus, when ``latest`` is (this row group's index, the latest ``t_complete``), the row that ends
    the history (and with it the open WebSocket connections).
    """
    status_ok = _in(table.column("status"), ["ok"])
    masks = []
    for check in whole:
        anyhow = [f for f in check.reads if f not in check.ok_only]
        mask = _f_in(table, anyhow) | (_f_in(table, list(check.ok_only)) & status_ok)
        masks.append(mask)
    if latest is not None:
        last = np.flatnonzero(table.column("t_complete").to_numpy() == latest[1])
        for mask in masks:
            mask[last[:1]] = True
    return masks


__all__ = ["LOCAL_CHECKS", "run_checks_chunked"]
