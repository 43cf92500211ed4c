"""The plain-text report printed on the console: checks, latency, Locust, verdict."""

from __future__ import annotations

import textwrap
from typing import Any

from analysis import display
from analysis.open_model import NAME as OPEN_MODEL
from analysis.ops import CONTENTION_LATENCY_OPS, LATENCY_GROUPS, SCHEDULED_GROUPS
from analysis.registry import CHECKS
from analysis.tiers_view import console_lines as tier_lines
from analysis.verdict import CHECK, PASS, CheckResult, ThresholdResult, Verdict

WIDTH = 100

#: The figures worth a glance per check (the registry's ``console``); the rest are in summary.json.
KEY_FIGURES: dict[str, tuple[str, ...]] = {c.name: c.console for c in CHECKS}


def _fmt(value: Any) -> str:
    return display.number(value)


def _figures_text(result: CheckResult) -> str:
    if result.skipped or result.unknown:
        return result.reason or "skipped"
    if result.name == "latency":
        return "see the latency table"
    names = KEY_FIGURES.get(result.name) or tuple(
        k for k, v in result.figures.items() if isinstance(v, int | float)
    )
    return " ".join(display.pair(k, result.figures.get(k)) for k in names if k in result.figures)


def _check_table(verdict: Verdict) -> list[str]:
    name_w = max(len("CHECK"), *(len(c.name) for c in verdict.checks))
    head = f"{'CHECK':<{name_w}}  {'RESULT':<7}  {'VIOL':>6}  "
    lines = [head + "FIGURES", "-" * WIDTH]
    wrap_w = WIDTH - len(head)
    for row in verdict.rows():
        result = row.result
        if row.kind != CHECK or not isinstance(result, CheckResult):
            continue
        prefix = f"{result.name:<{name_w}}  {result.status:<7}  {result.violations:>6}  "
        parts = textwrap.wrap(_figures_text(result), wrap_w) or [""]
        lines.append(prefix + parts[0])
        lines.extend(" " * len(head) + part for part in parts[1:])
    return lines


def _latency_table(verdict: Verdict) -> list[str]:
    try:
        groups = verdict.check("latency").figures
    except KeyError:
        return []
    if not groups:
        return []
    columns = ("count", "p50", "p95", "p99", "p99_9", "max")
    header = f"{'LATENCY':<14}" + "".join(f"{c.replace('_', '.'):>12}" for c in columns)
    lines = [header, "-" * len(header)]
    for group in LATENCY_GROUPS:
        stats = groups.get(group)
        if not isinstance(stats, dict):
            continue
        if group in CONTENTION_LATENCY_OPS and not stats.get("count"):
            continue  # shown only for runs of the contention workloads
        cells = "".join(
            f"{stats.get(c, 0):>12d}" if c == "count" else f"{_num(stats.get(c)):>12}" for c in columns
        )
        lines.append(f"{group:<14}{cells}")
    return lines


def _open_model_table(verdict: Verdict) -> list[str]:
    """Per scheduled group, uncorrected and corrected latency and the start lag, side by side."""
    try:
        check = verdict.check(OPEN_MODEL)
    except KeyError:
        return []
    if check.skipped:
        return []
    columns = ("p50", "p90", "p99", "p99_9", "max")
    header = f"{'OPEN-MODEL LATENCY':<36}{'count':>9}" + "".join(
        f"{c.replace('_', '.'):>11}" for c in columns
    )
    lines = [header, "-" * len(header)]
    late = []
    for group in SCHEDULED_GROUPS:
        stats = check.figures.get(group)
        if not isinstance(stats, dict) or not stats.get("count"):
            continue
        for measure, label in (
            ("uncorrected", "uncorrected, from t_invoke"),
            ("corrected", "corrected, from t_intended"),
            ("start_lag", "start lag"),
        ):
            cells = "".join(f"{_num(stats.get(f'{measure}_{c}_us')):>11}" for c in columns)
            lines.append(f"{group:<10}{label:<26}{stats['count']:>9d}{cells}")
        ratio = stats.get("late_over_1ms_ratio") or 0.0
        late.append(f"{group} {ratio * 100:.2f}%")
    lines.append("started more than 1 ms late: " + ", ".join(late))
    lines.append(
        f"scheduled {_rate(check.figures.get('scheduled_per_s'))} ops/s, "
        f"achieved {_rate(check.figures.get('achieved_per_s'))} ops/s"
    )
    return lines


def _rate(value: Any) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _num(value: Any) -> str:
    """A latency figure of the checks, in microseconds."""
    return display.duration_us(value)


def _locust_table(locust: dict[str, Any] | None) -> list[str]:
    if locust is None:
        return []
    stats = locust.get("stats") or []
    lines = []
    if stats:
        header = f"{'LOCUST':<40}{'requests':>10}{'failures':>10}{'p50':>10}{'p95':>10}{'p99':>10}"
        lines += [header, "-" * len(header)]
        for row in stats:
            label = " ".join(p for p in (row.get("type"), row.get("name")) if p)[:39]
            pct = row.get("percentiles_ms") or {}
            lines.append(
                f"{label:<40}{_fmt(row.get('requests')):>10}{_fmt(row.get('failures')):>10}"
                f"{display.locust_ms(pct.get('50%')):>10}{display.locust_ms(pct.get('95%')):>10}"
                f"{display.locust_ms(pct.get('99%')):>10}"
            )
    failures = locust.get("failures") or []
    if failures:
        lines.append(f"Locust failures: {sum(int(f.get('occurrences') or 0) for f in failures)}")
        for fail in failures[:5]:
            where = f"{fail.get('method') or ''} {fail.get('name')}".strip()
            text = f"  {fail.get('occurrences')}x {where}: {fail.get('error')}"
            lines.append(text[:WIDTH])
    return lines


def _threshold_lines(verdict: Verdict) -> list[str]:
    """One line per threshold naming the figure and the limit; passing max_violations lines folded."""
    if not verdict.thresholds:
        return []
    source = verdict.options.get("thresholds")
    lines = [f"THRESHOLDS ({source})" if source else "THRESHOLDS", "-" * WIDTH]
    folded: list[ThresholdResult] = []
    for threshold in verdict.thresholds:
        if threshold.name.startswith("threshold:max_violations.") and threshold.status != "FAIL":
            folded.append(threshold)
            continue
        lines.extend(textwrap.wrap(threshold.describe(), WIDTH, subsequent_indent="    "))
    if folded:
        judged = [t for t in folded if not t.skipped]
        limit = _fmt(int(folded[0].limit))
        lines.insert(
            2,
            f"PASS threshold max_violations: at most {limit} on each of {len(judged)} checks that ran",
        )
    return lines


def render(verdict: Verdict) -> str:
    """The whole console report, ending with the ``VERDICT:`` line."""
    run = verdict.run or {}
    lines = []
    if run.get("run_id"):
        lines.append(f"run {run['run_id']}")
    lines += _check_table(verdict)
    blocks = (
        _latency_table(verdict),
        _open_model_table(verdict),
        tier_lines(verdict),
        _locust_table(verdict.locust),
        _threshold_lines(verdict),
    )
    for block in blocks:
        if block:
            lines += ["", *block]
    if verdict.notes:
        lines.append("")
        lines += [textwrap.fill("NOTE: " + note, WIDTH, subsequent_indent="      ") for note in verdict.notes]
    lines.append("")
    lines.append(verdict_line(verdict))
    return "\n".join(lines)


def verdict_line(verdict: Verdict) -> str:
    """``VERDICT: PASS``, ``VERDICT: FAIL (the failed)`` or ``VERDICT: UNKNOWN (the unknown)``."""
    outcome, rows = verdict.headline()
    if outcome == PASS:
        return "VERDICT: PASS"
    return f"VERDICT: {outcome.upper()} ({', '.join(r.name for r in rows)})"
