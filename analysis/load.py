"""Reading a results directory: the op history, ``run.json`` and Locust's CSV exports.

Everything that can be wrong with the input is reported as an :class:`InputError` whose message is
one line saying which input, what is wrong and what to do, so that the CLI can print it and exit 2
without a traceback.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

#: The columns of schema v1 (docs/history.md), in order.
COLUMNS: tuple[str, ...] = (
    "process",
    "node",
    "f",
    "key",
    "status",
    "t_invoke",
    "t_complete",
    "version",
    "value",
    "source",
)
CATEGORICAL: tuple[str, ...] = ("node", "f", "key", "status", "source")
REQUIRED_INT: tuple[str, ...] = ("process", "t_invoke", "t_complete")
NULLABLE_INT: tuple[str, ...] = ("version", "value")

HISTORY_DIR = "history"
RUN_FILE = "run.json"
LOCUST_STATS = "locust_stats.csv"
LOCUST_FAILURES = "locust_failures.csv"


class InputError(Exception):
    """The input cannot be analysed; the message is one line meant for the user."""


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
    missing = [c for c in COLUMNS if c not in history.columns]
    if missing:
        raise InputError(
            f"history lacks column(s) {', '.join(missing)}; expected schema v1 (docs/history.md)"
        )
    out = pd.DataFrame(index=pd.RangeIndex(len(history)))
    for column in COLUMNS:
        values = history[column].reset_index(drop=True)
        try:
            if column in CATEGORICAL:
                out[column] = values.astype("category")
            elif column in REQUIRED_INT:
                if values.isna().any():
                    raise InputError(f"history column {column!r} has nulls; schema v1 requires a value")
                out[column] = values.astype("int64")
            else:
                out[column] = values.astype("Int64")
        except (TypeError, ValueError) as exc:
            raise InputError(f"history column {column!r} has the wrong type ({exc})") from None
    return out


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


def load_history(path: str | Path) -> pd.DataFrame:
    """Load the op history under ``path`` (a results dir, its history dir or one part file).

    Raises :class:`InputError` when there is no part file or a part cannot be read.
    """
    files = history_files(path)
    if not files:
        raise InputError(f"{path}: no history/*.parquet found; pass a results directory written by a run")
    tables = []
    for file in files:
        try:
            schema = pq.read_schema(file)
            missing = [c for c in COLUMNS if c not in schema.names]
            if missing:
                raise InputError(
                    f"{file}: lacks column(s) {', '.join(missing)}; expected op history schema v1 "
                    "(docs/history.md)"
                )
            # Strings as dictionaries arrive as categoricals; no per-row Python strings are built.
            tables.append(pq.read_table(file, columns=list(COLUMNS), read_dictionary=list(CATEGORICAL)))
        except InputError:
            raise
        except Exception as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InputError(
                f"{file}: not a readable Parquet file ({reason}); delete or replace the damaged part"
            ) from None
    table = tables[0] if len(tables) == 1 else pa.concat_tables(tables).unify_dictionaries()
    # int64 straight to nullable Int64: through float64, nanosecond values (a ws_recv's commit
    # time, about 1.8e18) would lose their low bits.
    frame = table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
    try:
        return normalise(frame)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None


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
    return section


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


def load_results(path: str | Path) -> Inputs:
    """Load everything from a results directory, validating it as the CLI needs.

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
    locust = load_locust(results)
    files = history_files(results / HISTORY_DIR) if (results / HISTORY_DIR).is_dir() else []
    if not files and locust is None:
        raise InputError(
            f"{results}: holds neither an op history (history/*.parquet) nor Locust CSVs "
            "(locust_stats.csv); pass the directory a run wrote"
        )
    history = load_history(results) if files else None
    return Inputs(results=results, history=history, run=run, locust=locust)
