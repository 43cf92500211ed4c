"""The checks: small pure functions from an op history to a :class:`CheckResult`.

Modelled on Jepsen's checkers: each check looks at the whole history, counts violations of one
property, reports figures and a few of the worst offending rows, and the results compose into one
:class:`Verdict`. Every check is vectorised (sorts and binary searches on packed int64 codes,
grouped running maxima); none loops over rows, so a history of millions of operations is checked
in seconds. Checks run together by :func:`run_checks` share derived arrays through
:func:`sharing`; each stays callable on its own. Precise definitions and the reasoning behind them
are in docs/checks.md.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from analysis.load import COLUMNS, normalise
from analysis.open_model import check_open_model_latency
from analysis.verdict import CheckResult, Verdict, jsonable

if TYPE_CHECKING:
    from analysis.thresholds import Thresholds

NS_PER_US = 1_000
NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000
NO_HISTORY = "no op history (history/*.parquet)"
NO_RUN_NOTE = (
    "run.json is missing: the run did not finish collecting (crashed or killed), "
    "so the history may be partial"
)
WS_OPS = ("ws_open", "ws_recv", "ws_close")
#: Latency groups of the coherence workload, then one per contention operation (docs/history.md).
CONTENTION_LATENCY_OPS = (
    "incr",
    "counter_read",
    "tx_transfer",
    "tx_read",
    "lock_acquire",
    "guarded_write",
    "invalidate_batch",
    "db_load",
)
LATENCY_GROUPS = ("read_hit", "read_miss", "write", "fill", "notification", *CONTENTION_LATENCY_OPS)
CHECK_NAMES = (
    "stale_read",
    "future_read",
    "monotonic_read",
    "ws_delivery",
    "divergence",
    "hit_ratio",
    "latency",
    "open_model_latency",
    "history_complete",
    "generator_cpu",
    "counter",
    "stampede",
    "tx_atomicity",
    "lock_safety",
    "invalidation_latency",
    "eviction",
    "tier_staleness",
    "cascade",
)
DEFAULT_LOCK_TTL_MS = 1000


@dataclass(frozen=True)
class Options:
    """Knobs of the analysis, in nanoseconds.

    ``tolerance_ns`` widens every "before" across processes to absorb clock uncertainty between
    hosts; ``ws_grace_ns`` is how long after opening / before closing a WebSocket connection a
    write is not yet / no longer expected to be delivered.
    """

    tolerance_ns: int = 0
    ws_grace_ns: int = NS_PER_S
    examples: int = 5
    tolerance_from: str = "default"
    lock_ttl_ns: int = DEFAULT_LOCK_TTL_MS * NS_PER_MS
    stampede_guard: str | None = None

    @classmethod
    def resolve(
        cls,
        run: dict[str, Any] | None,
        tolerance_ms: float | None = None,
        ws_grace_s: float | None = None,
        examples: int = 5,
    ) -> Options:
        """Options from the CLI values, falling back on ``run.json``'s clock uncertainty."""
        if tolerance_ms is not None:
            tolerance, source = round(tolerance_ms * NS_PER_MS), "--tolerance"
        else:
            tolerance, source = 0, "default"
            uncertainty = (run or {}).get("clock_uncertainty_ns")
            if isinstance(uncertainty, int | float) and not isinstance(uncertainty, bool) and uncertainty > 0:
                tolerance, source = int(uncertainty), "run.json clock_uncertainty_ns"
        grace = NS_PER_S if ws_grace_s is None else round(ws_grace_s * NS_PER_S)
        run_options = (run or {}).get("options")
        run_options = run_options if isinstance(run_options, dict) else {}
        ttl_ms = run_options.get("lock_ttl_ms")
        if not isinstance(ttl_ms, int | float) or isinstance(ttl_ms, bool) or ttl_ms <= 0:
            ttl_ms = DEFAULT_LOCK_TTL_MS
        guard = run_options.get("stampede_guard")
        return cls(
            tolerance_ns=max(int(tolerance), 0),
            ws_grace_ns=max(int(grace), 0),
            examples=examples,
            tolerance_from=source,
            lock_ttl_ns=round(ttl_ms * NS_PER_MS),
            stampede_guard=guard if isinstance(guard, str) else None,
        )

    def to_dict(self) -> dict[str, Any]:
        """The options as reported in ``summary.json``."""
        return {
            "tolerance_ns": self.tolerance_ns,
            "tolerance_from": self.tolerance_from,
            "ws_grace_s": self.ws_grace_ns / NS_PER_S,
            "lock_ttl_ms": self.lock_ttl_ns / NS_PER_MS,
            "stampede_guard": self.stampede_guard,
        }


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
# Helpers


def _codes(column: pd.Series) -> np.ndarray:
    """A categorical column's integer codes (-1 for null), as a read-only view: no copy."""
    return np.asarray(column.array.codes)


def _equals(column: pd.Series, value: str) -> np.ndarray:
    """``column == value`` for a categorical column, compared on its integer codes."""
    codes = _codes(column)
    code = int(column.cat.categories.get_indexer([value])[0])
    return codes == code if code >= 0 else np.zeros(len(codes), dtype=bool)


def _hits(column: pd.Series) -> np.ndarray:
    """Reads served by a cache: ``hit``, or ``hit:<tier>`` from a tiered target."""
    hit = [i for i, c in enumerate(column.cat.categories) if c == "hit" or str(c).startswith("hit:")]
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


# Sorting and searching on packed int64 codes. A (group, time) pair packed into one int64 sorts in
# the pair's order, so one ``np.sort`` or ``np.searchsorted`` over plain integers does what a
# lexicographic sort or a grouped ``merge_asof`` would; each helper checks that its codes fit in 63
# bits and otherwise takes a slower path with the same answer.


def _fits(*factors: int) -> bool:
    """Whether the product of ``factors`` (non-negative Python ints) stays below 2**62."""
    product = 1
    for factor in factors:
        product *= max(int(factor), 1)
    return product < 1 << 62


def _dense(values: np.ndarray) -> tuple[np.ndarray, int]:
    """``values`` mapped in order onto ``[0, m)`` (equal stay equal, order kept), and ``m``."""
    if len(values) == 0:
        return np.zeros(0, dtype="int64"), 1
    lo, hi = int(values.min()), int(values.max())
    if hi - lo < 4 * len(values) + 1024:
        return values.astype("int64") - lo, hi - lo + 1
    distinct, inverse = np.unique(values, return_inverse=True)
    return inverse.astype("int64").reshape(-1), len(distinct)


def _group_order(group: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The stable permutation that sorts rows by ``(group, t)``: ``np.lexsort((t, group))``.

    ``group`` holds non-negative ints. A stable argsort by ``t`` (fast when ``t`` is nearly sorted,
    as times in a history are) ranks the rows; ``group`` and the rank packed in one int64 then sort
    as plain integers, and the low bits give the rank, hence the row, back.
    """
    n = len(t)
    if n == 0:
        return np.zeros(0, dtype="int64")
    n_groups = int(group.max()) + 1
    bits = (n - 1).bit_length()
    if not _fits(n_groups, 1 << bits):
        return np.lexsort((t, group))
    by_time = np.argsort(t, kind="stable")
    codes = group[by_time].astype("int64", copy=False)
    codes <<= bits
    codes |= np.arange(n, dtype="int64")
    codes.sort()
    codes &= (1 << bits) - 1
    return by_time[codes]


def _group_cummax(starts: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Running maximum of int64 ``values`` within the runs that begin where ``starts`` is True."""
    values = np.asarray(values, dtype="int64")
    if len(values) == 0:
        return values.copy()
    lo, hi = int(values.min()), int(values.max())
    width = hi - lo + 1
    run = np.cumsum(starts, dtype="int64")
    if _fits(int(run[-1]) + 1, width):
        # The run number in the high part keeps each run's maximum from leaking into the next.
        run *= width
        packed = values - lo
        packed += run
        np.maximum.accumulate(packed, out=packed)
        packed -= run
        packed += lo
        return packed
    return pd.Series(values).groupby(run).cummax().to_numpy(dtype="int64")


def _pack_times(keys: list[np.ndarray], times: list[np.ndarray]) -> tuple[list[np.ndarray], int, int]:
    """``(key, time)`` pairs of several arrays as int64 codes ``key * span + rank`` in pair order.

    The rank is the time minus the earliest time when ``n_keys * span`` fits, else the time's rank
    among all the times given (order and ties kept). Returns the codes, ``span`` (key ``k``'s codes
    lie in ``[k * span, (k + 1) * span)``) and ``n_keys``.
    """
    present = [t for t in times if len(t)]
    n_keys = max((int(k.max()) + 1 for k in keys if len(k)), default=1)
    if not present:
        return [np.zeros(0, dtype="int64") for _ in keys], 1, n_keys
    lo = min(int(t.min()) for t in present)
    span = max(int(t.max()) for t in present) - lo + 1
    if _fits(n_keys, span):
        return [k.astype("int64") * span + (t - lo) for k, t in zip(keys, times, strict=True)], span, n_keys
    every = np.unique(np.concatenate(present))
    span = len(every)
    codes = [k.astype("int64") * span + np.searchsorted(every, t) for k, t in zip(keys, times, strict=True)]
    return codes, span, n_keys


def _asof(
    event_key: np.ndarray,
    event_t: np.ndarray,
    query_key: np.ndarray,
    query_t: np.ndarray,
    *,
    strict: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Events of each query's key that lie before it: a grouped backward ``merge_asof``.

    Returns ``(order, first, end)``: ``order`` sorts the events by ``(key, t)``; in that order, the
    events of query ``i``'s key at times ``< query_t[i]`` (``<=`` unless ``strict``) are positions
    ``first[i]`` to ``end[i] - 1`` (none when equal).
    """
    (e_code, q_code), span, n_keys = _pack_times([event_key, query_key], [event_t, query_t])
    order = np.argsort(e_code, kind="stable")
    sorted_codes = e_code[order]
    key_first = np.searchsorted(sorted_codes, np.arange(n_keys, dtype="int64") * span, side="left")
    first = key_first[query_key]
    end = np.empty(len(query_key), dtype="int64")
    if len(query_key):
        # Queries in (key, time) order search a nearly sorted sequence: many times faster than random.
        q_order = _group_order(query_key, query_t)
        end[q_order] = np.searchsorted(sorted_codes, q_code[q_order], side="left" if strict else "right")
    return order, first, end


def _max_before(
    query_key: np.ndarray,
    query_t: np.ndarray,
    event_key: np.ndarray,
    event_t: np.ndarray,
    event_value: np.ndarray,
    *,
    strict: bool,
) -> np.ndarray:
    """Per query: the highest ``event_value`` among events of its key before ``query_t``, NaN if none."""
    result = np.full(len(query_key), np.nan)
    if len(query_key) == 0 or len(event_key) == 0:
        return result
    order, first, end = _asof(event_key, event_t, query_key, query_t, strict=strict)
    keys = event_key[order]
    starts = np.ones(len(keys), dtype=bool)
    starts[1:] = keys[1:] != keys[:-1]
    running = _group_cummax(starts, np.asarray(event_value)[order])
    has = end > first
    result[has] = running[end[has] - 1]
    return result


def _count_before(
    query_key: np.ndarray, query_t: np.ndarray, event_key: np.ndarray, event_t: np.ndarray, *, strict: bool
) -> np.ndarray:
    """Per query: how many events of its key lie before ``query_t`` (``<`` if ``strict``, else ``<=``)."""
    if len(query_key) == 0 or len(event_key) == 0:
        return np.zeros(len(query_key), dtype="int64")
    _, first, end = _asof(event_key, event_t, query_key, query_t, strict=strict)
    return end - first


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


def _running_max(writes: pd.DataFrame) -> pd.DataFrame:
    """Ok writes sorted by completion, with the per-key running maximum of versions committed."""
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


def _regressions(
    group_a: np.ndarray, group_b: np.ndarray, order_by: np.ndarray, version: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Within each (a, b) group in ``order_by`` order, the highest version seen before each row.

    Returns ``(order, previous_max)``: the sorting permutation (that of
    ``np.lexsort((order_by, group_b, group_a))``) and, in that order, the maximum of earlier versions
    in the row's group (-inf for a group's first row). A row went backwards when its version is below
    ``previous_max``.
    """
    n = len(order_by)
    if n == 0:
        return np.zeros(0, dtype="int64"), np.zeros(0)
    a, n_a = _dense(np.asarray(group_a))
    b, n_b = _dense(np.asarray(group_b))
    starts = np.ones(n, dtype=bool)
    if _fits(n_a, n_b):
        group = a * n_b
        group += b
        del a, b
        if not _fits(int(group.max()) + 1, n):
            group, _ = _dense(group)
        order = _group_order(group, np.asarray(order_by))
        g = group[order]
        del group
        starts[1:] = g[1:] != g[:-1]
        del g
    else:
        order = np.lexsort((order_by, b, a))
        a, b = a[order], b[order]
        starts[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    running = _group_cummax(starts, np.asarray(version, dtype="int64")[order])
    previous = np.empty(n)
    previous[0] = -np.inf
    previous[1:] = running[:-1]
    del running
    previous[starts] = -np.inf
    return order, previous


def _distinct(values: np.ndarray) -> int:
    """How many distinct values ``values`` (ints) holds."""
    if len(values) == 0:
        return 0
    dense, size = _dense(values)
    return int(np.count_nonzero(np.bincount(dense, minlength=size)))


def _notification_ns(history: pd.DataFrame) -> np.ndarray:
    """Per ok ``ws_recv`` with a ``value`` (the commit time): completion minus that time, in ns."""
    value = history["value"]
    idx = np.flatnonzero(_is(history, "ws_recv").to_numpy() & value.notna().to_numpy())
    return history["t_complete"].to_numpy()[idx] - value.array.take(idx).to_numpy(dtype="int64")


def _sorted_unique(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values and the index of each one's first occurrence.

    Sort-based rather than ``np.unique``, whose hashing is several times slower on large int arrays.
    Each value is packed with its position into one int64 when they fit, so that a plain sort of
    integers does what a stable argsort would.
    """
    n = len(values)
    if n and np.issubdtype(values.dtype, np.integer):
        lo, hi = int(values.min()), int(values.max())
        bits = (n - 1).bit_length()
        if _fits(hi - lo + 1, 1 << bits):
            codes = (values.astype("int64") - lo) << bits
            codes |= np.arange(n, dtype="int64")
            codes.sort()
            distinct = codes >> bits
            keep = np.ones(n, dtype=bool)
            keep[1:] = distinct[1:] != distinct[:-1]
            first = codes[keep] & ((1 << bits) - 1)
            return (distinct[keep] + lo).astype(values.dtype, copy=False), first
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    keep = np.ones(len(ordered), dtype=bool)
    keep[1:] = ordered[1:] != ordered[:-1]
    return ordered[keep], order[keep]


def _member(sorted_unique: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``np.isin`` for a sorted, unique haystack: a binary search instead of sorting both sides."""
    if len(sorted_unique) == 0:
        return np.zeros(len(values), dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_unique, values), len(sorted_unique) - 1)
    return sorted_unique[pos] == values


def _worst(score: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` largest scores, largest first (stable for ties)."""
    if len(score) == 0 or n <= 0:
        return np.array([], dtype="int64")
    return np.argsort(-np.asarray(score, dtype="float64"), kind="stable")[:n]


# --------------------------------------------------------------------------------------------------
# Checks


def stale_flags(
    history: pd.DataFrame, tolerance_ns: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """The ok reads, the ok writes with their running maximum, and which reads are stale.

    The core of :func:`check_stale_read`, shared with the checks that judge stale reads in a
    window (``eviction``): computed once per tolerance within a :func:`sharing` block. ``reads`` is
    the compact frame of :func:`_ops`; ``stale[i]`` says whether read ``i`` returned a version below
    one whose write completed before ``t_invoke - tolerance_ns``.
    """
    history = normalise(history)

    def compute() -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
        reads = _ok_ops(history, "read")
        writes = _running_max(_ok_ops(history, "write"))
        if len(reads) == 0:
            return reads, writes, np.zeros(0, dtype=bool)
        cut = reads["t_invoke"].to_numpy() - tolerance_ns
        seen_max = _max_completed_before(reads, writes, cut)
        stale = np.nan_to_num(seen_max, nan=-np.inf) > reads["version"].to_numpy()
        return reads, writes, stale

    return _shared(history, ("stale_flags", tolerance_ns), compute)


def check_stale_read(history: pd.DataFrame, tolerance_ns: int = 0, examples: int = 5) -> CheckResult:
    """Ok reads that returned a version older than one whose write had already completed.

    A read of key k invoked at t is stale when some ok write of k with a higher version completed
    strictly before ``t - tolerance_ns``.
    """
    name = "stale_read"
    history = normalise(history)
    reads, writes, stale = stale_flags(history, tolerance_ns)
    if len(reads) == 0:
        return CheckResult.skip(name, "no ok reads with a version", {"tolerance_ns": tolerance_ns})
    stale_reads = reads.loc[stale].reset_index(drop=True)

    figures: dict[str, Any] = {
        "reads_checked": len(reads),
        "stale": int(stale.sum()),
        "tolerance_ns": tolerance_ns,
    }
    age_ns = np.array([], dtype="int64")
    missed = pd.DataFrame()
    if len(stale_reads):
        # The running max only grows, so the first write whose running max exceeds the read's version
        # is the earliest-completing write the read missed: find it with a forward asof on versions.
        first = writes["max_version"] > writes.groupby("key", sort=False)["max_version"].shift(
            fill_value=np.iinfo("int64").min
        )
        records = writes.loc[first, ["key", "max_version", "t_complete", "version", "process", "row"]]
        records = records.rename(
            columns={
                "t_complete": "w_t_complete",
                "version": "w_version",
                "process": "w_process",
                "row": "w_row",
            }
        ).sort_values("max_version", kind="stable")
        left = stale_reads[["key", "version", "t_invoke", "row"]].sort_values("version", kind="stable")
        missed = pd.merge_asof(
            left,
            records,
            left_on="version",
            right_on="max_version",
            by="key",
            direction="forward",
            allow_exact_matches=False,
        )
        age_ns = missed["t_invoke"].to_numpy() - missed["w_t_complete"].to_numpy(dtype="int64")
    pct = _percentiles_us(age_ns, {"p50": 50, "p99": 99, "max": 100})
    figures.update({"age_p50_us": pct["p50"], "age_p99_us": pct["p99"], "age_max_us": pct["max"]})
    sources = reads["source"]
    figures["by_source"] = {
        src: {"reads": int((sources == src).sum()), "stale": int((sources[stale] == src).sum())}
        for src in ("hit", "miss")
    }

    shown: list[dict[str, Any]] = []
    if len(missed):
        worst = _worst(age_ns, examples)
        pick = missed.iloc[worst]
        shown = _examples(
            history,
            pick["row"].to_numpy(),
            {
                "age_us": age_ns[worst] / NS_PER_US,
                "missed_write": np.array(
                    [
                        {"row": int(r), "process": int(p), "version": int(v), "t_complete": int(t)}
                        for r, p, v, t in zip(
                            pick["w_row"],
                            pick["w_process"],
                            pick["w_version"],
                            pick["w_t_complete"],
                            strict=True,
                        )
                    ],
                    dtype=object,
                ),
            },
        )
    count = figures["stale"]
    return CheckResult(name, passed=count == 0, violations=count, figures=figures, examples=shown)


def check_future_read(history: pd.DataFrame, tolerance_ns: int = 0, examples: int = 5) -> CheckResult:
    """Ok reads of a version that cannot exist yet.

    Version v of a key exists only once v writes of it committed, so a read returning v needs at
    least v writes of the key (ok or info; fail writes had no effect) invoked before it completed
    (plus ``tolerance_ns``). A negative version is always a violation.
    """
    name = "future_read"
    history = normalise(history)
    reads = _ok_ops(history, "read")
    if len(reads) == 0:
        return CheckResult.skip(name, "no ok reads with a version", {"tolerance_ns": tolerance_ns})
    status = history["status"]
    maybe = _equals(history["f"], "write") & (_equals(status, "ok") | _equals(status, "info"))
    writes = _ops(history, maybe, versioned=False)
    # Per read: the ok or info writes of its key invoked at or before its completion (plus tolerance).
    invoked = _count_before(
        reads["key"].to_numpy(),
        reads["t_complete"].to_numpy() + tolerance_ns,
        writes["key"].to_numpy(),
        writes["t_invoke"].to_numpy(),
        strict=False,
    ).astype("float64")
    versions = reads["version"].to_numpy()
    negative = versions < 0
    ahead = versions > invoked
    bad = negative | ahead
    excess = np.where(negative, np.inf, versions - invoked)[bad]
    rows = reads["row"].to_numpy()[bad]
    worst = _worst(excess, examples)
    shown = _examples(history, rows[worst], {"writes_invoked_before": invoked[bad][worst].astype("int64")})
    count = int(bad.sum())
    figures = {
        "reads_checked": len(reads),
        "future": int(ahead.sum()),
        "negative": int(negative.sum()),
        "writes_considered": len(writes),
        "tolerance_ns": tolerance_ns,
    }
    return CheckResult(name, passed=count == 0, violations=count, figures=figures, examples=shown)


def check_monotonic_read(history: pd.DataFrame, examples: int = 5) -> CheckResult:
    """Ok reads by one process of one key that went back below a version it had already seen."""
    name = "monotonic_read"
    history = normalise(history)
    reads = _ok_ops(history, "read")
    if len(reads) == 0:
        return CheckResult.skip(name, "no ok reads with a version")
    order, previous = _regressions(
        reads["process"].to_numpy(),
        reads["key"].to_numpy(),
        reads["t_invoke"].to_numpy(),
        reads["version"].to_numpy(),
    )
    versions = reads["version"].to_numpy()[order]
    back = versions < previous
    drop = (previous - versions)[back]
    rows = reads["row"].to_numpy()[order[back]]
    worst = _worst(drop, examples)
    shown = _examples(history, rows[worst], {"previously_seen": previous[back][worst].astype("int64")})
    count = int(back.sum())
    figures = {
        "reads_checked": len(reads),
        "regressions": count,
        "processes": _distinct(reads["process"].to_numpy()),
        "max_regression": int(drop.max()) if count else 0,
    }
    return CheckResult(name, passed=count == 0, violations=count, figures=figures, examples=shown)


def _connections(history: pd.DataFrame, grace_ns: int) -> pd.DataFrame:
    """One row per opened connection: process and the window in which writes must be delivered.

    A connection opened by an ok ``ws_open`` ends at the process's next ``ws_close``, or at its next
    ``ws_open`` if it reopened without a close being recorded, or else at the end of the history.
    """
    opens = history.loc[_is(history, "ws_open"), ["process", "t_invoke", "t_complete"]]
    opens = opens.sort_values(["process", "t_invoke"], kind="stable").reset_index(drop=True)
    if len(opens) == 0:
        return pd.DataFrame({"process": [], "start": [], "end": []}, dtype="int64")
    closes = history.loc[_is(history, "ws_close", None), ["process", "t_invoke"]].rename(
        columns={"t_invoke": "close_t"}
    )
    horizon = int(history["t_complete"].max())
    end = np.full(len(opens), horizon, dtype="int64")
    if len(closes):
        merged = pd.merge_asof(
            opens.reset_index().sort_values("t_complete", kind="stable"),
            closes.sort_values("close_t", kind="stable"),
            left_on="t_complete",
            right_on="close_t",
            by="process",
            direction="forward",
        )
        close_t = merged["close_t"].to_numpy(dtype="float64", na_value=np.nan)
        has = ~np.isnan(close_t)
        end[merged["index"].to_numpy()[has]] = close_t[has].astype("int64")
    same = opens["process"].to_numpy()
    next_open = opens["t_invoke"].shift(-1).to_numpy(dtype="float64", na_value=np.nan)
    reopened = np.zeros(len(opens), dtype=bool)
    reopened[:-1] = same[1:] == same[:-1]
    end = np.where(reopened, np.minimum(end, np.nan_to_num(next_open, nan=horizon).astype("int64")), end)
    return pd.DataFrame(
        {
            "process": opens["process"].to_numpy(),
            "start": opens["t_complete"].to_numpy() + grace_ns,
            "end": end - grace_ns,
        }
    )


def check_ws_delivery(
    history: pd.DataFrame, grace_ns: int = NS_PER_S, tolerance_ns: int = 0, examples: int = 5
) -> CheckResult:
    """Every ok write committed while a listener was connected must reach that listener.

    Missing deliveries are violations. Duplicates, out-of-order deliveries, latency and the staleness
    of the listener's local copy (``ui_read``) are reported only.
    """
    name = "ws_delivery"
    history = normalise(history)
    ws = np.zeros(len(history), dtype=bool)
    for op in WS_OPS:
        ws |= _equals(history["f"], op)
    if not ws.any():
        return CheckResult.skip(name, "no WebSocket listener rows (ws_open/ws_recv/ws_close)")
    listeners = np.unique(history["process"].to_numpy()[ws])
    conns = _connections(history, grace_ns)
    writes = _ok_ops(history, "write").sort_values("t_complete", kind="stable").reset_index(drop=True)
    recv = _ops(history, _is(history, "ws_recv"))
    recv = recv.loc[recv["version"] >= 0].reset_index(drop=True)

    # A (key, version) pair packed in one int64 so set operations run on plain sorted arrays.
    base = (
        int(max(writes["version"].max() if len(writes) else 0, recv["version"].max() if len(recv) else 0)) + 1
    )
    w_code = writes["key"].to_numpy() * base + writes["version"].to_numpy()
    w_time = writes["t_complete"].to_numpy()
    r_sorted = recv.sort_values("process", kind="stable")
    r_proc = r_sorted["process"].to_numpy()
    r_code = r_sorted["key"].to_numpy() * base + r_sorted["version"].to_numpy()

    expected_total = missing_total = duplicates = 0
    missing_rows: list[np.ndarray] = []
    missing_who: list[np.ndarray] = []
    conn_proc = conns["process"].to_numpy()
    lo = np.searchsorted(w_time, conns["start"].to_numpy(), side="left")
    hi = np.searchsorted(w_time, conns["end"].to_numpy(), side="right")
    for process in listeners:
        # One iteration per listener (few); the work inside is vectorised over writes and receipts.
        a, b = np.searchsorted(r_proc, process, "left"), np.searchsorted(r_proc, process, "right")
        unique_received, _ = _sorted_unique(r_code[a:b])
        duplicates += (b - a) - len(unique_received)
        mine = np.flatnonzero(conn_proc == process)
        spans = [np.arange(lo[i], hi[i]) for i in mine if hi[i] > lo[i]]
        if not spans:
            continue
        idx = spans[0] if len(spans) == 1 else _sorted_unique(np.concatenate(spans))[0]
        codes, first = _sorted_unique(w_code[idx])
        expected_total += len(codes)
        found = _member(unique_received, codes)
        lost = idx[first[~found]]
        missing_total += len(lost)
        if len(lost) and sum(len(x) for x in missing_rows) < examples:
            missing_rows.append(lost[:examples])
            missing_who.append(np.full(min(len(lost), examples), process))

    out_of_order = 0
    if len(recv):
        order, previous = _regressions(
            recv["process"].to_numpy(),
            recv["key"].to_numpy(),
            recv["t_complete"].to_numpy(),
            recv["version"].to_numpy(),
        )
        out_of_order = int((recv["version"].to_numpy()[order] < previous).sum())

    latency = _percentiles_us(_notification_ns(history), {"p50": 50, "p95": 95, "p99": 99, "max": 100})

    ui = _ops(history, _is(history, "ui_read"))
    ui_stale = ui_stale_grace = 0
    if len(ui):
        running = _running_max(writes)
        t = ui["t_invoke"].to_numpy() - tolerance_ns
        v = ui["version"].to_numpy()
        ui_stale = int((np.nan_to_num(_max_completed_before(ui, running, t), nan=-np.inf) > v).sum())
        late = _max_completed_before(ui, running, t - grace_ns)
        ui_stale_grace = int((np.nan_to_num(late, nan=-np.inf) > v).sum())

    figures = {
        "listeners": len(listeners),
        "connections": len(conns),
        "expected": expected_total,
        "delivered": expected_total - missing_total,
        "missing": missing_total,
        "delivery_ratio": (expected_total - missing_total) / expected_total if expected_total else None,
        "received": len(recv),
        "duplicates": duplicates,
        "out_of_order": out_of_order,
        "latency_p50_us": latency["p50"],
        "latency_p95_us": latency["p95"],
        "latency_p99_us": latency["p99"],
        "latency_max_us": latency["max"],
        "ui_reads": len(ui),
        "ui_stale": ui_stale,
        "ui_stale_beyond_grace": ui_stale_grace,
        "grace_s": grace_ns / NS_PER_S,
    }
    shown: list[dict[str, Any]] = []
    if missing_rows:
        rows = np.concatenate(missing_rows)[:examples]
        who = np.concatenate(missing_who)[:examples]
        shown = _examples(history, writes["row"].to_numpy()[rows], {"missed_by_listener": who})
    return CheckResult(
        name, passed=missing_total == 0, violations=missing_total, figures=figures, examples=shown
    )


def check_divergence(history: pd.DataFrame, examples: int = 5) -> CheckResult:
    """Keys whose cached entry, swept at test stop, is older than PostgreSQL's version."""
    name = "divergence"
    history = normalise(history)
    sweep = history.loc[history["f"] == "sweep"]
    if len(sweep) == 0:
        return CheckResult.skip(name, "no sweep rows (written at test stop)")
    entry = sweep.loc[(sweep["source"] == "entry") & sweep["version"].notna() & sweep["value"].notna()]
    cached = entry["version"].to_numpy(dtype="int64")
    database = entry["value"].to_numpy(dtype="int64")
    gap = database - cached
    divergent = gap > 0
    worst = _worst(gap[divergent], examples)
    shown = _examples(
        history, entry.index.to_numpy()[divergent][worst], {"version_gap": gap[divergent][worst]}
    )
    count = int(divergent.sum())
    figures = {
        "keys_swept": int(sweep["key"].nunique()),
        "cached_entries": int((sweep["source"] == "entry").sum()),
        "tombstones": int((sweep["source"] == "tombstone").sum()),
        "absent": int((sweep["source"] == "absent").sum()),
        "divergent": count,
        "max_gap": int(gap.max()) if count else 0,
        # A cached version above the database's cannot come from a committed write; reported so it is
        # seen, but future_read is where a version that never existed is judged.
        "cached_ahead": int((gap < 0).sum()),
    }
    return CheckResult(name, passed=count == 0, violations=count, figures=figures, examples=shown)


def check_hit_ratio(history: pd.DataFrame) -> CheckResult:
    """Share of ok reads served from Redis. Reported only in v1; it never fails."""
    name = "hit_ratio"
    history = normalise(history)
    read = _is(history, "read").to_numpy()
    n_reads = int(read.sum())
    if n_reads == 0:
        return CheckResult.skip(name, "no ok reads")
    source = history["source"]
    hits = int((read & _hits(source)).sum())
    misses = int((read & _equals(source, "miss")).sum())
    ratio = hits / (hits + misses) if hits + misses else None
    return CheckResult(
        name, passed=True, figures={"reads": n_reads, "hits": hits, "misses": misses, "ratio": ratio}
    )


def latency_stats(values_ns: np.ndarray) -> dict[str, Any]:
    """Count, exact percentiles, max and mean of nanosecond durations, in microseconds."""
    stats: dict[str, Any] = {"count": len(values_ns)}
    stats.update(_percentiles_us(values_ns, {"p50": 50, "p95": 95, "p99": 99, "p99_9": 99.9, "max": 100}))
    stats["mean"] = round(float(np.mean(values_ns)) / NS_PER_US, 3) if len(values_ns) else None
    return stats


def check_latency(history: pd.DataFrame) -> CheckResult:
    """Latency of ok operations per kind, from the history's nanosecond stamps. Never fails in v1."""
    name = "latency"
    history = normalise(history)
    ok = _equals(history["status"], "ok")
    f = history["f"]
    read = ok & _equals(f, "read")
    duration = history["t_complete"].to_numpy() - history["t_invoke"].to_numpy()
    masks = {
        "read_hit": read & _hits(history["source"]),
        "read_miss": read & _equals(history["source"], "miss"),
        "write": ok & _equals(f, "write"),
        "fill": ok & _equals(f, "fill"),
    }
    masks.update({op: ok & _equals(f, op) for op in CONTENTION_LATENCY_OPS})
    notification = latency_stats(_notification_ns(history))
    groups = {
        g: notification if g == "notification" else latency_stats(duration[masks[g]]) for g in LATENCY_GROUPS
    }
    if all(s["count"] == 0 for s in groups.values()):
        return CheckResult.skip(name, "no ok operations to time", groups)
    return CheckResult(name, passed=True, figures=groups)


def check_history_complete(run: dict[str, Any] | None, rows_loaded: int | None = None) -> CheckResult:
    """Whether the run collected every batch of history from every node, per ``run.json``."""
    name = "history_complete"
    if run is None:
        return CheckResult.skip(name, NO_RUN_NOTE, {"rows_loaded": rows_loaded})
    complete = run.get("history_complete")
    missing: dict[str, list[Any]] = {}
    unreported: list[str] = []
    nodes = run.get("nodes")
    if isinstance(nodes, dict):
        for node, info in nodes.items():
            if not isinstance(info, dict):
                continue
            if info.get("missing_batches"):
                missing[str(node)] = list(info["missing_batches"])
            # A node that never sent its final count may have lost batches nobody can number.
            if info.get("reported_final_count") is False:
                unreported.append(str(node))
    figures: dict[str, Any] = {
        "nodes": len(nodes) if isinstance(nodes, dict) else None,
        "missing_batches": missing,
        "missing_batch_count": sum(len(b) for b in missing.values()),
        "nodes_without_final_count": unreported,
        "rows_reported": run.get("rows"),
        "rows_loaded": rows_loaded,
    }
    if not isinstance(complete, bool):
        return CheckResult.skip(name, "run.json does not say whether the history is complete", figures)
    violations = 0 if complete else max(figures["missing_batch_count"] + len(unreported), 1)
    return CheckResult(name, passed=complete, violations=violations, figures=figures)


def check_generator_cpu(run: dict[str, Any] | None) -> CheckResult:
    """How busy the load generator was: each node's CPU samples, per ``run.json``. Never fails.

    Each Locust process samples its own CPU use once a second (percent of one core). A process at
    90% or more (``busy_percent``, Locust's own warning level) makes its users' greenlets queue for
    the event loop, so the latencies it measures in those seconds include its own wait: the
    figures describe the generator as much as the system. :func:`generator_note` words that for
    the verdict. Skipped for runs from before the samples were recorded.

    Example::

        check_generator_cpu(load_run(results)).figures["busy_seconds"]
    """
    name = "generator_cpu"
    if run is None:
        return CheckResult.skip(name, NO_RUN_NOTE)
    nodes = run.get("nodes")
    per_node = {
        str(node): info["cpu_percent"]
        for node, info in (nodes.items() if isinstance(nodes, dict) else ())
        if isinstance(info, dict) and isinstance(info.get("cpu_percent"), dict)
    }
    if not per_node:
        return CheckResult.skip(name, "run.json has no CPU samples of the load generator")
    busy = {n: c["busy_samples"] * c["interval_s"] for n, c in per_node.items() if c.get("busy_samples")}
    figures: dict[str, Any] = {
        "nodes": len(per_node),
        "max_percent": max(c["max"] for c in per_node.values()),
        "median_percent": max(c["median"] for c in per_node.values()),
        "busy_percent": next(iter(per_node.values())).get("busy_percent"),
        "busy_seconds": sum(busy.values()),
        "busy_nodes": sorted(busy),
        "per_node": per_node,
    }
    return CheckResult(name, passed=True, figures=figures)


def generator_note(result: CheckResult) -> str | None:
    """The verdict's note when the load generator was busy (:func:`check_generator_cpu`), else None."""
    if result.skipped or not result.figures.get("busy_seconds"):
        return None
    f = result.figures
    nodes = ", ".join(f["busy_nodes"])
    return (
        f"the load generator was busy: {nodes} at {f['busy_percent']:g}% CPU or more for "
        f"{f['busy_seconds']:g} s (max {f['max_percent']:g}%); latencies measured then include the "
        "generator's own queueing. Spread the users over more processes (--processes) or machines."
    )


# --------------------------------------------------------------------------------------------------
# Composition


def run_checks(
    history: pd.DataFrame | None,
    run: dict[str, Any] | None = None,
    options: Options | None = None,
    locust: dict[str, Any] | None = None,
    thresholds: Thresholds | None = None,
) -> Verdict:
    """Run every check and compose the results into one :class:`Verdict`.

    ``history`` may be ``None`` (a results dir holding only Locust CSVs): every history check is
    then skipped. ``options`` default to :meth:`Options.resolve` on ``run``. ``thresholds`` (see
    :func:`analysis.thresholds.load_thresholds`) are judged against the results when given; the
    library applies none by default, the command line applies the seed SLAs.
    """
    # Imported here: both modules build on this one's helpers.
    from analysis import contention  # noqa: PLC0415
    from analysis.cascade import check_cascade  # noqa: PLC0415
    from analysis.thresholds import evaluate_thresholds  # noqa: PLC0415
    from analysis.tiers import check_tier_staleness  # noqa: PLC0415

    options = options or Options.resolve(run)
    n = options.examples
    notes: list[str] = []
    if run is None:
        notes.append(NO_RUN_NOTE)
    if history is None:
        notes.append(f"{NO_HISTORY}: only Locust's figures are reported")
        checks = [CheckResult.skip(c, NO_HISTORY) for c in CHECK_NAMES]
        checks[CHECK_NAMES.index("history_complete")] = check_history_complete(run, None)
        checks[CHECK_NAMES.index("generator_cpu")] = check_generator_cpu(run)
    else:
        tol = options.tolerance_ns
        with sharing(history) as h:
            checks = [
                check_stale_read(h, tol, n),
                check_future_read(h, tol, n),
                check_monotonic_read(h, n),
                check_ws_delivery(h, options.ws_grace_ns, tol, n),
                check_divergence(h, n),
                check_hit_ratio(h),
                check_latency(h),
                check_open_model_latency(h),
                check_history_complete(run, len(h)),
                check_generator_cpu(run),
                contention.check_counter(h, tol, n),
                contention.check_stampede(h, options.stampede_guard == "lock", n),
                contention.check_tx_atomicity(h, n),
                contention.check_lock_safety(h, options.lock_ttl_ns, tol, n),
                contention.check_invalidation_latency(h),
                contention.check_eviction(h, tol, n),
            ]
            # Issue 8: staleness per serving tier and the invalidation cascade (tiers.py, cascade.py).
            checks += [check_tier_staleness(h, tol, options.ws_grace_ns, n), check_cascade(h, n)]
    judged = (
        evaluate_thresholds(thresholds, checks, None if history is None else normalise(history), run, locust)
        if thresholds is not None
        else []
    )
    busy = generator_note(checks[CHECK_NAMES.index("generator_cpu")])
    if busy is not None:
        notes.append(busy)
    summary_options = options.to_dict()
    summary_options["thresholds"] = thresholds.source if thresholds is not None else None
    return Verdict(
        checks=checks,
        run=run,
        locust=locust,
        options=summary_options,
        notes=notes,
        thresholds=judged,
    )
