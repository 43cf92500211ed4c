"""``tier_staleness``: stale reads split by the tier that served them.

A tiered target reports where each read came from (``source`` ``hit:l1``, ``hit:l2``, or ``miss``
for the database); a one-tier target says ``hit`` or ``miss``. This check puts every ok read in its
tier (``hit:<t>`` in ``<t>``, ``hit`` in ``cache``, ``miss`` in ``db``, no source in ``unknown``)
and the WebSocket listeners' ``ui_read`` rows in ``tab``, and reports per tier the reads, the stale
ones, their stale age (from the completion of the first write they missed to the read's invoke)
and the worst examples.

Judged only for a target that names its tiers (a ``hit:<tier>`` read, or a tiered sweep row):
for one with plain ``hit`` and ``miss``, every stale read is ``stale_read``'s violation already,
and the breakdown is reported without failing a second time (``named_tiers`` false).

Stale means what ``stale_read`` means: some ok write of the key with a higher version completed
before the read was invoked (less the clock tolerance). A tab learns of a write only after it was
pushed, so only tab reads stale beyond the WebSocket grace (``--ws-grace``) are violations; the
others are reported. The sweep's rows of tiered targets (``source`` ``<held>:<tier>``) are counted
per tier as well: an entry older than the database's version at the end of the run is a violation
(the ``divergence`` check looks at untiered sweep rows only).

Example::

    result = check_tier_staleness(history, tolerance_ns=0, grace_ns=NS_PER_S)
    result.figures["tiers"]["l1"]["stale"]
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from analysis.kernels import _examples, _is, _max_completed_before, _ops, _percentiles_us, stale_flags
from analysis.load import normalise
from analysis.ops import NS_PER_S, NS_PER_US
from analysis.verdict import CheckResult

NAME = "tier_staleness"
TAB = "tab"
#: Examples kept per tier.
PER_TIER_EXAMPLES = 3


def tier_of(source: Any) -> str:
    """The tier a read's ``source`` names."""
    if not isinstance(source, str):
        return "unknown"
    if source.startswith("hit:"):
        return source[4:] or "cache"
    return {"hit": "cache", "miss": "db"}.get(source, source)


def _tiers(source: pd.Series) -> np.ndarray:
    """:func:`tier_of` of each value: once per category of a categorical, not once per read."""
    if not isinstance(source.dtype, pd.CategoricalDtype):
        return np.array([tier_of(s) for s in source.astype(object)], dtype=object)
    per_category = [tier_of(c) for c in source.cat.categories] + [tier_of(None)]
    codes = np.asarray(source.cat.codes)  # -1 for a null: the last entry
    return np.array(per_category, dtype=object)[codes]


def _first_missed_complete(stale: pd.DataFrame, writes: pd.DataFrame) -> np.ndarray:
    """Per stale read (``key``, ``version``): when the first write of its key above its version completed.

    ``writes`` is :func:`analysis.checks._running_max`'s frame; its running maximum only grows per
    key, so the first write whose running maximum exceeds the read's version is the one it missed.
    """
    if len(stale) == 0:
        return np.zeros(0, dtype="int64")
    first = writes["max_version"] > writes.groupby("key", sort=False)["max_version"].shift(
        fill_value=np.iinfo("int64").min
    )
    records = writes.loc[first, ["key", "max_version", "t_complete"]].sort_values(
        "max_version", kind="stable"
    )
    left = stale[["key", "version"]].reset_index().sort_values("version", kind="stable")
    merged = pd.merge_asof(
        left,
        records.rename(columns={"t_complete": "w_t_complete"}),
        left_on="version",
        right_on="max_version",
        by="key",
        direction="forward",
        allow_exact_matches=False,
    ).sort_values("index")
    return merged["w_t_complete"].to_numpy(dtype="int64")


def _tier_figures(
    history: pd.DataFrame, reads: pd.DataFrame, stale: np.ndarray, writes: pd.DataFrame, examples: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    bad = reads.loc[stale]
    age = bad["t_invoke"].to_numpy() - _first_missed_complete(bad, writes)
    pct = _percentiles_us(age, {"p50": 50, "p99": 99, "max": 100})
    figures = {
        "reads": len(reads),
        "stale": int(stale.sum()),
        "stale_ratio": float(stale.sum() / len(reads)) if len(reads) else None,
        "age_p50_us": pct["p50"],
        "age_p99_us": pct["p99"],
        "age_max_us": pct["max"],
    }
    worst = np.argsort(-age, kind="stable")[:examples]
    shown = _examples(history, bad["row"].to_numpy()[worst], {"age_us": age[worst] / NS_PER_US})
    return figures, shown


def check_tier_staleness(
    history: pd.DataFrame, tolerance_ns: int = 0, grace_ns: int = NS_PER_S, examples: int = 5
) -> CheckResult:
    """Stale reads per serving tier, tab reads per the WebSocket grace, swept entries per tier."""
    history = normalise(history)
    reads, writes, stale = stale_flags(history, tolerance_ns)
    ui = _ops(history, _is(history, "ui_read"))
    sweep = history.loc[_is(history, "sweep")]
    sweep = sweep.loc[sweep["source"].astype("string").str.contains(":").fillna(False)]
    sourced = reads["source"].notna().to_numpy() if len(reads) else np.zeros(0, dtype=bool)
    if not sourced.any() and len(ui) == 0 and len(sweep) == 0:
        return CheckResult.skip(
            NAME,
            "no tier data: no ok read names its source (hit, miss, hit:<tier>), "
            "no ui_read and no tiered sweep rows",
        )
    tiers: dict[str, dict[str, Any]] = {}
    shown: list[dict[str, Any]] = []
    names = _tiers(reads["source"])
    for tier in sorted(set(names)):
        mine = names == tier
        figures, worst = _tier_figures(history, reads.loc[mine], stale[mine], writes, PER_TIER_EXAMPLES)
        tiers[tier] = {**figures, "judged": "stale"}
        shown += [{"tier": tier, **e} for e in worst]
    violations = sum(t["stale"] for t in tiers.values())

    if len(ui):
        cut = ui["t_invoke"].to_numpy() - tolerance_ns
        v = ui["version"].to_numpy()
        ui_stale = np.nan_to_num(_max_completed_before(ui, writes, cut), nan=-np.inf) > v
        late = np.nan_to_num(_max_completed_before(ui, writes, cut - grace_ns), nan=-np.inf) > v
        figures, worst = _tier_figures(history, ui, ui_stale, writes, PER_TIER_EXAMPLES)
        figures["stale_beyond_grace"] = int(late.sum())
        figures["grace_s"] = grace_ns / NS_PER_S
        tiers[TAB] = {**figures, "judged": "stale_beyond_grace"}
        shown += [{"tier": TAB, **e} for e in worst]
        violations += figures["stale_beyond_grace"]

    swept: dict[str, dict[str, int]] = {}
    if len(sweep):
        parts = sweep["source"].astype(str).str.partition(":")
        held, tier_name = parts[0].to_numpy(), parts[2].to_numpy()
        cached = sweep["version"].to_numpy(dtype="float64", na_value=np.nan)
        database = sweep["value"].to_numpy(dtype="float64", na_value=np.nan)
        entry = held == "entry"
        behind = entry & (cached < database)
        for tier in sorted(set(tier_name)):
            mine = tier_name == tier
            swept[tier] = {
                "keys": int(mine.sum()),
                "entries": int((entry & mine).sum()),
                "divergent": int((behind & mine).sum()),
            }
        violations += int(behind.sum())
        rows = sweep.index.to_numpy()[behind][:PER_TIER_EXAMPLES]
        shown += [
            {"tier": f"sweep:{tier_name[behind][i]}", **e} for i, e in enumerate(_examples(history, rows))
        ]

    # A target with no named cache tier (sources hit and miss only) has nothing to split: its stale
    # reads are stale_read's and its tabs ws_delivery's, so the breakdown is reported, not judged.
    named = any(str(s).startswith("hit:") for s in reads["source"].dropna().unique()) or bool(swept)
    if not named:
        violations = 0
    figures_out: dict[str, Any] = {
        "tiers_seen": len(tiers),
        "named_tiers": named,
        "stale_judged": int(violations),
        "tolerance_ns": tolerance_ns,
        "tiers": tiers,
        "sweep": swept,
    }
    return CheckResult(
        NAME,
        passed=violations == 0,
        violations=int(violations),
        figures=figures_out,
        examples=shown[: max(examples, 0) * 4],
    )
