"""Crash safety of the history: what a killed master or a lost worker leaves behind.

The collector's own tests run without Locust. The run tests SIGKILL real Locust processes: the
master of a local run (its history must reach to within a few seconds of the kill, its directory
must say it did not finish) and one worker of a ``--processes 2`` run (the run goes on, ends without
waiting for it, and run.json says how far its history reached).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import psutil
import pyarrow.parquet as pq
import pytest
import redis
from locust.runners import STATE_MISSING, STATE_RUNNING, MasterRunner, WorkerNode, WorkerNodes

from cachestorm import history
from cachestorm.coordinator import TICK_S, Coordinator
from cachestorm.history import MSG_BATCH, MSG_END, STARTED_FILE, Collector, Recorder, Shipper
from cachestorm.node import SHIP_INTERVAL_S
from cachestorm.options import Options
from tests.conftest import ROOT

CONTENTION = "tests/locustfiles/contention.py"
S = 1_000_000_000

# The most a SIGKILL of the master may cost: a node's rows wait up to a ship interval on the node,
# then up to a flush interval (checked every tick) on the master. The last second is slack for a
# loaded machine.
MAX_GAP_S = SHIP_INTERVAL_S + history.FLUSH_INTERVAL_S + TICK_S + 1.0


def wire(collector: Collector) -> Callable[[str, Any], None]:
    def send(kind: str, data: Any) -> None:
        {MSG_BATCH: collector.add_batch, MSG_END: collector.add_end}[kind](data)

    return send


def record_reads(rec: Recorder, n: int, t0: int = 1000) -> None:
    for i in range(n):
        rec.record(1, "read", f"cs:e:{i}", "ok", t0 + i, t0 + 10 + i, 0, None, "hit")


def parts(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "history").glob("*.parquet"))


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


# The collector alone ------------------------------------------------------------------------------


@pytest.mark.parametrize("flush_s", [0.2, 0.0], ids=["periodic", "by-row-count-only"])
def test_pending_rows_are_written_after_the_flush_interval(flush_s: float, tmp_path: Path) -> None:
    c = Collector(tmp_path / "run", "r1", flush_interval_s=flush_s)
    rec = Recorder()
    s = Shipper(rec, wire(c), "local", "r1")
    record_reads(rec, 5)
    s.ship()
    assert parts(c.run_dir) == []  # not yet due, far below PART_ROWS
    deadline = time.monotonic() + 2.0
    while not parts(c.run_dir) and time.monotonic() < deadline:
        c.flush_due()  # what the master's ticker does between batches
        time.sleep(0.02)
    if flush_s:
        assert len(parts(c.run_dir)) == 1 and pq.read_metadata(parts(c.run_dir)[0]).num_rows == 5
        assert not list((c.run_dir / "history").glob("*.tmp"))
    else:
        # The positive control: without the interval, a crash now would lose every row.
        assert parts(c.run_dir) == []


def test_a_started_run_says_so_until_run_json_is_written(tmp_path: Path) -> None:
    c = Collector(tmp_path / "run", "r1")
    c.expected_nodes = {"w1", "w2"}
    c.start({"started_ns": 123, "options": {"keys": 5}})
    started = json.loads((c.run_dir / STARTED_FILE).read_text())
    assert started["state"] == "running" and started["run_id"] == "r1"
    assert started["expected_nodes"] == ["w1", "w2"] and started["options"] == {"keys": 5}
    assert started["flush_interval_s"] == history.FLUSH_INTERVAL_S
    assert not (c.run_dir / history.RUN_FILE).exists()
    run = c.finalize({"started_ns": 123})
    assert run["state"] == "finished"
    assert json.loads((c.run_dir / history.RUN_FILE).read_text())["state"] == "finished"


def test_a_lost_node_is_named_with_how_far_its_history_reached(tmp_path: Path) -> None:
    c = Collector(tmp_path / "run", "r1")
    c.expected_nodes = {"w1", "w2"}
    recs = {n: Recorder() for n in c.expected_nodes}
    ships = {n: Shipper(recs[n], wire(c), n, "r1") for n in c.expected_nodes}
    for t0 in (1000, 5000):
        for n in ("w1", "w2"):
            record_reads(recs[n], 3, t0)
            ships[n].ship()
    record_reads(recs["w1"], 2, 9000)
    ships["w1"].end()
    record_reads(recs["w2"], 4, 9000)  # recorded, never shipped: the node died
    c.mark_lost("w2", "Locust marked the worker missing")
    c.mark_lost("w1", "too early")  # its final count came: not lost
    run = c.finalize({})
    assert run["history_complete"] is False
    assert run["lost_nodes"] == ["w2"]
    w2 = run["nodes"]["w2"]
    assert w2["lost"] is True and w2["lost_reason"] == "Locust marked the worker missing"
    assert (w2["last_batch_seq"], w2["rows"], w2["last_row_ns"]) == (2, 6, 5012)
    assert w2["missing_rows"] is None and "final count" in w2["missing_rows_reason"]
    w1 = run["nodes"]["w1"]
    assert w1["lost"] is False and w1["missing_rows"] == 0 and w1["missing_rows_reason"] is None
    assert w1["last_row_ns"] == 9011


class FakeMaster(MasterRunner):
    """A MasterRunner with workers but no sockets: what Coordinator.drain reads of it."""

    def __init__(self, states: dict[str, str]) -> None:  # no super(): no server, no greenlets
        self.clients = WorkerNodes()
        for node, state in states.items():
            self.clients[node] = WorkerNode(node, state=state)
        self.sent: list[str] = []

    def send_message(self, msg_type: str, data: Any = None, client_id: str | None = None) -> None:
        self.sent.append(msg_type)


@pytest.mark.parametrize("w2_state", [STATE_MISSING, STATE_RUNNING], ids=["missing", "control-alive"])
def test_the_drain_does_not_wait_for_a_worker_locust_marked_missing(w2_state: str, tmp_path: Path) -> None:
    drain_timeout_s = 1.5
    runner = FakeMaster({"w1": STATE_RUNNING, "w2": w2_state})
    options = replace(Options(**dict.fromkeys(Options.__dataclass_fields__)), drain_timeout=drain_timeout_s)
    coordinator = Coordinator(cast(Any, SimpleNamespace(runner=runner)), "master", options)
    c = coordinator.collector = Collector(tmp_path / "run", "r1")
    c.expected_nodes = {"w1", "w2"}
    coordinator.missing_since = {}
    rec = Recorder()
    s = Shipper(rec, wire(c), "w2", "r1")
    record_reads(rec, 3)
    s.ship()  # then w2 dies
    Shipper(Recorder(), wire(c), "w1", "r1").end()
    t0 = time.monotonic()
    coordinator.drain()
    waited = time.monotonic() - t0
    run = c.finalize({})
    assert run["history_complete"] is False
    if w2_state == STATE_MISSING:
        assert waited < drain_timeout_s / 3
        assert run["lost_nodes"] == ["w2"] and run["nodes"]["w2"]["last_batch_seq"] == 1
    else:
        # The positive control: a worker Locust still counts as alive is waited for, to the end.
        assert waited >= drain_timeout_s
        assert run["lost_nodes"] == [] and run["nodes"]["w2"]["reported_final_count"] is False


# Real runs ----------------------------------------------------------------------------------------


@contextmanager
def locust(args: str, results: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A headless Locust run in the background; whatever of it is left is SIGKILLed at the end."""
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "locust", *args.split(), "--results-dir", str(results)],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
    finally:
        leftover = []
        if proc.poll() is None:
            with_children = psutil.Process(proc.pid)
            leftover = [with_children, *with_children.children(recursive=True)]
        for p in leftover:
            with suppress(psutil.NoSuchProcess):
                p.kill()
        proc.wait(timeout=30)


def embedded_redis(log: str) -> str:
    line = next(ln for ln in log.splitlines() if "embedded services:" in ln)
    url = re.search(r"redis://127\.0\.0\.1:\d+/0", line)
    assert url is not None, line
    return url.group(0)


def newest_row_ns(run_dir: Path) -> tuple[int, int | None]:
    """Rows held by the run's parts and their newest ``t_complete``, from the Parquet footers alone."""
    rows, newest = 0, None
    for part in parts(run_dir):
        meta = pq.read_metadata(part)
        rows += meta.num_rows
        col = meta.schema.to_arrow_schema().get_field_index("t_complete")
        for g in range(meta.num_row_groups):
            stats = meta.row_group(g).column(col).statistics
            if stats is not None and stats.has_min_max:
                newest = stats.max if newest is None else max(newest, stats.max)
    return rows, newest


@pytest.mark.integration
@pytest.mark.parametrize("flush_s", ["2", "0"], ids=["periodic-parts", "control-no-periodic-parts"])
def test_a_sigkilled_master_leaves_history_up_to_seconds_before_the_kill(
    flush_s: str, tmp_path: Path
) -> None:
    log = tmp_path / "locust.log"
    args = f"-f {CONTENTION} --headless --only-summary --ramp-users 20 --ramp-time 0 --hold-time 120"
    args += f" --keys 50 --listeners 1 --run-id killed --history-flush-s {flush_s}"
    run_dir = tmp_path / "killed"
    with locust(args, tmp_path, log) as proc:
        wait_for(lambda: "run killed started" in log.read_text(), 90, "the run to start")
        # From the run's first second, the results say where it is and that it has not finished.
        assert (tmp_path / "latest").resolve() == run_dir.resolve()
        started = json.loads((run_dir / STARTED_FILE).read_text())
        assert started["state"] == "running"
        r = redis.Redis.from_url(embedded_redis(log.read_text()))
        try:
            # Mid-run under real load: the users have done a few thousand commands, and the run
            # has gone on for several flush intervals.
            wait_for(
                lambda: (
                    int(r.info("stats")["total_commands_processed"]) > 5000
                    and time.time_ns() - started["started_ns"] > 8 * S
                ),
                60,
                "load",
            )
        finally:
            r.close()
        master = psutil.Process(proc.pid)
        children = master.children(recursive=True)
        assert children, "the embedded services run as the master's children"
        t_kill = time.time_ns()
        master.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        # The embedded services die with it (PR_SET_PDEATHSIG), leaving nothing running.
        _gone, alive = psutil.wait_procs(children, timeout=20)
        assert alive == [], alive
    assert not (run_dir / history.RUN_FILE).exists()
    assert json.loads((run_dir / STARTED_FILE).read_text())["state"] == "running"
    assert (tmp_path / "latest").resolve() == run_dir.resolve()
    assert not list((run_dir / "history").glob("*.tmp"))  # no half-written part ever shows
    rows, newest = newest_row_ns(run_dir)
    gap_s = (t_kill - newest) / S if newest is not None else float("inf")
    span_s = (t_kill - started["started_ns"]) / S
    print(
        f"--history-flush-s {flush_s}: {len(parts(run_dir))} parts, {rows} rows, "
        f"newest row {gap_s:.2f} s before the kill, {span_s:.1f} s into the run"
    )
    if flush_s != "0":
        assert gap_s <= MAX_GAP_S, (gap_s, rows)
        assert rows > 1000
    else:
        # The positive control: the same check fails when parts are only written by row count.
        assert gap_s > MAX_GAP_S, (gap_s, rows)


# Locust 2.47's --processes master, at exit, waitpid()s each forked worker in a loop that logs every
# ChildProcessError for 3 s, then once more from atexit. gevent forgets a dead child's status 60 s
# after it died, once another child exits: a worker lost more than a minute before the end fills
# the log with the same traceback (about 24000 times, 12 MB). It comes after the run is closed.
_WAITPID_NOISE = re.compile(
    r"^(?:\S+ \S+ \S+/ERROR/root: |Exception ignored in atexit callback: .*\n)"
    r"Traceback \(most recent call last\):\n"
    r'  File "[^"]*locust/main\.py", line \d+, in kill_workers\n'
    r"(?:(?!\S+ \S+ \S+/).*\n)*?ChildProcessError: \[Errno 10\] No child processes\n",
    re.MULTILINE,
)


def locust_exit_noise(log: str) -> str:
    """The log without Locust's own tracebacks about reaping a dead worker at exit."""
    return _WAITPID_NOISE.sub("", log)


def worker_processes(master: psutil.Process) -> list[psutil.Process]:
    """The master's forked workers: children running the master's own command line."""
    cmd = master.cmdline()
    return [c for c in master.children() if c.cmdline() == cmd]


@pytest.mark.integration
def test_a_lost_worker_is_named_and_the_run_ends_without_waiting_for_it(tmp_path: Path) -> None:
    log = tmp_path / "locust.log"
    hold_s, drain_timeout_s = 14, 60
    args = f"-f {CONTENTION} --headless --only-summary --processes 2 --ramp-users 20 --ramp-time 0"
    args += f" --hold-time {hold_s} --keys 50 --listeners 1 --run-id lost --drain-timeout {drain_timeout_s}"
    run_dir = tmp_path / "lost"
    with locust(args, tmp_path, log) as proc:
        wait_for(lambda: "run lost started" in log.read_text(), 90, "the run to start")
        started_ns = json.loads((run_dir / STARTED_FILE).read_text())["started_ns"]
        assert len(json.loads((run_dir / STARTED_FILE).read_text())["expected_nodes"]) == 2
        master = psutil.Process(proc.pid)
        workers = worker_processes(master)
        assert len(workers) == 2

        def both_shipped() -> bool:
            nodes = set()
            for part in parts(run_dir):
                nodes |= set(pq.read_table(part, columns=["node"]).column("node").to_pylist())
            return len(nodes - {"master"}) == 2

        wait_for(both_shipped, 30, "rows from both workers in the parts")
        t_kill = time.time_ns()
        workers[0].send_signal(signal.SIGKILL)
        code = proc.wait(timeout=hold_s + drain_timeout_s + 30)
        t_exit = time.time_ns()
    text = locust_exit_noise(log.read_text())
    assert "Traceback" not in text, text[text.find("Traceback") - 200 :][:4000]
    assert code in (0, 1), text[-3000:]
    run = json.loads((run_dir / history.RUN_FILE).read_text())
    # The run went on to its end, then did not wait the drain timeout for the lost worker.
    hold_end_ns = started_ns + hold_s * S
    assert (t_exit - hold_end_ns) / S < drain_timeout_s / 3, (t_exit - hold_end_ns) / S
    assert run["state"] == "finished" and run["history_complete"] is False
    assert len(run["lost_nodes"]) == 1
    lost = run["nodes"][run["lost_nodes"][0]]
    assert lost["lost"] is True and "missing" in lost["lost_reason"]
    assert lost["reported_final_count"] is False and lost["missing_rows"] is None
    assert lost["missing_rows_reason"]
    assert lost["last_batch_seq"] >= 1 and lost["rows"] > 0
    # Its history reaches to about its last ship before the kill.
    assert t_kill - (SHIP_INTERVAL_S + 1.5) * S <= lost["last_row_ns"] <= t_kill
    (survivor,) = [v for n, v in run["nodes"].items() if n not in run["lost_nodes"] and n != "master"]
    assert survivor["reported_final_count"] and not survivor["missing_batches"] and not survivor["lost"]
    assert survivor["last_row_ns"] > t_kill + 5 * S  # the run went on
    print(
        f"lost worker: last batch {lost['last_batch_seq']}, {lost['rows']} rows, history ends "
        f"{(t_kill - lost['last_row_ns']) / S:.2f} s before the kill; "
        f"exit {(t_exit - hold_end_ns) / S:.1f} s after the hold ended"
    )


@pytest.mark.integration
def test_forked_workers_do_not_outlive_a_sigkilled_master(tmp_path: Path) -> None:
    """Locust's own guard is its 60 s heartbeat timeout: a worker that outlived the kill by more
    than a few seconds would be what this test exists to catch."""
    log = tmp_path / "locust.log"
    args = f"-f {CONTENTION} --headless --only-summary --processes 2 --ramp-users 10 --ramp-time 0"
    args += " --hold-time 120 --keys 50 --listeners 1 --run-id orphans"
    with locust(args, tmp_path, log) as proc:
        wait_for(lambda: "run orphans started" in log.read_text(), 90, "the run to start")
        master = psutil.Process(proc.pid)
        workers = worker_processes(master)
        assert len(workers) == 2, workers
        assert all(w.status() != psutil.STATUS_ZOMBIE for w in workers)
        t_kill = time.monotonic()
        master.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        _gone, alive = psutil.wait_procs(workers, timeout=15)
        waited = time.monotonic() - t_kill
    assert alive == [], f"forked workers alive {waited:.1f} s after the master's SIGKILL: {alive}"
    print(f"both forked workers gone {waited:.2f} s after the master's SIGKILL")
