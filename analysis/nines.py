"""Cache consistency in nines, the way Meta reports it ("Cache made consistent", 2022).

Two measures, both pure functions of an op history (docs/report.md):

* **reads fresh**: ``-log10(stale reads / ok reads)``, stale as the ``stale_read`` check defines it;
* **writes consistent within M**, measured by probes when the run recorded them (``f=probe``,
  cachestorm/probes.py): a sampled ok write is re-read from Redis M after it completed, and the
  probe is inconsistent when Redis held an entry older than the write;
  ``-log10(inconsistent probes / probes)`` per M. A run without probes (``--probe-rate 0``) gets
  the same figure from the users' own reads instead: a write is inconsistent when an ok read of
  its key invoked at least M after it completed (and before the key's next write completed)
  returned an older version.

A run of ``n`` samples with no bad one cannot show more than ``log10(n)`` nines, so each result
carries that cap (``max_showable``) and says when the figure is only a lower bound (``at_least``).
No loops over rows: sorting and ``merge_asof`` only.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from analysis.kernels import _is, _ops, stale_flags
from analysis.load import normalise
from analysis.ops import NS_PER_MS, NS_PER_S

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


def delay_label(ns: int) -> str:
    """A probe delay as ``100ms``, ``1s`` or ``2.5s``."""
    ms = round(ns / NS_PER_MS, 3)
    return f"{ms:g}ms" if ms < 1000 else f"{ms / 1000:g}s"


def probe_outcomes(history: pd.DataFrame) -> pd.DataFrame:
    """One row per ok probe matched to its write: ``delay_ns`` (M) and whether it was ``bad``.

    A probe names its write by key and version (``value``); versions of a key are unique, so the
    match is exact. M is the probe's ``t_intended`` minus the write's ``t_complete``. A probe is
    bad when Redis held an entry (not a tombstone, not nothing) older than the write: a reader
    would have been served a version the write had replaced M earlier.
    """
    history = normalise(history)
    probes = history.loc[_is(history, "probe") & history["value"].notna() & history["t_intended"].notna()]
    writes = _ops(history, _is(history, "write"))
    empty = pd.DataFrame({"delay_ns": pd.Series([], dtype="int64"), "bad": pd.Series([], dtype=bool)})
    if len(probes) == 0 or len(writes) == 0:
        return empty
    left = pd.DataFrame(
        {
            "key": probes["key"].cat.codes.to_numpy().astype("int64"),
            "version": probes["value"].to_numpy(dtype="int64"),
            "t_intended": probes["t_intended"].to_numpy(dtype="int64"),
            "bad": (
                (probes["source"] == "entry").to_numpy()
                & (probes["version"].fillna(np.iinfo("int64").max) < probes["value"]).to_numpy(dtype=bool)
            ),
        }
    )
    right = pd.DataFrame(
        {
            "key": writes["key"].to_numpy(),  # already the categorical codes
            "version": writes["version"].to_numpy(dtype="int64"),
            "t_complete": writes["t_complete"].to_numpy(dtype="int64"),
        }
    )
    matched = left.merge(right, on=["key", "version"], how="inner")
    return pd.DataFrame(
        {
            "delay_ns": matched["t_intended"].to_numpy() - matched["t_complete"].to_numpy(),
            "bad": matched["bad"].to_numpy(dtype=bool),
        }
    )


def writes_consistent_by_probes(history: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Nines of probes that found no older entry, per probe delay M (labelled as by :func:`delay_label`)."""
    outcomes = probe_outcomes(history)
    out: dict[str, dict[str, Any]] = {}
    for delay, group in outcomes.groupby("delay_ns", sort=True):
        result = nines(int(group["bad"].sum()), len(group))
        result["window_ms"] = int(delay) / NS_PER_MS
        out[delay_label(int(delay))] = result
    return out


def compute_nines(history: pd.DataFrame | None, tolerance_ns: int = 0) -> dict[str, Any]:
    """The ``nines`` entry of ``summary.json``: reads fresh, and writes consistent per window.

    Writes are measured by probes when the history has any, else from the users' reads.
    """
    if history is None:
        return {"skipped": True, "reason": "no op history"}
    history = normalise(history)
    by_probes = writes_consistent_by_probes(history)
    ok_writes = int(_is(history, "write").sum())
    result: dict[str, Any] = {"reads_fresh": reads_fresh(history, tolerance_ns), "tolerance_ns": tolerance_ns}
    if by_probes:
        probed = history.loc[_is(history, "probe"), ["key", "value"]].drop_duplicates()
        result["writes_consistent"] = by_probes
        result["method"] = "probe"
        result["probed_writes"] = len(probed)
        result["ok_writes"] = ok_writes
    else:
        result["writes_consistent"] = {
            label: writes_consistent(history, ns) for label, ns in WINDOWS_NS.items()
        }
        result["method"] = "reads"
    return result
