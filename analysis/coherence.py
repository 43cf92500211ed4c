"""The checks of the coherence workload: stale, future and non-monotonic reads, WebSocket delivery,
divergence at test stop, hit ratio and latency.

Modelled on Jepsen's checkers: each check is a small pure function from an op history to a
:class:`CheckResult`: it counts violations of one property, reports figures and a few of the worst
offending rows. Every check is vectorised (sorts and binary searches on packed int64 codes, grouped
running maxima, :mod:`analysis.arrays`); none loops over rows, so a history of millions of
operations is checked in seconds. Run together by :func:`analysis.checks.run_checks`, checks share
derived arrays (:func:`analysis.kernels.sharing`); each stays callable on its own. The list of
checks and what each needs is :mod:`analysis.registry`. Precise definitions and the reasoning behind
them are in docs/checks.md.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from analysis.arrays import _count_before, _distinct, _member, _regressions, _sorted_unique, _worst
from analysis.kernels import (
    Run,
    _codes,
    _equals,
    _examples,
    _hits,
    _is,
    _max_completed_before,
    _notification_ns,
    _ok_ops,
    _ops,
    _percentiles_us,
    _running_max,
    first_missed_writes,
    group_durations,
    latency_stats,
    latency_stats_of_runs,
    stale_flags,
)
from analysis.load import normalise
from analysis.ops import GAP_RECONNECT, GAP_SEQ, NS_PER_S, NS_PER_US, WS_GAP, WS_OPS
from analysis.verdict import CheckResult


def check_stale_read(history: pd.DataFrame, tolerance_ns: int = 0, examples: int = 5) -> CheckResult:
    """Ok reads that returned a version older than one whose write had already completed.

    A read of key k invoked at t is stale when some committed write of k with a higher version
    completed strictly before ``t - tolerance_ns``: an ok write, or an ``info`` write with a version
    (committed, its invalidation unconfirmed). ``stale_after_unconfirmed`` counts the stale reads
    that only such a write makes stale; they are violations like the others.
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
        "stale_after_unconfirmed": _stale_after_unconfirmed(stale_reads, writes, tolerance_ns),
        "tolerance_ns": tolerance_ns,
    }
    age_ns = np.array([], dtype="int64")
    missed = pd.DataFrame()
    if len(stale_reads):
        missed = first_missed_writes(stale_reads, writes)
        age_ns = missed["t_invoke"].to_numpy() - missed["w_t_complete"].to_numpy(dtype="int64")
    pct = _percentiles_us(age_ns, {"p50": 50, "p99": 99, "max": 100})
    figures.update({"age_p50_us": pct["p50"], "age_p99_us": pct["p99"], "age_max_us": pct["max"]})
    served = np.where(_hits(reads["source"]), "hit", reads["source"].astype(object).to_numpy())
    figures["by_source"] = {
        src: {"reads": int((served == src).sum()), "stale": int((served[stale] == src).sum())}
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
                        {
                            "row": int(r),
                            "process": int(p),
                            "version": int(v),
                            "t_complete": int(t),
                            "invalidation_confirmed": bool(c),
                        }
                        for r, p, v, t, c in zip(
                            pick["w_row"],
                            pick["w_process"],
                            pick["w_version"],
                            pick["w_t_complete"],
                            pick["w_confirmed"],
                            strict=True,
                        )
                    ],
                    dtype=object,
                ),
            },
        )
    count = figures["stale"]
    return CheckResult(name, passed=count == 0, violations=count, figures=figures, examples=shown)


def _stale_after_unconfirmed(stale_reads: pd.DataFrame, writes: pd.DataFrame, tolerance_ns: int) -> int:
    """How many of the stale reads no ok write makes stale: only a write whose invalidation is
    unconfirmed (an ``info`` write with a version) had committed a newer version before them."""
    confirmed = writes["confirmed"].to_numpy(dtype=bool)
    if len(stale_reads) == 0 or confirmed.all():
        return 0
    cut = stale_reads["t_invoke"].to_numpy() - tolerance_ns
    seen_ok = _max_completed_before(stale_reads, writes.loc[confirmed], cut)
    return int((~(np.nan_to_num(seen_ok, nan=-np.inf) > stale_reads["version"].to_numpy())).sum())


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
        "beyond_final_version": _beyond_final_version(
            history, reads["row"].to_numpy()[ahead], versions[ahead]
        ),
        "writes_considered": len(writes),
        "tolerance_ns": tolerance_ns,
    }
    return CheckResult(name, passed=count == 0, violations=count, figures=figures, examples=shown)


def _beyond_final_version(history: pd.DataFrame, rows: np.ndarray, versions: np.ndarray) -> int:
    """How many of these reads (history rows) returned a version above their key's database
    version at the sweep.

    Versions grow by 1 per committed write and never go back, so the sweep's database version
    bounds every version the key ever had: a read above it is a version that never existed, which
    no write missing from the history could explain.
    """
    if len(rows) == 0:
        return 0
    codes = _codes(history["key"])
    swept = _equals(history["f"], "sweep") & history["value"].notna().to_numpy() & (codes >= 0)
    final = pd.Series(history["value"].to_numpy(dtype="float64", na_value=np.nan)[swept]).groupby(
        codes[swept]
    )
    bound = final.max().reindex(codes[rows]).to_numpy()
    return int((versions > bound).sum())


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


def _connections(history: pd.DataFrame, grace_ns: int, horizon_ns: int | None = None) -> pd.DataFrame:
    """One row per opened connection: process and the window in which writes must be delivered.

    A connection opened by an ok ``ws_open`` ends at the process's next ``ws_close``, or at its next
    ``ws_open`` if it reopened without a close being recorded, or else at the end of the history
    (``horizon_ns`` when ``history`` is a part of it, else its own latest ``t_complete``).
    """
    opens = history.loc[_is(history, "ws_open"), ["process", "t_invoke", "t_complete"]]
    opens = opens.sort_values(["process", "t_invoke"], kind="stable").reset_index(drop=True)
    if len(opens) == 0:
        return pd.DataFrame({"process": [], "start": [], "end": []}, dtype="int64")
    closes = history.loc[_is(history, "ws_close", None), ["process", "t_invoke"]].rename(
        columns={"t_invoke": "close_t"}
    )
    horizon = int(history["t_complete"].max()) if horizon_ns is None else horizon_ns
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


def _notifier_gaps(history: pd.DataFrame, grace_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """The windows in which the notifier was re-LISTENing (``ws_gap`` rows of ``source=reconnect``,
    from any listener: the loss is the notifier's, not one tab's), widened by ``grace_ns`` each
    side and merged: sorted, disjoint starts and ends."""
    mask = _equals(history["f"], WS_GAP) & _equals(history["source"], GAP_RECONNECT)
    starts = history["t_invoke"].to_numpy(dtype="int64")[mask] - grace_ns
    ends = history["t_complete"].to_numpy(dtype="int64")[mask] + grace_ns
    if len(starts) == 0:
        return starts, ends
    order = np.argsort(starts, kind="stable")
    starts, ends = starts[order], np.maximum.accumulate(ends[order])
    # A window opens a new merged one only where it starts after every earlier one ended.
    new = np.ones(len(starts), dtype=bool)
    new[1:] = starts[1:] > ends[:-1]
    groups = np.cumsum(new) - 1
    merged_ends = np.zeros(int(groups[-1]) + 1, dtype="int64")
    np.maximum.at(merged_ends, groups, ends)
    return starts[new], merged_ends


def _in_gap(t_invoke: np.ndarray, t_complete: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Which writes overlap a merged gap window: their commit, somewhere in their interval, may
    have fallen inside it."""
    if len(starts) == 0:
        return np.zeros(len(t_invoke), dtype=bool)
    j = np.searchsorted(starts, t_complete, side="right") - 1
    return (j >= 0) & (ends[np.maximum(j, 0)] >= t_invoke)


def check_ws_delivery(
    history: pd.DataFrame,
    grace_ns: int = NS_PER_S,
    tolerance_ns: int = 0,
    examples: int = 5,
    horizon_ns: int | None = None,
) -> CheckResult:
    """Every ok write committed while a listener was connected must reach that listener.

    Missing deliveries are violations, except those of writes that overlap (within ``grace_ns``) a
    window in which the notifier was re-LISTENing to PostgreSQL (``ws_gap`` rows of
    ``source=reconnect``): PostgreSQL itself drops notifications for a listener that is gone, so
    those are counted apart (``missing_during_notifier_gap``) and, judged by nobody, make the check
    unknown when they are all there is. Duplicates, out-of-order deliveries, holes in ``seq``,
    latency and the staleness of the listener's local copy (``ui_read``) are reported only.
    """
    name = "ws_delivery"
    history = normalise(history)
    ws = np.zeros(len(history), dtype=bool)
    for op in WS_OPS:
        ws |= _equals(history["f"], op)
    if not ws.any():
        return CheckResult.skip(name, "no WebSocket listener rows (ws_open/ws_recv/ws_close)")
    listeners = np.unique(history["process"].to_numpy()[ws])
    conns = _connections(history, grace_ns, horizon_ns)
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

    gap_starts, gap_ends = _notifier_gaps(history, grace_ns)
    in_gap = _in_gap(writes["t_invoke"].to_numpy(), w_time, gap_starts, gap_ends)
    expected_total = missing_total = gap_missing = duplicates = 0
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
        lost_any = idx[first[~found]]
        lost = lost_any[~in_gap[lost_any]]
        gap_missing += len(lost_any) - len(lost)
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

    delivered = expected_total - missing_total - gap_missing
    # The ratio is of the deliveries judged: those lost in a notifier gap are the check's unknown.
    judged = expected_total - gap_missing
    holes = _equals(history["f"], WS_GAP) & _equals(history["source"], GAP_SEQ)
    figures = {
        "listeners": len(listeners),
        "connections": len(conns),
        "expected": expected_total,
        "delivered": delivered,
        "missing": missing_total,
        "missing_during_notifier_gap": gap_missing,
        "judged": judged,
        "delivery_ratio": delivered / judged if judged else None,
        "notifier_gaps": len(gap_starts),
        "seq_holes": int(holes.sum()),
        "seq_missed": int(history["value"].to_numpy(dtype="float64", na_value=0.0)[holes].sum()),
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
    result = CheckResult(
        name, passed=missing_total == 0, violations=missing_total, figures=figures, examples=shown
    )
    if missing_total == 0 and gap_missing:
        result.make_unknown(
            f"{gap_missing} deliveries were missing only where the notifier was reconnecting to"
            " PostgreSQL (which drops notifications meanwhile), so whether they would have arrived"
            " was not judged"
        )
    return result


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


def check_latency(history: pd.DataFrame) -> CheckResult:
    """Latency of ok operations per kind, from the history's nanosecond stamps. Never fails in v1."""
    return latency_result(group_durations(normalise(history)))


def latency_result(
    durations: dict[str, np.ndarray] | None = None, runs: dict[str, list[Run]] | None = None
) -> CheckResult:
    """The ``latency`` check's result from the latencies (ns) of every group, however collected:
    whole (``durations``), or as sorted runs (``runs``, from partitions) that give the same figures."""
    name = "latency"
    if runs is not None:
        groups = {g: latency_stats_of_runs(values) for g, values in runs.items()}
    else:
        groups = {g: latency_stats(values) for g, values in (durations or {}).items()}
    if all(s["count"] == 0 for s in groups.values()):
        return CheckResult.skip(name, "no ok operations to time", groups)
    return CheckResult(name, passed=True, figures=groups)
