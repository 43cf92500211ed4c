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

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

# Where each public name lives. They load on first use, so that importing one submodule (a
# locustfile imports analysis.at_run_end) does not pull in pandas.
_HOME = {
    "CHECK_NAMES": "analysis.checks",
    "CheckResult": "analysis.verdict",
    "InputError": "analysis.load",
    "Options": "analysis.checks",
    "ThresholdResult": "analysis.verdict",
    "Thresholds": "analysis.thresholds",
    "ThresholdsError": "analysis.thresholds",
    "Verdict": "analysis.verdict",
    "check_counter": "analysis.contention",
    "check_divergence": "analysis.checks",
    "check_eviction": "analysis.contention",
    "check_future_read": "analysis.checks",
    "check_generator_cpu": "analysis.checks",
    "check_history_complete": "analysis.checks",
    "check_hit_ratio": "analysis.checks",
    "check_invalidation_latency": "analysis.contention",
    "check_latency": "analysis.checks",
    "check_lock_safety": "analysis.contention",
    "check_monotonic_read": "analysis.checks",
    "check_open_model_latency": "analysis.open_model",
    "check_stale_read": "analysis.checks",
    "check_stampede": "analysis.contention",
    "check_tx_atomicity": "analysis.contention",
    "check_ws_delivery": "analysis.checks",
    "compute_nines": "analysis.nines",
    "evaluate_thresholds": "analysis.thresholds",
    "load_history": "analysis.load",
    "load_locust": "analysis.load",
    "load_results": "analysis.load",
    "load_run": "analysis.load",
    "load_thresholds": "analysis.thresholds",
    "normalise": "analysis.load",
    "parse_thresholds": "analysis.thresholds",
    "run_checks": "analysis.checks",
    "write_summary": "analysis.verdict",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'analysis' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)


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
