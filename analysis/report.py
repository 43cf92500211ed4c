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

from analysis import open_model
from analysis.kernels import _is, first_missed_writes, group_labels, stale_flags, stampede_epochs
from analysis.load import normalise
from analysis.nines import WINDOWS_NS
from analysis.ops import NS_PER_MS, NS_PER_S, NS_PER_US, READ_GROUPS
from analysis.registry import CHECKS
from analysis.tiers_view import report_section as section_tiers
from analysis.verdict import FAIL, UNKNOWN, Verdict, write_text_atomic

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
.PASS{color:#176f2c;font-weight:600}.FAIL{color:#b00020;font-weight:700}.SKIP{color:#777}
.banner{padding:.6em 1em;border-radius:4px;font-weight:700;display:inline-block}
.banner.PASS{background:#e3f4e6}.banner.FAIL{background:#fde5e8}.banner.UNKNOWN{background:#fff4d6}
.UNKNOWN{color:#9a6700;font-weight:700}.NA{color:#777}
.caption{color:#555;font-size:.9em;margin:.2em 0 1em}.nodata{color:#777;font-style:italic}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.5em 1em}
img{max-width:100%;height:auto;display:block}.examples{font-size:.8em}
"""


# --------------------------------------------------------------------------------------------------
# Small HTML and figure helpers


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    """A figure for a table cell."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.4g}" if abs(value) < 1e6 else f"{value:.6g}"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), default=str)
    return str(value)


def _table(header: list[str], rows: list[list[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for cell in row:
            if isinstance(cell, _Raw):
                cells.append(f"<td>{cell.text}</td>")
            elif isinstance(cell, int | float) and not isinstance(cell, bool):
                cells.append(f'<td class="num">{_e(_fmt(cell))}</td>')
            else:
                cells.append(f"<td>{_e(_fmt(cell))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    klass = f' class="{cls}"' if cls else ""
    return f"<table{klass}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


class _Raw:
    """Already-escaped HTML for a table cell."""

    def __init__(self, text: str) -> None:
        self.text = text


def _status(status: str) -> _Raw:
    # "N/A" is no CSS class name.
    return _Raw(f'<span class="{_e(status.replace("/", ""))}">{_e(status)}</span>')


def _nodata(what: str) -> str:
    return f'<p class="nodata">No data: {_e(what)}.</p>'


def _caption(text: str) -> str:
    return f'<p class="caption">{_e(text)}</p>'


def _figure(
    draw: Callable[[Figure], None],
    height: float = 3.2,
    alt: str = "figure",
    layout: Literal["constrained"] | None = "constrained",
) -> str:
    """Draw on a fresh Agg figure and return it as an ``<img>`` with a base64 PNG ``data:`` URL.

    ``layout=None`` leaves spacing to ``draw`` (constrained layout is slow on grids of many axes).
    """
    fig = Figure(figsize=(10, height), dpi=100, layout=layout)
    draw(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


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


def section_verdict(verdict: Verdict) -> str:
    """The verdict: every check and threshold with status, key figure and limit; failed examples."""
    parts = ['<h2 id="verdict">1. Verdict</h2>']
    status = verdict.outcome.upper()
    named = ", ".join(verdict.failed if verdict.outcome == FAIL else verdict.unknown)
    parts.append(f'<p class="banner {status}">{status}{": " + _e(named) if named else ""}</p>')
    if verdict.outcome == UNKNOWN:
        # Why it is not a pass: each unknown check and its reason.
        why = "".join(
            f"<li>{_e(c.name)}: {_e(c.reason or '')}</li>" for c in verdict.checks if c.outcome == UNKNOWN
        )
        parts.append(f'<ul class="note">{why}</ul>')
    for note in verdict.notes:
        parts.append(f'<p class="note">{_e(note)}</p>')
    rows: list[list[Any]] = []
    for check in verdict.checks:
        if check.skipped or check.unknown:
            figure: str = check.reason or "skipped"
        elif check.name == "latency":
            hit = check.figures.get("read_hit") or {}
            figure = f"read_hit p95 {_fmt(hit.get('p95'))} us" if hit.get("count") else "see section 3"
        elif check.name == open_model.NAME:
            timed = [g for g in open_model.GROUPS if (check.figures.get(g) or {}).get("count")]
            first = check.figures[timed[0]] if timed else {}
            figure = (
                f"{timed[0]} p99 {_fmt(first.get('uncorrected_p99_us'))} us uncorrected, "
                f"{_fmt(first.get('corrected_p99_us'))} us corrected"
                if timed
                else "see section 9"
            )
        else:
            names = KEY_FIGURE.get(check.name, ())
            shown = [f"{n}={_fmt(check.figures.get(n))}" for n in names if n in check.figures]
            figure = ", ".join(shown) or f"violations={check.violations}"
        limit = "reported only" if check.name in REPORTED_ONLY else "0 violations"
        if check.name == "stampede" and not check.figures.get("expect_single"):
            limit = "reported only (guard is not lock)"
        rows.append([check.name, _status(check.status), check.violations, figure, limit])
    parts.append("<h3>Checks</h3>")
    parts.append(_table(["check", "status", "violations", "key figure", "limit"], rows))
    if verdict.thresholds:
        trows: list[list[Any]] = []
        for t in verdict.thresholds:
            unit = f" {t.unit}" if t.unit else ""
            op = ">=" if t.comparison == "min" else "<="
            figure = (t.reason or "skipped") if t.skipped else f"{_fmt(t.figure)}{unit}"
            trows.append([t.label, _status(t.status), figure, f"{op} {_fmt(t.limit)}{unit}"])
        parts.append("<h3>Thresholds</h3>")
        parts.append(_table(["threshold", "status", "figure", "limit"], trows))
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
        columns: list[str] = []
        for example in check.examples:
            columns.extend(c for c in example if c not in columns)
        rows = [[example.get(c) for c in columns] for example in check.examples]
        parts.append(_table(columns, rows, cls="examples"))
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


def section_throughput(history: pd.DataFrame | None, t0: int, results: Path | None) -> str:
    """Ops per second per operation, and users (Locust's count, or distinct active processes)."""
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
        user_label = "Locust users (User Count)"
        caption = f"Users: Locust's own count, the 'User Count' column of {LOCUST_HISTORY}."
    else:
        active = pd.Series(load["process"].to_numpy()).groupby(sec).nunique()
        user_x, user_y = active.index.to_numpy(dtype="float64"), active.to_numpy(dtype="float64")
        user_label = "active processes"
        caption = (
            "Users: no locust_stats_history.csv, so the number of distinct processes completing an "
            "operation in each second stands in for users (a proxy: a process is one Locust user "
            "between info operations)."
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
        top.set_ylabel("ops/s")
        top.set_title("Completed operations per second, by operation f")
        _shade(top, faults)
        top.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), framealpha=0.8)
        bottom.step(user_x, user_y, where="post", color="black", lw=1.2)
        bottom.set_ylabel(user_label, fontsize=8)
        bottom.set_xlabel("seconds since start")
        bottom.set_ylim(bottom=0)

    parts.append(_figure(draw, height=5.2, alt="throughput and users"))
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
            ax.set_title(f"{group} ({counts[group]:,} ok)", fontsize=9)
            ax.set_ylabel("us", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(True, which="major", alpha=0.3)
            _shade(ax, faults)
        for ax in axes[len(groups) :]:
            ax.set_visible(False)
        axes[0].legend(fontsize=7, loc="upper left")
        for ax in axes[-ncols:]:
            ax.set_xlabel("seconds since start", fontsize=8)

    parts.append(_figure(draw, height=2.3 * nrows, alt="latency percentiles", layout=None))
    # The caveat belongs where the closed-loop latencies are shown; section 9 explains it.
    closed = "" if open_model.is_open_model(history) else " " + CLOSED_LOOP_NOTE + " See section 9."
    parts.append(
        _caption(
            "Per 1-second bucket of t_complete, the 50th, 95th and 99th percentiles of t_complete - "
            "t_invoke of ok operations, in microseconds on a log axis. Reads are split by source." + closed
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
            ax.set_ylabel("reads/s")
            ax.set_xlabel("seconds since start")
            twin = ax.twinx()
            twin.plot(ratio.index, ratio.to_numpy(), color="black", lw=1.3, label="hit ratio")
            twin.set_ylim(0, 1.05)
            twin.set_ylabel("hit ratio")
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
        ax.set_ylabel("keys evicted")
        ax.set_xlabel("seconds since start")
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
        ax.set_xlabel("age (ms): read invoked - completion of the first newer write it missed")
        ax.set_ylabel("stale reads")
        ax.set_title(f"{len(ages):,} stale reads")

    parts.append(_figure(draw, alt="staleness histogram"))
    parts.append(
        _caption(
            f"Stale as the stale_read check defines it (tolerance {tolerance_ns / NS_PER_MS:g} ms). "
            f"Median age {np.median(ages):.3g} ms, max {ages.max():.3g} ms."
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
        ax.set_xlabel("ms from commit (PostgreSQL) to receipt by the listener")
        ax.set_ylabel("fraction of notifications")
        ax.set_ylim(0, 1.01)
        ax.grid(True, which="both", alpha=0.3)

    parts.append(_figure(draw, alt="notification latency CDF"))
    p50, p99 = np.percentile(ms, [50, 99])
    extra = (
        f" {negative} receipts stamped at or before their commit are drawn at 0.001 ms." if negative else ""
    )
    parts.append(
        _caption(
            f"{len(ms):,} ok ws_recv rows: t_complete - value (the commit time). "
            f"p50 {p50:.3g} ms, p99 {p99:.3g} ms, max {ms[-1]:.3g} ms.{extra}"
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
        ax.set_ylabel("final read - sum of ok incr")
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
            [MEASURE_LABELS[m], *[stats[f"{m}_{key}_us"] for key, _ in TABLE_PERCENTILES]]
            for m in MEASURE_LABELS
        ]
        parts.append(f"<h3>{_e(group)}</h3>")
        parts.append(_table(["latency (us)", *[label for _, label in TABLE_PERCENTILES]], rows))
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
            ax.minorticks_off()
            ax.set_xlabel("percentile", fontsize=8)
            ax.set_ylabel("latency (us)", fontsize=8)
            ax.set_title(f"{group} ({found[group]['count']:,} ok)", fontsize=9)
            ax.tick_params(axis="y", labelsize=7)
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
            "Latency by percentile (HdrHistogram, microseconds, log axes; x at 1/(1 - percentile), as "
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
    if run.get("started_ns") and run.get("stopped_ns"):
        meta.append(f"duration: {(run['stopped_ns'] - run['started_ns']) / NS_PER_S:.1f} s")
    sections = [
        section_verdict(verdict),
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
