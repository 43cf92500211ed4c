"""Latency of an open-model run, corrected for coordinated omission, beside the uncorrected one.

In an open-model run (``--arrival-rate``) every ``read`` and ``write`` is due at a time fixed by the
schedule, recorded as ``t_intended`` (docs/history.md). Three durations follow for each ok operation:

* **corrected** latency, ``t_complete - t_intended``: what a client arriving on schedule waited;
* **uncorrected** latency, ``t_complete - t_invoke``: the service time alone, what a closed-loop
  load generator reports;
* **start lag**, ``t_invoke - t_intended``: how late the operation started.

A stall delays the operations queued behind it; they start late but run fast, so the uncorrected
figures hide the stall and the corrected ones show it. That is wrk2's way of reporting latency, after
Gil Tene's account of coordinated omission ("How NOT to measure latency"). docs/checks.md has the
definitions.

Percentiles come from HdrHistogram (the ``hdrhistogram`` package, imported as ``hdrh``). Durations
are rounded to the nearest microsecond and recorded in microseconds with
:data:`SIGNIFICANT_FIGURES` = 4 significant digits: every value below 32 768 µs is recorded exactly,
larger ones within one part in 16 384 (about 0.006 %). Figures are reported the way HdrHistogram
reports them: a percentile is the highest value equivalent to the recorded value at that rank. A
duration below 0 (an operation that started a little before it was due, or completed before it, as
can happen when the scheduler's clock and the history's clock disagree by microseconds) cannot be
recorded; it is recorded as 0 and counted in ``early``. Means are exact over the recorded
microsecond values.

HdrHistogram_py records one value per Python call, far too slow for ten million operations, so
durations are aggregated with numpy first: counted per distinct microsecond, and each distinct value
mapped to the lowest value HdrHistogram treats as equivalent to it (which lands in the same bucket,
so the histogram is the one recording every value would build). A histogram then takes one call per
bucket in use. The aggregates of disjoint parts of a history merge exactly (:func:`merge`), which is
how :mod:`analysis.chunked` gets the same figures partition by partition.

The check never fails: it reports. Thresholds may put limits on its corrected percentiles
(``[corrected_latency_p99_ms]`` in a thresholds file, see analysis/thresholds.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from hdrh.histogram import HdrHistogram

from analysis.kernels import latency_masks
from analysis.load import normalise
from analysis.ops import NS_PER_MS, NS_PER_S, NS_PER_US, READ, SCHEDULED_GROUPS, WRITE
from analysis.verdict import CheckResult

NAME = "open_model_latency"
#: Latency groups of the scheduled operations, as the ``latency`` check names them.
GROUPS = SCHEDULED_GROUPS
#: The three durations measured per operation, as figure-name prefixes.
MEASURES = ("corrected", "uncorrected", "start_lag")
#: Percentiles reported, as (figure suffix, percent); ``max`` and ``mean`` follow them.
PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50", 50.0),
    ("p90", 90.0),
    ("p99", 99.0),
    ("p99_9", 99.9),
    ("p99_99", 99.99),
)
SIGNIFICANT_FIGURES = 4
#: An operation that started more than this after it was due counts as late.
LATE_NS = NS_PER_MS
CLOSED_MODEL = "closed-model run: no t_intended; latencies may hide coordinated omission"
NO_OK = "no ok read or write with t_intended"
#: Below this many microseconds (4 s), distinct values are counted with one ``bincount`` pass rather
#: than a sort; the count array costs 8 bytes per microsecond of range.
_BINCOUNT_LIMIT_US = 1 << 22

_REFERENCE = HdrHistogram(1, 2, SIGNIFICANT_FIGURES)
#: Values below 2 ** _EXACT_BITS share their bucket with no other value.
_EXACT_BITS = _REFERENCE.sub_bucket_half_count_magnitude + 1
_UNIT_MAGNITUDE = _REFERENCE.unit_magnitude


# --------------------------------------------------------------------------------------------------
# Aggregated durations


def lowest_equivalent(values_us: np.ndarray) -> np.ndarray:
    """Per value (µs, >= 0), the lowest value HdrHistogram records in the same bucket.

    Vectorised form of ``HdrHistogram.get_lowest_equivalent_value`` for this module's histograms
    (lowest trackable value 1, :data:`SIGNIFICANT_FIGURES` digits): a value keeps its top
    ``_EXACT_BITS`` bits. tests/test_open_model.py compares it with the library's answer.
    """
    values = np.asarray(values_us, dtype="int64")
    # frexp's exponent is the bit length of a positive integer (exact below 2**53 µs, 285 years).
    bits = np.frexp(values.astype("float64"))[1].astype("int64")
    shift = np.maximum(bits - _EXACT_BITS, _UNIT_MAGNITUDE)
    return (values >> shift) << shift


def _runs(values: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Equal neighbours of sorted ``values`` folded into one, their counts summed."""
    if len(values) == 0:
        return values, counts
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    return values[starts], np.add.reduceat(counts, starts)


@dataclass
class Distribution:
    """Durations of one measure, aggregated for HdrHistogram.

    ``values`` are distinct, sorted, in µs and already the lowest equivalent value of their bucket;
    ``counts`` how many durations each stands for; ``total_us`` the sum of the durations (µs, after
    rounding and clamping at 0), for the mean.
    """

    values: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype="int64"))
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype="int64"))
    total_us: int = 0

    @property
    def count(self) -> int:
        """How many durations were recorded."""
        return int(self.counts.sum())

    @classmethod
    def of(cls, durations_ns: np.ndarray) -> Distribution:
        """The aggregate of nanosecond durations (rounded to the nearest µs, negatives as 0)."""
        us = np.maximum((np.asarray(durations_ns, dtype="int64") + NS_PER_US // 2) // NS_PER_US, 0)
        if len(us) == 0:
            return cls()
        if int(us.max()) < _BINCOUNT_LIMIT_US:
            # One linear pass: at ten million values this is many times faster than sorting.
            per_us = np.bincount(us)
            distinct = np.flatnonzero(per_us)
            counts = per_us[distinct]
        else:
            distinct, counts = np.unique(us, return_counts=True)
        values, counts = _runs(lowest_equivalent(distinct), counts.astype("int64"))
        return cls(values, counts, int(us.sum()))

    @classmethod
    def merge(cls, parts: Iterable[Distribution]) -> Distribution:
        """The aggregate of the durations of all ``parts`` (exact: counts per bucket are summed)."""
        parts = list(parts)
        if not parts:
            return cls()
        values = np.concatenate([p.values for p in parts])
        counts = np.concatenate([p.counts for p in parts])
        order = np.argsort(values, kind="stable")
        merged_values, merged_counts = _runs(values[order], counts[order])
        return cls(merged_values, merged_counts, sum(p.total_us for p in parts))

    def histogram(self) -> HdrHistogram:
        """An HdrHistogram (µs, :data:`SIGNIFICANT_FIGURES` digits) holding these durations."""
        highest = max(int(self.values[-1]) if len(self.values) else 0, 2)
        hist = HdrHistogram(1, highest, SIGNIFICANT_FIGURES)
        for value, count in zip(self.values.tolist(), self.counts.tolist(), strict=True):
            hist.record_value(value, count)
        return hist

    def stats(self) -> dict[str, Any]:
        """Percentiles, max (HdrHistogram's) and mean, in µs; nulls when nothing was recorded."""
        names = [name for name, _ in PERCENTILES] + ["max", "mean"]
        n = self.count
        if n == 0:
            return dict.fromkeys(names)
        hist = self.histogram()
        levels = [q for _, q in PERCENTILES] + [100.0]
        at = hist.get_percentile_to_value_dict(levels)
        out: dict[str, Any] = {name: int(at[q]) for name, q in PERCENTILES}
        out["max"] = int(hist.get_max_value())
        out["mean"] = round(self.total_us / n, 3)
        return out


@dataclass
class GroupSample:
    """The ok scheduled operations of one latency group."""

    count: int = 0
    late: int = 0
    early: int = 0
    measures: dict[str, Distribution] = field(default_factory=lambda: {m: Distribution() for m in MEASURES})


@dataclass
class Sample:
    """What the check needs from a history, aggregated so that samples of disjoint parts merge.

    ``scheduled`` counts the ``read`` and ``write`` rows with a ``t_intended`` whatever their status;
    the first and last intended and actual starts among them give the rates.
    """

    groups: dict[str, GroupSample] = field(default_factory=lambda: {g: GroupSample() for g in GROUPS})
    scheduled: int = 0
    intended_first: int | None = None
    intended_last: int | None = None
    invoked_first: int | None = None
    invoked_last: int | None = None


def _scheduled_mask(history: pd.DataFrame) -> np.ndarray:
    f = history["f"]
    return (((f == READ) | (f == WRITE)) & history["t_intended"].notna()).to_numpy()


def is_open_model(history: pd.DataFrame | None) -> bool:
    """Whether any ``read`` or ``write`` carries a ``t_intended`` (an ``--arrival-rate`` run).

    Probes carry one in every run, so they do not count.
    """
    if history is None or len(history) == 0:
        return False
    return bool(_scheduled_mask(normalise(history)).any())


def collect(history: pd.DataFrame) -> Sample:
    """The :class:`Sample` of a history (or of a part of one)."""
    h = normalise(history)
    scheduled = _scheduled_mask(h)
    sample = Sample(scheduled=int(scheduled.sum()))
    if sample.scheduled == 0:
        return sample
    sub = h.loc[scheduled, ["f", "status", "source", "t_invoke", "t_complete", "t_intended"]]
    intended = sub["t_intended"].to_numpy(dtype="int64")
    invoked = sub["t_invoke"].to_numpy(dtype="int64")
    completed = sub["t_complete"].to_numpy(dtype="int64")
    sample.intended_first, sample.intended_last = int(intended.min()), int(intended.max())
    sample.invoked_first, sample.invoked_last = int(invoked.min()), int(invoked.max())
    for group, mask in latency_masks(sub, GROUPS).items():
        lag = invoked[mask] - intended[mask]
        sample.groups[group] = GroupSample(
            count=int(mask.sum()),
            late=int((lag > LATE_NS).sum()),
            early=int((lag < 0).sum()),
            measures={
                "corrected": Distribution.of(completed[mask] - intended[mask]),
                "uncorrected": Distribution.of(completed[mask] - invoked[mask]),
                "start_lag": Distribution.of(lag),
            },
        )
    return sample


def _edge(values: list[int | None], pick: Any) -> int | None:
    present = [v for v in values if v is not None]
    return pick(present) if present else None


def merge(samples: Iterable[Sample]) -> Sample:
    """The sample of the union of disjoint parts of a history."""
    samples = list(samples)
    merged = Sample(scheduled=sum(s.scheduled for s in samples))
    merged.intended_first = _edge([s.intended_first for s in samples], min)
    merged.intended_last = _edge([s.intended_last for s in samples], max)
    merged.invoked_first = _edge([s.invoked_first for s in samples], min)
    merged.invoked_last = _edge([s.invoked_last for s in samples], max)
    for group in GROUPS:
        parts = [s.groups[group] for s in samples]
        merged.groups[group] = GroupSample(
            count=sum(p.count for p in parts),
            late=sum(p.late for p in parts),
            early=sum(p.early for p in parts),
            measures={m: Distribution.merge(p.measures[m] for p in parts) for m in MEASURES},
        )
    return merged


# --------------------------------------------------------------------------------------------------
# Figures and the check


def _rate(n: int, first: int | None, last: int | None) -> float | None:
    """Operations per second over a span holding ``n`` of them: n - 1 gaps between first and last."""
    if n < 2 or first is None or last is None or last <= first:
        return None
    return round((n - 1) * NS_PER_S / (last - first), 3)


def group_figures(group: GroupSample) -> dict[str, Any]:
    """One group's figures: count, lateness, then each measure's percentiles, max and mean in µs."""
    figures: dict[str, Any] = {
        "count": group.count,
        "late_over_1ms": group.late,
        "late_over_1ms_ratio": round(group.late / group.count, 6) if group.count else None,
        "early": group.early,
    }
    for measure in MEASURES:
        for name, value in group.measures[measure].stats().items():
            figures[f"{measure}_{name}_us"] = value
    return figures


def figures(sample: Sample) -> dict[str, Any]:
    """The check's figures: one dict per group, then the schedule's rates."""
    out: dict[str, Any] = {group: group_figures(sample.groups[group]) for group in GROUPS}
    span = (
        (sample.intended_last - sample.intended_first) / NS_PER_S
        if sample.intended_first is not None and sample.intended_last is not None
        else None
    )
    out.update(
        {
            "scheduled": sample.scheduled,
            "schedule_span_s": None if span is None else round(span, 6),
            "scheduled_per_s": _rate(sample.scheduled, sample.intended_first, sample.intended_last),
            "achieved_per_s": _rate(sample.scheduled, sample.invoked_first, sample.invoked_last),
            "late_threshold_ms": LATE_NS / NS_PER_MS,
            "significant_figures": SIGNIFICANT_FIGURES,
        }
    )
    return out


def result(sample: Sample) -> CheckResult:
    """The check's result for a collected (possibly merged) sample."""
    if sample.scheduled == 0:
        return CheckResult.skip(NAME, CLOSED_MODEL, {"scheduled": 0})
    found = figures(sample)
    if all(sample.groups[g].count == 0 for g in GROUPS):
        return CheckResult.skip(NAME, NO_OK, found)
    return CheckResult(NAME, passed=True, figures=found)


def check_open_model_latency(history: pd.DataFrame) -> CheckResult:
    """Corrected and uncorrected latency of the scheduled operations of an open-model run.

    For ok ``read`` (split by ``source`` into ``read_hit`` and ``read_miss``) and ``write`` rows with
    a ``t_intended``: per group ``count``; ``late_over_1ms`` (started more than 1 ms after due) and its
    ratio; ``early`` (started before due); and for each of ``corrected`` (``t_complete -
    t_intended``), ``uncorrected`` (``t_complete - t_invoke``) and ``start_lag`` (``t_invoke -
    t_intended``) the figures ``<measure>_p50_us``, ``_p90_us``, ``_p99_us``, ``_p99_9_us``,
    ``_p99_99_us``, ``_max_us`` and ``_mean_us`` from HdrHistogram (µs, see the module docstring for
    the precision). Then, over every scheduled ``read``/``write`` row whatever its status,
    ``scheduled``, ``schedule_span_s`` and the rates ``scheduled_per_s`` (from ``t_intended``) and
    ``achieved_per_s`` (from ``t_invoke``). Probes are left out. Skipped in a closed-model run (no
    ``t_intended``); never fails.
    """
    return result(collect(history))


def histograms(sample: Sample) -> dict[str, dict[str, HdrHistogram]]:
    """Per group with operations, an HdrHistogram per measure (for plots)."""
    return {
        group: {m: sample.groups[group].measures[m].histogram() for m in MEASURES}
        for group in GROUPS
        if sample.groups[group].count
    }


def spectrum(hist: HdrHistogram, ticks_per_half_distance: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """HdrHistogram's percentile distribution: percentiles and their values (µs), ending at 100.

    The steps halve the distance to 100 % ``ticks_per_half_distance`` times each, as HdrHistogram's
    own ``.hgrm`` output does, so the tail is as finely drawn as the body. The last step is the
    maximum, at 100 %.
    """
    levels, values = [], []
    for step in hist.get_percentile_iterator(ticks_per_half_distance):
        levels.append(step.percentile_level_iterated_to)
        values.append(step.value_iterated_to)
    return np.asarray(levels, dtype="float64"), np.asarray(values, dtype="float64")


__all__ = [
    "CLOSED_MODEL",
    "GROUPS",
    "MEASURES",
    "NAME",
    "PERCENTILES",
    "SIGNIFICANT_FIGURES",
    "Distribution",
    "Sample",
    "check_open_model_latency",
    "collect",
    "figures",
    "histograms",
    "is_open_model",
    "lowest_equivalent",
    "merge",
    "result",
    "spectrum",
]
