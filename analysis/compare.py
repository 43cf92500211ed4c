"""``python -m analysis compare RUN_A RUN_B``: what changed from run A to run B, and did it regress.

The comparison itself is a pure function of two summaries (the ``summary.json`` dicts),
:func:`compare`, returning a :class:`Comparison` of rows, each judged against the tolerance, in the
manner of the checks: it reads nothing and writes nothing. Loading (:func:`load_summary`) and
rendering (:func:`render`, :func:`render_html`) are separate. See docs/compare.md.

Exit status: 0 no regression beyond the tolerance, 1 at least one, 2 bad input.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.load import (
    HISTORY_DIR,
    LOCUST_FAILURES,
    LOCUST_STATS,
    InputError,
    history_files,
    load_results,
    load_run,
)
from analysis.verdict import SUMMARY_FILE, jsonable, run_info

EXIT_SAME, EXIT_REGRESSION, EXIT_INPUT = 0, 1, 2
DEFAULT_TOLERANCE_PCT = 10.0

#: cachestorm latency percentiles compared, as (summary key, label).
PERCENTILES: tuple[tuple[str, str], ...] = (
    ("p50", "p50"),
    ("p95", "p95"),
    ("p99", "p99"),
    ("p99_9", "p99.9"),
)
#: Percentiles of latency corrected for coordinated omission compared (the ``open_model_latency``
#: check of open-model runs), as (figure of a group, label).
CORRECTED_PERCENTILES: tuple[tuple[str, str], ...] = (
    ("corrected_p50_us", "p50"),
    ("corrected_p90_us", "p90"),
    ("corrected_p99_us", "p99"),
    ("corrected_p99_9_us", "p99.9"),
)
OPEN_MODEL = "open_model_latency"
#: Locust percentile columns compared (its own bucketed milliseconds).
LOCUST_PERCENTILES: tuple[str, ...] = ("50%", "95%", "99%", "99.9%")
AGGREGATED = "Aggregated"

REGRESSION, IMPROVEMENT, WITHIN, INFO = "regression", "improvement", "within", "info"
LOWER, HIGHER = "lower", "higher"


@dataclass(frozen=True)
class Row:
    """One figure of both runs and its judgement.

    ``better`` is ``"lower"`` or ``"higher"`` (which way is good), or ``None`` for a figure that is
    shown but not judged. ``rel`` is the relative change (0.12 = +12 %), ``None`` when A is 0 and B
    is not. ``verdict`` is ``regression``, ``improvement``, ``within`` (the tolerance) or ``info``.
    """

    section: str
    item: str
    metric: str
    unit: str
    a: float
    b: float
    delta: float
    rel: float | None
    better: str | None
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        """The row as JSON-ready data."""
        return jsonable(self.__dict__)


@dataclass
class Comparison:
    """Every compared figure, plus what could not be compared and why."""

    tolerance_pct: float
    rows: list[Row] = field(default_factory=list)
    #: (what, why) for each figure present in neither or only one run.
    not_compared: list[tuple[str, str]] = field(default_factory=list)
    run_a: str | None = None
    run_b: str | None = None

    @property
    def regressions(self) -> list[Row]:
        """The rows that got worse beyond the tolerance (any rise of violations)."""
        return [r for r in self.rows if r.verdict == REGRESSION]

    @property
    def improvements(self) -> list[Row]:
        """The rows that got better beyond the tolerance."""
        return [r for r in self.rows if r.verdict == IMPROVEMENT]

    @property
    def regressed(self) -> bool:
        """Whether any figure regressed beyond the tolerance."""
        return bool(self.regressions)

    def to_dict(self) -> dict[str, Any]:
        """The comparison as JSON-ready data (``--json``)."""
        return jsonable(
            {
                "run_a": self.run_a,
                "run_b": self.run_b,
                "tolerance_pct": self.tolerance_pct,
                "regressed": self.regressed,
                "regressions": len(self.regressions),
                "improvements": len(self.improvements),
                "rows": [r.to_dict() for r in self.rows],
                "not_compared": [{"what": w, "why": y} for w, y in self.not_compared],
            }
        )


# --------------------------------------------------------------------------------------------------
# The comparison: pure functions of the two summaries.


def judge(
    a: float,
    b: float,
    better: str | None,
    tolerance: float,
    *,
    any_rise: bool = False,
    floor: float = 0.0,
) -> tuple[float, float | None, str]:
    """``(delta, rel, verdict)`` of a figure going from ``a`` to ``b``.

    ``tolerance`` is a fraction (0.1 = 10 %). A change counts when its relative size exceeds it (from
    0, any change does), or, with ``any_rise``, whenever it is non-zero. Changes of at most ``floor``
    in absolute value (the figure's resolution) never count.
    """
    delta = b - a
    rel = (delta / abs(a)) if a != 0 else (0.0 if delta == 0 else None)
    if better is None:
        return delta, rel, INFO
    if delta == 0 or abs(delta) <= floor:
        return delta, rel, WITHIN
    beyond = any_rise or rel is None or abs(rel) > tolerance
    if not beyond:
        return delta, rel, WITHIN
    worse = delta > 0 if better == LOWER else delta < 0
    return delta, rel, REGRESSION if worse else IMPROVEMENT


def _row(
    section: str,
    item: str,
    metric: str,
    unit: str,
    a: float,
    b: float,
    better: str | None,
    tolerance: float,
    **kw: Any,
) -> Row:
    delta, rel, verdict = judge(float(a), float(b), better, tolerance, **kw)
    return Row(section, item, metric, unit, float(a), float(b), delta, rel, better, verdict)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return None if math.isnan(value) or math.isinf(value) else float(value)


def duration_s(summary: dict[str, Any]) -> float | None:
    """The run's duration in seconds from its ``run`` section (``started_ns``, ``stopped_ns``)."""
    run = summary.get("run") or {}
    started, stopped = _number(run.get("started_ns")), _number(run.get("stopped_ns"))
    if started is None or stopped is None or stopped <= started:
        return None
    return (stopped - started) / 1e9


def _check(summary: dict[str, Any], name: str) -> dict[str, Any] | None:
    checks = summary.get("checks")
    entry = checks.get(name) if isinstance(checks, dict) else None
    return entry if isinstance(entry, dict) else None


def _skip_reason(entry: dict[str, Any] | None) -> str | None:
    """Why a check's figures cannot be used: absent or skipped; ``None`` when they can."""
    if entry is None:
        return "absent"
    if entry.get("skipped"):
        return f"skipped: {entry.get('reason') or 'no data'}"
    return None


def _both(a: dict[str, Any], b: dict[str, Any], name: str, out: Comparison) -> tuple[Any, Any] | None:
    """The check ``name`` of both runs, or ``None`` after noting why it cannot be compared."""
    ca, cb = _check(a, name), _check(b, name)
    why_a, why_b = _skip_reason(ca), _skip_reason(cb)
    if why_a is None and why_b is None:
        return ca, cb
    if why_a == why_b:
        note = (name, f"{why_a} in A and B")
    else:
        parts = [f"{why} in {side}" for side, why in (("A", why_a), ("B", why_b)) if why is not None]
        note = (name, "; ".join(parts))
    # latency and open_model_latency are consulted twice: for their figures and their violations.
    if note not in out.not_compared:
        out.not_compared.append(note)
    return None


def _latency(a: dict[str, Any], b: dict[str, Any], tol: float, out: Comparison) -> None:
    pair = _both(a, b, "latency", out)
    if pair is None:
        out.not_compared.append(("throughput", "needs the latency check's operation counts"))
        return
    la, lb = pair
    groups = [g for g in la if isinstance(la[g], dict)] + [
        g for g in lb if isinstance(lb[g], dict) and g not in la
    ]
    dur_a, dur_b = duration_s(a), duration_s(b)
    if dur_a is None or dur_b is None:
        sides = " and ".join(s for s, d in (("A", dur_a), ("B", dur_b)) if d is None)
        out.not_compared.append(
            ("throughput", f"run duration unknown (run.json started_ns/stopped_ns) in {sides}")
        )
    for group in groups:
        ga, gb = la.get(group) or {}, lb.get(group) or {}
        na, nb = _number(ga.get("count")) or 0.0, _number(gb.get("count")) or 0.0
        if na == 0 and nb == 0:
            continue
        _percentile_rows("latency", group, ga, gb, PERCENTILES, tol, out)
        if dur_a is not None and dur_b is not None:
            out.rows.append(_row("throughput", group, "ops/s", "1/s", na / dur_a, nb / dur_b, HIGHER, tol))


def _corrected_latency(a: dict[str, Any], b: dict[str, Any], tol: float, out: Comparison) -> None:
    """Corrected latency percentiles per group, when both runs were open-model runs."""
    pair = _both(a, b, OPEN_MODEL, out)
    if pair is None:
        return
    ca, cb = pair
    groups = [g for g in ca if isinstance(ca[g], dict)] + [
        g for g in cb if isinstance(cb[g], dict) and g not in ca
    ]
    for group in groups:
        ga, gb = ca.get(group) or {}, cb.get(group) or {}
        if not (_number(ga.get("count")) or _number(gb.get("count"))):
            continue
        _percentile_rows("corrected latency", group, ga, gb, CORRECTED_PERCENTILES, tol, out)


def _percentile_rows(
    section: str,
    group: str,
    ga: dict[str, Any],
    gb: dict[str, Any],
    percentiles: tuple[tuple[str, str], ...],
    tol: float,
    out: Comparison,
) -> None:
    """One row per percentile of ``group`` present on both sides (µs, lower is better)."""
    for key, label in percentiles:
        va, vb = _number(ga.get(key)), _number(gb.get(key))
        if va is None or vb is None:
            side = "A" if va is None else "B"
            out.not_compared.append((f"{section} {group} {label}", f"no operations in {side}"))
            continue
        out.rows.append(_row(section, group, label, "us", va, vb, LOWER, tol))


def _violations(a: dict[str, Any], b: dict[str, Any], tol: float, out: Comparison) -> None:
    names = list(a.get("checks") or {}) + [
        n for n in (b.get("checks") or {}) if n not in (a.get("checks") or {})
    ]
    for name in names:
        pair = _both(a, b, name, out)
        if pair is None:
            continue
        va, vb = _number(pair[0].get("violations")) or 0.0, _number(pair[1].get("violations")) or 0.0
        out.rows.append(_row("violations", name, "violations", "", va, vb, LOWER, tol, any_rise=True))


def _hit_ratio(a: dict[str, Any], b: dict[str, Any], tol: float, out: Comparison) -> None:
    pair = _both(a, b, "hit_ratio", out)
    if pair is None:
        return
    ra, rb = _number(pair[0].get("ratio")), _number(pair[1].get("ratio"))
    if ra is None or rb is None:
        out.not_compared.append(("hit_ratio", "no ratio (no reads) in " + ("A" if ra is None else "B")))
        return
    out.rows.append(_row("hit_ratio", "reads", "hit ratio", "", ra, rb, HIGHER, tol))


def _locust_stats(summary: dict[str, Any]) -> dict[str, dict[str, Any]] | None:
    section = summary.get("locust")
    if not isinstance(section, dict) or section.get("skipped") or not section.get("stats"):
        return None
    return {
        " ".join(p for p in (s.get("type"), s.get("name")) if p) or "?": s
        for s in section["stats"]
        if isinstance(s, dict)
    }


def locust_bucket(ms: float) -> float:
    """The resolution of Locust's rounded response times around ``ms`` (1, 10 or 100 ms)."""
    return 1.0 if ms < 100 else 10.0 if ms < 1000 else 100.0


def _locust(a: dict[str, Any], b: dict[str, Any], tol: float, out: Comparison) -> None:
    sa, sb = _locust_stats(a), _locust_stats(b)
    if sa is None or sb is None:
        sides = " and ".join(s for s, v in (("A", sa), ("B", sb)) if v is None)
        out.not_compared.append(("locust", f"no Locust CSV stats (locust_stats.csv) in {sides}"))
        return
    names = [n for n in sa if n in sb]
    for only, side in ((set(sa) - set(sb), "A"), (set(sb) - set(sa), "B")):
        for name in sorted(only):
            out.not_compared.append((f"locust {name}", f"only in {side}"))
    # Aggregated first: the run as a whole.
    names.sort(key=lambda n: (n != AGGREGATED, n))
    for name in names:
        ra, rb = sa[name], sb[name]
        rps_a, rps_b = _number(ra.get("rps")), _number(rb.get("rps"))
        req_a, req_b = _number(ra.get("requests")), _number(rb.get("requests"))
        fail_a, fail_b = _number(ra.get("failures")), _number(rb.get("failures"))
        if rps_a is not None and rps_b is not None:
            out.rows.append(_row("locust", name, "requests/s", "1/s", rps_a, rps_b, HIGHER, tol))
        if None not in (rps_a, rps_b, req_a, req_b, fail_a, fail_b) and req_a and req_b:
            assert rps_a is not None and rps_b is not None and fail_a is not None and fail_b is not None
            if name == AGGREGATED:
                # Both figures cover the same span, so failures/s = requests/s x failure ratio.
                out.rows.append(
                    _row(
                        "locust",
                        name,
                        "failures/s",
                        "1/s",
                        rps_a * fail_a / req_a,
                        rps_b * fail_b / req_b,
                        None,
                        tol,
                    )
                )
            if name == AGGREGATED or fail_a or fail_b:
                out.rows.append(
                    _row("locust", name, "failure ratio", "", fail_a / req_a, fail_b / req_b, LOWER, tol)
                )
        pa, pb = ra.get("percentiles_ms") or {}, rb.get("percentiles_ms") or {}
        for column in LOCUST_PERCENTILES:
            va, vb = _number(pa.get(column)), _number(pb.get(column))
            if va is None or vb is None:
                continue
            floor = locust_bucket(max(va, vb))
            out.rows.append(
                _row("locust", name, f"p{column.rstrip('%')}", "ms", va, vb, LOWER, tol, floor=floor)
            )


def compare(
    summary_a: dict[str, Any],
    summary_b: dict[str, Any],
    tolerance_pct: float = DEFAULT_TOLERANCE_PCT,
) -> Comparison:
    """Compare two summaries (``summary.json`` dicts); B is judged against A.

    Regressions: a latency percentile up (corrected ones too, when both runs have them), a
    throughput (ops/s, requests/s) down, the hit ratio down, the failure ratio up, each by more than
    ``tolerance_pct`` percent of A's figure; violations of a check up by any amount. The opposite
    changes beyond the tolerance are improvements. Locust's percentiles also ignore a change within
    their rounding (1, 10 or 100 ms).
    """
    tol = tolerance_pct / 100.0
    out = Comparison(
        tolerance_pct=tolerance_pct,
        run_a=(summary_a.get("run") or {}).get("run_id"),
        run_b=(summary_b.get("run") or {}).get("run_id"),
    )
    _latency(summary_a, summary_b, tol, out)
    _corrected_latency(summary_a, summary_b, tol, out)
    _violations(summary_a, summary_b, tol, out)
    _hit_ratio(summary_a, summary_b, tol, out)
    _locust(summary_a, summary_b, tol, out)
    return out


# --------------------------------------------------------------------------------------------------
# Loading a run's summary.


def _inputs_mtime(results: Path) -> float:
    """The newest modification time among the files a summary is computed from."""
    files = history_files(results / HISTORY_DIR) if (results / HISTORY_DIR).is_dir() else []
    files += [results / LOCUST_STATS, results / LOCUST_FAILURES]
    return max((f.stat().st_mtime for f in files if f.is_file()), default=0.0)


def load_summary(path: str | Path) -> dict[str, Any]:
    """The summary of the run in ``path``.

    ``summary.json`` when it exists and is at least as new as the run's history and Locust CSVs;
    otherwise computed with :func:`analysis.checks.run_checks` (no thresholds), without
    writing anything into the directory. Raises :class:`InputError` with a one-line message.
    """
    from analysis.checks import Options, run_checks  # noqa: PLC0415  (heavy: only when needed)

    results = Path(path)
    if not results.is_dir():
        what = "does not exist" if not results.exists() else "is not a directory"
        raise InputError(f"{results}: results directory {what}; pass the directory a run wrote")
    summary_file = results / SUMMARY_FILE
    if summary_file.is_file() and summary_file.stat().st_mtime >= _inputs_mtime(results):
        try:
            data = json.loads(summary_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InputError(
                f"{summary_file}: unreadable summary.json ({reason}); delete it to recompute it from the run"
            ) from None
        if not isinstance(data, dict) or not isinstance(data.get("checks"), dict):
            raise InputError(
                f"{summary_file}: not an analysis summary (no 'checks' object); delete it to recompute it"
            )
        if not data.get("run"):
            data["run"] = run_info(load_run(results))
        return data
    inputs = load_results(results)
    verdict = run_checks(inputs.history, inputs.run, Options.resolve(inputs.run), locust=inputs.locust)
    return verdict.to_summary()


# --------------------------------------------------------------------------------------------------
# Rendering.


def fmt(value: float | None) -> str:
    """A figure, short: whole numbers above 1000, two decimals above 1, four below."""
    if value is None:
        return "-"
    if value == int(value):
        return f"{int(value)}"
    if abs(value) >= 1000:
        return f"{value:.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.4f}"


def fmt_delta(row: Row) -> tuple[str, str]:
    """The absolute and relative change, signed."""
    sign = "+" if row.delta > 0 else ""
    rel = "new" if row.rel is None else f"{row.rel * 100:+.1f}%"
    return f"{sign}{fmt(row.delta)}", rel


MARKS = {REGRESSION: "WORSE", IMPROVEMENT: "better", WITHIN: "", INFO: ""}
HEADER = ("section", "item", "figure", "A", "B", "change", "change %", "")


def table_cells(comparison: Comparison) -> list[tuple[str, ...]]:
    """The rows of the comparison as text cells, in :data:`HEADER`'s order."""
    cells: list[tuple[str, ...]] = []
    for row in comparison.rows:
        delta, rel = fmt_delta(row)
        metric = f"{row.metric} ({row.unit})" if row.unit and row.unit != "1/s" else row.metric
        cells.append((row.section, row.item, metric, fmt(row.a), fmt(row.b), delta, rel, MARKS[row.verdict]))
    return cells


def _not_compared_lines(comparison: Comparison) -> list[str]:
    by_reason: dict[str, list[str]] = {}
    for what, why in comparison.not_compared:
        by_reason.setdefault(why, []).append(what)
    return [f"not compared ({why}): {', '.join(whats)}" for why, whats in by_reason.items()]


def _verdict_line(comparison: Comparison) -> str:
    regressions, improvements = comparison.regressions, comparison.improvements
    if not regressions:
        return (
            f"COMPARE: no regression beyond {comparison.tolerance_pct:g}% ({len(improvements)} improvements)"
        )
    items = ", ".join(f"{r.item} {r.metric}" for r in regressions[:8])
    more = f", ... ({len(regressions) - 8} more)" if len(regressions) > 8 else ""
    return (
        f"COMPARE: REGRESSION, {len(regressions)} figures worse beyond {comparison.tolerance_pct:g}% "
        f"({len(improvements)} improvements): {items}{more}"
    )


def render(comparison: Comparison, name_a: str, name_b: str) -> str:
    """The console table, the figures not compared and the ``COMPARE:`` line."""
    lines = [f"A: {name_a}", f"B: {name_b}", f"tolerance: {comparison.tolerance_pct:g}%", ""]
    cells = [HEADER, *table_cells(comparison)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]
    right = {3, 4, 5, 6}
    for n, line in enumerate(cells):
        text = "  ".join(
            f"{c:>{widths[i]}}" if i in right else f"{c:<{widths[i]}}" for i, c in enumerate(line)
        ).rstrip()
        lines.append(text)
        if n == 0:
            lines.append("-" * len(text))
    notes = _not_compared_lines(comparison)
    if notes:
        lines += ["", *notes]
    lines += ["", _verdict_line(comparison)]
    return "\n".join(lines)


CSS = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
th { background: #eee; text-align: left; }
td.num { text-align: right; font-family: monospace; }
tr.regression td { background: #f8d0d0; font-weight: bold; }
tr.improvement td { background: #d4f0d4; }
p.verdict { font-weight: bold; }
"""


def render_html(comparison: Comparison, name_a: str, name_b: str) -> str:
    """The comparison as one self-contained HTML page (inline CSS, no external resources)."""
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in HEADER)
    body = []
    for row, cells in zip(comparison.rows, table_cells(comparison), strict=True):
        tds = "".join(
            f'<td class="num">{e(c)}</td>' if 3 <= i <= 6 else f"<td>{e(c)}</td>" for i, c in enumerate(cells)
        )
        body.append(f'<tr class="{row.verdict}">{tds}</tr>')
    notes = "".join(f"<li>{e(line)}</li>" for line in _not_compared_lines(comparison))
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>cachestorm compare {e(name_a)} vs {e(name_b)}</title><style>{CSS}</style></head><body>\n"
        f"<h1>cachestorm: {e(name_a)} &rarr; {e(name_b)}</h1>\n"
        f"<p>A: {e(name_a)}<br>B: {e(name_b)}<br>tolerance: {comparison.tolerance_pct:g}%</p>\n"
        f'<p class="verdict">{e(_verdict_line(comparison))}</p>\n'
        f"<table><thead><tr>{head}</tr></thead><tbody>\n"
        + "\n".join(body)
        + "\n</tbody></table>\n"
        + (f"<ul>{notes}</ul>\n" if notes else "")
        + "</body></html>\n"
    )


# --------------------------------------------------------------------------------------------------
# Command line.


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line of ``python -m analysis compare``."""
    parser = argparse.ArgumentParser(
        prog="python -m analysis compare",
        description="Compare two cachestorm runs: what changed from RUN_A to RUN_B, and what regressed.",
        epilog="Exit status: 0 no regression beyond the tolerance, 1 a regression, 2 bad input. "
        "See docs/compare.md.",
    )
    parser.add_argument("run_a", metavar="RUN_A", help="results directory of the baseline run")
    parser.add_argument("run_b", metavar="RUN_B", help="results directory of the run judged against it")
    parser.add_argument(
        "--tolerance",
        type=float,
        metavar="PCT",
        default=DEFAULT_TOLERANCE_PCT,
        help="relative change, in percent, allowed to latency, throughput, hit ratio and failure ratio "
        f"before it counts (default {DEFAULT_TOLERANCE_PCT:g}); any rise of violations counts",
    )
    parser.add_argument("--html", metavar="FILE", default=None, help="also write the comparison as HTML")
    parser.add_argument(
        "--json", action="store_true", help="print the comparison as JSON instead of the table"
    )
    args = parser.parse_args(argv)
    if not math.isfinite(args.tolerance) or args.tolerance < 0:
        parser.error("--tolerance must be a number >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Compare two runs; return the exit status."""
    args = parse_args(argv)
    try:
        summary_a, summary_b = load_summary(args.run_a), load_summary(args.run_b)
    except InputError as exc:
        print(f"analysis compare: {exc}", file=sys.stderr)
        return EXIT_INPUT
    comparison = compare(summary_a, summary_b, args.tolerance)
    if args.html:
        try:
            Path(args.html).write_text(render_html(comparison, args.run_a, args.run_b), encoding="utf-8")
        except OSError as exc:
            print(f"analysis compare: {args.html}: cannot write ({exc.strerror or exc})", file=sys.stderr)
            return EXIT_INPUT
    if args.json:
        print(json.dumps(comparison.to_dict(), indent=2, allow_nan=False))
    else:
        print(render(comparison, args.run_a, args.run_b))
    return EXIT_REGRESSION if comparison.regressed else EXIT_SAME
