"""The composition of the checks into one :class:`Verdict`, after Jepsen's composed checkers.

:func:`run_checks` runs every check of :data:`analysis.registry.CHECKS`, in that order, on one
history, sharing derived arrays between them (:func:`analysis.kernels.sharing`), then judges the
thresholds. The checks themselves live in :mod:`analysis.coherence`, :mod:`analysis.open_model`,
:mod:`analysis.runinfo` and :mod:`analysis.contention`; they are re-exported here, as are the
vocabulary and options, for the code written against this module before they moved.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from analysis.coherence import (
    check_divergence,
    check_future_read,
    check_hit_ratio,
    check_latency,
    check_monotonic_read,
    check_stale_read,
    check_ws_delivery,
)
from analysis.kernels import latency_stats, sharing, stale_flags
from analysis.load import normalise
from analysis.ops import (
    CONTENTION_LATENCY_OPS,
    DEFAULT_LOCK_TTL_MS,
    LATENCY_GROUPS,
    NS_PER_MS,
    NS_PER_S,
    NS_PER_US,
    WS_OPS,
)
from analysis.options import Options
from analysis.outcomes import judge
from analysis.registry import BY_NAME, CHECK_NAMES, CHECKS, Chunking, Context
from analysis.runinfo import NO_RUN_NOTE, check_generator_cpu, check_history_complete, generator_note
from analysis.thresholds import Thresholds, evaluate_thresholds
from analysis.verdict import CheckResult, Verdict

NO_HISTORY = "no op history (history/*.parquet)"


def run_checks(
    history: pd.DataFrame | None,
    run: dict[str, Any] | None = None,
    options: Options | None = None,
    locust: dict[str, Any] | None = None,
    thresholds: Thresholds | None = None,
) -> Verdict:
    """Run every check, judge each one's outcome (:func:`analysis.outcomes.judge`: pass, fail,
    unknown or not applicable) and compose the results into one :class:`Verdict`.

    ``history`` may be ``None`` (a results dir holding only Locust CSVs): every history check is
    then skipped. ``options`` default to :meth:`Options.resolve` on ``run``. ``thresholds`` (see
    :func:`analysis.thresholds.load_thresholds`) are judged against the results when given; the
    library applies none by default, the command line applies the seed SLAs.
    """
    options = options or Options.resolve(run)
    notes: list[str] = []
    if run is None:
        notes.append(NO_RUN_NOTE)
    if history is None:
        notes.append(f"{NO_HISTORY}: only Locust's figures are reported")
        context = Context(None, run, options)
        checks = [
            c.call(context) if c.chunking is Chunking.RUN else CheckResult.skip(c.name, NO_HISTORY)
            for c in CHECKS
        ]
    else:
        with sharing(history) as h:
            context = Context(h, run, options, len(h))
            checks = [c.call(context) for c in CHECKS]
    checks = judge(checks, run)
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


__all__ = [
    "BY_NAME",
    "CHECKS",
    "CHECK_NAMES",
    "CONTENTION_LATENCY_OPS",
    "DEFAULT_LOCK_TTL_MS",
    "LATENCY_GROUPS",
    "NO_HISTORY",
    "NO_RUN_NOTE",
    "NS_PER_MS",
    "NS_PER_S",
    "NS_PER_US",
    "WS_OPS",
    "Options",
    "check_divergence",
    "check_future_read",
    "check_generator_cpu",
    "check_history_complete",
    "check_hit_ratio",
    "check_latency",
    "check_monotonic_read",
    "check_stale_read",
    "check_ws_delivery",
    "generator_note",
    "latency_stats",
    "run_checks",
    "sharing",
    "stale_flags",
]
