"""What the analysis refuses before it judges anything: a history that no run could have recorded.

A wrong verdict is worse than none, so corrupt input is bad input (exit 2), each time with one line
naming the part file, what is wrong and what to do (docs/checks.md, "Input checks"):

- a column of the wrong type (a number stored as text or as a float is refused, never converted);
- a status other than ok, fail or info;
- an operation that completed before it was invoked;
- a part file that is a copy of another, or more rows than ``run.json`` says the run wrote;
- ok writes of one key whose versions repeat or go back (the contract: versions grow by 1 per
  committed write), found with one sort of the ok writes by key and version.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from analysis.errors import InputError

STATUSES = ("ok", "fail", "info")
INTEGER_COLUMNS = ("process", "t_invoke", "t_complete", "version", "value", "t_intended")
NULLABLE = ("version", "value", "t_intended", "key", "source")
STRING_COLUMNS = ("node", "f", "key", "status", "source")
FIX = "rewrite or remove the part (a removed part leaves the history incomplete, judged unknown)"


def _string_type(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def check_schema(schema: pa.Schema, file: Path) -> None:
    """Each column of a part has its schema type: integers that fit int64, strings."""
    for column in INTEGER_COLUMNS:
        if column not in schema.names:
            continue
        t = schema.field(column).type
        fits = pa.types.is_integer(t) and t != pa.uint64()
        if not (fits or (pa.types.is_null(t) and column in NULLABLE)):
            raise InputError(
                f"{file}: column {column!r} is {t}, not an integer (docs/history.md: int64); "
                f"numbers are never converted from text or floats: {FIX}"
            )
    for column in STRING_COLUMNS:
        if column not in schema.names:
            continue
        t = schema.field(column).type
        if not (_string_type(t) or (pa.types.is_null(t) and column in NULLABLE)):
            raise InputError(f"{file}: column {column!r} is {t}, not a string (docs/history.md): {FIX}")


def check_rows(table: pa.Table, file: Path, first: int = 0) -> None:
    """Every row's status is ok, fail or info, and no operation completed before it was invoked.

    ``first`` is the number, within ``file``, of the table's first row (a row group's offset).
    """
    status = table.column("status")
    known = pc.fill_null(pc.is_in(status.cast(pa.string()), value_set=pa.array(STATUSES)), False)
    if not pc.all(known).as_py():
        i = int(np.flatnonzero(~known.to_numpy(zero_copy_only=False))[0])
        value = status[i].as_py()
        raise InputError(
            f"{file}: row {first + i} has status {value!r}; a status is ok, fail or info "
            f"(docs/history.md): {FIX}"
        )
    t_invoke = table.column("t_invoke").to_numpy()
    t_complete = table.column("t_complete").to_numpy()
    back = np.flatnonzero(t_complete < t_invoke)
    if len(back):
        i = int(back[0])
        raise InputError(
            f"{file}: row {first + i} completed before it was invoked (t_complete {t_complete[i]} < "
            f"t_invoke {t_invoke[i]}); {len(back)} such row(s): {FIX}"
        )


def check_copies(files: Sequence[Path]) -> None:
    """No part file is a byte-for-byte copy of another (a part collected twice, or copied by hand).

    Only files of equal size are read and hashed, so a history without copies costs a stat per file.
    """
    by_size: dict[int, list[Path]] = {}
    for file in files:
        by_size.setdefault(file.stat().st_size, []).append(file)
    for same in by_size.values():
        if len(same) < 2:
            continue
        seen: dict[bytes, Path] = {}
        for file in same:
            digest = hashlib.blake2b(file.read_bytes(), digest_size=16).digest()
            if digest in seen:
                raise InputError(
                    f"{file}: a copy of {seen[digest].name}, so its rows would count twice; "
                    "remove one of them"
                )
            seen[digest] = file


def check_row_count(directory: Path, loaded: int, run: dict[str, Any] | None) -> None:
    """No more rows than the run wrote (fewer is an incomplete history, judged unknown)."""
    reported = run.get("rows") if run is not None else None
    if isinstance(reported, int) and not isinstance(reported, bool) and loaded > reported:
        raise InputError(
            f"{directory}: the part files hold {loaded} rows but run.json reports {reported}: a part is "
            "duplicated or comes from another run; remove the parts this run did not write"
        )


def check_versions(
    history: pd.DataFrame, tolerance_ns: int = 0, where: Callable[[int], str] = lambda row: f"row {row}"
) -> None:
    """Ok writes of one key never repeat a version, and none is below a version that committed
    before it began: refused naming the key and the two rows (``where`` names a row's place).

    One sort of the ok writes by key and version: a repeat is two neighbours; a write goes back
    when a write of a higher version of its key completed (by more than ``tolerance_ns``) before it
    was invoked, found with a running minimum of ``t_complete`` from the highest version down.
    """
    ok = (history["f"] == "write").to_numpy() & (history["status"] == "ok").to_numpy()
    ok &= history["version"].notna().to_numpy() & history["key"].notna().to_numpy()
    rows = np.flatnonzero(ok)
    if len(rows) < 2:
        return
    key = np.asarray(history["key"].array.codes)[rows].astype("int64")
    version = history["version"].array.take(rows).to_numpy(dtype="int64")
    # Highest version first within each key, so the running minimum covers the higher versions.
    order = np.lexsort((-version, key))
    key, version, rows = key[order], version[order], rows[order]
    t_invoke = history["t_invoke"].to_numpy()[rows]
    t_complete = history["t_complete"].to_numpy()[rows]
    same_key = key[1:] == key[:-1]
    repeat = np.flatnonzero(same_key & (version[1:] == version[:-1]))
    if len(repeat):
        i = int(repeat[0])
        a, b = sorted((int(rows[i]), int(rows[i + 1])))
        raise InputError(_contract(history, a, b, f"both committed version {version[i]}", where))
    starts = np.r_[True, ~same_key]
    group = np.cumsum(starts) - 1
    running = pd.Series(t_complete).groupby(group).cummin().to_numpy()
    # Among strictly higher versions of the key: the previous element's running minimum.
    higher = np.r_[np.iinfo("int64").max, running[:-1]]
    higher[starts] = np.iinfo("int64").max
    back = np.flatnonzero(higher < t_invoke - tolerance_ns)
    if len(back):
        i = int(back[0])
        first = int(np.flatnonzero(starts)[group[i]])
        j = first + int(np.argmin(t_complete[first:i]))
        raise InputError(
            _contract(
                history,
                int(rows[j]),
                int(rows[i]),
                f"version {version[i]} began after version {version[j]} had committed",
                where,
            )
        )


def _contract(history: pd.DataFrame, a: int, b: int, what: str, where: Callable[[int], str]) -> str:
    key = history["key"].iloc[a]
    return (
        f"{where(a)} and {where(b)}: ok writes of key {key!r}: {what}, but versions grow by exactly 1 "
        "per committed write (docs/targets.md); the target broke the contract: fix it, then run again"
    )


def locate(counts: Sequence[tuple[Path, int]]) -> Callable[[int], str]:
    """A row number of the loaded history as its part file and row within it."""
    ends = np.cumsum([n for _, n in counts])

    def where(row: int) -> str:
        i = int(np.searchsorted(ends, row, side="right"))
        start = int(ends[i - 1]) if i else 0
        return f"{counts[i][0]} row {row - start}"

    return where


__all__ = ["check_copies", "check_row_count", "check_rows", "check_schema", "check_versions", "locate"]
