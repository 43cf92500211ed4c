"""Analysis of a cachestorm run: load the op history, run Jepsen-style checks, compose a verdict.

Typical use from a notebook::

    from analysis import load_history, load_run, run_checks
    history = load_history("results/run1")
    verdict = run_checks(history, load_run("results/run1"))
    verdict.passed, verdict.check("stale_read").figures

The command line is ``python -m analysis RESULTS [--thresholds FILE|none]``; docs/checks.md
defines every check and the thresholds schema.
"""

from __future__ import annotations

from analysis.checks import (
    CHECK_NAMES,
    Options,
    check_divergence,
    check_future_read,
    check_generator_cpu,
    check_history_complete,
    check_hit_ratio,
    check_latency,
    check_monotonic_read,
    check_stale_read,
    check_ws_delivery,
    run_checks,
)
from analysis.contention import (
    check_counter,
    check_eviction,
    check_invalidation_latency,
    check_lock_safety,
    check_stampede,
    check_tx_atomicity,
)
from analysis.load import InputError, load_history, load_locust, load_results, load_run, normalise
from analysis.nines import compute_nines
from analysis.open_model import check_open_model_latency
from analysis.thresholds import (
    Thresholds,
    ThresholdsError,
    evaluate_thresholds,
    load_thresholds,
    parse_thresholds,
)
from analysis.verdict import CheckResult, ThresholdResult, Verdict, write_summary

__all__ = [
    "CHECK_NAMES",
    "CheckResult",
    "InputError",
    "Options",
    "ThresholdResult",
    "Thresholds",
    "ThresholdsError",
    "Verdict",
    "check_counter",
    "check_divergence",
    "check_eviction",
    "check_future_read",
    "check_generator_cpu",
    "check_history_complete",
    "check_hit_ratio",
    "check_invalidation_latency",
    "check_latency",
    "check_lock_safety",
    "check_monotonic_read",
    "check_open_model_latency",
    "check_stale_read",
    "check_stampede",
    "check_tx_atomicity",
    "check_ws_delivery",
    "compute_nines",
    "evaluate_thresholds",
    "load_history",
    "load_locust",
    "load_results",
    "load_run",
    "load_thresholds",
    "normalise",
    "parse_thresholds",
    "run_checks",
    "write_summary",
]
