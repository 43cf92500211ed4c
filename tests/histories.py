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


def row(f: str, t0: float, t1: float, version: int | None = None, **kw: Any) -> dict[str, Any]:
    """One history row as :func:`op` builds it, with both times given (milliseconds)."""
    return {
        "process": kw.get("process", 1),
        "node": "local",
        "f": f,
        "key": kw.get("key", "cs:e:1"),
        "status": kw.get("status", "ok"),
        "t_invoke": round(t0 * MS),
        "t_complete": round(t1 * MS),
        "version": version,
        "value": kw.get("value"),
        "source": kw.get("source"),
    }


def clean_rows() -> list[dict[str, Any]]:
    """A write, a concurrent read of the old version, a later read of the new one, a clean sweep."""
    return [
        row("write", 0, 10, 1),
        row("read", 5, 6, 0, process=2, source="hit"),
        row("read", 20, 21, 1, process=2, source="miss"),
        row("sweep", 30, 31, 1, process=0, value=1, source="entry"),
    ]


def complete_run(**fields: Any) -> dict[str, Any]:
    """A ``run.json`` saying every batch arrived, for tests whose subject is not completeness."""
    return {"run_id": "test", "history_complete": True, **fields}
