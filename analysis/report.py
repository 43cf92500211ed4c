"""``RESULTS/report.html``: one self-contained page of a run's verdict and figures.

The page needs nothing but a browser: CSS is inline, every figure is a PNG drawn with matplotlib's
Agg renderer and embedded as a base64 ``data:`` URL, and there is no JavaScript. Every series is
bucketed with pandas/numpy (group-bys on whole-second buckets, sorting, ``merge_asof``), never with
a Python loop over rows, so a history of a million operations renders in a few seconds. Each
section says "no data" when the rows it needs are absent. docs/report.md describes the sections.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

# Figures are built with matplotlib's object API and never shown, so no backend is selected: the
# module can be imported in Jupyter without taking over its inline plots.
import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogFormatter, NullLocator

from analysis import display, open_model
from analysis.kernels import _is, first_missed_writes, group_labels, stale_flags, stampede_epochs
from analysis.load import normalise
from analysis.nines import WINDOWS_NS
from analysis.ops import NS_PER_MS, NS_PER_S, NS_PER_US, READ_GROUPS
from analysis.registry import CHECKS
from analysis.tiers_view import report_section as section_tiers
from analysis.verdict import (
    CHECK,
    FAIL,
    THRESHOLD,
    UNKNOWN,
    CheckResult,
    ThresholdResult,
    Verdict,
    VerdictRow,
    write_text_atomic,
)

US_PER_MS = NS_PER_MS / NS_PER_US
REPORT_FILE = "report.html"
LOCUST_HISTORY = "locust_stats_history.csv"
#: Rows that are bookkeeping of the run rather than load: left out of the throughput plot.
NOT_LOAD = ("sweep", "redis_stat", "nemesis")
#: The figure that sums up each check in the verdict table (the registry's ``headline``), and checks
#: that never fail.
KEY_FIGURE: dict[str, tuple[str, ...]] = {c.name: c.headline for c in CHECKS if c.headline}
REPORTED_ONLY = tuple(c.name for c in CHECKS if not c.gates)
MAX_BARS = 60
#: Rows whose duration is not a latency worth plotting: bookkeeping, and the WebSocket listener's
#: connection events and local reads (its notification latency has its own section).
NOT_TIMED = ("sweep", "redis_stat", "nemesis", "ws_open", "ws_close", "ws_recv", "ws_gap", "ui_read")

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1100px;
color:#1b1b1b;line-height:1.45;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f2f2f2}td.num{text-align:right;font-variant-numeric:tabular-nums}
.PASS{color:#176f2c;font-weight:600}.FAIL{color:#b00020;font-weight:700}
.banner{padding:.6em 1em;border-radius:4px;font-weight:700;display:inline-block}
.banner.PASS{background:#e3f4e6}.banner.FAIL{background:#fde5e8}.banner.UNKNOWN{background:#fff4d6}
.UNKNOWN{color:#9a6700;font-weight:700}.NA{color:#777}
.caption{color:#555;font-size:.9em;margin:.2em 0 1em}.nodata{color:#777;font-style:italic}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.5em 1em}
img{max-width:100%;height:auto;display:block}.examples{font-size:.8em}
.examples td.num{white-space:nowrap}tr.row-FAIL td{background:#fdeef0}tr.row-UNKNOWN td{background:#fff8e6}
"""


# --------------------------------------------------------------------------------------------------
# Small HTML and figure helpers


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    """A figure for a table cell that is no duration (durations go through :mod:`analysis.display`)."""
    return display.number(value)


class _Raw:
    """Already-escaped HTML for a table cell; ``num`` right-aligns it as a figure."""

    def __init__(self, text: str, num: bool = False) -> None:
        self.text = text
        self.num = num


def _num(text: str) -> _Raw:
    """A figure already formatted (a duration with its unit), right-aligned."""
    return _Raw(_e(text), num=True)


def _table(
    header: list[str], rows: list[list[Any]], cls: str = "", row_attrs: list[str] | None = None
) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cells = []
        for cell in row:
            if isinstance(cell, _Raw):
                cells.append(f'<td class="num">{cell.text}</td>' if cell.num else f"<td>{cell.text}</td>")
            elif isinstance(cell, int | float) and not isinstance(cell, bool):
                cells.append(f'<td class="num">{_e(_fmt(cell))}</td>')
            else:
                cells.append(f"<td>{_e(_fmt(cell))}</td>")
        attrs = f" {row_attrs[i]}" if row_attrs else ""
        body.append(f"<tr{attrs}>" + "".join(cells) + "</tr>")
    klass = f' class="{cls}"' if cls else ""
    return f"<table{klass}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _status(status: str) -> _Raw:
    return _Raw(f'<span class="{_status_class(status)}">{_e(status)}</span>')


def _status_class(status: str) -> str:
    # "N/A" is no CSS class name.
    return _e(status.replace("/", ""))


def _nodata(what: str) -> str:
    return f'<p class="nodata">No data: {_e(what)}.</p>'


def _caption(text: str) -> str:
    return f'<p class="caption">{_e(text)}</p>'


class _DurationTicks(LogFormatter):
    """Log-axis tick labels as durations (``100 µs``, ``1 ms``), not ``10^2``."""

    def __init__(self, us_per_unit: float) -> None:
        super().__init__(labelOnlyBase=False)
        self.us_per_unit = us_per_unit

    def _num_to_string(self, x: float, vmin: float, vmax: float) -> str:
        return display.duration_us(x * self.us_per_unit)


def _duration_axis(axis: Any, us_per_unit: float = 1.0) -> None:
    """Label ``axis`` (an ``ax.xaxis`` or ``ax.yaxis``) with durations in µs or ms.

    ``us_per_unit`` is how many microseconds one unit of the plotted data is (1000 for data in ms).
    """
    if axis.get_scale() == "log":
        axis.set_major_formatter(_DurationTicks(us_per_unit))
        axis.set_minor_formatter(_DurationTicks(us_per_unit))
    else:
        axis.set_major_formatter(FuncFormatter(lambda x, _pos: display.duration_us(x * us_per_unit)))


def axes_labels(fig: Figure) -> list[dict[str, str]]:
    """Each visible axes' title, x label and y label, as a reader of the figure finds them.

    An axes sharing x with a labelled one (the panels of a grid, a twin) takes its x label; a twin
    drawn in the same place takes its title.
    """
    out = []
    visible = [ax for ax in fig.axes if ax.get_visible()]
    for ax in visible:
        siblings = [s for s in ax.get_shared_x_axes().get_siblings(ax) if s is not ax and s.get_visible()]
        xlabel = ax.get_xlabel() or next((s.get_xlabel() for s in siblings if s.get_xlabel()), "")
        same_place = [s for s in siblings if s.get_position().bounds == ax.get_position().bounds]
        title = ax.get_title() or next((s.get_title() for s in same_place if s.get_title()), "")
        out.append({"title": title, "x": xlabel, "y": ax.get_ylabel()})
    return out


def _figure(
    draw: Callable[[Figure], None],
    height: float = 3.2,
    alt: str = "figure",
    layout: Literal["constrained"] | None = "constrained",
) -> str:
    """Draw on a fresh Agg figure and return it as an ``<img>`` with a base64 PNG ``data:`` URL.

    The ``alt`` text names every panel with its axes, and the PNG carries the same as metadata
    (``Title``; ``Description``, the JSON of :func:`axes_labels`), so a reader without the image,
    and a test, can see what each axis counts. ``layout=None`` leaves spacing to ``draw``
    (constrained layout is slow on grids of many axes).
    """
    fig = Figure(figsize=(10, height), dpi=100, layout=layout)
    draw(fig)
    labels = axes_labels(fig)
    panels = "; ".join(f"{a['title']} (x: {a['x']}; y: {a['y']})" for a in labels)
    text = f"{alt}: {panels}"
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Title": alt, "Description": json.dumps(labels)})
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{_e(text)}" src="data:image/png;base64,{data}">'


def _seconds(t_ns: np.ndarray, t0: int) -> np.ndarray:
    """Whole seconds since ``t0`` (the 1-second bucket of each stamp)."""
    return (np.asarray(t_ns, dtype="int64") - t0) // NS_PER_S


def fault_windows(history: pd.DataFrame, t0: int) -> list[tuple[str, float, float]]:
    """The nemesis's faults, ``(name, start s, end s)`` since ``t0``: from a ``start`` row's invoke
    to its ``end`` row's completion, or to the history's end for a fault never healed."""
    rows = history.loc[_is(history, "nemesis", None)].sort_values("t_invoke")
    end_ns = int(history["t_complete"].max()) if len(history) else t0
    open_at: dict[str, int] = {}
    out = []
    for key, source, t_inv, t_done in rows[["key", "source", "t_invoke", "t_complete"]].itertuples(
        index=False
    ):
        if source == "start":
            open_at[str(key)] = int(t_inv)
        elif source == "end" and str(key) in open_at:
            out.append((str(key), open_at.pop(str(key)), int(t_done)))
    out += [(k, t, end_ns) for k, t in open_at.items()]
    return [(k, (a - t0) / NS_PER_S, (b - t0) / NS_PER_S) for k, a, b in out]


def _shade(ax: Axes, windows: list[tuple[str, float, float]]) -> None:
    """Grey bands where a fault was active, so a dip in a plot can be read against its cause."""
    for name, start, end in windows:
        ax.axvspan(start, end, color="#999999", alpha=0.25, lw=0)
        ax.text(start, 1.0, name, transform=ax.get_xaxis_transform(), fontsize=7, va="top", rotation=90)


def _legend(ax: Axes, n: int) -> None:
    if n:
        ax.legend(fontsize=8, ncols=min(n, 4), loc="upper left", framealpha=0.8)


# --------------------------------------------------------------------------------------------------
# Sections


def row_id(name: str) -> str:
    """The HTML id of a verdict row, so the headline can link to the rows it names."""
    return "row-" + re.sub(r"[^A-Za-z0-9_.-]", "-", name)


def _check_figure(check: CheckResult) -> str:
    """The figure that sums up a check in the verdict table."""
    if check.skipped or check.unknown:
        return check.reason or "skipped"
    if check.name == "latency":
        hit = check.figures.get("read_hit") or {}
        return f"read_hit p95 {display.duration_us(hit.get('p95'))}" if hit.get("count") else "see section 3"
    if check.name == open_model.NAME:
        timed = [g for g in open_model.GROUPS if (check.figures.get(g) or {}).get("count")]
        if not timed:
            return "see section 9"
        first = check.figures[timed[0]]
        return (
            f"{timed[0]} p99 {display.duration_us(first.get('uncorrected_p99_us'))} uncorrected, "
            f"{display.duration_us(first.get('corrected_p99_us'))} corrected"
        )
    names = KEY_FIGURE.get(check.name, ())
    shown = [display.pair(n, check.figures.get(n)) for n in names if n in check.figures]
    return ", ".join(shown) or f"violations={check.violations}"


def _check_limit(check: CheckResult, judged_by: list[VerdictRow]) -> str:
    """What the check is held to (HTML): its own limit, and the thresholds on its figures."""
    limit = "reported only" if check.name in REPORTED_ONLY else "0 violations"
    if check.name == "stampede" and not check.figures.get("expect_single"):
        limit = (
            "reported only (loads counted on read misses: the target's own guard is not judged)"
            if check.figures.get("loads_from") == "read_misses"
            else "reported only (guard is not lock)"
        )
    # A reported-only check can still fail the run through a threshold: the row says which.
    if not judged_by:
        return _e(limit)
    links = ", ".join(
        f'<a href="#{row_id(r.name)}">{_e(r.name)}</a> <span class="{_status_class(r.status)}">'
        f"{_e(r.status)}</span>"
        for r in judged_by
    )
    return f"{_e(limit)}; thresholds on its figures: {links}"


def _threshold_figure(t: ThresholdResult) -> str:
    return (t.reason or "skipped") if t.skipped else t.show(t.figure)


def _example_table(check: CheckResult, t0: int) -> str:
    """The check's worst rows; times as offsets from the run's start and UTC wall times."""
    columns: list[str] = []
    for example in check.examples:
        columns.extend(c for c in example if c not in columns)
    # A column null in every example (t_intended of a closed-model run) says nothing.
    columns = [c for c in columns if any(example.get(c) is not None for example in check.examples)]
    rows: list[list[Any]] = []
    for example in check.examples:
        cells: list[Any] = []
        for c in columns:
            value = example.get(c)
            text = display.figure(c, value, t0)
            numeric = isinstance(value, int | float) and not isinstance(value, bool)
            cells.append(_num(text) if numeric else _Raw(_e(text)))
        rows.append(cells)
    return _table([display.label(c) for c in columns], rows, cls="examples")


def section_verdict(verdict: Verdict, t0: int = 0) -> str:
    """The verdict: its headline, then every check and threshold (status, figure, limit), then the
    failed checks' worst examples.

    The headline, the tables and the exit code all come from :meth:`Verdict.rows`: the headline
    names exactly the rows that make the outcome, and links to them.
    """
    parts = ['<h2 id="verdict">1. Verdict</h2>']
    rows = verdict.rows()
    outcome, named = verdict.headline()
    status = outcome.upper()
    links = ", ".join(f'<a href="#{row_id(r.name)}">{_e(r.name)}</a>' for r in named)
    parts.append(f'<p class="banner {status}" id="headline">{status}{": " + links if links else ""}</p>')
    counts = {s: sum(r.status == s for r in rows) for s in ("FAIL", "UNKNOWN", "PASS", "N/A")}
    tally = ", ".join(f'<span class="{_status_class(s)}">{n} {_e(s)}</span>' for s, n in counts.items())
    parts.append(f'<p id="tally">{len(rows)} rows below (checks, then thresholds): {tally}.</p>')
    if outcome == UNKNOWN:
        # Why it is not a pass: each unknown row and its reason.
        why = "".join(
            f"<li>{_e(r.name)}: {_e(getattr(r.result, 'reason', None) or '')}</li>"
            for r in rows
            if r.status == "UNKNOWN"
        )
        parts.append(f'<ul class="note">{why}</ul>')
    for note in verdict.notes:
        parts.append(f'<p class="note">{_e(note)}</p>')

    def attrs(r: VerdictRow) -> str:
        covered = f' data-covered-by="{_e(r.covered_by)}"' if r.covered_by else ""
        return (
            f'id="{row_id(r.name)}" class="row-{_status_class(r.status)}" data-status="{_e(r.status)}"'
            f"{covered}"
        )

    check_rows = [r for r in rows if r.kind == CHECK]
    threshold_rows = [r for r in rows if r.kind == THRESHOLD]
    cells: list[list[Any]] = []
    for r in check_rows:
        check = r.result
        assert isinstance(check, CheckResult)
        judged_by = [
            t
            for t in threshold_rows
            if isinstance(t.result, ThresholdResult)
            and t.result.check == check.name
            and not t.name.startswith("threshold:max_violations.")
        ]
        cells.append(
            [
                check.name,
                _status(r.status),
                check.violations,
                _check_figure(check),
                _Raw(_check_limit(check, judged_by)),
            ]
        )
    parts.append("<h3>Checks</h3>")
    parts.append(
        _table(
            ["check", "status", "violations", "key figure", "limit"],
            cells,
            cls="verdict-rows",
            row_attrs=[attrs(r) for r in check_rows],
        )
    )
    if threshold_rows:
        tcells: list[list[Any]] = []
        for r in threshold_rows:
            t = r.result
            assert isinstance(t, ThresholdResult)
            also = f" (also named by {r.covered_by})" if r.covered_by else ""
            tcells.append([t.name, _status(r.status), t.label + also, _threshold_figure(t), t.limit_text()])
        source = verdict.options.get("thresholds")
        parts.append("<h3>Thresholds</h3>")
        if source:
            parts.append(_caption(f"From {source}."))
        parts.append(
            _table(
                ["threshold", "status", "what", "figure", "limit"],
                tcells,
                cls="verdict-rows",
                row_attrs=[attrs(r) for r in threshold_rows],
            )
        )
    else:
        parts.append(_caption("No thresholds were applied."))
    for check in verdict.checks:
        if check.passed or check.skipped:
            continue
        title = "Failed" if check.outcome == FAIL else "Unknown (the missing rows may explain them)"
        parts.append(f'<h3 id="examples-{_e(check.name)}">{title}: {_e(check.name)}, worst examples</h3>')
        if not check.examples:
            parts.append(_nodata("the check reported no example rows"))
            continue
        parts.append(_example_table(check, t0))
        parts.append(
            _caption(
                "Times: offset from the run's start, then the UTC wall time, to the millisecond. "
                "Durations in µs or ms."
            )
        )
    return "\n".join(parts)


def _locust_users(results: Path | None) -> pd.DataFrame | None:
    """``Timestamp`` and ``User Count`` of Locust's ``--csv`` history, when present and readable."""
    if results is None or not (results / LOCUST_HISTORY).is_file():
        return None
    try:
        frame = pd.read_csv(results / LOCUST_HISTORY, usecols=["Timestamp", "User Count"])
    except (ValueError, OSError, pd.errors.ParserError):
        return None
    frame = frame.dropna()
    frame = frame.groupby("Timestamp", as_index=False)["User Count"].max()
    return frame if len(frame) else None


#: Rows no Locust user wrote: each fill and each probe is a process of its own (docs/history.md),
#: and the rest are the run's bookkeeping. Counted as users, they made a 500-user run show ~750.
NOT_USERS = ("fill", "probe", "sweep", "redis_stat", "nemesis", "tier_event", "initial")
#: Process 0 is the run itself (the sweep, the final counter reads, the nemesis): no user.
RUN_PROCESS = 0


def users_running(history: pd.DataFrame, t0: int, seconds: np.ndarray) -> np.ndarray:
    """How many user processes were running at the middle of each second in ``seconds`` since ``t0``.

    A user process runs from its first operation's invoke to its last one's completion; a Locust user
    is one process between ``info`` operations, and takes its next id only after the info one
    completed, so no user is counted twice at one instant. Rows of :data:`NOT_USERS`, the run's own
    process and the ``expire`` markers a StampedeUser stamps at a TTL's end are left out.
    """
    f = history["f"]
    keep = ~f.isin(list(NOT_USERS)) & (history["process"] != RUN_PROCESS)
    keep &= ~((f == "invalidate") & (history["source"] == "expire"))
    rows = history.loc[keep, ["process", "t_invoke", "t_complete"]]
    spans = rows.groupby("process", observed=True).agg(start=("t_invoke", "min"), end=("t_complete", "max"))
    starts = np.sort(spans["start"].to_numpy(dtype="int64"))
    ends = np.sort(spans["end"].to_numpy(dtype="int64"))
    instants = t0 + np.asarray(seconds, dtype="int64") * NS_PER_S + NS_PER_S // 2
    started = np.searchsorted(starts, instants, side="right")
    ended = np.searchsorted(ends, instants, side="right")
    return started - ended


def section_throughput(history: pd.DataFrame | None, t0: int, results: Path | None) -> str:
    """Ops per second per operation, and users (Locust's count, or user processes running)."""
    parts = ['<h2 id="throughput">2. Users and throughput over time</h2>']
    load = None
    if history is not None:
        load = history.loc[~history["f"].isin(list(NOT_LOAD))]
    if load is None or len(load) == 0:
        parts.append(_nodata("no operations in the history"))
        return "\n".join(parts)
    sec = _seconds(load["t_complete"].to_numpy(), t0)
    per_op = (
        pd.DataFrame({"sec": sec, "f": load["f"].astype("object").to_numpy()})
        .groupby(["sec", "f"])
        .size()
        .unstack(fill_value=0)
    )
    per_op = per_op.reindex(np.arange(per_op.index.min(), per_op.index.max() + 1), fill_value=0)
    users = _locust_users(results)
    if users is not None:
        user_x = users["Timestamp"].to_numpy(dtype="float64") - t0 / NS_PER_S
        user_y = users["User Count"].to_numpy(dtype="float64")
        user_label = "Locust users"
        user_title = "Users running (Locust's User Count)"
        caption = f"Users: Locust's own count, the 'User Count' column of {LOCUST_HISTORY}."
    else:
        seconds = per_op.index.to_numpy(dtype="int64")
        user_x, user_y = seconds + 0.5, users_running(history, t0, seconds).astype("float64")
        user_label = "users running"
        user_title = "Users running, counted from the history"
        peak = int(user_y.max()) if len(user_y) else 0
        caption = (
            f"Users: no {LOCUST_HISTORY}, so they are counted from the history: at the middle of each "
            "second, the user processes that had invoked their first operation and not yet completed "
            "their last (a user takes a fresh process id after an info operation, after its last "
            "one). Fills and probes, each a process of its own, and the run's bookkeeping rows are "
            f"left out, so this never counts more than the users running. Peak {peak} users."
        )
    faults = fault_windows(history, t0) if history is not None else []

    def draw(fig: Figure) -> None:
        top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1.3])
        palette = matplotlib.colormaps["tab20"]
        for i, column in enumerate(per_op.columns):
            top.plot(
                per_op.index,
                per_op[column],
                label=str(column),
                lw=1.2,
                color=palette((2 * i) % 20 + (i // 10) % 2),
            )
        top.set_ylabel("completed operations per second")
        top.set_title("Throughput: completed operations per second, by operation f")
        _shade(top, faults)
        top.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), framealpha=0.8)
        bottom.step(user_x, user_y, where="post", color="black", lw=1.2)
        bottom.set_ylabel(user_label, fontsize=8)
        bottom.set_title(user_title, fontsize=9)
        bottom.set_xlabel("seconds since the run started")
        bottom.set_ylim(bottom=0)

    parts.append(_figure(draw, height=5.6, alt="throughput and users"))
    parts.append(
        _caption(
            "Throughput: ok, fail and info completions per 1-second bucket of t_complete; "
            "sweep and redis_stat rows (bookkeeping of the run) are left out. " + caption
        )
    )
    return "\n".join(parts)


def latency_groups(history: pd.DataFrame) -> pd.DataFrame:
    """Ok operations with a latency group (``read_hit``, ``read_miss``, or the op's ``f``).

    Grouped as the latency check groups them (:func:`analysis.kernels.latency_masks`), over every
    operation present but the untimed ones, in history order.
    """
    present = [str(f) for f in history["f"].cat.categories if f not in NOT_TIMED and f != "read"]
    labels = group_labels(history, (*READ_GROUPS, *present))
    keep = np.flatnonzero(pd.notna(labels))
    t_complete = history["t_complete"].to_numpy()[keep]
    return pd.DataFrame(
        {
            "group": labels[keep],
            "t_complete": t_complete,
            "us": (t_complete - history["t_invoke"].to_numpy()[keep]) / NS_PER_US,
        }
    )


def section_latency(history: pd.DataFrame | None, t0: int) -> str:
    """p50/p95/p99 per second per operation group, microseconds, log scale."""
    parts = ['<h2 id="latency">3. Latency percentiles over time</h2>']
    frame = latency_groups(history) if history is not None else pd.DataFrame()
    if len(frame) == 0:
        parts.append(_nodata("no ok operations to time"))
        return "\n".join(parts)
    frame["sec"] = _seconds(frame["t_complete"].to_numpy(), t0)
    pct = frame.groupby(["group", "sec"])["us"].quantile([0.5, 0.95, 0.99]).unstack()
    counts = frame["group"].value_counts()
    timed = frame.loc[frame["us"] > 0, "group"].unique()
    groups = [str(g) for g in counts.index if g in timed]
    if not groups:
        parts.append(_nodata("no ok operation took measurable time"))
        return "\n".join(parts)
    ncols = 2 if len(groups) > 1 else 1
    nrows = -(-len(groups) // ncols)
    faults = fault_windows(history, t0) if history is not None else []

    def draw(fig: Figure) -> None:
        axes = np.atleast_1d(fig.subplots(nrows, ncols, sharex=True, squeeze=False)).ravel()
        inch = 2.3 * nrows
        fig.subplots_adjust(
            left=0.08, right=0.98, wspace=0.25, hspace=0.5, top=1 - 0.3 / inch, bottom=0.5 / inch
        )
        for ax, group in zip(axes, groups, strict=False):
            rows = pct.loc[group]
            for q, label in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99")):
                few = len(rows) < 5
                ax.plot(
                    rows.index, rows[q].where(rows[q] > 0), label=label, lw=1, marker="." if few else None
                )
            if (rows.to_numpy() > 0).any():
                ax.set_yscale("log")
            _duration_axis(ax.yaxis)
            ax.set_title(f"{group}: latency of {counts[group]:,} ok operations", fontsize=9)
            ax.set_ylabel("t_complete - t_invoke", fontsize=8)
            ax.tick_params(which="both", labelsize=7)
            ax.grid(True, which="major", alpha=0.3)
            _shade(ax, faults)
        for ax in axes[len(groups) :]:
            ax.set_visible(False)
        axes[0].legend(fontsize=7, loc="upper left")
        for ax in axes[-ncols:]:
            ax.set_xlabel("seconds since the run started", fontsize=8)

    parts.append(_figure(draw, height=2.3 * nrows, alt="latency percentiles", layout=None))
    # The caveat belongs where the closed-loop latencies are shown; section 9 explains it.
    closed = "" if open_model.is_open_model(history) else " " + CLOSED_LOOP_NOTE + " See section 9."
    parts.append(
        _caption(
            "Per 1-second bucket of t_complete, the 50th, 95th and 99th percentiles of t_complete - "
            "t_invoke of ok operations, on a log axis. Reads are split by source." + closed
        )
    )
    return "\n".join(parts)


def section_cache(history: pd.DataFrame | None, t0: int) -> str:
    """Reads by source per second with the hit ratio, and Redis evictions per sample."""
    parts = ['<h2 id="cache">4. Hit ratio and evictions over time</h2>']
    reads = history.loc[_is(history, "read")] if history is not None else None
    if reads is None or len(reads) == 0:
        parts.append(_nodata("no ok reads"))
    else:
        sec = _seconds(reads["t_complete"].to_numpy(), t0)
        by = (
            pd.DataFrame({"sec": sec, "source": reads["source"].astype("object").fillna("none").to_numpy()})
            .groupby(["sec", "source"])
            .size()
            .unstack(fill_value=0)
        )
        hit_columns = [c for c in by.columns if c == "hit" or str(c).startswith("hit:")]
        hits = by[hit_columns].sum(axis=1) if hit_columns else pd.Series(0, index=by.index)
        ratio = hits / by.sum(axis=1)
        assert history is not None
        faults = fault_windows(history, t0)

        def draw(fig: Figure) -> None:
            ax = fig.subplots()
            bottom = np.zeros(len(by))
            for column in by.columns:
                ax.bar(by.index, by[column], bottom=bottom, width=1.0, label=f"{column} reads/s", alpha=0.7)
                bottom = bottom + by[column].to_numpy()
            ax.set_ylabel("ok reads per second")
            ax.set_xlabel("seconds since the run started")
            twin = ax.twinx()
            twin.plot(ratio.index, ratio.to_numpy(), color="black", lw=1.3, label="hit ratio")
            twin.set_ylim(0, 1.05)
            twin.set_ylabel("hit ratio (hits / reads that second)")
            ax.set_title("Ok reads per second by source, and the hit ratio")
            _legend(ax, len(by.columns))
            _shade(ax, faults)

        parts.append(_figure(draw, alt="hit ratio"))
        total_hits = int(hits.sum())
        parts.append(
            _caption(
                f"Bars: ok reads per second by source (hit: served from Redis, miss: loaded from "
                f"PostgreSQL). Line: hits / reads in that second. Whole run: {total_hits:,} of "
                f"{int(by.to_numpy().sum()):,} reads were hits."
            )
        )
    stats = None
    if history is not None:
        stats = history.loc[
            _is(history, "redis_stat") & (history["key"] == "evicted_keys") & history["value"].notna()
        ]
    if stats is None or len(stats) < 2:
        parts.append(_nodata("no redis_stat evicted_keys samples"))
        return "\n".join(parts)
    stats = stats.sort_values("t_invoke", kind="stable")
    t = (stats["t_invoke"].to_numpy() - t0) / NS_PER_S
    delta = np.diff(stats["value"].to_numpy(dtype="int64"))
    if not (delta > 0).any():
        parts.append(f"<p>No evictions: INFO evicted_keys did not rise over {len(stats):,} samples.</p>")
        return "\n".join(parts)

    def draw_ev(fig: Figure) -> None:
        ax = fig.subplots()
        ax.step(t[1:], delta, where="pre", color="#b00020", lw=1.2)
        ax.set_ylabel("keys evicted since the previous sample")
        ax.set_xlabel("seconds since the run started")
        ax.set_title("Redis evictions per sample (delta of INFO evicted_keys)")
        ax.set_ylim(bottom=0)

    parts.append(_figure(draw_ev, height=2.6, alt="evictions"))
    parts.append(_caption(f"{int(delta.sum()):,} keys evicted over the run, sampled about once a second."))
    return "\n".join(parts)


def stale_ages_ms(history: pd.DataFrame, tolerance_ns: int = 0) -> np.ndarray:
    """For each stale read (per ``stale_flags``), how long before it the first write it missed completed.

    The earliest-completing ok write of the key whose version exceeds the read's is where the
    per-key running maximum first rises above the read's version, found with a forward ``merge_asof``.
    """
    reads, writes, stale = stale_flags(history, tolerance_ns)
    if not stale.any():
        return np.zeros(0)
    merged = first_missed_writes(reads.loc[stale], writes).dropna(subset=["w_t_complete"])
    age = merged["t_invoke"].to_numpy() - merged["w_t_complete"].to_numpy(dtype="int64")
    return age / NS_PER_MS


def section_staleness(history: pd.DataFrame | None, tolerance_ns: int) -> str:
    """Histogram of how stale the stale reads were, in milliseconds on a log axis."""
    parts = ['<h2 id="staleness">5. Staleness of stale reads</h2>']
    has_reads = history is not None and bool(_is(history, "read").any())
    if history is None or not has_reads:
        parts.append(_nodata("no ok reads"))
        return "\n".join(parts)
    ages = stale_ages_ms(history, tolerance_ns)
    if len(ages) == 0:
        parts.append("<p>There were no stale reads: no histogram to draw.</p>")
        return "\n".join(parts)
    positive = np.clip(ages, 1e-3, None)
    low, high = float(positive.min()), float(positive.max())
    bins = np.logspace(np.log10(low), np.log10(high * 1.0001 if high > low else low * 10), 40)

    def draw(fig: Figure) -> None:
        ax = fig.subplots()
        ax.hist(positive, bins=list(bins), color="#b00020", alpha=0.8)
        ax.set_xscale("log")
        _duration_axis(ax.xaxis, US_PER_MS)
        ax.set_xlabel("age: read invoked - completion of the first newer write it missed")
        ax.set_ylabel("stale reads")
        ax.set_title(f"How stale: {len(ages):,} stale reads by age")

    parts.append(_figure(draw, alt="staleness histogram"))
    parts.append(
        _caption(
            f"Stale as the stale_read check defines it (tolerance {display.duration_ns(tolerance_ns)}). "
            f"Median age {display.duration_ms(float(np.median(ages)))}, "
            f"max {display.duration_ms(float(ages.max()))}."
        )
    )
    return "\n".join(parts)


def section_notification(history: pd.DataFrame | None) -> str:
    """CDF of commit-to-receive latency of WebSocket notifications."""
    parts = ['<h2 id="notification">6. WebSocket commit-to-receive latency</h2>']
    rows = None
    if history is not None:
        rows = history.loc[_is(history, "ws_recv") & history["value"].notna()]
    if rows is None or len(rows) == 0:
        parts.append(_nodata("no ws_recv rows"))
        return "\n".join(parts)
    ms = np.sort(
        (rows["t_complete"].to_numpy(dtype="int64") - rows["value"].to_numpy(dtype="int64")) / NS_PER_MS
    )
    y = np.arange(1, len(ms) + 1) / len(ms)
    negative = int((ms <= 0).sum())

    def draw(fig: Figure) -> None:
        ax = fig.subplots()
        ax.step(np.clip(ms, 1e-3, None), y, where="post", lw=1.3)
        ax.set_xscale("log")
        _duration_axis(ax.xaxis, US_PER_MS)
        ax.set_xlabel("time from commit (PostgreSQL) to receipt by the listener")
        ax.set_ylabel("fraction of notifications")
        ax.set_title(f"WebSocket notifications received within a time of their commit ({len(ms):,})")
        ax.set_ylim(0, 1.01)
        ax.grid(True, which="both", alpha=0.3)

    parts.append(_figure(draw, alt="notification latency CDF"))
    p50, p99 = np.percentile(ms, [50, 99])
    extra = (
        f" {negative} receipts stamped at or before their commit are drawn at 1 \u00b5s." if negative else ""
    )
    parts.append(
        _caption(
            f"{len(ms):,} ok ws_recv rows: t_complete - value (the commit time). "
            f"p50 {display.duration_ms(float(p50))}, p99 {display.duration_ms(float(p99))}, "
            f"max {display.duration_ms(float(ms[-1]))}.{extra}"
        )
    )
    return "\n".join(parts)


def loads_per_epoch(history: pd.DataFrame) -> np.ndarray:
    """Database loads per (key, stampede epoch), as the ``stampede`` check counts them."""
    loads, _ = stampede_epochs(history)
    return loads.groupby(["key", "epoch"]).size().to_numpy()


def counter_drift(history: pd.DataFrame) -> pd.Series:
    """Per counter key: its last ok counter_read value minus the sum of its ok increments."""
    reads = history.loc[_is(history, "counter_read") & history["value"].notna() & history["key"].notna()]
    if len(reads) == 0:
        return pd.Series(dtype="int64")
    last = reads.sort_values("t_invoke", kind="stable").drop_duplicates("key", keep="last")
    final = pd.Series(last["value"].to_numpy(dtype="int64"), index=last["key"].astype("object").to_numpy())
    incr = history.loc[_is(history, "incr") & history["value"].notna() & history["key"].notna()]
    added = (
        pd.Series(incr["value"].to_numpy(dtype="int64"), index=incr["key"].astype("object").to_numpy())
        .groupby(level=0)
        .sum()
    )
    return (final - added.reindex(final.index, fill_value=0)).sort_index()


def section_contention(history: pd.DataFrame | None) -> str:
    """Loads per stampede epoch, and counter drift per counter."""
    parts = ['<h2 id="contention">7. Stampedes and counter drift</h2>']
    per_epoch = loads_per_epoch(history) if history is not None else np.zeros(0)
    if len(per_epoch) == 0:
        parts.append(_nodata("no db_load rows"))
    else:
        top = int(per_epoch.max())

        def draw(fig: Figure) -> None:
            ax = fig.subplots()
            ax.hist(per_epoch, bins=list(np.arange(0.5, top + 1.5, 1.0)), color="#3b6fb6", rwidth=0.85)
            ax.set_xticks(range(1, top + 1) if top <= 20 else np.linspace(1, top, 10).round())
            ax.set_xlim(0.3, top + 0.7)
            ax.set_xlabel("database loads in one epoch of one key")
            ax.set_ylabel("epochs")
            ax.set_title("Database loads per stampede epoch")

        parts.append(_figure(draw, height=2.8, alt="loads per epoch"))
        parts.append(
            _caption(
                f"{len(per_epoch):,} epochs with at least one load; an epoch of a key opens at each ok "
                f"invalidate of it. 1 is ideal; max {top}."
            )
        )
    drift = counter_drift(history) if history is not None else pd.Series(dtype="int64")
    if len(drift) == 0:
        parts.append(_nodata("no counter_read rows"))
        return "\n".join(parts)
    if not drift.any():
        parts.append(
            f"<p>No counter drift: the final read of each of the {len(drift)} counters equals the sum "
            "of its ok increments.</p>"
        )
        return "\n".join(parts)
    shown = drift.reindex(drift.abs().sort_values(ascending=False).index[:MAX_BARS]).sort_index()

    def draw_drift(fig: Figure) -> None:
        ax = fig.subplots()
        colors = ["#b00020" if v < 0 else "#3b6fb6" if v > 0 else "#888" for v in shown.to_numpy()]
        ax.bar(np.arange(len(shown)), shown.to_numpy(), color=colors)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(np.arange(len(shown)), [str(k) for k in shown.index], rotation=60, fontsize=7)
        ax.set_ylabel("final read - sum of ok increments")
        ax.set_xlabel("counter key")
        ax.set_title("Counter drift per counter key")

    parts.append(_figure(draw_drift, height=3.0, alt="counter drift"))
    limited = f" (the {MAX_BARS} largest of {len(drift)})" if len(drift) > MAX_BARS else ""
    parts.append(
        _caption(
            f"{len(drift)} counters{limited}. Negative: increments acknowledged but lost; positive: "
            "more than the ok increments arrived (info increments that did apply). Total drift "
            f"{int(drift.sum()):+,}."
        )
    )
    return "\n".join(parts)


def _nines_cell(entry: dict[str, Any]) -> str:
    if entry.get("nines") is None:
        return "-"
    prefix = "\u2265 " if entry.get("at_least") else ""
    return f"{prefix}{entry['nines']:.2f}"


def section_nines(nines: dict[str, Any] | None) -> str:
    """Consistency in nines, with the cap of what the run can show."""
    parts = ['<h2 id="nines">8. Consistency in nines</h2>']
    if not nines or nines.get("skipped"):
        parts.append(_nodata("no op history"))
        return "\n".join(parts)
    rows: list[list[Any]] = []
    fresh = nines["reads_fresh"]
    entries = [("reads fresh", "stale reads / ok reads", fresh)]
    by_probes = nines.get("method") == "probe"
    ratio = "probes that found an older entry / probes" if by_probes else "inconsistent writes / ok writes"
    for label, entry in nines["writes_consistent"].items():
        entries.append((f"writes consistent within {label}", ratio, entry))
    for name, ratio, entry in entries:
        cap = entry.get("max_showable")
        rows.append(
            [
                name,
                _nines_cell(entry),
                f"{entry['bad']:,} / {entry['total']:,}" if entry["total"] else "no data",
                ratio,
                "-" if cap is None else f"{cap:.2f}",
            ]
        )
    parts.append(_table(["measure", "nines", "bad / total", "definition", "at most showable"], rows))
    if fresh["total"]:
        parts.append(
            f"<p>With {fresh['total']:,} ok reads this run could show at most "
            f"{fresh['max_showable']:.2f} nines of reads fresh; '&ge; N' means no bad sample was seen, "
            "so the run shows only that it is at least that good.</p>"
        )
    writes = next(iter(nines["writes_consistent"].values()), None)
    if writes and writes["total"]:
        sampled = (
            f"{nines['probed_writes']:,} of {nines['ok_writes']:,} ok writes were probed; with "
            if by_probes
            else "With "
        )
        parts.append(
            f"<p>{sampled}{writes['total']:,} samples at {next(iter(nines['writes_consistent']))} this run "
            f"could show at most {writes['max_showable']:.2f} nines of writes consistent (a run of 10^6 "
            "writes, each probed, can show about 6 nines at most).</p>"
        )
    windows = ", ".join(nines["writes_consistent"]) or ", ".join(
        f"{ns / NS_PER_MS:g} ms" for ns in WINDOWS_NS.values()
    )
    how = (
        "a sampled ok write (--probe-rate) is re-read from Redis M after it completed (f=probe); the "
        "probe is bad when Redis held an entry older than the write."
        if by_probes
        else "no probes were recorded (--probe-rate 0), so the users' reads stand in: a write is "
        "inconsistent when an ok read of its key invoked at least M after the write completed, and "
        "before the key's next write completed, returned an older version."
    )
    parts.append(
        _caption(
            "Nines = -log10(bad / total), as Meta reports cache consistency ('Cache made consistent', "
            f"2022). Reads fresh: stale per the stale_read check. Writes consistent within M ({windows}): "
            + how
        )
    )
    return "\n".join(parts)


CLOSED_LOOP_NOTE = (
    "Latencies may hide coordinated omission (closed-loop run: each user starts its next operation "
    "only when the previous one ends); run with --arrival-rate for corrected latency."
)
#: Percentiles of the per-operation tables, as (figure suffix, column label).
TABLE_PERCENTILES = (("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("p99_9", "p99.9"), ("max", "max"))
#: Table rows, uncorrected first: the figure a closed-loop tool would report, then the correction.
MEASURE_LABELS = {
    "uncorrected": "uncorrected (t_complete - t_invoke)",
    "corrected": "corrected (t_complete - t_intended)",
    "start_lag": "start lag (t_invoke - t_intended)",
}
#: Where the spectrum plot puts its x ticks, as fractions q: drawn at 1 / (1 - q).
SPECTRUM_TICKS = (0.5, 0.9, 0.99, 0.999, 0.9999, 0.99999, 0.999999)


def _spectrum_x(levels: np.ndarray, count: int) -> np.ndarray:
    """Where percentiles go on the spectrum's x axis: 1 / (1 - q).

    q is capped at 1 - 1/count, the rank of the largest of ``count`` samples, so that the maximum
    (q = 1, infinitely far) is drawn where that sample lies.
    """
    q = np.minimum(levels / 100.0, 1.0 - 1.0 / max(count, 2))
    return 1.0 / (1.0 - q)


def _tick_label(q: float) -> str:
    return f"{q * 100:.6f}".rstrip("0").rstrip(".") + "%"


def section_omission(history: pd.DataFrame | None) -> str:
    """Corrected beside uncorrected latency in an open-model run; the closed-loop caveat otherwise."""
    parts = ['<h2 id="omission">9. Latency, corrected for coordinated omission</h2>']
    if history is None or len(history) == 0:
        parts.append(_nodata("no op history"))
        return "\n".join(parts)
    if not open_model.is_open_model(history):
        parts.append(f'<p class="note">{_e(CLOSED_LOOP_NOTE)}</p>')
        parts.append(
            _caption(
                "In a closed-loop run a slow response delays the operations queued behind it, so bad "
                "periods are under-sampled and the percentiles of section 3 may understate what clients "
                "arriving on a schedule would see."
            )
        )
        return "\n".join(parts)
    sample = open_model.collect(history)
    found = open_model.figures(sample)
    groups = [g for g in open_model.GROUPS if found[g]["count"]]
    if not groups:
        parts.append(_nodata("no ok read or write with t_intended"))
        return "\n".join(parts)
    parts.append(
        "<p>Open-model run: every read and write was due at a time fixed by the schedule "
        "(<code>t_intended</code>). Corrected latency counts from that time, as wrk2 does, so the wait "
        "of operations held up behind a slow one is counted; uncorrected latency counts from the "
        "actual start only, as a closed-loop load generator would.</p>"
    )
    for group in groups:
        stats = found[group]
        rows = [
            [
                MEASURE_LABELS[m],
                *[_num(display.duration_us(stats[f"{m}_{key}_us"])) for key, _ in TABLE_PERCENTILES],
            ]
            for m in MEASURE_LABELS
        ]
        parts.append(f"<h3>{_e(group)}</h3>")
        parts.append(_table(["latency", *[label for _, label in TABLE_PERCENTILES]], rows))
        parts.append(
            _caption(
                f"{stats['count']:,} ok operations; {stats['late_over_1ms']:,} "
                f"({(stats['late_over_1ms_ratio'] or 0) * 100:.2f}%) started more than 1 ms late."
            )
        )
    hists = open_model.histograms(sample)
    curves = {g: {m: open_model.spectrum(hists[g][m]) for m in ("uncorrected", "corrected")} for g in groups}

    def draw(fig: Figure) -> None:
        axes = np.atleast_1d(fig.subplots(1, len(groups), squeeze=False)).ravel()
        for ax, group in zip(axes, groups, strict=True):
            # Corrected first, uncorrected dashed over it: where they agree both stay visible.
            for measure, color, style in (("corrected", "#b00020", "-"), ("uncorrected", "#3b6fb6", "--")):
                levels, values = curves[group][measure]
                x = _spectrum_x(levels, found[group]["count"])
                # A duration recorded as 0 us has no place on a log axis: drawn at 1 us.
                ax.plot(x, np.maximum(values, 1.0), label=measure, color=color, lw=1.3, ls=style)
            top = float(found[group]["count"])
            ticks = [q for q in SPECTRUM_TICKS if 1.0 / (1.0 - q) <= top * 1.0001]
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xticks([1.0 / (1.0 - q) for q in ticks], [_tick_label(q) for q in ticks], fontsize=7)
            # The x ticks are the percentiles set above; y keeps its minor ticks, labelled when the
            # curve spans less than a decade (else a panel from 1 to 7 ms has no label at all).
            ax.xaxis.set_minor_locator(NullLocator())
            _duration_axis(ax.yaxis)
            ax.set_xlabel("percentile", fontsize=8)
            ax.set_ylabel("latency", fontsize=8)
            ax.set_title(f"{group}: latency by percentile ({found[group]['count']:,} ok)", fontsize=9)
            ax.tick_params(axis="y", which="both", labelsize=7)
            ax.grid(True, which="major", alpha=0.3)
        axes[0].legend(fontsize=8, loc="upper left")

    parts.append(_figure(draw, height=3.4, alt="latency by percentile, corrected and uncorrected"))
    scheduled, achieved = found["scheduled_per_s"], found["achieved_per_s"]
    rates = (
        f" The schedule asked for {scheduled:,.1f} operations/s; they started at {achieved:,.1f}/s."
        if scheduled is not None and achieved is not None
        else ""
    )
    parts.append(
        _caption(
            "Latency by percentile (HdrHistogram, log axes; x at 1/(1 - percentile), as "
            "HdrHistogram's plots draw it). Where the corrected curve rises above the uncorrected one, "
            f"operations waited for their turn before they started.{rates}"
        )
    )
    return "\n".join(parts)


# --------------------------------------------------------------------------------------------------
# The page


def _start(history: pd.DataFrame | None, run: dict[str, Any] | None) -> int:
    started = (run or {}).get("started_ns")
    if isinstance(started, int) and not isinstance(started, bool) and started > 0:
        return started
    if history is not None and len(history):
        return int(history["t_invoke"].min())
    return 0


def target_line(run: dict[str, Any], options: dict[str, Any]) -> str:
    """What the run tested: the target's own description, or, for runs from before targets, the
    reference cache's strategy."""
    target = run.get("target")
    if isinstance(target, dict) and target.get("description"):
        return str(target["description"])
    return f"reference cache, strategy {options.get('strategy', '-')}"


def build_report(
    verdict: Verdict,
    history: pd.DataFrame | None,
    nines: dict[str, Any] | None = None,
    results: str | Path | None = None,
    tolerance_ns: int = 0,
) -> str:
    """The report page as one HTML string."""
    directory = Path(results) if results is not None else None
    h = normalise(history) if history is not None else None
    run = verdict.run or {}
    t0 = _start(h, run)
    title = f"cachestorm run {run.get('run_id', '')}".strip()
    found = run.get("options")
    options: dict[str, Any] = found if isinstance(found, dict) else {}
    meta = [
        f"rows: {len(h):,}" if h is not None else "no op history",
        f"scenario: {options.get('scenario', '-')}",
        f"target: {target_line(run, options)}",
    ]
    if t0 > 0:
        meta.append(f"started: {display.wall_time(t0)} (the origin of every '+s' time below)")
    if run.get("started_ns") and run.get("stopped_ns"):
        meta.append(f"duration: {(run['stopped_ns'] - run['started_ns']) / NS_PER_S:.1f} s")
    sections = [
        section_verdict(verdict, t0),
        section_throughput(h, t0, directory),
        section_latency(h, t0),
        section_cache(h, t0),
        section_staleness(h, tolerance_ns),
        section_notification(h),
        section_tiers(verdict),
        section_contention(h),
        section_nines(nines),
        section_omission(h),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>\n"
        f"<h1>{_e(title)}</h1><p>{_e(' · '.join(meta))}</p>\n" + "\n".join(sections) + "\n</body></html>\n"
    )


def write_report(
    results: str | Path,
    verdict: Verdict,
    history: pd.DataFrame | None,
    nines: dict[str, Any] | None = None,
    tolerance_ns: int = 0,
) -> Path:
    """Write ``RESULTS/report.html`` atomically (a temporary file, then a rename)."""
    directory = Path(results)
    target = directory / REPORT_FILE
    write_text_atomic(target, build_report(verdict, history, nines, directory, tolerance_ns))
    return target
