"""``cascade``: how long each committed write took to reach every tier of a multi-service system.

The target's tiers log what they did on their own (``f=tier_event``, ``source`` ``<what>:<tier>``:
``commit:auth``, ``drop:l1``, ``drop:l2``, ``push:frontend``); the WebSocket listeners log what the
browser tabs received (``ws_recv``). Per ok write (key, version), the cascade starts at its commit,
the ``commit:*`` event of that key and version when the target logged one, else the write's
``t_complete``, and each *leg* ends at the event of that key and version in one tier: the last
such event when a tier has several instances (the tier is done when all of them are), the last
receipt among the tabs for the ``recv:tab`` leg.

Legs: every ``<what>:<tier>`` the tier events name, ``drop:<tier>`` for every cache tier the reads
or the sweep name (``hit:<tier>``, ``<held>:<tier>``) even when it logged nothing (a tier that
never invalidates must show as missing, not vanish), and ``recv:tab`` when tabs were connected.
Per leg: p50, p99 and max of the delay, how many writes it is missing for, and how many events
came before their commit (a clock problem, or a tier acting on an uncommitted version).

A write missing a ``drop:`` or ``push:`` leg is a violation: the system itself must carry every
commit to those tiers. A tab missing a write is reported here and judged by ``ws_delivery``,
which knows when each tab was connected. Without tier events the check is skipped.

Example::

    result = check_cascade(history)
    result.figures["legs"]["drop:l1"]["p99_us"]
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from analysis.kernels import _examples, _is, _ops, _percentiles_us
from analysis.load import normalise
from analysis.tiers import tier_of
from analysis.verdict import CheckResult

NAME = "cascade"
TAB_LEG = "recv:tab"
#: Legs whose missing events are violations: the system's own tiers.
JUDGED = ("drop:", "push:")


def _pairs(frame: pd.DataFrame, t: np.ndarray, how: str) -> pd.Series:
    """Per (key code, version), the ``how`` ("min"/"max") of ``t``."""
    return (
        pd.Series(t, index=pd.MultiIndex.from_arrays([frame["key"].to_numpy(), frame["version"].to_numpy()]))
        .groupby(level=[0, 1])
        .agg(how)
    )


def expected_legs(history: pd.DataFrame, events: pd.DataFrame) -> list[str]:
    """The legs a run's writes must travel, in cascade order: drops, pushes, tabs, others."""
    legs = {
        str(s) for s in events["source"].astype(object).dropna().unique() if not str(s).startswith("commit:")
    }
    read_sources = history.loc[_is(history, "read"), "source"].astype(object).dropna().unique()
    legs |= {f"drop:{tier_of(s)}" for s in read_sources if str(s).startswith("hit:")}
    swept = history.loc[_is(history, "sweep"), "source"].astype(object).dropna().unique()
    legs |= {f"drop:{str(s).partition(':')[2]}" for s in swept if ":" in str(s)}
    # ws_recv too: a chunked analysis gives the keyless ws_open rows to one partition only.
    if _is(history, "ws_open").any() or _is(history, "ws_recv").any():
        legs.add(TAB_LEG)
    order = {"drop": 0, "push": 1, "recv": 2}
    return sorted(legs, key=lambda leg: (order.get(leg.partition(":")[0], 3), leg))


def check_cascade(history: pd.DataFrame, examples: int = 5) -> CheckResult:
    """Per committed write, the delay from its commit to each tier; missing tier events counted."""
    history = normalise(history)
    events = _ops(history, _is(history, "tier_event"))
    if len(events) == 0:
        return CheckResult.skip(
            NAME, "no tier events (f=tier_event): the target reports none (tier_events())"
        )
    writes = _ops(history, _is(history, "write"))
    if len(writes) == 0:
        return CheckResult.skip(NAME, "no ok writes with a version: nothing cascaded")

    sources = events["source"].astype(object).to_numpy()
    is_commit = np.array([isinstance(s, str) and s.startswith("commit:") for s in sources], dtype=bool)
    committed = _pairs(writes, writes["t_complete"].to_numpy(), "min")
    commit_events = _pairs(events.loc[is_commit], events["t_complete"].to_numpy()[is_commit], "min")
    from_event = committed.index.isin(commit_events.index)
    start = committed.copy()
    start[from_event] = commit_events.reindex(committed.index[from_event]).to_numpy()

    legs: dict[str, dict[str, Any]] = {}
    missing_by_write = pd.Series(0, index=committed.index)
    violations = 0
    recv = _ops(history, _is(history, "ws_recv"))
    for leg in expected_legs(history, events):
        if leg == TAB_LEG:
            arrived = (
                _pairs(recv, recv["t_complete"].to_numpy(), "max") if len(recv) else pd.Series(dtype="int64")
            )
        else:
            mine = sources == leg
            arrived = (
                _pairs(events.loc[mine], events["t_complete"].to_numpy()[mine], "max")
                if mine.any()
                else pd.Series(dtype="int64")
            )
        reached = committed.index.isin(arrived.index)
        delay = arrived.reindex(committed.index[reached]).to_numpy(dtype="int64") - start[reached].to_numpy(
            dtype="int64"
        )
        pct = _percentiles_us(delay, {"p50": 50, "p99": 99, "max": 100})
        missing = int((~reached).sum())
        judged = leg.startswith(JUDGED)
        legs[leg] = {
            "reached": int(reached.sum()),
            "missing": missing,
            "before_commit": int((delay < 0).sum()),
            "p50_us": pct["p50"],
            "p99_us": pct["p99"],
            "max_us": pct["max"],
            "judged": judged,
        }
        if judged:
            violations += missing
            missing_by_write[~reached] += 1

    shown: list[dict[str, Any]] = []
    if violations:
        lacking = missing_by_write.to_numpy() > 0
        first_row = _pairs(writes, writes["row"].to_numpy(), "min").reindex(committed.index)
        rows = first_row.to_numpy()[lacking][:examples]
        names = [leg for leg, f in legs.items() if f["judged"]]
        shown = _examples(history, rows)
        for example in shown:
            key, version = example["key"], example["version"]
            example["missing_legs"] = [leg for leg in names if not _reached(history, leg, key, version)]
    figures = {
        "writes": len(committed),
        "legs_count": len(legs),
        "missing_judged": violations,
        "commit_from_event": int(from_event.sum()),
        "commit_from_write_complete": int((~from_event).sum()),
        "legs": legs,
    }
    return CheckResult(NAME, passed=violations == 0, violations=violations, figures=figures, examples=shown)


def _reached(history: pd.DataFrame, leg: str, key: Any, version: Any) -> bool:
    """Whether the tier event ``leg`` of one (key, version) exists: for a handful of examples."""
    mask = _is(history, "tier_event") & (history["source"] == leg) & (history["key"] == key)
    return bool((history.loc[mask, "version"] == version).any())
