"""Analysis of a cachestorm run: load the op history, run Jepsen-style checks, compose a verdict.

Typical use from a notebook::

    from analysis import load_history, load_run, run_checks
    history = load_history("results/run1")
    verdict = run_checks(history, load_run("results/run1"))
    verdict.passed, verdict.check("stale_read").figures

The command line is ``python -m analysis RESULTS``; docs/checks.md defines every check.
"""

from __future__ import annotations

from analysis.checks import (
    CHECK_NAMES,
    Options,
    check_divergence,
    check_future_read,
    check_history_complete,
    check_hit_ratio,
    check_latency,
    check_monotonic_read,
    check_stale_read,
    check_ws_delivery,
    run_checks,
)
from analysis.load import InputError, load_history, load_locust, load_results, load_run, normalise
from analysis.verdict import CheckResult, Verdict, write_summary

__all__ = [
    "CHECK_NAMES",
    "CheckResult",
    "InputError",
    "Options",
    "Verdict",
    "check_divergence",
    "check_future_read",
    "check_history_complete",
    "check_hit_ratio",
    "check_latency",
    "check_monotonic_read",
    "check_stale_read",
    "check_ws_delivery",
    "load_history",
    "load_locust",
    "load_results",
    "load_run",
    "normalise",
    "run_checks",
    "write_summary",
]
