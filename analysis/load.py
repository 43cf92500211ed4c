"""Reading a results directory: the op history, ``run.json`` and Locust's CSV exports.

Everything that can be wrong with the input is reported as an :class:`InputError` whose message is
one line saying which input, what is wrong and what to do, so that the CLI can print it and exit 2
without a traceback.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from analysis.errors import InputError
from analysis.ops import LIVE_FAILURE_TYPE
from analysis.options import run_clock_uncertainty
from analysis.validate import check_copies, check_row_count, check_rows, check_schema, check_versions, locate
from cachestorm.history import SCHEMA

#: The columns of the history's schema (docs/history.md), in order: the recorder's own.
COLUMNS: tuple[str, ...] = tuple(SCHEMA.names)
CATEGORICAL: tuple[str, ...] = ("node", "f", "key", "status", "source")
REQUIRED_INT: tuple[str, ...] = ("process", "t_invoke", "t_complete")
NULLABLE_INT: tuple[str, ...] = ("version", "value", "t_intended")
#: Columns a schema v1 history lacks; they load as nulls.
ADDED_IN_V2: tuple[str, ...] = ("t_intended",)

HISTORY_DIR = "history"
RUN_FILE = "run.json"
LOCUST_STATS = "locust_stats.csv"
LOCUST_FAILURES = "locust_failures.csv"


@dataclass
class Inputs:
    """Everything read from one results directory. Each part is ``None`` when absent."""

    results: Path
    history: pd.DataFrame | None
    run: dict[str, Any] | None
    locust: dict[str, Any] | None


def history_files(path: str | Path) -> list[Path]:
    """The complete part files of a history, given a results dir, a history dir or one file.

    Dot-files are skipped because a part being written lives under a temporary name until renamed.
    """
    p = Path(path)
    if p.is_file():
        return [p]
    directory = p / HISTORY_DIR if (p / HISTORY_DIR).is_dir() else p
    if not directory.is_dir():
        return []
    return sorted(f for f in directory.glob("*.parquet") if f.is_file() and not f.name.startswith("."))


def empty_history() -> pd.DataFrame:
    """A history with no rows and the normalised dtypes."""
    frame = pd.DataFrame({c: pd.Series([], dtype="object") for c in COLUMNS})
    return normalise(frame)


def normalise(history: pd.DataFrame) -> pd.DataFrame:
    """Return ``history`` with the analysis dtypes.

    Strings become categoricals (a few distinct values over millions of rows, and fast equality),
    times and processes plain int64, versions and values nullable Int64 (nanosecond values do not
    fit a float exactly). Already-normalised frames are returned as they are, so every check can
    call this cheaply.
    """
    if _is_normalised(history):
        return history
    missing = [c for c in COLUMNS if c not in history.columns and c not in ADDED_IN_V2]
    if missing:
        raise InputError(
            f"history lacks column(s) {', '.join(missing)}; expected schema v2 (docs/history.md)"
        )
    out = pd.DataFrame(index=pd.RangeIndex(len(history)))
    for column in COLUMNS:
        if column not in history.columns:
            n = len(history)
            out[column] = pd.arrays.IntegerArray(np.zeros(n, dtype="int64"), np.ones(n, dtype=bool))
            continue
        values = history[column].reset_index(drop=True)
        if column in REQUIRED_INT + NULLABLE_INT and _holds_text(values):
            raise InputError(
                f"history column {column!r} holds text where integers belong; numbers are never "
                "converted from text (docs/history.md)"
            )
        try:
            if column in CATEGORICAL:
                out[column] = values.astype("category")
            elif column in REQUIRED_INT:
                if values.isna().any():
                    raise InputError(f"history column {column!r} has nulls; the schema requires a value")
                out[column] = values.astype("int64")
            else:
                out[column] = values.astype("Int64")
        except (TypeError, ValueError) as exc:
            raise InputError(f"history column {column!r} has the wrong type ({exc})") from None
    return out


def _holds_text(values: pd.Series) -> bool:
    if pd.api.types.is_string_dtype(values.dtype) and not pd.api.types.is_object_dtype(values.dtype):
        return True
    return pd.api.types.is_object_dtype(values.dtype) and bool(values.map(type).eq(str).any())


def _is_normalised(history: pd.DataFrame) -> bool:
    if list(history.columns[: len(COLUMNS)]) != list(COLUMNS):
        return False
    dtypes = history.dtypes
    return (
        all(isinstance(dtypes[c], pd.CategoricalDtype) for c in CATEGORICAL)
        and all(dtypes[c] == "int64" for c in REQUIRED_INT)
        and all(dtypes[c] == "Int64" for c in NULLABLE_INT)
        and isinstance(history.index, pd.RangeIndex)
        and history.index.start == 0
        and history.index.step == 1
    )


def present_columns(names: list[str], wanted: Sequence[str] = COLUMNS) -> list[str]:
    """Those of ``wanted`` that a part file has (a schema v1 part lacks :data:`ADDED_IN_V2`)."""
    return [c for c in wanted if c in names]


def with_added_columns(table: pa.Table) -> pa.Table:
    """``table`` with the columns schema v2 added, as nulls when a v1 part lacks them."""
    for column in ADDED_IN_V2:
        if column not in table.column_names:
            table = table.append_column(column, pa.nulls(table.num_rows, pa.int64()))
    return table


def load_history(path: str | Path) -> pd.DataFrame:
    """Load the op history under ``path`` (a results dir, its history dir or one part file).

    Raises :class:`InputError` when there is no part file or a part cannot be read.
    """
    files = history_files(path)
    if not files:
        raise InputError(f"{path}: no history/*.parquet found; pass a results directory written by a run")
    check_copies(files)
    tables = []
    for file in files:
        try:
            schema = pq.read_schema(file)
            missing = [c for c in COLUMNS if c not in schema.names and c not in ADDED_IN_V2]
            if missing:
                raise InputError(
                    f"{file}: lacks column(s) {', '.join(missing)}; expected op history schema v2 "
                    "(docs/history.md)"
                )
            check_schema(schema, file)
            # Strings as dictionaries arrive as categoricals; no per-row Python strings are built.
            columns = present_columns(schema.names)
            table = pq.read_table(file, columns=columns, read_dictionary=list(CATEGORICAL))
            check_rows(table, file)
            tables.append(with_added_columns(table))
        except InputError:
            raise
        except Exception as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InputError(
                f"{file}: not a readable Parquet file ({reason}); delete or replace the damaged part"
            ) from None
    try:
        return frame_from_tables(tables)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None


def frame_from_tables(tables: list[pa.Table], *, unify: bool = True) -> pd.DataFrame:
    """Tables of the schema's columns (strings as dictionaries), concatenated, as a normalised frame.

    ``tables`` is emptied, so that the frame's making can free each Arrow column as soon as it is
    converted (the caller must hold no other reference to them). With ``unify``, the string columns'
    dictionaries are unified first (categories in order of first appearance across the tables).

    Column by column, straight into the dtypes of :func:`normalise` with one copy each: int64 into
    numpy, nullable int64 into ``Int64`` (values and a null mask, never through float64, which
    would lose the low bits of nanosecond values such as a ``ws_recv``'s commit time), a column of
    nulls only (``t_intended`` in a closed-model run) into an all-NA ``Int64`` whose zero values
    are never written, dictionaries into categoricals. Each column is dropped from the concatenated
    table once converted and Arrow's unused memory handed back, so the load peaks at about the table
    plus the frame rather than twice the frame. Other column types take the general path of
    :func:`normalise`.
    """
    table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
    if unify and len(tables) > 1:
        table = table.unify_dictionaries()
    tables.clear()
    types = table.schema
    for column in COLUMNS:
        if column not in types.names:
            raise InputError(f"history lacks column {column!r}")
    usual = all(
        pa.types.is_dictionary(types.field(c).type) or pa.types.is_string(types.field(c).type)
        for c in CATEGORICAL
    ) and all(types.field(c).type == pa.int64() for c in REQUIRED_INT + NULLABLE_INT)
    if not usual:
        frame = table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
        return rebase_versions(normalise(frame))
    n = table.num_rows
    pool = pa.default_memory_pool()
    data: dict[str, Any] = {}
    for column in COLUMNS:
        values = table.column(column)
        if column in CATEGORICAL:
            if not pa.types.is_dictionary(values.type):
                values = pc.dictionary_encode(values)
            data[column] = values.to_pandas().astype("category")
        elif column in REQUIRED_INT:
            if values.null_count:
                raise InputError(f"history column {column!r} has nulls; the schema requires a value")
            data[column] = _int64(values, n)
        else:
            data[column] = _nullable_int64(values, n)
        del values
        table = table.drop_columns([column])
        pool.release_unused()
    frame = pd.DataFrame(data, copy=False)
    frame.index = pd.RangeIndex(n)
    return rebase_versions(normalise(frame))


#: The operations whose ``value`` is a version of their key, not another quantity.
VALUE_IS_VERSION = ("probe", "sweep")


def rebase_versions(history: pd.DataFrame) -> pd.DataFrame:
    """Count every key's versions from the version its run started at, so that the checks' "every
    key starts at 0" holds for a target whose reset reported its starting versions (``f=initial``
    rows, docs/history.md). Without such rows the history is returned as it is.

    A key that started at version s has s subtracted from every version of it (and from the
    ``value`` of its probes and sweep rows, which are versions too): version s becomes 0, its next
    write 1. Examples in the verdict then show these rebased versions.
    """
    f = history["f"]
    initial = (f == "initial").to_numpy()
    if not initial.any():
        return history
    starts = history.loc[initial, ["key", "version"]].dropna()
    offsets = pd.Series(
        starts["version"].astype("int64").to_numpy(), index=starts["key"].astype(str).to_numpy()
    )
    offset = history["key"].astype(object).map(offsets).fillna(0).astype("int64").to_numpy()
    history = history.copy()
    history["version"] = history["version"] - offset
    in_value = f.isin(VALUE_IS_VERSION).to_numpy()
    value = history["value"].copy()
    value[in_value] = value[in_value] - offset[in_value]
    history["value"] = value
    return history


def _int64(values: pa.ChunkedArray, n: int) -> np.ndarray:
    """An int64 column without nulls, chunks copied into one numpy array."""
    out = np.empty(n, dtype="int64")
    start = 0
    for chunk in values.chunks:
        out[start : start + len(chunk)] = chunk.to_numpy()
        start += len(chunk)
    return out


def _nullable_int64(values: pa.ChunkedArray, n: int) -> pd.arrays.IntegerArray:
    """A nullable int64 column as pandas ``Int64``: values (0 under a null) and a null mask."""
    if values.null_count == n:
        # np.zeros maps zeroed pages lazily: an all-null column costs its mask only.
        return pd.arrays.IntegerArray(np.zeros(n, dtype="int64"), np.ones(n, dtype=bool))
    data = np.empty(n, dtype="int64")
    mask = np.zeros(n, dtype=bool)
    start = 0
    for chunk in values.chunks:
        stop = start + len(chunk)
        if chunk.null_count:
            data[start:stop] = pc.fill_null(chunk, 0).to_numpy()
            mask[start:stop] = chunk.is_null().to_numpy(zero_copy_only=False)
        else:
            data[start:stop] = chunk.to_numpy()
        start = stop
    return pd.arrays.IntegerArray(data, mask)


STARTED_FILE = "run.started.json"


def unfinished_run(path: str | Path) -> str | None:
    """For a run that started (``run.started.json``) but never finished (no ``run.json``): one
    line saying when it started, how far its parts reach and how many rows they hold, read from
    the parts' Parquet footers alone. None for a finished run, or a directory of no such run."""
    results = Path(path)
    started = results / STARTED_FILE
    if (results / "run.json").exists() or not started.is_file():
        return None
    began: int | None
    try:
        began = int(json.loads(started.read_text())["started_ns"])
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        began = None
    parts = history_files(results / HISTORY_DIR) if (results / HISTORY_DIR).is_dir() else []
    rows, newest = 0, None
    for file in parts:
        try:
            meta = pq.read_metadata(file)
        except Exception:
            continue  # a damaged part is reported when the history is loaded
        rows += meta.num_rows
        if "t_complete" not in meta.schema.names:
            continue
        column = meta.schema.names.index("t_complete")
        for group in range(meta.num_row_groups):
            stats = meta.row_group(group).column(column).statistics
            if stats is not None and stats.has_min_max:
                newest = int(stats.max) if newest is None else max(newest, int(stats.max))
    when = "an unknown time" if began is None else _utc(began)
    if newest is None:
        reach = "no part holds a row"
    elif began is None:
        reach = f"its parts reach {_utc(newest)}"
    else:
        reach = f"its parts reach {_utc(newest)} ({(newest - began) / 1e9:.1f} s in)"
    return (
        f"the run did not finish (killed, crashed, or still running): it started at {when}, {reach}, "
        f"{rows:,} rows in {len(parts)} parts; nothing can be concluded from what is missing"
    )


def _utc(ns: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ns / 1e9))


def load_run(path: str | Path) -> dict[str, Any] | None:
    """Load ``run.json`` from a results dir (or the file itself); ``None`` when it does not exist."""
    p = Path(path)
    file = p if p.is_file() else p / RUN_FILE
    if not file.exists():
        return None
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{file}: unreadable run.json ({exc}); fix or remove it") from None
    if not isinstance(data, dict):
        raise InputError(f"{file}: run.json is not a JSON object; fix or remove it")
    return data


def load_locust(path: str | Path) -> dict[str, Any] | None:
    """Read Locust's ``--csv`` exports (stats and failures); ``None`` when neither exists."""
    p = Path(path)
    stats_file, failures_file = p / LOCUST_STATS, p / LOCUST_FAILURES
    if not stats_file.exists() and not failures_file.exists():
        return None
    section: dict[str, Any] = {"stats": [], "failures": []}
    if stats_file.exists():
        frame = _read_csv(stats_file, ("Name", "Request Count", "Failure Count"))
        percentiles = [c for c in frame.columns if c.endswith("%")]
        for row in frame.to_dict("records"):
            entry: dict[str, Any] = {
                "type": _text(row.get("Type")),
                "name": _text(row.get("Name")),
                "requests": _number(row.get("Request Count")),
                "failures": _number(row.get("Failure Count")),
                "median_ms": _number(row.get("Median Response Time")),
                "mean_ms": _number(row.get("Average Response Time")),
                "min_ms": _number(row.get("Min Response Time")),
                "max_ms": _number(row.get("Max Response Time")),
                "rps": _number(row.get("Requests/s")),
                # Locust's percentiles are its own rounded, bucketed milliseconds; kept as it reports them.
                "percentiles_ms": {c: _number(row.get(c)) for c in percentiles},
            }
            section["stats"].append(entry)
    else:
        section["stats_missing"] = True
    _without_live_failures(section)
    if failures_file.exists():
        frame = _read_csv(failures_file, ("Name", "Occurrences"))
        for row in frame.to_dict("records"):
            section["failures"].append(
                {
                    "method": _text(row.get("Method")),
                    "name": _text(row.get("Name")),
                    "error": _text(row.get("Error")),
                    "occurrences": _number(row.get("Occurrences")),
                }
            )
    section["failures"] = [f for f in section["failures"] if f["method"] != LIVE_FAILURE_TYPE]
    return section


def _without_live_failures(section: dict[str, Any]) -> None:
    """Drop the live view's ``COHERENCE`` rows from Locust's stats, and their counts from the
    Aggregated row: they are the checks' own findings (judged from the history), not requests, and
    would count twice, as violations and as failed requests."""
    live = [r for r in section["stats"] if r["type"] == LIVE_FAILURE_TYPE]
    if not live:
        return
    section["stats"] = [r for r in section["stats"] if r["type"] != LIVE_FAILURE_TYPE]
    for row in section["stats"]:
        if row["name"] == "Aggregated":
            for field in ("requests", "failures"):
                if row[field] is not None:
                    row[field] -= sum(int(r[field] or 0) for r in live)


def _read_csv(file: Path, required: tuple[str, ...]) -> pd.DataFrame:
    try:
        # Everything as text: Locust writes "N/A" for percentiles of names without requests.
        frame = pd.read_csv(file, dtype=str, keep_default_na=False)
    except Exception as exc:
        raise InputError(f"{file}: not a readable CSV ({exc}); re-export it with locust --csv") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise InputError(f"{file}: lacks column(s) {', '.join(missing)}; expected a Locust --csv export")
    return frame


def _text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)


def _number(value: Any) -> int | float | None:
    """Locust's CSV cell as a number: int when integral, ``None`` for N/A or blanks."""
    if value is None:
        return None
    try:
        number = float(str(value))
    except ValueError:
        return None
    if math.isnan(number) or math.isinf(number):
        return None
    return int(number) if number.is_integer() else number


def history_rows(path: str | Path) -> int:
    """Rows of the history under ``path``, from the Parquet footers (nothing else is read)."""
    rows = 0
    for file in history_files(path):
        try:
            rows += pq.ParquetFile(file).metadata.num_rows
        except Exception as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InputError(
                f"{file}: not a readable Parquet file ({reason}); delete or replace the damaged part"
            ) from None
    return rows


def load_columns(path: str | Path, columns: Sequence[str]) -> pd.DataFrame:
    """Only ``columns`` of the history under ``path``, strings as categoricals: what the thresholds
    need of a history too large to load whole."""
    files = history_files(path)
    table = pa.concat_tables(
        pq.read_table(f, columns=list(columns), read_dictionary=[c for c in columns if c in CATEGORICAL])
        for f in files
    ).unify_dictionaries()
    return table.to_pandas()


def load_results(path: str | Path, history: bool = True, tolerance_ns: int | None = None) -> Inputs:
    """Load everything from a results directory, validating it as the CLI needs.

    With ``history=False`` the op history is checked for but not loaded (``Inputs.history`` is
    ``None``), for an analysis that reads it in chunks (which checks the rows as it reads them).
    The write versions are checked (:func:`analysis.validate.check_versions`) with
    ``tolerance_ns``, by default the run's ``clock_uncertainty_ns``.

    Raises :class:`InputError` for a missing or empty directory, or one holding neither an op
    history nor Locust CSVs.
    """
    results = Path(path)
    if not results.exists():
        raise InputError(f"{results}: results directory does not exist; pass the directory a run wrote")
    if not results.is_dir():
        raise InputError(f"{results}: not a directory; pass the results directory a run wrote")
    if not any(results.iterdir()):
        raise InputError(f"{results}: results directory is empty; did the run write its output here?")
    run = load_run(results)
    if run is not None and run.get("contract_broken"):
        raise InputError(
            f"{results / 'run.json'}: the target broke cachestorm's contract during the run "
            f"({run['contract_broken']}); fix the target (docs/targets.md), then run again"
        )
    if run is not None and run.get("stopped_for"):
        raise InputError(
            f"{results / 'run.json'}: the run was stopped before its end ({run['stopped_for']}); "
            "fix that, then run again"
        )
    locust = load_locust(results)
    files = history_files(results / HISTORY_DIR) if (results / HISTORY_DIR).is_dir() else []
    if not files and locust is None:
        raise InputError(
            f"{results}: holds neither an op history (history/*.parquet) nor Locust CSVs "
            "(locust_stats.csv); pass the directory a run wrote"
        )
    if files:
        check_row_count(results / HISTORY_DIR, history_rows(results), run)
    frame = load_history(results) if files and history else None
    if frame is not None:
        if tolerance_ns is None:
            tolerance_ns = run_clock_uncertainty(run)
        counts = [(f, pq.ParquetFile(f).metadata.num_rows) for f in files]
        check_versions(frame, tolerance_ns, locate(counts))
    elif files:
        check_copies(files)
    return Inputs(results=results, history=frame, run=run, locust=locust)
