"""The op history: recording rows on every node and collecting them on the master.

Data flows one way. Users record rows into their node's :class:`Recorder` (an in-memory list, the
cheapest thing the hot path can do). A :class:`Shipper` greenlet takes the rows every second and
sends them as a numbered batch over Locust's messages (``cachestorm_history``). On a single-process
run Locust delivers the message in-process, so there is one path for every deployment. The master's
:class:`Collector` writes ``run.started.json`` when the run starts, checks each node's sequence
numbers, writes Parquet parts under ``RESULTS/history/`` every few seconds, and finally
``run.json``. The schema is documented in docs/history.md.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

SCHEMA_VERSION = 2

# Column order of a recorded row; ``node`` is added by the collector, one value per batch.
ROW_COLUMNS = (
    "process",
    "f",
    "key",
    "status",
    "t_invoke",
    "t_complete",
    "version",
    "value",
    "source",
    "t_intended",
)

SCHEMA = pa.schema(
    [
        ("process", pa.int64()),
        ("node", pa.string()),
        ("f", pa.string()),
        ("key", pa.string()),
        ("status", pa.string()),
        ("t_invoke", pa.int64()),
        ("t_complete", pa.int64()),
        ("version", pa.int64()),
        ("value", pa.int64()),
        ("source", pa.string()),
        ("t_intended", pa.int64()),
    ]
)

MSG_BATCH = "cachestorm_history"
MSG_END = "cachestorm_history_end"

# Rows held by the collector before it writes a part: big enough for efficient Parquet row groups,
# small enough that memory stays flat on long runs.
PART_ROWS = 250_000
# Seconds after which pending rows are written as a part even if fewer than PART_ROWS: what a
# SIGKILL of the master loses, beside the rows still on their way from the nodes.
FLUSH_INTERVAL_S = 2.0

RUN_FILE = "run.json"
STARTED_FILE = "run.started.json"


def _discard(_row: tuple[Any, ...]) -> None:
    pass


class Recorder:
    """A node's buffer of history rows.

    Example::

        t0 = time.time_ns()
        version = ...  # do the operation
        recorder.record(process, "read", key, "ok", t0, time.time_ns(), version, None, "hit")

    ``t_intended`` is given only by operations that run on a schedule (open-model runs, probes).

    On the hottest paths, ``recorder.append(row)`` takes the row as a tuple in :data:`ROW_COLUMNS`
    order and saves a call: it is the buffer's own ``list.append`` (or a no-op when disabled).
    """

    __slots__ = ("_enabled", "append", "rows")

    def __init__(self, enabled: bool = True) -> None:
        self.rows: list[tuple[Any, ...]] = []
        self.enabled = enabled

    @property
    def enabled(self) -> bool:
        return self._enabled

    @enabled.setter
    def enabled(self, on: bool) -> None:
        self._enabled = on
        self.append = self.rows.append if on else _discard

    def record(
        self,
        process: int,
        f: str,
        key: str | None,
        status: str,
        t_invoke: int,
        t_complete: int,
        version: int | None = None,
        value: int | None = None,
        source: str | None = None,
        t_intended: int | None = None,
    ) -> None:
        self.append((process, f, key, status, t_invoke, t_complete, version, value, source, t_intended))

    def take(self) -> list[tuple[Any, ...]]:
        """Hand over every row recorded so far; the buffer (and ``append``) stay the same list."""
        rows = self.rows.copy()
        self.rows.clear()
        return rows


@dataclass
class Shipper:
    """Sends a node's rows to the collector as numbered batches.

    ``send`` is ``runner.send_message`` (to the master, or in-process on a local runner).
    ``clock_offset_ns`` is added to every timestamp on the way out, which puts a worker's rows on
    the master's clock without touching the hot path. It is the newest estimate when the batch
    leaves (cachestorm.clock), so a worker whose clock drifts has its rows follow the drift a
    round at a time. Until ``clock_ready`` the rows wait on the node: shipped with no estimate,
    they would carry the worker's raw clock.
    """

    recorder: Recorder
    send: Callable[[str, Any], None]
    node: str
    run_id: str
    clock_offset_ns: int = 0
    clock_uncertainty_ns: int = 0
    clock_ready: bool = True
    #: How the offset was estimated, for run.json (None: the node's clock is the master's own).
    clock_summary: dict[str, Any] | None = None
    # Time zero of this node's arrival schedule in an open-model run (0 otherwise), on the node's clock.
    schedule_started_ns: int = 0
    # This process's CPU use (percent of one core), sampled once per ship: see cpu_summary().
    cpu_samples: list[float] = field(default_factory=list)
    # The host's CPU use (percent of all its cores) at the same moments.
    host_cpu_samples: list[float] = field(default_factory=list)
    cpu_interval_s: float = 1.0
    batches: int = 0
    rows: int = 0

    def ship(self) -> int:
        """Send what the recorder holds, if anything. Returns the number of rows sent."""
        if not self.clock_ready:
            return 0
        rows = self.recorder.take()
        if not rows:
            return 0
        columns = [list(c) for c in zip(*rows, strict=True)]
        if self.clock_offset_ns:
            off = self.clock_offset_ns
            columns[4] = [t + off for t in columns[4]]
            columns[5] = [t + off for t in columns[5]]
            columns[9] = [None if t is None else t + off for t in columns[9]]
        self.batches += 1
        self.rows += len(rows)
        batch = {"run": self.run_id, "node": self.node, "seq": self.batches, "columns": columns}
        # The live view's tolerance while the run goes (the final count carries the last figure).
        batch["clock_uncertainty_ns"] = self.clock_uncertainty_ns
        self.send(MSG_BATCH, batch)
        return len(rows)

    def end(self) -> None:
        """Ship the last rows, then tell the collector how many batches and rows this node sent.

        Rows still waiting for a first clock estimate go as they are: run.json then says the node
        had no clock round (``clock.rounds`` 0).
        """
        self.clock_ready = True
        self.ship()
        self.send(
            MSG_END,
            {
                "run": self.run_id,
                "node": self.node,
                "batches": self.batches,
                "rows": self.rows,
                "clock_offset_ns": self.clock_offset_ns,
                "clock_uncertainty_ns": self.clock_uncertainty_ns,
                "clock": self.clock_summary,
                "schedule_started_ns": (
                    self.schedule_started_ns + self.clock_offset_ns if self.schedule_started_ns else None
                ),
                "cpu_percent": cpu_summary(self.cpu_samples, self.cpu_interval_s),
                "host_cpu_percent": cpu_summary(self.host_cpu_samples, self.cpu_interval_s),
            },
        )


BUSY_CPU_PERCENT = 90.0
"""A Locust process above this share of one core is busy: Locust warns at the same level, since its
users' greenlets then wait for the loop and the latencies it measures include that wait. A host
above this share of all its cores is saturated: its processes, the generator's and any service's
on it, wait for a CPU."""


def cpu_summary(samples: Sequence[float], interval_s: float = 1.0) -> dict[str, Any] | None:
    """A node's CPU samples, one per ``interval_s``, as run.json keeps them: its process's (percent
    of one core) or its host's (percent of all its cores).

    Example::

        cpu_summary([35.0, 97.0, 99.5])
        # {"interval_s": 1.0, "samples": 3, "median": 97.0, "max": 99.5, "busy_samples": 2, ...}
    """
    if not samples:
        return None
    ordered = sorted(samples)
    return {
        "interval_s": interval_s,
        "samples": len(ordered),
        "median": round(ordered[len(ordered) // 2], 1),
        "max": round(ordered[-1], 1),
        "busy_percent": BUSY_CPU_PERCENT,
        "busy_samples": sum(1 for v in ordered if v >= BUSY_CPU_PERCENT),
    }


@dataclass
class NodeTally:
    seqs: set[int] = field(default_factory=set)
    rows: int = 0
    # The newest t_complete among the node's rows: how far its history reached.
    last_row_ns: int | None = None
    # Why the master stopped waiting for this node's final count (None: it did not).
    lost: str | None = None
    final_batches: int | None = None
    final_rows: int | None = None
    clock_offset_ns: int = 0
    clock_uncertainty_ns: int = 0
    clock: dict[str, Any] | None = None
    schedule_started_ns: int | None = None
    cpu_percent: dict[str, Any] | None = None
    host_cpu_percent: dict[str, Any] | None = None

    def missing(self) -> list[int]:
        top = self.final_batches if self.final_batches is not None else max(self.seqs, default=0)
        return [s for s in range(1, top + 1) if s not in self.seqs]


class Collector:
    """Gathers one run's batches from every node and writes RESULTS/history/ and run.json.

    ``flush_interval_s`` is how old the oldest pending row may get before it is written as a part
    (0: only every PART_ROWS rows, as a measure of what the periodic parts cost).
    """

    def __init__(
        self,
        run_dir: Path,
        run_id: str,
        flush_interval_s: float = FLUSH_INTERVAL_S,
        on_rows: Callable[[str, pa.RecordBatch, int], None] | None = None,
        on_end: Callable[[str], None] | None = None,
    ) -> None:
        self.run_dir = run_dir
        # Told of every batch of rows taken in, with its node's clock uncertainty (ns), and of every
        # node's final count (the live view).
        self.on_rows = on_rows
        self.on_end = on_end
        #: Per node, the clock uncertainty its newest batch carried (run.json keeps the final count's).
        self.shipped_uncertainty: dict[str, int] = {}
        self.run_id = run_id
        self.flush_interval_s = flush_interval_s
        self.history_dir = run_dir / "history"
        self.history_dir.mkdir(parents=True, exist_ok=True)
        self.nodes: dict[str, NodeTally] = {}
        self.expected_nodes: set[str] = set()
        self.rejected_batches = 0
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._parts = 0
        self._oldest_pending = 0.0
        self.rows_written = 0
        self.finalized = False

    def start(self, meta: dict[str, Any]) -> None:
        """Write ``run.started.json``: the run exists, and until ``run.json`` appears it has not finished."""
        started = {
            "schema_version": SCHEMA_VERSION,
            "run_id": self.run_id,
            "state": "running",
            **meta,
            "expected_nodes": sorted(self.expected_nodes),
            "part_rows": PART_ROWS,
            "flush_interval_s": self.flush_interval_s,
            "written_ns": time.time_ns(),
        }
        write_json_atomic(self.run_dir / STARTED_FILE, started)

    # Message handlers -------------------------------------------------------------------------
    def add_batch(self, data: dict[str, Any]) -> None:
        if data.get("run") != self.run_id or self.finalized:
            # A straggler from an earlier run, or after this run was closed: counting it would mix runs.
            self.rejected_batches += 1
            return
        tally = self.nodes.setdefault(data["node"], NodeTally())
        seq = int(data["seq"])
        if seq in tally.seqs:
            return
        tally.seqs.add(seq)
        self.shipped_uncertainty[data["node"]] = int(data.get("clock_uncertainty_ns") or 0)
        newest = self.add_rows(data["node"], data["columns"])
        tally.rows += len(data["columns"][0])
        if newest is not None and (tally.last_row_ns is None or newest > tally.last_row_ns):
            tally.last_row_ns = newest

    def add_end(self, data: dict[str, Any]) -> None:
        if data.get("run") != self.run_id:
            return
        tally = self.nodes.setdefault(data["node"], NodeTally())
        tally.final_batches = int(data["batches"])
        tally.final_rows = int(data["rows"])
        tally.lost = None  # given up on too early: it was slow, not gone
        tally.clock_offset_ns = int(data.get("clock_offset_ns", 0))
        tally.clock_uncertainty_ns = int(data.get("clock_uncertainty_ns", 0))
        clock = data.get("clock")
        tally.clock = clock if isinstance(clock, dict) else None
        started = data.get("schedule_started_ns")
        tally.schedule_started_ns = None if started is None else int(started)
        tally.cpu_percent = data.get("cpu_percent")
        tally.host_cpu_percent = data.get("host_cpu_percent")
        if self.on_end is not None:
            self.on_end(data["node"])

    # Rows ---------------------------------------------------------------------------------------
    def add_rows(self, node: str, columns: Sequence[Sequence[Any]]) -> int | None:
        """Queue rows for the next part. Returns their newest ``t_complete`` (None: no rows)."""
        n = len(columns[0])
        if n == 0:
            return None
        arrays = [pa.array(columns[0], pa.int64()), pa.array([node] * n, pa.string())]
        for name, col in zip(ROW_COLUMNS[1:], columns[1:], strict=True):
            arrays.append(pa.array(col, SCHEMA.field(name).type))
        if not self._pending_rows:
            self._oldest_pending = time.monotonic()
        batch = pa.RecordBatch.from_arrays(arrays, schema=SCHEMA)
        self._pending.append(batch)
        if self.on_rows is not None:
            self.on_rows(node, batch, self.shipped_uncertainty.get(node, 0))
        self._pending_rows += n
        if self._pending_rows >= PART_ROWS:
            self.write_part()
        else:
            self.flush_due()
        newest: int | None = pc.max(arrays[SCHEMA.get_field_index("t_complete")]).as_py()
        return newest

    def flush_due(self) -> None:
        """Write the pending rows if the oldest has waited ``flush_interval_s``. Called on every
        batch, and by the master's ticker for when no batch comes (every node gone)."""
        if (
            self._pending_rows
            and self.flush_interval_s > 0
            and time.monotonic() - self._oldest_pending >= self.flush_interval_s
        ):
            self.write_part()

    def write_part(self) -> None:
        if not self._pending_rows:
            return
        table = pa.Table.from_batches(self._pending, schema=SCHEMA)
        final = self.history_dir / f"part-{self._parts:05d}.parquet"
        tmp = final.with_suffix(".parquet.tmp")
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, final)
        self._parts += 1
        self.rows_written += table.num_rows
        self._pending = []
        self._pending_rows = 0

    # Completion ---------------------------------------------------------------------------------
    def waiting_for(self) -> set[str]:
        """Nodes that were expected, or sent rows, but have not yet sent their final count."""
        return {
            n
            for n in self.expected_nodes | set(self.nodes)
            if self.nodes.get(n, NodeTally()).final_batches is None
        }

    def mark_lost(self, node: str, reason: str) -> None:
        """Stop counting on ``node``'s final count: run.json says how far its history reached."""
        tally = self.nodes.setdefault(node, NodeTally())
        if tally.final_batches is None:
            tally.lost = reason

    def finalize(self, meta: dict[str, Any]) -> dict[str, Any]:
        """Write the last part and run.json. Returns what was written to run.json."""
        self.write_part()
        self.finalized = True
        nodes = {}
        complete = True
        for name in sorted(self.expected_nodes | set(self.nodes)):
            tally = self.nodes.get(name, NodeTally())
            missing = tally.missing()
            reported = tally.final_batches is not None
            if missing or not reported:
                complete = False
            nodes[name] = {
                "batches": len(tally.seqs),
                "rows": tally.rows,
                "last_batch_seq": max(tally.seqs, default=None),
                "last_row_ns": tally.last_row_ns,
                "reported_final_count": reported,
                "lost": tally.lost is not None,
                "lost_reason": tally.lost,
                "missing_batches": missing,
                "missing_rows": (tally.final_rows - tally.rows) if tally.final_rows is not None else None,
                "missing_rows_reason": (
                    None
                    if reported
                    else "the node never sent its final count, so the rows it recorded after its "
                    "last batch cannot be counted"
                ),
                "clock_offset_ns": tally.clock_offset_ns,
                "clock_uncertainty_ns": tally.clock_uncertainty_ns,
                "clock": tally.clock,
                "schedule_started_ns": tally.schedule_started_ns,
                "cpu_percent": tally.cpu_percent,
                "host_cpu_percent": tally.host_cpu_percent,
            }
        run = {
            "schema_version": SCHEMA_VERSION,
            "run_id": self.run_id,
            "state": "finished",
            **meta,
            "clock_uncertainty_ns": max((t.clock_uncertainty_ns for t in self.nodes.values()), default=0),
            "nodes": nodes,
            "lost_nodes": sorted(n for n, v in nodes.items() if v["lost"]),
            "history_complete": complete,
            "rows": self.rows_written,
            "parts": self._parts,
            "written_ns": time.time_ns(),
        }
        write_json_atomic(self.run_dir / RUN_FILE, run)
        return run


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)
