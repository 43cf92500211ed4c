"""The one list of checks: each with how to call it, what it reads and how it is shown and merged.

Every consumer of "the checks" reads :data:`CHECKS`: :func:`analysis.checks.run_checks` (the verdict,
in this order), :data:`CHECK_NAMES`, the chunked mode (:mod:`analysis.chunked`: which checks run per
partition, how their results merge), the console table (:mod:`analysis.console`) and the HTML report
(:mod:`analysis.report`). Adding a check means writing its function (a pure function of the history
returning a :class:`CheckResult`, as Jepsen's checkers are) and one :class:`Check` entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
import pandas as pd

from analysis import cascade, coherence, contention, open_model, runinfo, tiers
from analysis.kernels import Run, group_durations
from analysis.ops import (
    CONTENTION_LATENCY_OPS,
    COUNTER_READ,
    DB_LOAD,
    FILL,
    GUARDED_WRITE,
    INCR,
    INVALIDATE,
    INVALIDATE_BATCH,
    LATENCY_GROUPS,
    LOCK_ACQUIRE,
    LOCK_RELEASE,
    NS_PER_S,
    OK,
    READ,
    REDIS_STAT,
    SWEEP,
    TIER_EVENT,
    TX_READ,
    TX_TRANSFER,
    UI_READ,
    WRITE,
    WS_CLOSE,
    WS_GAP,
    WS_OPEN,
    WS_RECV,
)
from analysis.options import Options
from analysis.verdict import CheckResult

DOCS = "docs/checks.md"


@dataclass(frozen=True)
class Context:
    """What a check may be given: the history (None when there is none), ``run.json``, the options
    and the number of history rows (known without the history in chunked mode)."""

    history: pd.DataFrame | None
    run: dict[str, Any] | None
    options: Options
    rows: int | None = None
    #: The latest ``t_complete`` of the whole history, when ``history`` is a part of it (a key
    #: partition): where the connections still open at the end end.
    horizon_ns: int | None = None


class Chunking(Enum):
    """How the chunked mode (:mod:`analysis.chunked`) runs a check on a history split by key."""

    #: Run on every key partition, the results merged: exact for key-local properties.
    PARTITION = "partition"
    #: Run once on the rows of the operations it reads (:attr:`Check.reads`), which fit in memory.
    WHOLE = "whole"
    #: :attr:`Check.collect` per partition, :attr:`Check.combine` of those: exact aggregates.
    AGGREGATE = "aggregate"
    #: Needs no history rows, only ``run.json`` and the row count.
    RUN = "run"


class Source(Enum):
    """Where a check's rows come from, which says what a lost batch can do to its result."""

    #: The users' rows, shipped in batches from every node: a lost batch can hide rows from it.
    BATCHES = "batches"
    #: The master's sweep at test stop, which no lost batch touches; complete when the sweep is.
    SWEEP = "sweep"
    #: ``run.json`` itself.
    RUN = "run"


def _none_unexplained(_result: CheckResult) -> int:
    return 0


def _all_unexplained(result: CheckResult) -> int:
    return result.violations


@dataclass(frozen=True)
class Check:
    """One check and its metadata. Only ``name``, ``call`` and ``chunking`` are required."""

    name: str
    #: Runs the check in a context; the check functions themselves stay callable on their own.
    call: Callable[[Context], CheckResult]
    chunking: Chunking
    #: The operations (``f``) whose rows it reads; empty for a check of ``run.json`` only.
    reads: tuple[str, ...] = ()
    #: Among ``reads``, those it reads only when ok (the chunked mode keeps no others for it).
    ok_only: tuple[str, ...] = ()
    #: Operations it needs in every partition (few rows, global state such as Redis's INFO).
    broadcast: tuple[str, ...] = ()
    #: Whether a violation fails the verdict; False for a check that only reports.
    gates: bool = True
    #: The figures shown on the console (empty: every numeric one).
    console: tuple[str, ...] = ()
    #: The figures summing it up in the report's verdict table.
    headline: tuple[str, ...] = ()
    #: Where docs/checks.md defines it.
    anchor: str = ""
    # The outcome (analysis.outcomes): when the run needed the check, and what missing rows do.
    #: The user classes (run.json ``locust.user_classes``) whose running makes the check needed, so
    #: that its skip is unknown rather than not applicable; ``*``: every run needs it.
    needed_by: tuple[str, ...] = ()
    #: Where its rows come from (a lost batch only matters to checks of :attr:`Source.BATCHES`).
    source: Source = Source.BATCHES
    #: Of its violations, how many no missing row could explain: with rows missing, a fail stands
    #: only when this is above 0 (otherwise it is unknown, as a clean result is).
    unexplained: Callable[[CheckResult], int] = _none_unexplained
    # Merging the results of partitions (Chunking.PARTITION).
    #: Figures equal in every partition (options, or figures of broadcast rows): taken once.
    same: tuple[str, ...] = ()
    #: Figures that cannot be rebuilt exactly from the partitions', listed in ``merged_approx``.
    approx: tuple[str, ...] = ()
    #: Recomputes ratios and means from the merged counts, in place.
    recompute: Callable[[dict[str, Any]], None] | None = None
    #: Something kept per partition for an exact figure, and how it is set on the merged result.
    keep: Callable[[pd.DataFrame], Any] | None = None
    finish: Callable[[CheckResult, list[Any]], None] | None = None
    #: Orders the merged examples worst first; by default the partitions' first ones are kept.
    worst_first: Callable[[dict[str, Any]], float] | None = None
    # Aggregates (Chunking.AGGREGATE): collect per partition, combine into the result.
    collect: Callable[[pd.DataFrame], Any] | None = None
    combine: Callable[[list[Any]], CheckResult] | None = None

    def __post_init__(self) -> None:
        if self.chunking is Chunking.AGGREGATE and (self.collect is None or self.combine is None):
            raise ValueError(f"check {self.name}: an aggregate needs collect and combine")
        if self.chunking is not Chunking.RUN and not self.reads:
            raise ValueError(f"check {self.name}: a check of the history says which operations it reads")


def _h(context: Context) -> pd.DataFrame:
    if context.history is None:
        raise ValueError("this check needs a history")
    return context.history


# --------------------------------------------------------------------------------------------------
# Exact merges of figures the partitions' own figures cannot give


def _hit_ratio(figures: dict[str, Any]) -> None:
    total = figures["hits"] + figures["misses"]
    figures["ratio"] = figures["hits"] / total if total else None


def _delivery_ratio(figures: dict[str, Any]) -> None:
    judged = figures["judged"]
    figures["delivery_ratio"] = figures["delivered"] / judged if judged else None


def _watch_abort_rate(figures: dict[str, Any]) -> None:
    transfers = figures["transfers_ok"] + figures["transfers_fail"] + figures["transfers_info"]
    figures["watch_abort_rate"] = figures["transfers_fail"] / transfers if transfers else None


def _loads_per_epoch(figures: dict[str, Any]) -> None:
    loaded = figures["epochs_loaded"]
    figures["mean_loads_per_epoch"] = round(figures["db_loads"] / loaded, 3) if loaded else None
    for guard in (figures.get("by_guard") or {}).values():
        n = guard["epochs_loaded"]
        guard["mean_loads_per_epoch"] = round(guard["db_loads"] / n, 3) if n else None


def _guarded_rates(figures: dict[str, Any]) -> None:
    for mode in (figures.get("by_source") or {}).values():
        span = mode.get("span_s")
        mode["ops_per_s"] = round(mode["guarded_writes"] / span, 3) if span else None
        mode["accepted_per_s"] = round(mode["accepted"] / span, 3) if span else None


def _readers(frame: pd.DataFrame) -> np.ndarray:
    read = (frame["f"] == READ) & (frame["status"] == OK)
    read &= frame["key"].notna() & frame["version"].notna()
    return np.unique(frame.loc[read, "process"].to_numpy())


def _count_readers(result: CheckResult, kept: list[Any]) -> None:
    result.figures["processes"] = len(np.unique(np.concatenate(kept)))


def _load_seconds(frame: pd.DataFrame) -> np.ndarray:
    loads = (frame["f"] == DB_LOAD) & (frame["status"] == OK) & frame["key"].notna()
    return frame.loc[loads, "t_invoke"].to_numpy() // NS_PER_S


def _peak_loads(result: CheckResult, kept: list[Any]) -> None:
    seconds = np.concatenate(kept) if kept else np.array([], dtype="int64")
    # Without db_load rows the check counted a target's read misses: the partitions' peak stands.
    if len(seconds):
        result.figures["peak_db_loads_per_s"] = int(np.unique(seconds, return_counts=True)[1].max())


def _tier_ratios(figures: dict[str, Any]) -> None:
    figures["tiers_seen"] = len(figures.get("tiers") or {})
    for tier in (figures.get("tiers") or {}).values():
        tier["stale_ratio"] = tier["stale"] / tier["reads"] if tier.get("reads") else None


def _leg_count(figures: dict[str, Any]) -> None:
    figures["legs_count"] = len(figures.get("legs") or {})


def _sorted_durations(frame: pd.DataFrame) -> dict[str, Run]:
    # Sorted, so that the merge finds the exact percentiles without concatenating the partitions'.
    return {g: Run.of(v) for g, v in group_durations(frame).items()}


def _latency(parts: list[dict[str, Run]]) -> CheckResult:
    return coherence.latency_result(runs={g: [p[g] for p in parts] for g in LATENCY_GROUPS})


# --------------------------------------------------------------------------------------------------
# The checks, in the order of the verdict

CHECKS: tuple[Check, ...] = (
    Check(
        "stale_read",
        lambda c: coherence.check_stale_read(_h(c), c.options.tolerance_ns, c.options.examples),
        Chunking.PARTITION,
        reads=(READ, WRITE),
        console=(
            "reads_checked",
            "stale",
            "stale_after_unconfirmed",
            "age_p50_us",
            "age_max_us",
            "tolerance_ns",
        ),
        headline=("stale", "reads_checked"),
        anchor="stale_read-fails-on-any-violation",
        needed_by=("CacheReader",),
        # A missing write can only make a read more stale, never less.
        unexplained=_all_unexplained,
        same=("tolerance_ns",),
        approx=("age_p50_us", "age_p99_us"),
        worst_first=lambda e: -(e.get("age_us") or 0),
    ),
    Check(
        "future_read",
        lambda c: coherence.check_future_read(_h(c), c.options.tolerance_ns, c.options.examples),
        Chunking.PARTITION,
        reads=(READ, WRITE),
        console=("reads_checked", "future", "negative"),
        headline=("future", "reads_checked"),
        anchor="future_read-fails-on-any-violation",
        needed_by=("CacheReader",),
        # A missing write may explain a version, unless the sweep says the version never existed.
        unexplained=lambda r: r.figures.get("beyond_final_version", 0) + r.figures.get("negative", 0),
        same=("tolerance_ns",),
    ),
    Check(
        "monotonic_read",
        lambda c: coherence.check_monotonic_read(_h(c), c.options.examples),
        Chunking.PARTITION,
        reads=(READ,),
        console=("reads_checked", "regressions", "max_regression"),
        headline=("regressions", "reads_checked"),
        anchor="monotonic_read-fails-on-any-violation",
        needed_by=("CacheReader",),
        # A regression is between one process's own reads, both seen.
        unexplained=_all_unexplained,
        keep=_readers,
        finish=_count_readers,
    ),
    Check(
        "ws_delivery",
        lambda c: coherence.check_ws_delivery(
            _h(c), c.options.ws_grace_ns, c.options.tolerance_ns, c.options.examples, c.horizon_ns
        ),
        # Key-local but for the connections (keyless ws_open, ws_close and ws_gap rows, given to
        # every partition) and the history's end (Context.horizon_ns).
        Chunking.PARTITION,
        reads=(WS_OPEN, WS_RECV, WS_CLOSE, WS_GAP, UI_READ, WRITE),
        ok_only=(WRITE,),
        broadcast=(WS_OPEN, WS_CLOSE, WS_GAP),
        console=(
            "listeners",
            "expected",
            "missing",
            "missing_during_notifier_gap",
            "delivery_ratio",
            "duplicates",
            "out_of_order",
            "latency_p99_us",
            "ui_stale",
        ),
        headline=("missing", "expected"),
        anchor="ws_delivery-fails-when-a-delivery-is-missing",
        needed_by=("WebSocketListener",),
        same=("listeners", "connections", "notifier_gaps", "seq_holes", "seq_missed", "grace_s"),
        approx=("latency_p50_us", "latency_p95_us", "latency_p99_us"),
        recompute=_delivery_ratio,
    ),
    Check(
        "divergence",
        lambda c: coherence.check_divergence(_h(c), c.options.examples),
        Chunking.PARTITION,
        reads=(SWEEP,),
        console=("keys_swept", "cached_entries", "divergent", "max_gap"),
        headline=("divergent", "keys_swept"),
        anchor="divergence-fails-on-any-violation",
        needed_by=("CacheReader", "CacheWriter"),
        source=Source.SWEEP,
        unexplained=_all_unexplained,
    ),
    Check(
        "hit_ratio",
        lambda c: coherence.check_hit_ratio(_h(c)),
        Chunking.PARTITION,
        reads=(READ,),
        gates=False,
        console=("reads", "hits", "misses", "ratio"),
        headline=("ratio",),
        anchor="hit_ratio-never-fails-by-itself",
        needed_by=("CacheReader",),
        recompute=_hit_ratio,
    ),
    Check(
        "latency",
        lambda c: coherence.check_latency(_h(c)),
        Chunking.AGGREGATE,
        reads=(READ, WRITE, FILL, WS_RECV, *CONTENTION_LATENCY_OPS),
        gates=False,
        anchor="latency-never-fails-by-itself",
        needed_by=("CacheReader", "CacheWriter"),
        collect=_sorted_durations,
        combine=_latency,
    ),
    Check(
        open_model.NAME,
        lambda c: open_model.check_open_model_latency(_h(c)),
        Chunking.AGGREGATE,
        reads=(READ, WRITE),
        gates=False,
        console=("scheduled", "scheduled_per_s", "achieved_per_s"),
        anchor="open_model_latency-never-fails-by-itself",
        collect=open_model.collect,
        combine=lambda parts: open_model.result(open_model.merge(parts)),
    ),
    Check(
        "history_complete",
        lambda c: runinfo.check_history_complete(c.run, c.rows),
        Chunking.RUN,
        console=("rows_loaded", "rows_reported", "missing_batch_count"),
        headline=("missing_batch_count",),
        anchor="history_complete",
        needed_by=("*",),
        source=Source.RUN,
    ),
    Check(
        "generator_cpu",
        lambda c: runinfo.check_generator_cpu(c.run),
        Chunking.RUN,
        gates=False,
        console=("nodes", "median_percent", "max_percent", "busy_seconds", "host_saturated_seconds"),
        headline=("busy_seconds", "max_percent"),
        anchor="generator_cpu-never-fails-by-itself",
        source=Source.RUN,
    ),
    Check(
        "counter",
        lambda c: contention.check_counter(_h(c), c.options.tolerance_ns, c.options.examples),
        Chunking.PARTITION,
        reads=(COUNTER_READ, INCR),
        console=(
            "reads_checked",
            "increments_ok",
            "increments_info",
            "increments_fail",
            "lost_updates",
            "max_shortfall",
            "above_upper_bound",
        ),
        headline=("lost_updates", "above_upper_bound"),
        anchor="counter-fails-on-any-violation",
        needed_by=("CounterUser",),
        # A missing increment only raises the lower bound; it could explain a read above the upper.
        unexplained=lambda r: r.figures.get("below_lower_bound", 0),
        same=("tolerance_ns",),
    ),
    Check(
        "stampede",
        lambda c: contention.check_stampede(_h(c), c.options.stampede_guard == "lock", c.options.examples),
        Chunking.PARTITION,
        # A target's own recomputations are its read misses, its writes opening the epochs.
        reads=(DB_LOAD, INVALIDATE, READ, WRITE),
        console=(
            "epochs",
            "db_loads",
            "max_loads_per_epoch",
            "p99_loads_per_epoch",
            "mean_loads_per_epoch",
            "peak_db_loads_per_s",
            "multi_load_epochs",
        ),
        headline=("max_loads_per_epoch", "multi_load_epochs"),
        anchor="stampede-reports-fails-only-under-the-lock-guard",
        needed_by=("StampedeUser",),
        same=("expect_single",),
        approx=("p99_loads_per_epoch",),
        recompute=_loads_per_epoch,
        keep=_load_seconds,
        finish=_peak_loads,
    ),
    Check(
        "tx_atomicity",
        lambda c: contention.check_tx_atomicity(_h(c), c.options.examples),
        Chunking.PARTITION,
        reads=(TX_READ, TX_TRANSFER),
        console=("reads", "transfers_ok", "transfers_fail", "watch_abort_rate", "max_abs_sum"),
        headline=("nonzero_sums", "max_abs_sum"),
        anchor="tx_atomicity-fails-on-any-violation",
        needed_by=("TransactionUser",),
        # A non-zero sum was read in one transaction: no other row bears on it.
        unexplained=_all_unexplained,
        recompute=_watch_abort_rate,
    ),
    Check(
        "lock_safety",
        lambda c: contention.check_lock_safety(
            _h(c), c.options.lock_ttl_ns, c.options.tolerance_ns, c.options.examples
        ),
        Chunking.PARTITION,
        reads=(LOCK_ACQUIRE, LOCK_RELEASE, GUARDED_WRITE),
        console=(
            "acquisitions_ok",
            "acquisitions_fail",
            "releases_fail",
            "guarded_writes_accepted",
            "guarded_writes_refused",
            "overlaps",
            "stale_token_accepts",
        ),
        headline=("overlaps", "stale_token_accepts"),
        anchor="lock_safety-fails-on-any-violation",
        needed_by=("LockUser",),
        # A missing release lengthens a hold to its TTL (a false overlap); a missing accepted write
        # only lowers the tokens a stale one is compared with.
        unexplained=lambda r: r.figures.get("stale_token_accepts", 0),
        same=("ttl_ms", "tolerance_ns"),
        approx=("by_source.span_s", "by_source.ops_per_s", "by_source.accepted_per_s"),
        recompute=_guarded_rates,
    ),
    Check(
        "invalidation_latency",
        lambda c: contention.check_invalidation_latency(_h(c)),
        Chunking.WHOLE,
        reads=(INVALIDATE_BATCH,),
        gates=False,
        console=("count", "p50_ms", "p95_ms", "p99_ms", "max_ms", "mean_keys_per_batch"),
        headline=("p95_ms", "count"),
        anchor="invalidation_latency-never-fails-by-itself",
        needed_by=("Invalidator",),
    ),
    Check(
        "eviction",
        lambda c: contention.check_eviction(_h(c), c.options.tolerance_ns, c.options.examples),
        Chunking.PARTITION,
        reads=(REDIS_STAT, READ, WRITE),
        broadcast=(REDIS_STAT,),
        console=("samples", "evictions", "hit_ratio", "stale_reads", "stale_during_eviction"),
        headline=("stale_during_eviction", "evictions"),
        anchor="eviction-fails-on-a-stale-read-while-redis-evicted",
        needed_by=("MemoryPressureUser",),
        # Its stale reads are stale_read's; the eviction window comes from the master's own samples.
        unexplained=_all_unexplained,
        same=(
            "samples",
            "evictions",
            "eviction_window_s",
            "keyspace_hits",
            "keyspace_misses",
            "hit_ratio",
            "used_memory_max",
            "tolerance_ns",
        ),
    ),
    Check(
        tiers.NAME,
        lambda c: tiers.check_tier_staleness(
            _h(c), c.options.tolerance_ns, c.options.ws_grace_ns, c.options.examples
        ),
        Chunking.PARTITION,
        reads=(READ, WRITE, UI_READ, SWEEP),
        console=("tiers_seen", "stale_judged"),
        headline=("stale_judged", "tiers_seen"),
        anchor="tier_staleness-fails-on-a-stale-read-in-a-tier",
        # A stale read against the writes that were seen is stale whatever else is missing.
        unexplained=_all_unexplained,
        same=("tolerance_ns", "grace_s"),
        approx=("tiers.age_p50_us", "tiers.age_p99_us"),
        recompute=_tier_ratios,
    ),
    Check(
        cascade.NAME,
        lambda c: cascade.check_cascade(_h(c), c.options.examples),
        Chunking.PARTITION,
        reads=(WRITE, TIER_EVENT, WS_RECV, WS_OPEN, READ, SWEEP),
        console=("writes", "legs_count", "missing_judged"),
        headline=("missing_judged", "writes"),
        anchor="cascade-fails-when-a-tier-never-got-a-commit",
        # The tier events come from the target itself at test stop, not from the users' batches.
        unexplained=_all_unexplained,
        approx=("legs.p50_us", "legs.p99_us", "legs.recv:tab (partitions without ws_recv rows)"),
        recompute=_leg_count,
    ),
)
CHECK_NAMES = tuple(c.name for c in CHECKS)
BY_NAME = {c.name: c for c in CHECKS}
if len(BY_NAME) != len(CHECKS):
    raise ValueError("two checks share a name")


def doc_link(check: Check) -> str:
    """Where the check is defined: ``docs/checks.md#anchor``."""
    return f"{DOCS}#{check.anchor}"
