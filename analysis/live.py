"""The live coherence view: the analysis's own checks, judged while a run goes, in Locust's web UI.

A locustfile wires it beside ``--verdict``::

    from analysis import live

    live.wire()

On the master (or the single local runner) it keeps every batch of history rows the run's
collector takes in (:data:`cachestorm.events.rows_collected`) and, about every second, runs the
checks of :data:`LIVE_CHECKS` (the registry's own functions, :mod:`analysis.registry`) on every row
completed up to a *watermark*: the oldest among the nodes still running of the newest row each has
shipped, less :data:`SETTLE_S`. Rows arrive from the workers out of order and a second or so late;
below the watermark every node has shipped what it recorded, so the judged rows are a whole prefix
of the history, and the same checks on the same rows of the final history give the same figures
(tests/test_live.py checks this).

What it shows (docs/dashboards.md):

- a **Coherence** tab in the web UI (Locust's ``extendedTabs`` / ``extendedTables``; its rows ride
  on the ``/stats/requests`` answer the UI polls every 2 s);
- ``/coherence``: the same figures as JSON; ``/metrics``: the same in Prometheus's text format
  (on the web UI, and with ``--live-bind HOST:PORT`` on a server of their own, for headless runs);
- each violation as a Locust failure, ``COHERENCE <check>``, so that the failure ratio, the
  Failures tab, ``--exit-code-on-error`` and Locust's thresholds see them.

While the run goes a check's outcome is *so far*: fail when it found a violation that no row still
on its way could explain (the registry's ``unexplained``), unknown when one could, pass when it found
none among the judged rows. The verdict so far is fail or unknown, never pass: the sweep and the
rows past the watermark are not judged yet. When the run ends, the view runs the full analysis
(:func:`analysis.checks.run_checks` with ``run.json``), which is the verdict of record.

Workers never build a view: this module imports pandas only on the master (or local runner), at
Locust's ``init``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
import pyarrow as pa
import pyarrow.compute as pc
from locust import events as locust_events

from analysis import display
from analysis.ops import LIVE_FAILURE_TYPE
from cachestorm import events
from cachestorm.embedded import fatal
from cachestorm.webui import base_path

log = logging.getLogger("cachestorm")

#: The checks judged live, in the order of the tab.
LIVE_CHECKS = (
    "stale_read",
    "future_read",
    "monotonic_read",
    "ws_delivery",
    "tier_staleness",
    "counter",
    "tx_atomicity",
    "lock_safety",
    "stampede",
)
#: Seconds behind the newest row of the slowest node below which rows are judged. A node ships its
#: rows in the order it recorded them, each at its completion, so its newest shipped row bounds the
#: rest; the margin covers a change of its clock offset between two batches.
SETTLE_S = 0.5
#: Shortest pause between two judgements; the pause is also at least :data:`PAUSE_FACTOR` times the
#: judgement's own time, so that on a long run the view takes a bounded share of the master's CPU.
TICK_S = 1.0
PAUSE_FACTOR = 4.0
#: The pause when nobody has asked for the figures (the tab, /coherence, /metrics) for
#: :data:`WATCHED_S`: a headless run only needs its failures logged, which its end does in full.
IDLE_TICK_S = 5.0
WATCHED_S = 6.0
#: Seconds after a run's start past which an expected node that has shipped nothing (a worker with
#: no users) no longer holds the judging back.
FIRST_ROWS_GRACE_S = 10.0
#: Past this many rows the view stops judging and lets go of its copy of the history (it lives in
#: the master's memory, which a soak's history must not fill) and says so; its final figures are
#: then the post-run analysis's (summary.json), which judges everything.
MAX_ROWS = 2_000_000
#: Locust's request type of the failures the view logs.
REQUEST_TYPE = LIVE_FAILURE_TYPE
#: The exit-code-like number of each outcome, as /metrics gives it (docs/checks.md, "Exit status").
OUTCOME_CODE = {"pass": 0, "fail": 1, "bad input": 2, "unknown": 3, "not applicable": -1}

#: Why a check was not run on a window: neither needed nor fed (see :meth:`LiveView.relevant`).
NOT_LIVE = "not judged live: no running user class needs it and no row so far is one of its own"
#: The operations every coherence check reads: their presence says nothing of one check in particular.
COMMON_OPS = frozenset({"read", "write", "sweep"})

#: Per check: (what it counted, the figure of its denominator, its headline figures for the tab).
SHOWN: dict[str, tuple[str, tuple[str, ...]]] = {
    "stale_read": ("reads_checked", ("stale", "stale_after_unconfirmed", "age_max_us")),
    "future_read": ("reads_checked", ("future", "negative")),
    "monotonic_read": ("reads_checked", ("regressions", "max_regression")),
    "ws_delivery": ("expected", ("delivered", "missing", "latency_p99_us", "duplicates")),
    "tier_staleness": ("tiers_seen", ("stale_judged",)),
    "counter": ("reads_checked", ("lost_updates", "above_upper_bound", "max_shortfall")),
    "tx_atomicity": ("reads", ("nonzero_sums", "max_abs_sum")),
    "lock_safety": ("acquisitions_ok", ("overlaps", "stale_token_accepts")),
    "stampede": ("epochs", ("max_loads_per_epoch", "multi_load_epochs", "db_loads")),
}

#: The one line of each check's Locust failure (grouped by it in the Failures tab).
FAILURE_LINE = {
    "stale_read": "a read returned a version older than a write that had completed before it began",
    "future_read": "a read returned a version no write could have made yet",
    "monotonic_read": "a process read a key's version below one it had already seen",
    "ws_delivery": "a listener never received a committed change",
    "tier_staleness": "a cache tier served a version older than a completed write",
    "counter": "a counter read fell outside its bounds (a lost or phantom increment)",
    "tx_atomicity": "a transaction's reads did not sum to zero",
    "lock_safety": "two holders of one lock overlapped, or a stale fencing token was accepted",
    "stampede": "more than one recomputation of a key in one epoch under the lock guard",
    "divergence": "a key's cached version differs from the database's at the sweep",
}


@dataclass
class Snapshot:
    """What the view last judged; :meth:`to_json` is the ``/coherence`` answer."""

    state: str = "idle"
    run_id: str | None = None
    run_dir: str | None = None
    updated_ns: int = 0
    watermark_ns: int | None = None
    rows_seen: int = 0
    rows_judged: int = 0
    analysis_s: float = 0.0
    tolerance_ns: int = 0
    verdict: str = "unknown"
    verdict_reason: str = "no run yet"
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Per node that shipped users' rows: its newest row (ns), and whether it sent its final count.
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        lag = None
        if self.watermark_ns is not None and self.state == "running":
            lag = round(max(self.updated_ns - self.watermark_ns, 0) / 1e9, 3)
        return {
            "state": self.state,
            "run_id": self.run_id,
            "run_dir": self.run_dir,
            "updated_ns": self.updated_ns,
            "watermark_ns": self.watermark_ns,
            "watermark_lag_s": lag,
            "rows_seen": self.rows_seen,
            "rows_judged": self.rows_judged,
            "analysis_s": round(self.analysis_s, 4),
            "tolerance_ns": self.tolerance_ns,
            "verdict": self.verdict,
            "verdict_reason": self.verdict_reason,
            "checks": self.checks,
            "nodes": self.nodes,
        }


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return None if isinstance(value, float) and math.isnan(value) else float(value)


def _entry(result: Any, outcome: str, examples: int) -> dict[str, Any]:
    """A check's result as the view keeps it: outcome, counts, figures, the worst examples."""
    d = result.to_dict()
    counted, _shown = SHOWN.get(result.name, ("", ()))
    return {
        "outcome": outcome,
        "judged": result.reason != NOT_LIVE,
        "violations": int(result.violations),
        "checked": d.get(counted),
        "reason": result.reason,
        "figures": {k: v for k, v in d.items() if k not in ("examples", "outcome", "passed", "reason")},
        "examples": d.get("examples", [])[:examples],
    }


def live_outcome(result: Any, needed: Any = ()) -> str:
    """A check's outcome on the rows judged so far, by the registry's own rule for missing rows:
    a violation fails only if no row still on its way could explain it (``Check.unexplained``).
    A skipped check is unknown when the run needs it (``needed``), not applicable otherwise."""
    from analysis.registry import BY_NAME  # noqa: PLC0415

    if result.skipped:
        return "unknown" if result.name in needed else "not applicable"
    if result.passed:
        return "pass"
    return "fail" if BY_NAME[result.name].unexplained(result) > 0 else "unknown"


class LiveView:
    """One master's live view: rows in, judgements out. Made by :func:`wire` on the master."""

    def __init__(self, environment: Any) -> None:
        self.environment = environment
        self.snapshot = Snapshot()
        self.batches: list[Any] = []
        self.rows = 0
        #: Per node still running: the newest t_complete of its users' rows (ns).
        self.newest: dict[str, int] = {}
        self.finished: set[str] = set()
        self.uncertainty: dict[str, int] = {}
        self.expected: set[str] = set()
        self.options: Any = None
        self.run_dir: Path | None = None
        self.greenlet: Any = None
        #: Violations already logged as Locust failures, per check (never taken back).
        self.logged: dict[str, int] = {}
        self.dirty = False
        self.started = 0.0
        #: Until when (monotonic) someone is watching: set by every request for the figures.
        self.watched_until = 0.0
        #: The operations (``f``) seen so far, and whether a read named a cache tier (``hit:<t>``).
        self.ops: set[str] = set()
        self.tiered = False

    # Events ------------------------------------------------------------------------------------
    def on_run_started(self, run_dir: Path, options: Any, expected_nodes: Any = (), **_kw: Any) -> None:
        self.stop()
        self.batches = []
        self.rows = 0
        self.newest = {}
        self.finished = set()
        self.uncertainty = {}
        self.expected = set(expected_nodes or ())
        self.logged = {}
        self.ops = set()
        self.tiered = False
        self.started = time.monotonic()
        self.run_dir = Path(run_dir)
        self.options = options
        self.snapshot = Snapshot(
            state="running",
            run_id=self.run_dir.name,
            run_dir=str(self.run_dir),
            updated_ns=time.time_ns(),
            verdict="unknown",
            verdict_reason="no row judged yet",
        )
        self.greenlet = gevent.spawn(self._loop)

    def on_rows(self, node: str, batch: Any, clock_uncertainty_ns: int = 0, **_kw: Any) -> None:
        from analysis.load import CATEGORICAL  # noqa: PLC0415

        self.rows += batch.num_rows
        if self.rows > MAX_ROWS:
            self.batches = []
        else:
            # Strings as dictionaries once, as they arrive: each judgement then builds its frame
            # from them at a third of the cost of encoding every row again.
            columns = [
                pc.dictionary_encode(column) if name in CATEGORICAL else column
                for name, column in zip(batch.schema.names, batch.columns, strict=True)
            ]
            self.batches.append(pa.RecordBatch.from_arrays(columns, names=batch.schema.names))
        # As the analysis takes it from run.json: the worst node's uncertainty is the tolerance.
        self.uncertainty[node] = int(clock_uncertainty_ns)
        self.dirty = True

        self.ops.update(str(f) for f in pc.unique(batch.column("f")).to_pylist() if f is not None)
        if not self.tiered:
            sources = pc.unique(batch.column("source")).to_pylist()
            self.tiered = any(isinstance(s, str) and s.startswith("hit:") for s in sources)

        # The master's own rows (process 0: initial versions, stats, sweep) say nothing of how far
        # a node's users have shipped.
        users = batch.filter(pc.not_equal(batch.column("process"), 0))
        if users.num_rows:
            newest = int(pc.max(users.column("t_complete")).as_py())
            if newest > self.newest.get(node, 0):
                self.newest[node] = newest

    def on_node_finished(self, node: str, **_kw: Any) -> None:
        self.finished.add(node)
        self.dirty = True

    def on_run_finished(self, run_dir: Path, options: Any, **_kw: Any) -> None:
        """The run's rows are all in: judge them as the post-run analysis does (the verdict of record)."""
        self.stop()
        try:
            self.judge_final(Path(run_dir))
        except Exception as e:  # the view must never break the run's end
            log.error("cachestorm: the live view could not judge the finished run: %s", e)
            self.snapshot.state = "finished"
            self.snapshot.verdict = "unknown"
            self.snapshot.verdict_reason = f"the live view failed: {e}"

    def stop(self) -> None:
        if self.greenlet is not None:
            self.greenlet.kill(block=True)
            self.greenlet = None

    # Judging -------------------------------------------------------------------------------------
    def node_table(self) -> dict[str, dict[str, Any]]:
        return {n: {"newest_ns": t, "finished": n in self.finished} for n, t in sorted(self.newest.items())}

    def watermark(self) -> int | None:
        """Rows completed at or before this (ns) have all arrived; None: not known yet."""
        running = {n: t for n, t in self.newest.items() if n not in self.finished}
        waiting = self.expected - set(self.newest) - self.finished
        if waiting and time.monotonic() - self.started < FIRST_ROWS_GRACE_S:
            return None  # an expected node has shipped nothing: its first rows may be older than any
        if not running:
            # Every node that shipped is done (or none shipped): every row is in.
            return max(self.newest.values(), default=None)
        return min(running.values()) - int(SETTLE_S * 1e9)

    def watched(self) -> None:
        """Someone asked for the figures: judge every :data:`TICK_S` for a while."""
        self.watched_until = time.monotonic() + WATCHED_S

    def relevant(self, name: str, needed: Any) -> bool:
        """Whether to run a check on this window: the running user classes need it, or the rows
        hold one of the operations only it reads (for ``tier_staleness``: a target naming its
        tiers, or a tab's ``ui_read``). Otherwise it would judge nothing but pay its fixed cost."""
        from analysis.registry import BY_NAME  # noqa: PLC0415

        if name in needed:
            return True
        if name == "tier_staleness":
            return self.tiered or "ui_read" in self.ops
        return bool((set(BY_NAME[name].reads) - COMMON_OPS) & self.ops)

    def classes(self) -> dict[str, Any]:
        """The part of run.json that says which user classes run, for which checks are needed."""
        classes = self.environment.user_classes or []
        bases = {b.__name__ for u in classes for b in u.__mro__[1:]} - {"User", "object"}
        return {
            "locust": {"user_classes": sorted(u.__name__ for u in classes), "user_class_bases": sorted(bases)}
        }

    def _loop(self) -> None:
        last, pause = 0.0, 0.0
        while True:
            gevent.sleep(TICK_S)
            now = time.monotonic()
            every = TICK_S if now < self.watched_until else IDLE_TICK_S
            if not self.dirty or now < last + max(every, pause):
                continue
            self.dirty = False
            started = time.perf_counter()
            try:
                self.judge_window()
            except Exception as e:
                log.error("cachestorm: the live view could not judge the rows so far: %s", e)
            pause = PAUSE_FACTOR * (time.perf_counter() - started)
            last = time.monotonic()

    def frame(self, upto_ns: int | None) -> Any:
        """The rows kept so far (those completed at or before ``upto_ns``) as the analysis's frame."""
        from analysis.load import frame_from_tables  # noqa: PLC0415

        if not self.batches:
            from analysis.load import empty_history  # noqa: PLC0415

            return empty_history()
        table = pa.Table.from_batches(self.batches).unify_dictionaries()
        if upto_ns is not None:
            table = table.filter(pc.less_equal(table.column("t_complete"), upto_ns))
        if table.num_rows == 0:
            from analysis.load import empty_history  # noqa: PLC0415

            return empty_history()
        return frame_from_tables([table], unify=False)

    def judge_window(self) -> None:
        from analysis.errors import InputError  # noqa: PLC0415
        from analysis.kernels import sharing  # noqa: PLC0415
        from analysis.options import Options  # noqa: PLC0415
        from analysis.outcomes import needed_checks  # noqa: PLC0415
        from analysis.registry import BY_NAME, Context  # noqa: PLC0415
        from analysis.validate import check_versions  # noqa: PLC0415
        from analysis.verdict import CheckResult  # noqa: PLC0415

        snap = self.snapshot
        t0 = time.perf_counter()
        if self.rows > MAX_ROWS:
            snap.verdict, snap.verdict_reason = (
                "unknown",
                f"over {MAX_ROWS} rows: the live view stopped judging; the analysis at the end judges them",
            )
            snap.updated_ns = time.time_ns()
            return
        mark = self.watermark()
        if mark is None:
            snap.updated_ns = time.time_ns()
            snap.rows_seen = self.rows
            snap.verdict_reason = "waiting for every node's first rows"
            return
        history = self.frame(mark)
        options = Options.resolve({"clock_uncertainty_ns": max(self.uncertainty.values(), default=0)})
        try:
            # Versions that repeat or go back are the target's fault, not stale reads to count.
            check_versions(history, options.tolerance_ns)
        except InputError as e:
            snap.verdict, snap.verdict_reason = "bad input", str(e)
            snap.rows_seen, snap.updated_ns = self.rows, time.time_ns()
            return
        needed = needed_checks(self.classes())
        checks: dict[str, dict[str, Any]] = {}
        with sharing(history) as h:
            context = Context(h, None, options, len(h))
            for name in LIVE_CHECKS:
                if self.relevant(name, needed):
                    result = BY_NAME[name].call(context)
                else:
                    result = CheckResult.skip(name, NOT_LIVE)
                checks[name] = _entry(result, live_outcome(result, needed), options.examples)
        snap.checks = checks
        snap.nodes = self.node_table()
        snap.watermark_ns = mark
        snap.rows_seen = self.rows
        snap.rows_judged = len(history)
        snap.tolerance_ns = options.tolerance_ns
        snap.analysis_s = time.perf_counter() - t0
        snap.updated_ns = time.time_ns()
        failed = [n for n, c in checks.items() if c["outcome"] == "fail"]
        if failed:
            snap.verdict = "fail"
            snap.verdict_reason = f"so far: violations of {', '.join(failed)}"
        else:
            snap.verdict = "unknown"
            snap.verdict_reason = (
                "so far no violation no later row could explain; the run is not over "
                "(rows past the watermark and the sweep are judged at its end)"
            )
        self.log_failures({n: c["violations"] for n, c in checks.items() if c["outcome"] == "fail"})

    def judge_final(self, run_dir: Path) -> None:
        """The run's final figures: the post-run analysis's own (summary.json, written by the
        analysis at the run's end, which runs before this), else the checks on the rows kept."""
        summary_file = run_dir / "summary.json"
        if summary_file.is_file():
            self.final_from_summary(json.loads(summary_file.read_text()))
        elif self.rows > MAX_ROWS:
            snap = self.snapshot
            snap.state, snap.verdict = "finished", "unknown"
            snap.verdict_reason = (
                f"over {MAX_ROWS} rows and no analysis at the end (--end-analysis off): "
                f"judge the run with python -m analysis {run_dir}"
            )
            snap.updated_ns = time.time_ns()
        else:
            self.final_from_rows(run_dir)

    def final_from_summary(self, summary: dict[str, Any]) -> None:
        snap = self.snapshot
        shown = (*LIVE_CHECKS, "divergence")
        examples = int(summary.get("options", {}).get("examples") or 5)
        checks = {}
        for name, d in summary.get("checks", {}).items():
            if name not in shown:
                continue
            counted, _headline = SHOWN.get(name, ("", ()))
            checks[name] = {
                "outcome": d.get("outcome", "unknown"),
                "judged": True,
                "violations": int(d.get("violations") or 0),
                "checked": d.get(counted),
                "reason": d.get("reason"),
                "figures": {
                    k: v for k, v in d.items() if k not in ("examples", "outcome", "passed", "reason")
                },
                "examples": list(d.get("examples") or [])[:examples],
            }
        snap.checks = checks
        snap.state = "finished"
        snap.nodes = self.node_table()
        snap.watermark_ns = max(self.newest.values(), default=None)
        snap.rows_seen = self.rows
        snap.rows_judged = int(summary.get("run", {}).get("rows") or self.rows)
        snap.updated_ns = time.time_ns()
        snap.verdict = str(summary.get("verdict", "unknown"))
        named = summary.get("failed") or summary.get("unknown") or []
        snap.verdict_reason = "the run's analysis: " + (", ".join(named) or "every check passed")
        self.log_failures({n: c["violations"] for n, c in checks.items() if c["outcome"] == "fail"})

    def final_from_rows(self, run_dir: Path) -> None:
        """No analysis ran at the end: judge the run as it would, from what the run wrote and with
        the same refusals (a broken contract, a stopped run, versions that repeat or go back),
        never from the rows in memory alone."""
        from analysis.checks import run_checks  # noqa: PLC0415
        from analysis.errors import InputError  # noqa: PLC0415
        from analysis.load import load_results  # noqa: PLC0415

        t0 = time.perf_counter()
        snap = self.snapshot
        try:
            inputs = load_results(run_dir)
        except InputError as e:
            snap.state, snap.verdict, snap.verdict_reason = "finished", "bad input", str(e)
            snap.updated_ns = time.time_ns()
            return
        history = inputs.history if inputs.history is not None else self.frame(None)
        verdict = run_checks(history, inputs.run)
        shown = (*LIVE_CHECKS, "divergence")
        snap.checks = {
            r.name: _entry(r, r.outcome, verdict.options.get("examples") or 5)
            for r in verdict.checks
            if r.name in shown
        }
        snap.state = "finished"
        snap.nodes = self.node_table()
        snap.watermark_ns = max(self.newest.values(), default=None)
        snap.rows_seen = self.rows
        snap.rows_judged = len(history)
        snap.tolerance_ns = int(verdict.options.get("tolerance_ns") or 0)
        snap.analysis_s = time.perf_counter() - t0
        snap.updated_ns = time.time_ns()
        snap.verdict = verdict.outcome
        snap.verdict_reason = "every row, judged by the live view (no thresholds): " + (
            ", ".join(verdict.failed)
            if verdict.failed
            else ", ".join(verdict.unknown) or "every check passed"
        )
        self.log_failures(
            {r.name: int(r.violations) for r in verdict.checks if r.outcome == "fail" and r.name in shown}
        )

    def log_failures(self, violations: dict[str, int]) -> None:
        """Log each new violation as a Locust failure ``COHERENCE <check>``, on this node only: the
        master's own statistics, which the workers' reports add to and never replace."""
        fire = self.environment.events.request.fire
        for name, count in violations.items():
            new = count - self.logged.get(name, 0)
            if new <= 0:
                continue
            self.logged[name] = count
            error = CoherenceViolation(f"{name}: {FAILURE_LINE.get(name, 'a violation')}")
            for _ in range(new):
                fire(
                    request_type=REQUEST_TYPE,
                    name=name,
                    response_time=0,
                    response_length=0,
                    exception=error,
                    context={},
                )


class CoherenceViolation(Exception):
    """The exception of a ``COHERENCE`` failure: one line per check, so that the Failures tab counts
    a check's violations as occurrences of one error."""


# Web UI ---------------------------------------------------------------------------------------------
TAB = {"title": "Coherence", "key": "coherence"}
TABLE = {
    "key": "coherence",
    "structure": [
        {"key": "check", "title": "Check"},
        {"key": "outcome", "title": "Outcome"},
        {"key": "violations", "title": "Violations"},
        {"key": "checked", "title": "Checked"},
        {"key": "figures", "title": "Figures"},
        {"key": "example", "title": "Worst example"},
    ],
}


def _short(value: Any, name: str = "") -> str:
    """A figure as the report shows it (analysis/display.py): durations in µs or ms by the name's
    unit suffix, never in scientific notation."""
    if _number(value) is None:
        return "-" if value is None else str(value)
    return display.figure(name, value)


def _named(name: str, value: Any) -> str:
    return f"{display.label(name)} {_short(value, name)}"


def _example_text(example: dict[str, Any]) -> str:
    keep = ("tier", "key", "process", "version", "age_us", "previously_seen", "violation")
    parts = [f"{display.label(k)}={_short(example[k], k)}" for k in keep if k in example]
    missed = example.get("missed_write")
    if isinstance(missed, dict):
        parts.append(f"missed v{missed.get('version')}")
    return " ".join(parts)


def table_rows(snapshot: Snapshot) -> list[dict[str, str]]:
    """The Coherence tab's rows: the verdict so far, then one per check (plus one per cache tier)."""
    s = snapshot.to_json()
    lag = s["watermark_lag_s"]
    rows = [
        {
            "check": "verdict" + (" so far" if s["state"] == "running" else ""),
            "outcome": s["verdict"].upper(),
            "violations": str(sum(c["violations"] for c in s["checks"].values())),
            "checked": f"{s['rows_judged']} of {s['rows_seen']} rows",
            "figures": s["verdict_reason"] + ("" if lag is None else f" (judged up to {lag:.1f} s ago)"),
            "example": f"run {s['run_id']}" if s["run_id"] else "",
        }
    ]
    for name, c in s["checks"].items():
        _counted, headline = SHOWN.get(name, ("", ()))
        figures = c["figures"]
        text = ", ".join(_named(k, figures.get(k)) for k in headline if k in figures)
        rows.append(
            {
                "check": name,
                "outcome": c["outcome"].upper(),
                "violations": str(c["violations"]),
                "checked": _short(c["checked"]),
                "figures": text or (c["reason"] or ""),
                # A check that found nothing may still list rows it reports on: not offenders.
                "example": _example_text(c["examples"][0]) if c["examples"] and c["violations"] else "",
            }
        )
        if name == "tier_staleness":
            for tier, t in (figures.get("tiers") or {}).items():
                rows.append(
                    {
                        "check": f"  tier {tier}",
                        "outcome": "",
                        # Only the tiers a target names are judged here (the reference cache's
                        # hits and misses are stale_read's), so the count is a figure, not a verdict.
                        "violations": "",
                        "checked": _short(t.get("reads")),
                        "figures": ", ".join(_named(k, t.get(k)) for k in ("stale", "age_max_us")),
                        "example": "",
                    }
                )
    return rows


def metrics_text(snapshot: Snapshot) -> tuple[bytes, str]:
    """``/metrics``: the snapshot in Prometheus's text format, and its content type."""
    from prometheus_client import CollectorRegistry, generate_latest  # noqa: PLC0415
    from prometheus_client.exposition import CONTENT_TYPE_LATEST  # noqa: PLC0415

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SnapshotCollector(snapshot))
    return generate_latest(registry), CONTENT_TYPE_LATEST


class _SnapshotCollector:
    """The snapshot's figures as Prometheus metric families (docs/dashboards.md lists them)."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily  # noqa: PLC0415

        s = self.snapshot.to_json()
        running = GaugeMetricFamily("cachestorm_live_running", "1 while a run is being judged live")
        running.add_metric([], 1.0 if s["state"] == "running" else 0.0)
        verdict = GaugeMetricFamily(
            "cachestorm_live_verdict",
            "Verdict so far: 0 pass, 1 fail, 3 unknown (the post-run analysis is the verdict of record)",
        )
        verdict.add_metric([], float(OUTCOME_CODE.get(s["verdict"], 3)))
        rows = GaugeMetricFamily("cachestorm_live_rows", "History rows", labels=["kind"])
        rows.add_metric(["seen"], float(s["rows_seen"]))
        rows.add_metric(["judged"], float(s["rows_judged"]))
        lag = GaugeMetricFamily(
            "cachestorm_live_watermark_lag_seconds", "How far behind now the judged rows end"
        )
        lag.add_metric([], float(s["watermark_lag_s"] or 0.0))
        analysis = GaugeMetricFamily("cachestorm_live_analysis_seconds", "Time of the last judgement")
        analysis.add_metric([], float(s["analysis_s"]))
        outcome = GaugeMetricFamily(
            "cachestorm_live_check_outcome", "Per check: 0 pass, 1 fail, 3 unknown, -1 n/a", labels=["check"]
        )
        violations = GaugeMetricFamily(
            "cachestorm_live_violations", "Violations found so far", labels=["check"]
        )
        checked = GaugeMetricFamily(
            "cachestorm_live_checked",
            "What each check judged (reads, deliveries, epochs...)",
            labels=["check"],
        )
        figure = GaugeMetricFamily(
            "cachestorm_live_figure", "A check's numeric figures", labels=["check", "figure"]
        )
        tier_reads = GaugeMetricFamily("cachestorm_live_tier_reads", "Reads judged per tier", labels=["tier"])
        tier_stale = GaugeMetricFamily("cachestorm_live_tier_stale", "Stale reads per tier", labels=["tier"])
        for name, c in s["checks"].items():
            outcome.add_metric([name], float(OUTCOME_CODE.get(c["outcome"], 3)))
            violations.add_metric([name], float(c["violations"]))
            n = _number(c["checked"])
            if n is not None:
                checked.add_metric([name], n)
            for key, value in c["figures"].items():
                v = _number(value)
                if v is not None and key not in ("violations",):
                    figure.add_metric([name, key], v)
            for tier, t in (c["figures"].get("tiers") or {}).items() if name == "tier_staleness" else ():
                tier_reads.add_metric([tier], float(_number(t.get("reads")) or 0))
                tier_stale.add_metric([tier], float(_number(t.get(t.get("judged", "stale"))) or 0))
        yield from (running, verdict, rows, lag, analysis, outcome, violations, checked, figure)
        yield from (tier_reads, tier_stale)


def _mount(environment: Any, view: LiveView) -> None:
    """The tab, ``/coherence`` and ``/metrics`` on the web UI, when there is one."""
    web_ui = environment.web_ui
    if web_ui is None:
        return
    from flask import Response, request  # noqa: PLC0415

    web_ui.template_args["extendedTabs"] = [*web_ui.template_args.get("extendedTabs", []), TAB]
    web_ui.template_args["extendedTables"] = [*web_ui.template_args.get("extendedTables", []), TABLE]
    app = web_ui.app
    _routes(app, view, base_path(web_ui), web_ui.auth_required_if_enabled)

    @app.after_request
    def extend_stats(response: Response) -> Response:
        # Under --web-base-path the UI's own routes carry the prefix.
        if not request.path.endswith("/stats/requests") or response.status_code != 200:
            return response
        data = response.get_json(silent=True)
        if not isinstance(data, dict):
            return response
        view.watched()
        extended = [e for e in data.get("extended_stats") or [] if e.get("key") != "coherence"]
        extended.append({"key": "coherence", "data": table_rows(view.snapshot)})
        data["extended_stats"] = extended
        response.set_data(json.dumps(data))
        return response


def _routes(app: Any, view: LiveView, base: str = "", auth: Any = lambda fn: fn) -> None:
    """``/coherence`` and ``/metrics`` on a Flask ``app``, under ``base``, behind ``auth``."""
    from flask import Response  # noqa: PLC0415

    @app.route(f"{base}/coherence")
    @auth
    def coherence() -> Response:
        view.watched()
        return Response(json.dumps(view.snapshot.to_json(), default=str), mimetype="application/json")

    @app.route(f"{base}/metrics")
    @auth
    def metrics() -> Response:
        view.watched()
        body, content_type = metrics_text(view.snapshot)
        return Response(body, content_type=content_type)


class BindError(ValueError):
    """``--live-bind`` names no address this process can listen on; the message says why."""


def parse_bind(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) as ``(host, port)``; port 0 takes a free one.

    >>> parse_bind("127.0.0.1:9646")
    ('127.0.0.1', 9646)
    >>> parse_bind("[::1]:0")
    ('::1', 0)
    """
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise BindError(f"--live-bind {text!r}: not HOST:PORT; give e.g. 127.0.0.1:9646 (port 0: a free one)")
    return host, int(port)


def serve(view: LiveView, bind: str) -> Any:
    """Serve ``/coherence`` and ``/metrics`` at ``bind`` (``HOST:PORT``), without the web UI: for
    headless runs, whose master has none. Returns the started server (gevent's WSGIServer);
    raises :class:`BindError` when it cannot listen there."""
    from flask import Flask  # noqa: PLC0415
    from gevent.pywsgi import WSGIServer  # noqa: PLC0415

    host, port = parse_bind(bind)
    app = Flask("cachestorm-live")
    _routes(app, view)
    server = WSGIServer((host, port), app, log=None, error_log=log)
    try:
        server.start()
    except OSError as e:
        reason = e.strerror or str(e)
        raise BindError(f"--live-bind {bind}: cannot listen there ({reason}); pick a free port") from None
    shown = f"[{host}]" if ":" in host else host
    log.info("cachestorm: live figures at http://%s:%d/metrics and /coherence", shown, server.server_port)
    return server


def add_arguments(parser: Any) -> None:
    # Locust's UI flags work on the parser itself, not on groups.
    parser.add_argument(
        "--live",
        choices=("on", "off"),
        default="on",
        env_var="CACHESTORM_LIVE",
        include_in_web_ui=False,
        help="judge coherence while the run goes: the web UI's Coherence tab, /coherence, /metrics and "
        "COHERENCE failures (default on; off only to measure its cost)",
    )
    parser.add_argument(
        "--live-bind",
        default="",
        metavar="HOST:PORT",
        env_var="CACHESTORM_LIVE_BIND",
        include_in_web_ui=False,
        help="also serve /coherence and /metrics at HOST:PORT, with or without the web UI (a headless "
        "run's master has none), e.g. 127.0.0.1:9646; port 0 takes a free one, named in the log",
    )


def setup(environment: Any, **_kw: Any) -> LiveView | None:
    """On the master (or local runner) with ``--live on``: make the view and hook it to the run."""
    from locust.runners import WorkerRunner  # noqa: PLC0415

    parsed = environment.parsed_options
    if isinstance(environment.runner, WorkerRunner) or environment.runner is None:
        return None
    if parsed is not None and getattr(parsed, "live", "on") == "off":
        if getattr(parsed, "live_bind", ""):
            fatal("--live-bind needs the live view: drop --live off, or --live-bind")
        return None
    # Loaded now, at start-up, rather than at the first judgement: importing pandas and the checks
    # takes a second or more of CPU, which in the first seconds of a run the workers would feel.
    import analysis.checks  # noqa: F401, PLC0415

    view = LiveView(environment)

    # Hooked to this environment's own runs only (tests run several environments in one process).
    def mine(fn: Any) -> Any:
        def listener(environment: Any, **kw: Any) -> None:
            if environment is view.environment:
                fn(**kw)

        return listener

    events.run_started.add_listener(mine(view.on_run_started))
    events.rows_collected.add_listener(mine(view.on_rows))
    events.node_finished.add_listener(mine(view.on_node_finished))
    events.run_finished.add_listener(mine(view.on_run_finished))
    _mount(environment, view)
    if bind := getattr(parsed, "live_bind", ""):
        try:
            server = serve(view, bind)
        except BindError as e:
            fatal(str(e))
        environment.events.quitting.add_listener(lambda **_kw: server.stop(timeout=1))
    environment.cachestorm_live = view
    return view


_wired = False


def wire() -> None:
    """Add ``--live`` and make the view at Locust's ``init``; call it once from a locustfile."""
    global _wired
    if _wired:
        return
    _wired = True
    locust_events.init_command_line_parser.add_listener(add_arguments)
    locust_events.init.add_listener(setup)
