"""Sorting and searching on packed int64 codes: the numpy primitives the checks are built from.

A (group, time) pair packed into one int64 sorts in the pair's order, so one ``np.sort`` or
``np.searchsorted`` over plain integers does what a lexicographic sort or a grouped ``merge_asof``
would; each helper checks that its codes fit in 63 bits and otherwise takes a slower path with the
same answer. Nothing here knows what a history is: inputs and outputs are plain arrays.

The names keep their leading underscore: they are the analysis package's own, not its public API.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


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
