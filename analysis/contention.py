"""Checks of the contention workloads: counters, stampedes, transactions, locks, invalidation, eviction.

Same contract as :mod:`analysis.coherence`: each check is a pure, vectorised function of the op history
(docs/history.md, section "Contention workloads") returning a :class:`CheckResult`, skipped when the
history holds none of its operations. Definitions and the reasoning behind them are in
docs/checks.md.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from analysis.arrays import _asof, _worst
from analysis.kernels import (
    INT64_MIN,
    _codes,
    _equals,
    _examples,
    _is,
    _max_completed_before,
    _running_max,
    assign_epochs,
    stale_flags,
    stampede_epochs,
)
from analysis.load import normalise
from analysis.ops import DEFAULT_LOCK_TTL_MS, NS_PER_MS, NS_PER_S, NS_PER_US
from analysis.verdict import CheckResult

# --------------------------------------------------------------------------------------------------
# Helpers


def _valued(history: pd.DataFrame, mask: pd.Series, *, keyed: bool = True) -> pd.DataFrame:
    """Rows under ``mask`` that carry a ``value`` (and a key, when ``keyed``) as plain numpy columns.

    ``key`` is the categorical code, ``row`` the history index, ``value`` an int64; ``status`` and
    ``source`` are strings (``source`` is ``"unknown"`` when null).
    """
    keep = np.asarray(mask, dtype=bool) & history["value"].notna().to_numpy()
    if keyed:
        keep &= _codes(history["key"]) >= 0
    idx = np.flatnonzero(keep)
    return pd.DataFrame(
        {
            "row": idx.astype("int64"),
            "process": history["process"].to_numpy(dtype="int64")[idx],
            "key": _codes(history["key"])[idx].astype("int64"),
            "t_invoke": history["t_invoke"].to_numpy(dtype="int64")[idx],
            "t_complete": history["t_complete"].to_numpy(dtype="int64")[idx],
            "value": history["value"].array.take(idx).to_numpy(dtype="int64"),
            "status": _strings(history["status"], idx),
            "source": _strings(history["source"], idx, "unknown"),
        },
        copy=False,
    )


def _strings(column: pd.Series, idx: np.ndarray, null: Any = np.nan) -> np.ndarray:
    """The categorical ``column`` at positions ``idx`` as an object array of str (``null`` for nulls).

    What ``column.iloc[idx].astype("object")`` gives, without converting the rows not taken.
    """
    categories = np.asarray(column.cat.categories.astype("object"), dtype=object)
    codes = _codes(column)[idx]
    out = np.empty(len(idx), dtype=object)
    known = codes >= 0
    out[known] = categories[codes[known]]
    out[~known] = null
    return out


def _sum_before(
    key: np.ndarray,
    cut: np.ndarray,
    event_key: np.ndarray,
    event_t: np.ndarray,
    weight: np.ndarray,
    *,
    strict: bool,
) -> np.ndarray:
    """Per (key, cut): the sum of ``weight`` over events of that key at ``event_t`` before ``cut``.

    "Before" is ``<`` when ``strict``, else ``<=``. The events sorted by (key, time) with a running
    sum, and one search per query for its key's events before the cut, answer every query at once.
    """
    if len(key) == 0 or len(event_key) == 0:
        return np.zeros(len(key), dtype="int64")
    order, first, end = _asof(event_key, event_t, key, cut, strict=strict)
    cum = np.zeros(len(order) + 1, dtype="int64")
    np.cumsum(np.asarray(weight, dtype="int64")[order], out=cum[1:])
    return cum[end] - cum[first]


def _open_before(group: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """For each interval ``[start, end)``: how many earlier-starting intervals of its group overlap it.

    In start order within a group, an interval overlaps those before it that have not ended by its
    start: the number of earlier intervals minus the number of the group's intervals with
    ``end <= start`` (all of which started earlier, since every interval is non-empty). Summed over
    intervals, this counts each overlapping pair once. Ties in ``start`` overlap each other.
    """
    n = len(start)
    result = np.zeros(n, dtype="int64")
    if n == 0:
        return result
    order = np.lexsort((start, group))
    g = group[order]
    first = np.ones(n, dtype=bool)
    first[1:] = g[1:] != g[:-1]
    idx = np.arange(n)
    earlier = idx - np.maximum.accumulate(np.where(first, idx, 0))
    ends = pd.DataFrame({"end": end, "group": group}).sort_values("end", kind="stable")
    ends["closed"] = ends.groupby("group", sort=False).cumcount() + 1
    left = pd.DataFrame({"i": idx, "group": g, "start": start[order]}).sort_values("start", kind="stable")
    merged = pd.merge_asof(
        left,
        ends,
        left_on="start",
        right_on="end",
        by="group",
        direction="backward",
        allow_exact_matches=True,
    )
    closed = np.zeros(n, dtype="int64")
    closed[merged["i"].to_numpy()] = merged["closed"].fillna(0).to_numpy().astype("int64")
    result[order] = earlier - closed
    return result


def _distribution(values: np.ndarray) -> dict[str, float | None]:
    """Max, p99 and mean of small counts (``None`` when there are none)."""
    if len(values) == 0:
        return {"max": None, "p99": None, "mean": None}
    return {
        "max": int(values.max()),
        "p99": round(float(np.percentile(values, 99)), 3),
        "mean": round(float(values.mean()), 3),
    }


def _status_counts(frame: pd.DataFrame) -> dict[str, int]:
    status = frame["status"]
    return {s: int((status == s).sum()) for s in ("ok", "info", "fail")}


# --------------------------------------------------------------------------------------------------
# Checks


def check_counter(history: pd.DataFrame, tolerance_ns: int = 0, examples: int = 5) -> CheckResult:
    """Jepsen's counter bounds: every ok ``counter_read`` lies between what certainly and possibly applied.

    A read of a counter is at least the sum of ok increments of it completed before the read was
    invoked, and at most the sum of ok and info increments invoked before it completed (fail
    increments never count; every counter starts at 0). Negative amounts, if any, swap sides.
    """
    name = "counter"
    history = normalise(history)
    reads = _valued(history, _is(history, "counter_read"))
    incrs = _valued(history, history["f"] == "incr")
    if len(reads) == 0:
        return CheckResult.skip(name, "no ok counter_read rows with a value")
    ok = incrs.loc[incrs["status"] == "ok"]
    maybe = incrs.loc[incrs["status"].isin(["ok", "info"])]
    key = reads["key"].to_numpy()
    after_invoke = reads["t_invoke"].to_numpy() - tolerance_ns  # completed strictly before this
    by_complete = reads["t_complete"].to_numpy() + tolerance_ns  # invoked at or before this

    def certain(weight: pd.Series) -> np.ndarray:
        return _sum_before(
            key,
            after_invoke,
            ok["key"].to_numpy(),
            ok["t_complete"].to_numpy(),
            weight.to_numpy(),
            strict=True,
        )

    def possible(weight: pd.Series) -> np.ndarray:
        return _sum_before(
            key,
            by_complete,
            maybe["key"].to_numpy(),
            maybe["t_invoke"].to_numpy(),
            weight.to_numpy(),
            strict=False,
        )

    lower = certain(ok["value"].clip(lower=0)) + possible(maybe["value"].clip(upper=0))
    upper = possible(maybe["value"].clip(lower=0)) + certain(ok["value"].clip(upper=0))
    value = reads["value"].to_numpy()
    below, above = value < lower, value > upper
    shortfall = np.clip(lower - value, 0, None)
    # The final read of each key (latest invocation) says how many certain increments were lost for good.
    final = reads.assign(shortfall=shortfall).sort_values(["key", "t_invoke"], kind="stable")
    final = final.drop_duplicates("key", keep="last")
    by_source = {
        str(mode): _status_counts(group) for mode, group in incrs.groupby("source", sort=True, observed=True)
    }
    figures: dict[str, Any] = {
        "reads_checked": len(reads),
        "counters": int(reads["key"].nunique()),
        "increments_ok": int((incrs["status"] == "ok").sum()),
        "increments_info": int((incrs["status"] == "info").sum()),
        "increments_fail": int((incrs["status"] == "fail").sum()),
        "below_lower_bound": int(below.sum()),
        "above_upper_bound": int(above.sum()),
        "lost_updates": int(final["shortfall"].sum()),
        "max_shortfall": int(shortfall.max()) if len(shortfall) else 0,
        "by_source": by_source,
        "tolerance_ns": tolerance_ns,
    }
    bad = below | above
    gap = np.where(below, lower - value, value - upper)[bad]
    worst = _worst(gap, examples)
    shown = _examples(
        history,
        reads["row"].to_numpy()[bad][worst],
        {
            "lower_bound": lower[bad][worst],
            "upper_bound": upper[bad][worst],
            "violation": np.where(below[bad][worst], "lost_update", "above_upper_bound"),
        },
    )
    count = int(bad.sum())
    return CheckResult(name, passed=count == 0, violations=count, figures=figures, examples=shown)


def _openings(history: pd.DataFrame, f: str) -> pd.DataFrame:
    """The epochs the ok ``f`` rows open: ``key`` code and ``epoch`` (their completion), in time order."""
    rows = history.loc[_is(history, f) & history["key"].notna()]
    return pd.DataFrame(
        {
            "key": rows["key"].cat.codes.to_numpy().astype("int64"),
            "epoch": rows["t_complete"].to_numpy(dtype="int64"),
        }
    ).sort_values("epoch", kind="stable")


def read_recomputations(history: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, int] | None:
    """A target's recomputations, from its reads, for a history without ``db_load`` rows.

    A target reports a read as ``source`` ``miss`` when that read's own load from the database ran
    (docs/targets.md); each ok ``write`` of a key opens a new epoch at its completion. A miss whose
    read overlaps a write of its key (ok or info) may have loaded on either side of it, so it is
    left out rather than guessed, and counted (the third item). The loads frame and the openings
    are :func:`check_stampede`'s; None when there is no ok miss at all.
    """
    f, status, source = history["f"], history["status"], history["source"]
    keyed = history["key"].notna().to_numpy()
    misses = history.loc[_equals(f, "read") & _equals(status, "ok") & _equals(source, "miss") & keyed]
    if len(misses) == 0:
        return None
    writes = history.loc[_equals(f, "write") & (_equals(status, "ok") | _equals(status, "info")) & keyed]
    key = misses["key"].cat.codes.to_numpy().astype("int64")
    w_key = writes["key"].cat.codes.to_numpy().astype("int64")
    ones = np.ones(len(writes), dtype="int64")
    # Every write starts before it completes, so those that ended before the read began are among
    # those that began before it ended: the difference is the number overlapping it.
    began = _sum_before(
        key,
        misses["t_complete"].to_numpy(dtype="int64"),
        w_key,
        writes["t_invoke"].to_numpy(dtype="int64"),
        ones,
        strict=False,
    )
    ended = _sum_before(
        key,
        misses["t_invoke"].to_numpy(dtype="int64"),
        w_key,
        writes["t_complete"].to_numpy(dtype="int64"),
        ones,
        strict=True,
    )
    clear = (began - ended) == 0
    loads = pd.DataFrame(
        {
            "row": misses.index.to_numpy(dtype="int64")[clear],
            "key": key[clear],
            "t_invoke": misses["t_invoke"].to_numpy(dtype="int64")[clear],
            "source": np.full(int(clear.sum()), "read_miss", dtype=object),
        }
    ).sort_values("t_invoke", kind="stable")
    return loads, _openings(history, "write"), int((~clear).sum())


def check_stampede(
    history: pd.DataFrame,
    expect_single: bool = False,
    examples: int = 5,
    *,
    expect_single_reads: bool = False,
) -> CheckResult:
    """Database loads per key per epoch, an epoch being opened by each ok ``invalidate`` of the key.

    Reported only, unless ``expect_single`` (the run's stampede guard is ``lock``): then an epoch
    with more than one ok ``db_load`` is a violation. A history without ``db_load`` rows (a target's
    own read path) is counted on its read misses instead (:func:`read_recomputations`), and judged
    only with ``expect_single_reads``: ``--stampede-guard`` is StampedeUser's, not the target's, so
    it says nothing of how a target guards its own loads.
    """
    name = "stampede"
    history = normalise(history)
    loads, openings = stampede_epochs(history)
    ambiguous = 0
    loads_from = "db_load"
    if len(loads) == 0:
        from_reads = read_recomputations(history)
        if from_reads is None:
            return CheckResult.skip(
                name, "no ok db_load rows, nor ok reads with source miss", {"expect_single": expect_single}
            )
        misses, openings, ambiguous = from_reads
        if len(misses) == 0:
            return CheckResult.skip(
                name,
                f"no ok db_load rows, and each of the {ambiguous} read misses overlapped a write of its key",
                {"expect_single": expect_single},
            )
        loads = assign_epochs(misses, openings)
        loads_from = "read_misses"
        expect_single = expect_single_reads
    per_epoch = loads.groupby(["key", "epoch"], sort=False).agg(
        loads=("row", "size"), first_row=("row", "first")
    )
    counts = per_epoch["loads"].to_numpy()
    opened = len(openings.drop_duplicates(["key", "epoch"]))
    epoch0 = int((per_epoch.index.get_level_values("epoch") == INT64_MIN).sum())
    per_second = pd.Series(loads["t_invoke"].to_numpy() // NS_PER_S).value_counts()
    by_guard: dict[str, Any] = {}
    for guard, group in loads.groupby("source", sort=True):
        sizes = group.groupby(["key", "epoch"], sort=False).size().to_numpy()
        dist = _distribution(sizes)
        by_guard[str(guard)] = {
            "db_loads": len(group),
            "epochs_loaded": len(sizes),
            "max_loads_per_epoch": dist["max"],
            "mean_loads_per_epoch": dist["mean"],
            "multi_load_epochs": int((sizes > 1).sum()),
        }
    dist = _distribution(counts)
    multi = counts > 1
    figures: dict[str, Any] = {
        "epochs": opened + epoch0,
        "epochs_opened": opened,
        "epochs_loaded": len(counts),
        "db_loads": len(loads),
        "max_loads_per_epoch": dist["max"],
        "p99_loads_per_epoch": dist["p99"],
        "mean_loads_per_epoch": dist["mean"],
        "multi_load_epochs": int(multi.sum()),
        "peak_db_loads_per_s": int(per_second.max()),
        "by_guard": by_guard,
        "expect_single": expect_single,
        "loads_from": loads_from,
        "ambiguous_read_misses": ambiguous,
    }
    violations = int(multi.sum()) if expect_single else 0
    shown: list[dict[str, Any]] = []
    if multi.any():
        worst = _worst(np.where(multi, counts, 0), min(examples, int(multi.sum())))
        epochs = per_epoch.index.get_level_values("epoch").to_numpy()[worst]
        shown = _examples(
            history,
            per_epoch["first_row"].to_numpy()[worst],
            {
                "loads_in_epoch": counts[worst],
                "epoch_opened_ns": np.array(
                    [None if e == INT64_MIN else int(e) for e in epochs], dtype=object
                ),
            },
        )
    return CheckResult(name, passed=violations == 0, violations=violations, figures=figures, examples=shown)


def check_tx_atomicity(history: pd.DataFrame, examples: int = 5) -> CheckResult:
    """Every ok ``tx_read`` of a group must see its keys summing to 0: transfers apply whole or not."""
    name = "tx_atomicity"
    history = normalise(history)
    reads = _valued(history, _is(history, "tx_read"), keyed=False)
    if len(reads) == 0:
        return CheckResult.skip(name, "no ok tx_read rows with a value")
    transfers = history.loc[history["f"] == "tx_transfer", "status"]
    n_ok, n_fail, n_info = (int((transfers == s).sum()) for s in ("ok", "fail", "info"))
    value = reads["value"].to_numpy()
    off = np.abs(value)
    bad = value != 0
    figures = {
        "reads": len(reads),
        "groups": int(reads["key"].nunique()),
        "transfers_ok": n_ok,
        "transfers_fail": n_fail,
        "transfers_info": n_info,
        "watch_abort_rate": n_fail / len(transfers) if len(transfers) else None,
        "nonzero_sums": int(bad.sum()),
        "max_abs_sum": int(off.max()),
    }
    worst = _worst(off[bad], examples)
    shown = _examples(history, reads["row"].to_numpy()[bad][worst])
    count = int(bad.sum())
    return CheckResult(name, passed=count == 0, violations=count, figures=figures, examples=shown)


def _lock_intervals(history: pd.DataFrame, ttl_ns: int) -> pd.DataFrame:
    """Ok acquisitions with the interval in which each was certainly held: ``[start, end)``.

    ``start`` is the acquisition's completion; ``end`` the earlier of the same process's next
    release of the key with the same token (its invocation) and the acquisition's invocation plus
    the TTL (the lock may have expired from then on, whatever the holder believed).
    """
    acq = _valued(history, _is(history, "lock_acquire"))
    rel = _valued(history, history["f"] == "lock_release")
    acq = acq.rename(columns={"value": "token"}).sort_values("t_complete", kind="stable")
    acq["end"] = acq["t_invoke"] + ttl_ns
    if len(acq) and len(rel):
        releases = rel[["process", "key", "value", "t_invoke"]].rename(
            columns={"value": "token", "t_invoke": "released"}
        )
        releases = releases.sort_values("released", kind="stable").reset_index(drop=True)
        releases["rel_i"] = np.arange(len(releases))
        acq = pd.merge_asof(
            acq,
            releases,
            left_on="t_complete",
            right_on="released",
            by=["process", "key", "token"],
            direction="forward",
        )
        # Matched by position, so that nanosecond times never pass through a float column.
        position = acq["rel_i"].fillna(-1).to_numpy().astype("int64")
        has = position >= 0
        end = acq["end"].to_numpy().copy()
        end[has] = np.minimum(end[has], releases["released"].to_numpy()[position[has]])
        acq["end"] = end
    acq["start"] = acq["t_complete"]
    return acq.reset_index(drop=True)


def check_lock_safety(
    history: pd.DataFrame,
    ttl_ns: int = DEFAULT_LOCK_TTL_MS * NS_PER_MS,
    tolerance_ns: int = 0,
    examples: int = 5,
) -> CheckResult:
    """Mutual exclusion of a lease lock, and fencing tokens honoured by the guarded resource.

    Violations: pairs of certainly-held intervals of one lock with different tokens that overlap,
    and ok ``guarded_write`` rows whose token is below one already accepted (completed before they
    were invoked) on the same lock.
    """
    name = "lock_safety"
    history = normalise(history)
    involved = history["f"].isin(["lock_acquire", "lock_release", "guarded_write"])
    if not involved.any():
        return CheckResult.skip(name, "no lock_acquire, lock_release or guarded_write rows")

    # A: overlapping certainly-held intervals. Clock slack shrinks every interval's end.
    held = _lock_intervals(history, ttl_ns)
    held["end"] = held["end"] - tolerance_ns
    held = held.loc[held["end"] > held["start"]].reset_index(drop=True)
    key = held["key"].to_numpy()
    same_token = held.groupby(["key", "token"], sort=False).ngroup().to_numpy()
    start, end = held["start"].to_numpy(), held["end"].to_numpy()
    pairs = _open_before(key, start, end) - _open_before(same_token, start, end)
    overlapping = pairs > 0

    # B: a stale fencing token accepted after a higher one was.
    writes = _valued(history, history["f"] == "guarded_write")
    accepted = writes.loc[writes["status"] == "ok"].rename(columns={"value": "version"})
    accepted = accepted.reset_index(drop=True)
    previous = _max_completed_before(
        accepted, _running_max(accepted), accepted["t_invoke"].to_numpy() - tolerance_ns
    )
    stale = np.nan_to_num(previous, nan=-np.inf) > accepted["version"].to_numpy()

    acquires = history.loc[history["f"] == "lock_acquire", "status"]
    releases = history.loc[history["f"] == "lock_release", "status"]
    figures: dict[str, Any] = {
        "acquisitions_ok": int((acquires == "ok").sum()),
        "acquisitions_fail": int((acquires == "fail").sum()),
        "releases_ok": int((releases == "ok").sum()),
        "releases_fail": int((releases == "fail").sum()),
        "intervals": len(held),
        "guarded_writes_accepted": len(accepted),
        "guarded_writes_refused": int((writes["status"] == "fail").sum()),
        "overlaps": int(pairs.sum()),
        "stale_token_accepts": int(stale.sum()),
        "ttl_ms": ttl_ns / NS_PER_MS,
        "tolerance_ns": tolerance_ns,
        "by_source": _guarded_by_mode(history, writes),
    }
    worst = _worst(pairs[overlapping], examples)
    shown = _examples(
        history,
        held["row"].to_numpy()[overlapping][worst],
        {
            "violation": np.full(len(worst), "overlap"),
            "overlapping_intervals": pairs[overlapping][worst],
            "held_from_ns": start[overlapping][worst],
            "held_until_ns": end[overlapping][worst] + tolerance_ns,
        },
    )
    gap = (previous - accepted["version"].to_numpy())[stale]
    worst = _worst(gap, examples - len(shown))
    shown += _examples(
        history,
        accepted["row"].to_numpy()[stale][worst],
        {
            "violation": np.full(len(worst), "stale_token"),
            "accepted_token_before": previous[stale][worst].astype("int64"),
        },
    )
    count = figures["overlaps"] + figures["stale_token_accepts"]
    return CheckResult(name, passed=count == 0, violations=count, figures=figures, examples=shown)


def _guarded_by_mode(history: pd.DataFrame, writes: pd.DataFrame) -> dict[str, Any]:
    """Guarded writes per lock mode (``locked`` / ``unlocked``), with their rate.

    A guarded write's mode is its own ``source`` when set, else that of its process's latest
    ``lock_acquire`` invoked before it.
    """
    if len(writes) == 0:
        return {}
    writes = writes.sort_values("t_invoke", kind="stable")
    acq = history.loc[history["f"] == "lock_acquire"]
    modes = pd.DataFrame(
        {
            "process": acq["process"].to_numpy(dtype="int64"),
            "acq_t": acq["t_invoke"].to_numpy(dtype="int64"),
            "mode": acq["source"].astype("object").fillna("unknown").to_numpy(),
        }
    ).sort_values("acq_t", kind="stable")
    merged = pd.merge_asof(
        writes, modes, left_on="t_invoke", right_on="acq_t", by="process", direction="backward"
    )
    mode = merged["source"].where(merged["source"] != "unknown", merged["mode"]).fillna("unknown")
    out: dict[str, Any] = {}
    for label, group in merged.groupby(mode.to_numpy(), sort=True):
        span = (group["t_complete"].max() - group["t_invoke"].min()) / NS_PER_S
        ok = int((group["status"] == "ok").sum())
        out[str(label)] = {
            "guarded_writes": len(group),
            "accepted": ok,
            "refused": int((group["status"] == "fail").sum()),
            "span_s": round(float(span), 3),
            "ops_per_s": round(len(group) / span, 3) if span > 0 else None,
            "accepted_per_s": round(ok / span, 3) if span > 0 else None,
        }
    return out


def check_invalidation_latency(history: pd.DataFrame) -> CheckResult:
    """Duration of ok ``invalidate_batch`` operations (pipelined UNLINK plus notification). Never fails."""
    name = "invalidation_latency"
    history = normalise(history)
    batches = history.loc[_is(history, "invalidate_batch")]
    if len(batches) == 0:
        return CheckResult.skip(name, "no ok invalidate_batch rows")
    ns = batches["t_complete"].to_numpy(dtype="int64") - batches["t_invoke"].to_numpy(dtype="int64")
    points = np.percentile(ns.astype("float64"), [50, 95, 99, 100])
    figures: dict[str, Any] = {"count": len(batches)}
    for label, v in zip(("p50", "p95", "p99", "max"), points, strict=True):
        figures[f"{label}_ms"] = round(float(v) / NS_PER_MS, 3)
    for label, v in zip(("p50", "p95", "p99", "max"), points, strict=True):
        figures[f"{label}_us"] = round(float(v) / NS_PER_US, 3)
    keys = batches["value"].dropna()
    figures["mean_keys_per_batch"] = round(float(keys.mean()), 3) if len(keys) else None
    return CheckResult(name, passed=True, figures=figures)


def check_eviction(history: pd.DataFrame, tolerance_ns: int = 0, examples: int = 5) -> CheckResult:
    """Behaviour under memory pressure: evictions, hit ratio, and stale reads while Redis evicted.

    Violations are the stale reads (as ``stale_read`` defines them) invoked between the sample
    before the first rise of ``evicted_keys`` and the last sample.
    """
    name = "eviction"
    history = normalise(history)
    stats = history.loc[_is(history, "redis_stat") & history["value"].notna() & history["key"].notna()]
    if len(stats) == 0:
        return CheckResult.skip(name, "no redis_stat rows")
    stats = stats.sort_values("t_invoke", kind="stable")
    stat = stats["key"].astype("object")

    def series(stat_name: str) -> tuple[np.ndarray, np.ndarray]:
        rows = stats.loc[stat == stat_name]
        return rows["t_invoke"].to_numpy(dtype="int64"), rows["value"].to_numpy(dtype="int64")

    def delta(values: np.ndarray) -> int | None:
        return int(values[-1] - values[0]) if len(values) else None

    ev_t, ev = series("evicted_keys")
    _, hits = series("keyspace_hits")
    _, misses = series("keyspace_misses")
    _, memory = series("used_memory")
    d_hits, d_misses = delta(hits), delta(misses)
    ratio = None
    if d_hits is not None and d_misses is not None and d_hits + d_misses > 0:
        ratio = d_hits / (d_hits + d_misses)
    rises = np.flatnonzero(np.diff(ev) > 0)
    window: tuple[int, int] | None = None
    if len(rises):
        # The first rise happened after the sample before it: the window opens there.
        window = (int(ev_t[rises[0]]), int(ev_t[-1]))

    reads, _, stale = stale_flags(history, tolerance_ns)
    t = reads["t_invoke"].to_numpy()
    during = (t >= window[0]) & (t <= window[1]) if window else np.zeros(len(reads), dtype=bool)
    bad = stale & during
    figures: dict[str, Any] = {
        "samples": int(stats["t_invoke"].nunique()),
        "evictions": delta(ev),
        "eviction_window_s": (window[1] - window[0]) / NS_PER_S if window else None,
        "keyspace_hits": d_hits,
        "keyspace_misses": d_misses,
        "hit_ratio": ratio,
        "used_memory_max": int(memory.max()) if len(memory) else None,
        "reads_checked": len(reads),
        "reads_during_eviction": int(during.sum()),
        "stale_reads": int(stale.sum()),
        "stale_during_eviction": int(bad.sum()),
        "tolerance_ns": tolerance_ns,
    }
    rows = reads["row"].to_numpy()[bad][:examples]
    shown = _examples(history, rows)
    count = int(bad.sum())
    return CheckResult(name, passed=count == 0, violations=count, figures=figures, examples=shown)
