"""Hand-built op histories for the analysis tests: one row per call, times in milliseconds."""

from __future__ import annotations

from typing import Any

import pandas as pd

from analysis.load import normalise

MS = 1_000_000


def op(
    f: str,
    key: str | None = "cs:e:1",
    t0: float = 0,
    t1: float | None = None,
    version: int | None = None,
    *,
    status: str = "ok",
    process: int = 1,
    value: int | None = None,
    source: str | None = None,
    node: str = "local",
) -> dict[str, Any]:
    """One history row; ``t0``/``t1`` in milliseconds (``t1`` defaults to ``t0 + 1``)."""
    end = t0 + 1 if t1 is None else t1
    return {
        "process": process,
        "node": node,
        "f": f,
        "key": key,
        "status": status,
        "t_invoke": int(t0 * MS),
        "t_complete": int(end * MS),
        "version": version,
        "value": value,
        "source": source,
    }


def history(*rows: dict[str, Any]) -> pd.DataFrame:
    """A normalised history from rows built by :func:`op`."""
    frame = pd.DataFrame(list(rows))
    frame["version"] = frame["version"].astype("Int64")
    frame["value"] = frame["value"].astype("Int64")
    return normalise(frame)
