"""Shared kernels: what several checks (and the report and the nines) derive from a history.

Compact frames of the rows of one operation, the ok writes with their running maximum, which reads
are stale, which writes a stale read missed, durations per latency group, the epochs of a stampede,
the worst examples as JSON: each is defined here once and used by every module that needs it. Within
a :func:`sharing` block the expensive ones are computed once per history.

The names with a leading underscore are the analysis package's own, not its public API.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.arrays import _group_cummax, _group_order, _max_before
from analysis.load import COLUMNS, normalise
from analysis.ops import (
    DB_LOAD,
    HIT,
    INFO,
    INVALIDATE,
    LATENCY_GROUPS,
    NOTIFICATION,
    NS_PER_US,
    OK,
    READ,
    READ_GROUPS,
    TIERED_HIT,
)
from analysis.verdict import jsonable

INT64_MIN = np.iinfo("int64").min


# --------------------------------------------------------------------------------------------------
# Shared work
#
# Several checks start from the same derived arrays (the ok reads, the ok writes, which reads are
# stale). Within ``with sharing(history):`` (``run_checks`` opens one), checks given that very frame
# compute each of them once; outside such a block, or given another frame, every check computes
# everything itself, so each stays a pure function callable on its own. The block holds one memo,
# dropped when it ends; the frame must not be modified inside it. A memoised frame is handed out as
# a shallow copy (copy-on-write: changing it leaves the memo alone) and arrays read-only.

_SHARED: ContextVar[tuple[pd.DataFrame, dict[Hashable, Any]] | None] = ContextVar(
    "analysis_shared_work", default=None
)


@contextmanager
def sharing(history: pd.DataFrame) -> Iterator[pd.DataFrame]:
    """A block in which the checks share derived arrays of ``history``; yields the normalised frame.

    Pass the yielded frame to the checks: the memo is keyed on that object.
    """
    frame = normalise(history)
    token = _SHARED.set((frame, {}))
    try:
        yield frame
    finally:
        _SHARED.reset(token)


def _shared(history: pd.DataFrame, key: Hashable, compute: Callable[[], Any]) -> Any:
    """``compute()``, or its memoised result when ``history`` is the frame of the current block."""
    scope = _SHARED.get()
    if scope is None or scope[0] is not history:
        return compute()
    memo = scope[1]
    if key not in memo:
        memo[key] = _frozen(compute())
    return _handed_out(memo[key])


def _frozen(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        value.flags.writeable = False
    elif isinstance(value, tuple):
        for item in value:
            _frozen(item)
    return value


def _handed_out(value: Any) -> Any:
    if isinstance(value, pd.DataFrame):
        return value.copy(deep=False)
    if isinstance(value, tuple):
        return tuple(_handed_out(item) for item in value)
    return value


# --------------------------------------------------------------------------------------------------
# Rows of one operation


def _codes(column: pd.Series) -> np.ndarray:
    """A categorical column's integer codes (-1 for null), as a read-only view: no copy."""
    return np.asarray(column.array.codes)


def _equals(column: pd.Series, value: str) -> np.ndarray:
    """``column == value`` for a categorical column, compared on its integer codes."""
    codes = _codes(column)
    code = int(column.cat.categories.get_indexer([value])[0])
    return codes == code if code >= 0 else np.zeros(len(codes), dtype=bool)


def _hits(column: pd.Series) -> np.ndarray:
    """Reads a cache served: ``hit``, or ``hit:<tier>`` from a target with several tiers."""
    hit = [i for i, c in enumerate(column.cat.categories) if c == HIT or str(c).startswith(TIERED_HIT)]
    return np.isin(_codes(column), hit)


def _ops(history: pd.DataFrame, mask: pd.Series | np.ndarray, *, versioned: bool = True) -> pd.DataFrame:
    """The rows under ``mask`` that name a key, as a compact frame.

    ``key`` is the categorical code (an int) so merges and group-bys compare integers, ``row`` is
    the history index so examples can quote the original row, ``source`` stays categorical. Only
    these columns are gathered, once each.
    """
    keep = np.asarray(mask, dtype=bool) & (_codes(history["key"]) >= 0)
    if versioned:
        keep &= history["version"].notna().to_numpy()
    idx = np.flatnonzero(keep)
    columns: dict[str, Any] = {
        "row": idx.astype("int64"),
        "process": history["process"].to_numpy(dtype="int64")[idx],
        "key": _codes(history["key"])[idx].astype("int64"),
        "t_invoke": history["t_invoke"].to_numpy(dtype="int64")[idx],
        "t_complete": history["t_complete"].to_numpy(dtype="int64")[idx],
        "source": history["source"].array.take(idx),
    }
    if versioned:
        columns["version"] = history["version"].array.take(idx).to_numpy(dtype="int64")
    return pd.DataFrame(columns, copy=False)


def _ok_ops(history: pd.DataFrame, f: str) -> pd.DataFrame:
    """:func:`_ops` of the ok ``f`` rows with a version, shared within a :func:`sharing` block."""
    return _shared(history, ("ok_ops", f), lambda: _ops(history, _is(history, f)))


def _is(history: pd.DataFrame, f: str, status: str | None = "ok") -> pd.Series:
    mask = _equals(history["f"], f)
    if status is not None:
        mask &= _equals(history["status"], status)
    return pd.Series(mask, index=history.index, copy=False)


def _percentiles_us(values_ns: np.ndarray, spec: dict[str, float]) -> dict[str, float | None]:
    """Exact percentiles (numpy, linear interpolation) of nanosecond values, in microseconds."""
    if len(values_ns) == 0:
        return dict.fromkeys(spec)
    us = np.asarray(values_ns, dtype="float64") / NS_PER_US
    points = np.percentile(us, list(spec.values()))
    return {name: round(float(v), 3) for name, v in zip(spec, points, strict=True)}


def _examples(
    history: pd.DataFrame,
    rows: np.ndarray,
    extra: dict[str, np.ndarray] | None = None,
) -> list[dict[str, Any]]:
    """History rows ``rows`` (already in worst-first order, a handful) as JSON-ready dicts."""
    out: list[dict[str, Any]] = []
    rows = np.asarray(rows, dtype="int64")
    sub = history.loc[rows, list(COLUMNS)]
    for i, row in enumerate(rows):
        record: dict[str, Any] = {"row": int(row)}
        for column in COLUMNS:
            record[column] = jsonable(sub.iloc[i][column])
        for name, values in (extra or {}).items():
            record[name] = jsonable(values[i])
        out.append(record)
    return out


def _max_completed_before(
    reads: pd.DataFrame, writes_by_completion: pd.DataFrame, cut: np.ndarray
) -> np.ndarray:
    """For each read, the highest version among writes of its key completed strictly before ``cut``.

    NaN when no write precedes the cut. ``writes_by_completion`` needs ``key``, ``t_complete`` and
    ``version`` (any row order).
    """
    return _max_before(
        reads["key"].to_numpy(),
        np.asarray(cut, dtype="int64"),
        writes_by_completion["key"].to_numpy(),
        writes_by_completion["t_complete"].to_numpy(),
        writes_by_completion["version"].to_numpy(dtype="int64"),
        strict=True,
    )


def _committed_writes(history: pd.DataFrame) -> pd.DataFrame:
    """The writes known to have committed, with ``confirmed`` telling the ok ones from the rest.

    An ok write committed; so did an ``info`` write that carries a version (the target raised
    ``AfterCommit``: the commit happened, only its invalidation's outcome is unknown). An ``info``
    write without a version may never have committed, so it is left out.
    """

    def compute() -> pd.DataFrame:
        ok = _ok_ops(history, "write")
        after_commit = _ops(history, _is(history, "write", INFO))
        if len(after_commit) == 0:
            return ok.assign(confirmed=np.ones(len(ok), dtype=bool))
        both = pd.concat(
            [
                ok.assign(confirmed=np.ones(len(ok), dtype=bool)),
                after_commit.assign(confirmed=np.zeros(len(after_commit), dtype=bool)),
            ],
            ignore_index=True,
        )
        return both

    return _shared(history, "committed_writes", compute)


def _running_max(writes: pd.DataFrame) -> pd.DataFrame:
    """Writes sorted by completion, with the per-key running maximum of versions committed."""
    ordered = writes.sort_values("t_complete", kind="stable").reset_index(drop=True)
    key = ordered["key"].to_numpy()
    order = _group_order(key, np.arange(len(ordered), dtype="int64"))
    keys = key[order]
    starts = np.ones(len(keys), dtype=bool)
    starts[1:] = keys[1:] != keys[:-1]
    max_version = np.empty(len(ordered), dtype="int64")
    max_version[order] = _group_cummax(starts, ordered["version"].to_numpy(dtype="int64")[order])
    ordered["max_version"] = max_version
    return ordered


def _notification_ns(history: pd.DataFrame) -> np.ndarray:
    """Per ok ``ws_recv`` with a ``value`` (the commit time): completion minus that time, in ns."""
    value = history["value"]
    idx = np.flatnonzero(_is(history, "ws_recv").to_numpy() & value.notna().to_numpy())
    return history["t_complete"].to_numpy()[idx] - value.array.take(idx).to_numpy(dtype="int64")


# --------------------------------------------------------------------------------------------------
# Derived arrays of several checks


def stale_flags(
    history: pd.DataFrame, tolerance_ns: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """The ok reads, the committed writes with their running maximum, and which reads are stale.

    The core of :func:`check_stale_read`, shared with the checks that judge stale reads in a
    window (``eviction``): computed once per tolerance within a :func:`sharing` block. ``reads`` is
    the compact frame of :func:`_ops`; ``stale[i]`` says whether read ``i`` returned a version below
    one whose write completed before ``t_invoke - tolerance_ns``. The writes are
    :func:`_committed_writes`: a version whose commit is certain counts even when its write's
    invalidation is unconfirmed (``confirmed`` is False), since the cache still had to stop serving
    older versions once the write returned.
    """
    history = normalise(history)

    def compute() -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
        reads = _ok_ops(history, "read")
        writes = _running_max(_committed_writes(history))
        if len(reads) == 0:
            return reads, writes, np.zeros(0, dtype=bool)
        cut = reads["t_invoke"].to_numpy() - tolerance_ns
        seen_max = _max_completed_before(reads, writes, cut)
        stale = np.nan_to_num(seen_max, nan=-np.inf) > reads["version"].to_numpy()
        return reads, writes, stale

    return _shared(history, ("stale_flags", tolerance_ns), compute)


def first_missed_writes(stale_reads: pd.DataFrame, writes: pd.DataFrame) -> pd.DataFrame:
    """Per stale read, the earliest-completing write of its key with a higher version.

    ``writes`` are :func:`_running_max`'s. The running max only grows, so that write is the first
    whose running max exceeds the read's version: a forward asof on versions finds it. Returns the
    reads (``key``, ``version``, ``t_invoke``, ``row``; in version order) with the write's
    ``w_t_complete``, ``w_version``, ``w_process`` and ``w_row`` (and ``w_confirmed`` when the
    writes say whether they were confirmed).
    """
    rises = writes["max_version"] > writes.groupby("key", sort=False)["max_version"].shift(
        fill_value=INT64_MIN
    )
    columns = ["key", "max_version", "t_complete", "version", "process", "row"]
    columns += ["confirmed"] if "confirmed" in writes else []
    records = writes.loc[rises, columns]
    records = records.rename(
        columns={
            "t_complete": "w_t_complete",
            "version": "w_version",
            "process": "w_process",
            "row": "w_row",
            "confirmed": "w_confirmed",
        }
    ).sort_values("max_version", kind="stable")
    left = stale_reads[["key", "version", "t_invoke", "row"]].sort_values("version", kind="stable")
    return pd.merge_asof(
        left,
        records,
        left_on="version",
        right_on="max_version",
        by="key",
        direction="forward",
        allow_exact_matches=False,
    )


# --------------------------------------------------------------------------------------------------
# Latency groups
#
# The one definition of which ok operations a latency group times: reads split by source
# (``READ_GROUPS``), WebSocket notifications from commit to receipt, every other group being the
# operations of that ``f``. The latency check, the chunked mode, the open-model check, the
# thresholds and the report all group through these functions.


def latency_masks(history: pd.DataFrame, groups: Iterable[str] = LATENCY_GROUPS) -> dict[str, np.ndarray]:
    """Per group (``notification`` left out: it is no row's duration), which rows it times."""
    ok = _equals(history["status"], OK)
    f = history["f"]
    masks: dict[str, np.ndarray] = {}
    read: np.ndarray | None = None
    for group in groups:
        if group == NOTIFICATION:
            continue
        if group in READ_GROUPS:
            if read is None:
                read = ok & _equals(f, READ)
            source = history["source"]
            served = _hits(source) if READ_GROUPS[group] == HIT else _equals(source, READ_GROUPS[group])
            masks[group] = read & served
        else:
            masks[group] = ok & _equals(f, group)
    return masks


def group_durations(history: pd.DataFrame, groups: Iterable[str] = LATENCY_GROUPS) -> dict[str, np.ndarray]:
    """Per latency group, the nanosecond latencies of its ok operations, in history order."""
    groups = tuple(groups)
    duration = history["t_complete"].to_numpy() - history["t_invoke"].to_numpy()
    masks = latency_masks(history, groups)
    return {g: _notification_ns(history) if g == NOTIFICATION else duration[masks[g]] for g in groups}


def group_labels(history: pd.DataFrame, groups: Iterable[str]) -> np.ndarray:
    """Each row's latency group among ``groups`` (an object array; None for rows in none of them)."""
    labels = np.full(len(history), None, dtype=object)
    for group, mask in latency_masks(history, groups).items():
        labels[mask] = group
    return labels


LATENCY_PERCENTILES = {"p50": 50, "p95": 95, "p99": 99, "p99_9": 99.9, "max": 100}


def latency_stats(values_ns: np.ndarray) -> dict[str, Any]:
    """Count, exact percentiles, max and mean of nanosecond durations, in microseconds."""
    stats: dict[str, Any] = {"count": len(values_ns)}
    stats.update(_percentiles_us(values_ns, LATENCY_PERCENTILES))
    stats["mean"] = _mean_us(int(np.sum(values_ns, dtype="int64")), len(values_ns))
    return stats


def _mean_us(total_ns: int, count: int) -> float | None:
    # From the integer sum, so that the sum of partitions' sums gives the very same mean.
    return round(total_ns / count / NS_PER_US, 3) if count else None


@dataclass(frozen=True)
class Run:
    """Sorted integer values (nanoseconds) and their sum: one partition's share of a figure over
    the whole history. :meth:`spill` moves the values to a file, memory-mapped, so that a run of
    every partition is kept without keeping any in memory."""

    values: np.ndarray
    total: int

    @classmethod
    def of(cls, values: np.ndarray) -> Run:
        return cls(np.sort(values), int(np.sum(values, dtype="int64")))

    def spill(self, file: Path) -> Run:
        np.save(file, self.values)
        return Run(np.load(file, mmap_mode="r"), self.total)


def latency_stats_of_runs(runs: list[Run]) -> dict[str, Any]:
    """:func:`latency_stats` of the concatenation of ``runs``' values without concatenating them
    (they may be memory-mapped spill files; only a few pages of each are read): the same figures,
    to the last digit."""
    count = sum(len(r.values) for r in runs)
    stats: dict[str, Any] = {"count": count}
    stats.update(percentiles_of_runs_us([r.values for r in runs], LATENCY_PERCENTILES))
    stats["mean"] = _mean_us(sum(r.total for r in runs), count)
    return stats


def _kth(runs: list[np.ndarray], k: int) -> int:
    """The ``k``-th smallest (from 0) value of sorted integer ``runs`` together: the least ``v``
    with more than ``k`` values at most ``v``, by bisection on the value (64 steps at most)."""
    lo = min(int(r[0]) for r in runs)
    hi = max(int(r[-1]) for r in runs)
    while lo < hi:
        mid = (lo + hi) // 2
        if sum(int(np.searchsorted(r, mid, side="right")) for r in runs) > k:
            hi = mid
        else:
            lo = mid + 1
    return lo


def percentiles_of_runs_us(runs: list[np.ndarray], spec: dict[str, float]) -> dict[str, float | None]:
    """:func:`_percentiles_us` of the concatenation of sorted nanosecond ``runs``: numpy's linear
    method (``np.percentile``) step by step, on the two order statistics each percentile needs."""
    runs = [r for r in runs if len(r)]
    n = sum(len(r) for r in runs)
    if n == 0:
        return dict.fromkeys(spec)
    quantiles = np.true_divide(np.asarray(list(spec.values()), dtype="float64"), 100)
    out: dict[str, float | None] = {}
    for name, q in zip(spec, quantiles, strict=True):
        virtual = (n - 1) * q
        below = int(np.floor(virtual))
        if virtual >= n - 1:
            a = b = np.float64(_kth(runs, n - 1)) / NS_PER_US
            gamma = virtual - (-1)  # numpy's index -1: any weight, a equals b
        else:
            a = np.float64(_kth(runs, below)) / NS_PER_US
            b = np.float64(_kth(runs, below + 1)) / NS_PER_US
            gamma = virtual - below
        diff = b - a
        value = b - diff * (1 - gamma) if gamma >= 0.5 else a + diff * gamma
        out[name] = round(float(value), 3)
    return out


# --------------------------------------------------------------------------------------------------
# Stampede epochs


def stampede_epochs(history: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ok ``db_load`` rows with the epoch each falls in, and the epochs opened.

    An epoch of a key opens at each ok ``invalidate`` of it (its ``t_complete``); a load belongs to
    the latest epoch of its key opened at or before its invocation, or to epoch 0 of its key
    (``epoch`` :data:`INT64_MIN`) when none was. ``loads`` (in ``t_invoke`` order) has ``row``,
    ``key`` (code), ``t_invoke``, ``source`` (``"unknown"`` when null) and ``epoch``; ``openings``
    has ``key`` and ``epoch``, one row per ok invalidate.
    """
    sub = history.loc[_is(history, DB_LOAD) & history["key"].notna()]
    loads = pd.DataFrame(
        {
            "row": sub.index.to_numpy(dtype="int64"),
            "key": sub["key"].cat.codes.to_numpy().astype("int64"),
            "t_invoke": sub["t_invoke"].to_numpy(dtype="int64"),
            "source": sub["source"].astype("object").fillna("unknown").to_numpy(),
        }
    ).sort_values("t_invoke", kind="stable")
    inv = history.loc[_is(history, INVALIDATE) & history["key"].notna()]
    openings = pd.DataFrame(
        {
            "key": inv["key"].cat.codes.to_numpy().astype("int64"),
            "epoch": inv["t_complete"].to_numpy(dtype="int64"),
        }
    ).sort_values("epoch", kind="stable")
    return assign_epochs(loads, openings), openings


def assign_epochs(loads: pd.DataFrame, openings: pd.DataFrame) -> pd.DataFrame:
    """``loads`` (``key``, ``t_invoke``, in ``t_invoke`` order) with the ``epoch`` each falls in:
    the latest of ``openings`` (``key``, ``epoch``) of its key at or before its invocation, or
    :data:`INT64_MIN` (epoch 0 of its key) when none was."""
    if len(openings) and len(loads):
        openings = openings.reset_index(drop=True)
        openings["open_i"] = np.arange(len(openings))
        loads = pd.merge_asof(
            loads, openings, left_on="t_invoke", right_on="epoch", by="key", direction="backward"
        )
        # Looked up by position, so that nanosecond times never pass through a float column.
        position = loads["open_i"].fillna(-1).to_numpy().astype("int64")
        epoch = np.full(len(loads), INT64_MIN, dtype="int64")
        epoch[position >= 0] = openings["epoch"].to_numpy()[position[position >= 0]]
        loads["epoch"] = epoch
        return loads.drop(columns=["open_i"])
    loads = loads.copy()
    loads["epoch"] = INT64_MIN  # every load falls in epoch 0 of its key
    return loads
