"""Cache consistency in nines, the way Meta reports it ("Cache made consistent", 2022).

Two measures, both pure functions of an op history (docs/report.md):

* **reads fresh**: ``-log10(stale reads / ok reads)``, stale as the ``stale_read`` check defines it;
* **writes consistent within M**: for each ok write, whether every ok read of its key invoked at
  least ``M`` after the write completed (and before the key's next write completed) returned a
  version at least the write's; ``-log10(inconsistent writes / ok writes)``.

A run of ``n`` samples with no bad one cannot show more than ``log10(n)`` nines, so each result
carries that cap (``max_showable``) and says when the figure is only a lower bound (``at_least``).
No loops over rows: sorting and ``merge_asof`` only.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from analysis.checks import NS_PER_MS, NS_PER_S, _is, _ops, stale_flags
from analysis.load import normalise

#: The windows M of "writes consistent within M", in nanoseconds, keyed by their label.
WINDOWS_NS: dict[str, int] = {"100ms": 100 * NS_PER_MS, "1s": NS_PER_S, "5s": 5 * NS_PER_S}


def nines(bad: int, total: int) -> dict[str, Any]:
    """``bad`` out of ``total`` as nines of good, capped by what ``total`` samples can show.

    With ``bad > 0`` the figure is ``log10(total / bad)``; with none bad it is the cap,
    ``log10(total)``, and ``at_least`` is true: the run shows at least that many nines and no more.
    ``nines`` is ``None`` when there was nothing to measure.
    """
    if bad < 0 or total < 0 or bad > total:
        raise ValueError(f"need 0 <= bad <= total, got bad={bad}, total={total}")
    if total == 0:
        return {"bad": 0, "total": 0, "ratio": None, "nines": None, "max_showable": None, "at_least": False}
    cap = math.log10(total)
    value = math.log10(total / bad) if bad else cap
    return {
        "bad": int(bad),
        "total": int(total),
        "ratio": bad / total,
        "nines": round(value, 4),
        "max_showable": round(cap, 4),
        "at_least": bad == 0,
    }


def reads_fresh(history: pd.DataFrame, tolerance_ns: int = 0) -> dict[str, Any]:
    """Nines of ok reads that were not stale (per ``stale_read``, with the same clock tolerance)."""
    reads, _, stale = stale_flags(normalise(history), tolerance_ns)
    return nines(int(stale.sum()), len(reads))


def inconsistent_writes(history: pd.DataFrame, window_ns: int) -> tuple[int, int]:
    """``(inconsistent, ok writes)`` for "writes consistent within ``window_ns``".

    Per key, ok writes are ordered by completion; write ``w`` owns the reads invoked in
    ``[w.t_complete + window_ns, next.t_complete)`` where ``next`` is the key's following write by
    completion (no end for the last write). ``w`` is inconsistent when one of its reads returned a
    version below ``w``'s. The windows of one key do not overlap, so each read is matched to at most
    one write with one backward ``merge_asof`` on ``t_invoke - window_ns``.
    """
    history = normalise(history)
    writes = _ops(history, _is(history, "write"))
    reads = _ops(history, _is(history, "read"))
    if len(writes) == 0:
        return 0, 0
    writes = writes.sort_values(["key", "t_complete"], kind="stable").reset_index(drop=True)
    keys = writes["key"].to_numpy()
    done = writes["t_complete"].to_numpy()
    next_done = np.full(len(writes), np.iinfo("int64").max, dtype="int64")
    same = keys[1:] == keys[:-1]
    next_done[:-1][same] = done[1:][same]
    if len(reads) == 0:
        return 0, len(writes)
    left = pd.DataFrame(
        {
            "key": reads["key"].to_numpy(),
            "cut": reads["t_invoke"].to_numpy() - window_ns,
            "i": np.arange(len(reads)),
        }
    ).sort_values("cut", kind="stable")
    right = pd.DataFrame({"t_complete": done, "key": keys, "w": np.arange(len(writes))})
    right = right.sort_values("t_complete", kind="stable")
    merged = pd.merge_asof(left, right, left_on="cut", right_on="t_complete", by="key", direction="backward")
    w = merged["w"].to_numpy(dtype="float64", na_value=np.nan)
    matched = ~np.isnan(w)
    w_idx = w[matched].astype("int64")
    r_idx = merged["i"].to_numpy()[matched]
    owned = reads["t_invoke"].to_numpy()[r_idx] < next_done[w_idx]
    behind = reads["version"].to_numpy()[r_idx] < writes["version"].to_numpy()[w_idx]
    bad = w_idx[owned & behind]
    return len(np.unique(bad)), len(writes)


def writes_consistent(history: pd.DataFrame, window_ns: int) -> dict[str, Any]:
    """Nines of ok writes every read of which, from ``window_ns`` after the write on, saw it."""
    bad, total = inconsistent_writes(history, window_ns)
    result = nines(bad, total)
    result["window_ms"] = window_ns / NS_PER_MS
    return result


def compute_nines(history: pd.DataFrame | None, tolerance_ns: int = 0) -> dict[str, Any]:
    """The ``nines`` entry of ``summary.json``: reads fresh, and writes consistent per window."""
    if history is None:
        return {"skipped": True, "reason": "no op history"}
    history = normalise(history)
    return {
        "reads_fresh": reads_fresh(history, tolerance_ns),
        "writes_consistent": {label: writes_consistent(history, ns) for label, ns in WINDOWS_NS.items()},
        "method": "history (no probes); probe-based measurement at exactly M comes later",
        "tolerance_ns": tolerance_ns,
    }
