"""The per-tier staleness and cascade tables, as console lines and as an HTML report section.

Both read the ``tier_staleness`` and ``cascade`` results of a verdict and show nothing when the
verdict has neither or both were skipped.
"""

from __future__ import annotations

import html
from typing import Any

from analysis import display
from analysis.cascade import NAME as CASCADE
from analysis.tiers import NAME as TIERS
from analysis.verdict import CheckResult, Verdict

TIER_COLUMNS = ("reads", "stale", "age_p50_us", "age_p99_us", "age_max_us")
LEG_COLUMNS = ("reached", "missing", "p50_us", "p99_us", "max_us")


def _ran(verdict: Verdict, name: str) -> CheckResult | None:
    try:
        check = verdict.check(name)
    except KeyError:
        return None
    return None if check.skipped else check


def _cell(value: Any, column: str = "") -> str:
    # The shared rules (analysis.display): a *_us column reads in µs or ms, never 1338506.5.
    return display.figure(column, value)


def _heads(columns: tuple[str, ...]) -> list[str]:
    """Column headings without the unit suffix: each duration cell carries its unit."""
    return [display.label(c) for c in columns]


def tier_rows(check: CheckResult) -> list[list[str]]:
    """One row per tier: name, figures, what is judged; then one per swept tier."""
    rows = []
    for tier, figures in check.figures.get("tiers", {}).items():
        judged = figures.get("judged")
        note = f"beyond grace: {figures.get('stale_beyond_grace')}" if judged == "stale_beyond_grace" else ""
        rows.append([tier, *(_cell(figures.get(c), c) for c in TIER_COLUMNS), note])
    for tier, figures in check.figures.get("sweep", {}).items():
        note = f"sweep: {figures['entries']} entries, {figures['divergent']} behind the database"
        rows.append([f"{tier} (sweep)", _cell(figures["keys"]), "-", "-", "-", "-", note])
    return rows


def leg_rows(check: CheckResult) -> list[list[str]]:
    return [
        [
            leg,
            *(_cell(figures.get(c), c) for c in LEG_COLUMNS),
            "judged" if figures.get("judged") else "reported",
        ]
        for leg, figures in check.figures.get("legs", {}).items()
    ]


def console_lines(verdict: Verdict) -> list[str]:
    """The two tables for the console report (empty when neither check ran)."""
    lines: list[str] = []
    tiers = _ran(verdict, TIERS)
    if tiers is not None:
        header = f"{'STALENESS BY TIER':<18}" + "".join(f"{c:>12}" for c in _heads(TIER_COLUMNS)) + "  NOTE"
        lines += [header, "-" * len(header)]
        lines += [
            f"{r[0]:<18}" + "".join(f"{c:>12}" for c in r[1:-1]) + f"  {r[-1]}" for r in tier_rows(tiers)
        ]
    cascade = _ran(verdict, CASCADE)
    if cascade is not None:
        if lines:
            lines.append("")
        header = f"{'CASCADE':<18}" + "".join(f"{c:>12}" for c in _heads(LEG_COLUMNS)) + "  MISSING IS"
        lines += [header, "-" * len(header)]
        lines += [
            f"{r[0]:<18}" + "".join(f"{c:>12}" for c in r[1:-1]) + f"  {r[-1]}" for r in leg_rows(cascade)
        ]
        f = cascade.figures
        lines.append(
            f"{f.get('writes')} writes; commit time from the target's commit event for "
            f"{f.get('commit_from_event')}, from the write's completion for "
            f"{f.get('commit_from_write_complete')}"
        )
    return lines


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def report_section(verdict: Verdict) -> str:
    """The report's section on tiers and the cascade ("" when neither check ran)."""
    tiers, cascade = _ran(verdict, TIERS), _ran(verdict, CASCADE)
    if tiers is None and cascade is None:
        return ""
    parts = ['<h2 id="tiers">Tiers and invalidation cascade</h2>']
    if tiers is not None:
        parts.append("<h3>Staleness by tier</h3>")
        parts.append(_table(["tier", *_heads(TIER_COLUMNS), "note"], tier_rows(tiers)))
        parts.append(
            '<p class="caption">Reads by the tier that served them; a read is stale when a write with a '
            "higher version had completed before it began. Tab reads are judged beyond the WebSocket "
            "grace only.</p>"
        )
    if cascade is not None:
        parts.append("<h3>Cascade from each commit</h3>")
        parts.append(_table(["leg", *_heads(LEG_COLUMNS), "missing is"], leg_rows(cascade)))
        parts.append(
            '<p class="caption">Per committed write, from its commit to the tier event of the same key and '
            "version. A missing drop or push is a violation; missing tab receipts are judged by "
            "ws_delivery.</p>"
        )
    return "\n".join(parts)
