"""Thresholds (SLAs) read from a TOML file and judged against the figures of the checks.

The schema is documented in docs/checks.md ("Thresholds"); ``analysis/thresholds.toml`` holds the
seed SLAs applied when ``python -m analysis`` is given no ``--thresholds`` option. A file that cannot
be used raises :class:`ThresholdsError`, whose message is one line naming the file and the problem.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.load import InputError
from analysis.open_model import NAME as OPEN_MODEL
from analysis.ops import LATENCY_GROUPS, NS_PER_MS, NS_PER_US, SCHEDULED_GROUPS
from analysis.verdict import CheckResult, ThresholdResult

DEFAULT_FILE = Path(__file__).with_name("thresholds.toml")
#: Operations left out of the success rate: bookkeeping rows and the WebSocket listener's.
NOT_COUNTED = ("sweep", "redis_stat", "ws_open", "ws_recv", "ws_close", "ws_gap", "nemesis")
#: Operations whose ``fail`` is a correct refusal, not an error: a fill refused by the version guard,
#: an increment that did not get its lock, a WATCH abort, a lock not acquired or already lost, a write
#: refused by the fence. Those ``fail`` rows are left out of the success rate.
REFUSALS = ("fill", "incr", "tx_transfer", "lock_acquire", "lock_release", "guarded_write")
#: The users of the coherence scenario (users/scenarios.py): the hit ratio SLA is meant for them.
COHERENCE_USERS = frozenset({"CacheReader", "CacheWriter", "WebSocketListener"})
#: The latency tables a file may hold, mapped to the percentile figure of the latency check.
LATENCY_TABLES = {"latency_p50_ms": "p50", "latency_p95_ms": "p95", "latency_p99_ms": "p99"}
#: The tables limiting latency corrected for coordinated omission (the ``open_model_latency`` check,
#: open-model runs only), mapped to the percentile of its ``corrected_<percentile>_us`` figures.
CORRECTED_LATENCY_TABLES = {
    "corrected_latency_p50_ms": "p50",
    "corrected_latency_p90_ms": "p90",
    "corrected_latency_p99_ms": "p99",
    "corrected_latency_p99_9_ms": "p99_9",
}
RATIOS = ("success_rate_min", "hit_ratio_min", "ws_delivery_ratio_min")
KNOWN_KEYS = ("max_violations", *RATIOS, *LATENCY_TABLES, *CORRECTED_LATENCY_TABLES)
COHERENCE = "coherence"


class ThresholdsError(InputError):
    """The thresholds file cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class Thresholds:
    """The limits of one thresholds file; ``None`` means "not set"."""

    source: str
    max_violations: int | None = None
    success_rate_min: float | None = None
    hit_ratio_min: float | None = None
    ws_delivery_ratio_min: float | None = None
    #: ``{"p95": {"incr": 15.0, ...}}``: per percentile, the limit in milliseconds per latency group.
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    #: The same for the corrected latency of an open-model run (groups ``read_hit``, ``read_miss``,
    #: ``write``); percentiles ``p50``, ``p90``, ``p99``, ``p99_9``.
    corrected_latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse_thresholds(data: dict[str, Any], source: str) -> Thresholds:
    """Validate the parsed TOML ``data``; raise :class:`ThresholdsError` on the first problem."""

    def bad(problem: str) -> ThresholdsError:
        return ThresholdsError(f"thresholds file {source}: {problem}")

    for key in data:
        if key not in KNOWN_KEYS:
            raise bad(f"unknown key {key!r} (known: {', '.join(KNOWN_KEYS)})")
    limits: dict[str, Any] = {}
    if "max_violations" in data:
        value = data["max_violations"]
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise bad(f"max_violations must be a non-negative integer, not {value!r}")
        limits["max_violations"] = value
    for key in RATIOS:
        if key in data:
            value = data[key]
            if not _number(value) or not 0 <= value <= 1:
                raise bad(f"{key} must be a number between 0 and 1, not {value!r}")
            limits[key] = float(value)
    latency = _latency_tables(data, LATENCY_TABLES, LATENCY_GROUPS, bad)
    corrected = _latency_tables(data, CORRECTED_LATENCY_TABLES, SCHEDULED_GROUPS, bad)
    return Thresholds(source=source, latency_ms=latency, corrected_latency_ms=corrected, **limits)


def _latency_tables(
    data: dict[str, Any],
    tables: dict[str, str],
    known: tuple[str, ...],
    bad: Callable[[str], ThresholdsError],
) -> dict[str, dict[str, float]]:
    """Those of ``tables`` present in ``data`` as ``{percentile: {group: ms}}``, validated."""
    latency: dict[str, dict[str, float]] = {}
    for table, percentile in tables.items():
        if table not in data:
            continue
        groups = data[table]
        if not isinstance(groups, dict):
            raise bad(f"{table} must be a table of operation group = milliseconds, not {groups!r}")
        for group, value in groups.items():
            if group not in known:
                raise bad(f"unknown key {table}.{group!r} (latency groups: {', '.join(known)})")
            if not _number(value) or value < 0:
                raise bad(f"{table}.{group} must be a non-negative number of milliseconds, not {value!r}")
        latency[percentile] = {g: float(v) for g, v in groups.items()}
    return latency


def load_thresholds(path: str | Path | None = None) -> Thresholds:
    """Read a thresholds file (the packaged seed SLAs when ``path`` is ``None``)."""
    file = Path(path) if path is not None else DEFAULT_FILE
    source = str(file)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        problem = "does not exist; pass a TOML file, or 'none' for no thresholds"
        raise ThresholdsError(f"thresholds file {source}: {problem}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ThresholdsError(f"thresholds file {source}: cannot be read ({exc})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ThresholdsError(f"thresholds file {source}: not valid TOML ({exc})") from None
    return parse_thresholds(data, source)


# --------------------------------------------------------------------------------------------------
# Judging


def _success_rate(history: pd.DataFrame | None) -> tuple[float | None, str]:
    if history is None:
        return None, "no op history"
    f = history["f"]
    refused = f.isin(list(REFUSALS)) & (history["status"] == "fail")
    counted = ~f.isin(list(NOT_COUNTED)) & ~refused
    total = int(counted.sum())
    if total == 0:
        return None, "no operations in the history"
    ok = int((counted & (history["status"] == "ok")).sum())
    return ok / total, ""


def _locust_success(locust: dict[str, Any] | None) -> tuple[float | None, str]:
    rows = (locust or {}).get("stats") or []
    if not rows:
        return None, "no Locust stats (locust_stats.csv)"
    aggregated = [r for r in rows if r.get("name") == "Aggregated"]
    chosen = aggregated or rows
    requests = sum(int(r.get("requests") or 0) for r in chosen)
    failures = sum(int(r.get("failures") or 0) for r in chosen)
    if requests == 0:
        return None, "Locust recorded no requests"
    return 1 - failures / requests, ""


def _figure(checks: dict[str, CheckResult], check: str, *path: str) -> Any:
    result = checks.get(check)
    if result is None or result.skipped:
        return None
    value: Any = result.figures
    for part in path:
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _not_coherence(run: dict[str, Any] | None) -> str:
    """Why the run is not a coherence run ("" when it is).

    It is one when ``run.json`` says ``options.scenario == "coherence"`` and, when it lists the user
    classes that ran, they are the coherence scenario's own: a locustfile with classes of its own
    (e.g. one built to contend on a few keys) is not judged by the scenario option's default.
    """
    run = run or {}
    options = run.get("options")
    scenario = options.get("scenario") if isinstance(options, dict) else None
    if scenario != COHERENCE:
        said = "absent" if scenario is None else repr(scenario)
        return f"applies to coherence runs only (run.json options.scenario is {said})"
    locust = run.get("locust")
    classes = locust.get("user_classes") if isinstance(locust, dict) else None
    if isinstance(classes, list) and classes and not set(map(str, classes)) <= COHERENCE_USERS:
        return (
            "applies to coherence runs only (the run's user classes are not the coherence "
            f"scenario's: {', '.join(map(str, classes))})"
        )
    return ""


def evaluate_thresholds(
    thresholds: Thresholds,
    checks: list[CheckResult],
    history: pd.DataFrame | None,
    run: dict[str, Any] | None,
    locust: dict[str, Any] | None,
) -> list[ThresholdResult]:
    """Judge every limit set in ``thresholds`` against the check results and inputs of one run."""
    by_name = {c.name: c for c in checks}
    out: list[ThresholdResult] = []

    def add(
        name: str,
        label: str,
        comparison: str,
        limit: float,
        figure: Any,
        unit: str,
        why: str,
        check: str | None = None,
    ) -> None:
        skipped = figure is None
        out.append(
            ThresholdResult(
                name=f"threshold:{name}",
                label=label,
                comparison=comparison,
                limit=limit,
                figure=None if skipped else float(figure),
                unit=unit,
                skipped=skipped,
                reason=why if skipped else None,
                check=check,
            )
        )

    if thresholds.max_violations is not None:
        for check in checks:
            add(
                f"max_violations.{check.name}",
                f"{check.name} violations",
                "max",
                thresholds.max_violations,
                # An unknown check's violations may be explained by rows the history lacks.
                None if check.skipped or check.unknown else check.violations,
                "",
                f"check {check.name} was skipped" if check.skipped else f"check {check.name} is unknown",
                check.name,
            )
    if thresholds.success_rate_min is not None:
        least = thresholds.success_rate_min
        rate, why = _success_rate(history)
        add("success_rate_min.history", "success rate (history)", "min", least, rate, "", why)
        rate, why = _locust_success(locust)
        add("success_rate_min.locust", "success rate (Locust)", "min", least, rate, "", why)
    if thresholds.hit_ratio_min is not None:
        ratio = _figure(by_name, "hit_ratio", "ratio")
        why = _not_coherence(run) or "no ok reads"
        if _not_coherence(run):
            ratio = None
        add("hit_ratio_min", "hit ratio", "min", thresholds.hit_ratio_min, ratio, "", why, "hit_ratio")
    if thresholds.ws_delivery_ratio_min is not None:
        ratio = _figure(by_name, "ws_delivery", "delivery_ratio")
        add(
            "ws_delivery_ratio_min",
            "ws delivery ratio",
            "min",
            thresholds.ws_delivery_ratio_min,
            ratio,
            "",
            "no WebSocket deliveries were owed",
            "ws_delivery",
        )
    tables = {p: t for t, p in LATENCY_TABLES.items()}
    for percentile, groups in thresholds.latency_ms.items():
        for group, limit in groups.items():
            us = _figure(by_name, "latency", group, percentile)
            count = _figure(by_name, "latency", group, "count")
            ms = None if us is None or not count else round(us * NS_PER_US / NS_PER_MS, 3)
            add(
                f"{tables[percentile]}.{group}",
                f"{group} {percentile}",
                "max",
                limit,
                ms,
                "ms",
                f"no ok {group} operations",
                "latency",
            )
    corrected_tables = {p: t for t, p in CORRECTED_LATENCY_TABLES.items()}
    open_model = by_name.get(OPEN_MODEL)
    for percentile, groups in thresholds.corrected_latency_ms.items():
        for group, limit in groups.items():
            us = _figure(by_name, OPEN_MODEL, group, f"corrected_{percentile}_us")
            count = _figure(by_name, OPEN_MODEL, group, "count")
            ms = None if us is None or not count else round(us * NS_PER_US / NS_PER_MS, 3)
            # A closed-model run has no corrected latency: its skip reason says so.
            why = (
                (open_model.reason or "check skipped")
                if open_model is not None and open_model.skipped
                else f"no ok {group} operations with t_intended"
            )
            add(
                f"{corrected_tables[percentile]}.{group}",
                f"{group} corrected {percentile.replace('_', '.')}",
                "max",
                limit,
                ms,
                "ms",
                why,
                OPEN_MODEL,
            )
    return out
