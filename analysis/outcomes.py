"""Each check's outcome: pass, fail or unknown (Jepsen's ``:valid?``), or not applicable.

A check function reports what it found among the rows it saw. Whether that is a pass depends on two
things it cannot know, judged here for :func:`analysis.checks.run_checks` and the chunked mode
alike (docs/checks.md, "Outcomes"):

- **Was it needed?** Each check names the user classes whose running needs it
  (:attr:`analysis.registry.Check.needed_by`); ``run.json`` says which classes ran
  (``locust.user_classes``, else ``options.scenario``), and the target may add or drop checks
  (``target.needed_checks``). A needed check that was skipped judged nothing: unknown. A skipped
  check nobody needed is not applicable.
- **Were its rows complete?** ``history_complete`` says whether every batch arrived. When not, a
  clean result could hide violations in the missing rows (unknown), and a violation stands only
  when no missing row could explain it (:attr:`analysis.registry.Check.unexplained`). The sweep's
  checks depend on the sweep instead, which no lost batch touches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from analysis.registry import BY_NAME, CHECKS, Source
from analysis.verdict import PASS, CheckResult

#: The user classes of each ``--scenario`` (users/scenarios.py), for a run.json that does not list
#: the classes that ran. MemoryPressureUser runs only with ``--redis-maxmemory``.
SCENARIO_CLASSES: dict[str, tuple[str, ...]] = {
    "coherence": ("CacheReader", "CacheWriter", "WebSocketListener"),
    "contention": (
        "CounterUser",
        "TransactionUser",
        "LockUser",
        "StampedeUser",
        "StampedeTrigger",
        "Invalidator",
        "CacheReader",
    ),
}
SCENARIO_CLASSES["all"] = tuple(dict.fromkeys(SCENARIO_CLASSES["coherence"] + SCENARIO_CLASSES["contention"]))
MAXMEMORY_CLASS = "MemoryPressureUser"
EVERY_RUN = "*"


def classes_run(run: dict[str, Any] | None) -> tuple[str, ...] | None:
    """The user classes the run ran and the classes they derive from (a locustfile's subclass of
    CacheReader needs what CacheReader needs), or None when ``run.json`` does not say."""
    if run is None:
        return None
    locust = run.get("locust")
    listed = locust.get("user_classes") if isinstance(locust, dict) else None
    if isinstance(listed, list) and all(isinstance(c, str) for c in listed):
        bases = locust.get("user_class_bases") if isinstance(locust, dict) else None
        return tuple(listed) + tuple(b for b in bases or () if isinstance(b, str))
    options = run.get("options")
    scenario = options.get("scenario") if isinstance(options, dict) else None
    if not isinstance(scenario, str) or scenario not in SCENARIO_CLASSES:
        return None
    classes = SCENARIO_CLASSES[scenario]
    if scenario != "coherence" and isinstance(options, dict) and options.get("redis_maxmemory"):
        classes = (*classes, MAXMEMORY_CLASS)
    return classes


def target_needs(run: dict[str, Any] | None) -> dict[str, bool]:
    """What the target declared (``run.json`` ``target.needed_checks``): check name to needed."""
    target = run.get("target") if run is not None else None
    declared = target.get("needed_checks") if isinstance(target, dict) else None
    if isinstance(declared, dict):
        return {str(k): bool(v) for k, v in declared.items()}
    if isinstance(declared, list):
        return dict.fromkeys((str(k) for k in declared), True)
    return {}


def needed_checks(run: dict[str, Any] | None) -> dict[str, str]:
    """The checks this run needs, each with why (the classes that need it, or the target)."""
    classes = classes_run(run)
    ran = set(classes or ())
    needed: dict[str, str] = {}
    for check in CHECKS:
        if EVERY_RUN in check.needed_by:
            needed[check.name] = "every run needs it"
            continue
        by = [c for c in check.needed_by if c in ran]
        if by:
            needed[check.name] = f"needed by {', '.join(by)}, which ran"
    for name, wanted in target_needs(run).items():
        if wanted:
            needed[name] = "the target declares it needed"
        else:
            needed.pop(name, None)
    return needed


def sweep_gap(result: CheckResult, run: dict[str, Any] | None) -> str | None:
    """Why the sweep may not have covered every key, or None when it did."""
    if run is None:
        return "run.json is missing, so the sweep may not have finished"
    if run.get("sweep_complete") is False:
        return "the sweep failed (run.json sweep_complete is false)"
    options = run.get("options")
    keys = options.get("keys") if isinstance(options, dict) else None
    swept = result.figures.get("keys_swept")
    if isinstance(keys, int) and isinstance(swept, int) and swept < keys:
        return f"the sweep covered {swept} of the run's {keys} keys"
    return None


def judge(results: Sequence[CheckResult], run: dict[str, Any] | None) -> list[CheckResult]:
    """Set each result's outcome (in place) and return the results, plus one unknown result per
    check the target needs that this analysis does not have."""
    needed = needed_checks(run)
    complete = next((r for r in results if r.name == "history_complete"), None)
    gap = None
    if complete is None or complete.outcome != PASS:
        gap = (complete.reason if complete is not None else None) or "the history may be incomplete"
    for result in results:
        check = BY_NAME.get(result.name)
        if check is None:
            continue
        if result.skipped:
            if result.name in needed:
                result.make_unknown(f"{needed[result.name]}, so skipping it leaves the run unjudged")
            else:
                result.applicable = False
            continue
        if result.unknown or not check.gates or check.source is Source.RUN:
            continue
        why = sweep_gap(result, run) if check.source is Source.SWEEP else gap
        if why is None or (not result.passed and check.unexplained(result) > 0):
            continue
        result.make_unknown(
            f"{why}: the missing rows could explain its violations"
            if not result.passed
            else f"{why}: the missing rows could hold violations"
        )
    extra = [
        CheckResult(name, passed=False, skipped=True, reason=f"{why}, but this analysis has no such check")
        for name, why in needed.items()
        if name not in BY_NAME
    ]
    return [*results, *extra]


__all__ = ["SCENARIO_CLASSES", "classes_run", "judge", "needed_checks", "sweep_gap", "target_needs"]
