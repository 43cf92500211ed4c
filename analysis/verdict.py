"""Check results, their composition into one verdict, and ``summary.json``."""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis import display

SUMMARY_FILE = "summary.json"


#: The outcomes of a check and of a verdict, as Jepsen's ``:valid?`` true, false and ``:unknown``.
PASS, FAIL, UNKNOWN = "pass", "fail", "unknown"
#: A check this run did not need and that had nothing to judge: neither a pass nor a reason for doubt.
NOT_APPLICABLE = "not applicable"


@dataclass
class CheckResult:
    """The outcome of one check, in the spirit of a Jepsen checker's result map.

    ``figures`` hold JSON-serialisable numbers (nested dicts allowed); ``examples`` a few of the worst
    offending history rows. ``passed`` is the check's own finding (no violation among the rows it
    saw); :attr:`outcome` is what the verdict makes of it once :mod:`analysis.outcomes` has judged
    whether the run needed the check and whether its rows were complete (``unknown``,
    ``applicable``). A skipped check judged nothing: its outcome is unknown unless the run did not
    need it.
    """

    name: str
    passed: bool
    violations: int = 0
    figures: dict[str, Any] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)
    skipped: bool = False
    reason: str | None = None
    #: Set when the finding cannot be trusted either way (needed but skipped, or rows missing).
    unknown: bool = False
    #: Cleared for a skipped check the run did not need.
    applicable: bool = True

    @classmethod
    def skip(cls, name: str, reason: str, figures: dict[str, Any] | None = None) -> CheckResult:
        """A skipped result explaining why there was nothing to check (no violation found)."""
        return cls(name=name, passed=True, skipped=True, reason=reason, figures=figures or {})

    def make_unknown(self, why: str) -> None:
        """Judge this result unknown, saying why after any reason it already had."""
        self.unknown = True
        self.reason = f"{self.reason}; {why}" if self.reason else why

    @property
    def outcome(self) -> str:
        """``pass``, ``fail``, ``unknown`` or ``not applicable``."""
        if self.unknown:
            return UNKNOWN
        if self.skipped:
            return UNKNOWN if self.applicable else NOT_APPLICABLE
        return PASS if self.passed else FAIL

    @property
    def status(self) -> str:
        """``PASS``, ``FAIL``, ``UNKNOWN`` or ``N/A``."""
        return {PASS: "PASS", FAIL: "FAIL", UNKNOWN: "UNKNOWN", NOT_APPLICABLE: "N/A"}[self.outcome]

    def to_dict(self) -> dict[str, Any]:
        """The check's entry in ``summary.json``: status fields, then figures, then examples."""
        entry: dict[str, Any] = {
            "outcome": self.outcome,
            "passed": self.outcome == PASS,
            "violations": int(self.violations),
            "skipped": bool(self.skipped),
        }
        if self.reason is not None:
            entry["reason"] = self.reason
        for key, value in self.figures.items():
            if key not in entry:
                entry[key] = value
        entry["examples"] = self.examples
        return jsonable(entry)


@dataclass
class ThresholdResult:
    """One threshold (an SLA) judged against one figure of the analysis.

    ``comparison`` is ``"min"`` (the figure must be at least the limit) or ``"max"`` (at most). A
    threshold whose figure is absent (no such operations, or it does not apply to this run) is
    skipped, with a ``reason``, and counts as passed.
    """

    name: str
    label: str
    comparison: str
    limit: float
    figure: float | None = None
    unit: str = ""
    skipped: bool = False
    reason: str | None = None
    #: The check whose figure the threshold judges (``latency`` for a latency limit), or None.
    check: str | None = None

    @property
    def passed(self) -> bool:
        """Whether the figure is within the limit (always for a skipped threshold)."""
        if self.skipped or self.figure is None:
            return True
        return self.figure >= self.limit if self.comparison == "min" else self.figure <= self.limit

    @property
    def status(self) -> str:
        """``PASS``, ``FAIL`` or ``N/A`` (skipped: the figure is absent from this run)."""
        if self.skipped:
            return "N/A"
        return "PASS" if self.passed else "FAIL"

    def show(self, value: float | None) -> str:
        """The figure or the limit with its unit: a duration in µs or ms, a ratio or a count bare."""
        if self.unit == "ms":
            return display.duration_ms(value)
        text = _short(value)
        return f"{text} {self.unit}" if self.unit else text

    def limit_text(self) -> str:
        """The limit as the report's table shows it, e.g. ``<= 20 ms``."""
        return f"{'>=' if self.comparison == 'min' else '<='} {self.show(self.limit)}"

    def describe(self) -> str:
        """One line naming the figure and the limit, e.g. ``FAIL threshold incr p95 17.2 ms > 15 ms``."""
        if self.skipped:
            return f"N/A threshold {self.label}: {self.reason}"
        ops = {("min", True): ">=", ("min", False): "<", ("max", True): "<=", ("max", False): ">"}
        op = ops[self.comparison, self.passed]
        return f"{self.status} threshold {self.label} {self.show(self.figure)} {op} {self.show(self.limit)}"

    def to_dict(self) -> dict[str, Any]:
        """The threshold's entry in ``summary.json``."""
        entry: dict[str, Any] = {
            "passed": self.passed,
            "figure": self.figure,
            "limit": self.limit,
            "skipped": self.skipped,
            "comparison": self.comparison,
            "unit": self.unit or None,
        }
        if self.reason is not None:
            entry["reason"] = self.reason
        return jsonable(entry)


def _short(value: float | None) -> str:
    """A figure for a sentence: integers as they are, others to three decimals at most."""
    if value is None:
        return "-"
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.3f}".rstrip("0").rstrip(".")


CHECK, THRESHOLD = "check", "threshold"


@dataclass(frozen=True)
class VerdictRow:
    """One row of the verdict's tables: a check or a threshold, and the status shown for it.

    The verdict's outcome and the names in its headline are read off these rows
    (:meth:`Verdict.rows`), so no headline can name a failure that no row shows.
    """

    kind: str
    name: str
    #: ``PASS``, ``FAIL``, ``UNKNOWN`` or ``N/A``.
    status: str
    result: CheckResult | ThresholdResult
    #: For a failing row that names no failure of its own, the failing row that already names it
    #: (``threshold:max_violations.stale_read`` is covered by ``stale_read``).
    covered_by: str | None = None


@dataclass
class Verdict:
    """All check results of one analysis, plus the context they were computed in."""

    checks: list[CheckResult]
    run: dict[str, Any] | None = None
    locust: dict[str, Any] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    thresholds: list[ThresholdResult] = field(default_factory=list)

    def rows(self) -> list[VerdictRow]:
        """Every check, in check order, then every threshold: the one source of the outcome, of
        the headline and of the console's and the report's tables."""
        rows = [VerdictRow(CHECK, c.name, c.status, c) for c in self.checks]
        failed_checks = {r.name for r in rows if r.status == "FAIL"}
        prefix = "threshold:max_violations."
        for t in self.thresholds:
            judged = t.name[len(prefix) :] if t.name.startswith(prefix) else None
            covered = judged if t.status == "FAIL" and judged in failed_checks else None
            rows.append(VerdictRow(THRESHOLD, t.name, t.status, t, covered))
        return rows

    def headline(self) -> tuple[str, list[VerdictRow]]:
        """The outcome and the rows that make it: the failing rows of a fail (but those covered by
        another), the unknown rows of an unknown, none of a pass."""
        rows = self.rows()
        failing = [r for r in rows if r.status == "FAIL" and r.covered_by is None]
        if failing:
            return FAIL, failing
        unknown = [r for r in rows if r.status == "UNKNOWN"]
        return (UNKNOWN, unknown) if unknown else (PASS, [])

    @property
    def outcome(self) -> str:
        """``fail`` when a check failed or a threshold was breached, else ``unknown`` when a check
        is unknown (a fail the missing rows cannot explain outweighs any doubt), else ``pass``."""
        return self.headline()[0]

    @property
    def passed(self) -> bool:
        """True only when the outcome is pass."""
        return self.outcome == PASS

    @property
    def failed(self) -> list[str]:
        """Names of the failed checks, in check order, then of the breached thresholds.

        A ``threshold:max_violations.<check>`` breach is left out when ``<check>`` itself failed:
        the check's name already says it.
        """
        return [r.name for r in self.rows() if r.status == "FAIL" and r.covered_by is None]

    @property
    def unknown(self) -> list[str]:
        """Names of the checks whose outcome is unknown: why the verdict is not a pass."""
        return [r.name for r in self.rows() if r.status == "UNKNOWN"]

    def check(self, name: str) -> CheckResult:
        """The result of the check called ``name``."""
        for result in self.checks:
            if result.name == name:
                return result
        raise KeyError(name)

    def to_summary(self) -> dict[str, Any]:
        """The content of ``summary.json``."""
        summary: dict[str, Any] = {
            "verdict": self.outcome,
            "passed": self.passed,
            "failed": self.failed,
            "unknown": self.unknown,
            "run": run_info(self.run),
            "options": self.options,
            "notes": self.notes,
            "checks": {c.name: c.to_dict() for c in self.checks},
            "thresholds": {t.name: t.to_dict() for t in self.thresholds},
            "locust": self.locust
            if self.locust is not None
            else {"skipped": True, "reason": "no Locust CSV exports (locust_stats.csv)"},
        }
        return jsonable(summary)


def run_info(run: dict[str, Any] | None) -> dict[str, Any] | None:
    """The part of ``run.json`` worth repeating in the summary (identity, timing, completeness)."""
    if run is None:
        return None
    wanted = (
        "run_id",
        "schema_version",
        "started_ns",
        "stopped_ns",
        "clock_uncertainty_ns",
        "history_complete",
        "rows",
        "options",
    )
    return {k: run[k] for k in wanted if k in run}


def jsonable(value: Any) -> Any:
    """``value`` with numpy/pandas scalars made native and NaN/NA/inf made ``None``.

    ``json.dumps`` rejects numpy integers and would write NaN, which is not JSON.
    """
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return str(value)


def dumps(summary: dict[str, Any]) -> str:
    """``summary`` as indented JSON text."""
    return json.dumps(jsonable(summary), indent=2, allow_nan=False) + "\n"


def write_summary(results: str | Path, summary: dict[str, Any]) -> Path:
    """Write ``summary.json`` into ``results`` atomically: a temporary file, then a rename.

    A reader never sees half a summary, and a crash leaves the previous one in place.
    """
    target = Path(results) / SUMMARY_FILE
    write_text_atomic(target, dumps(summary))
    return target


def write_text_atomic(target: Path, text: str) -> None:
    """Write ``text`` to ``target`` through a temporary file in the same directory and a rename.

    The file gets the mode a plain ``open`` would give it (0666 less the umask), not mkstemp's
    private 0600: results are meant to be read by whoever reads the run.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
