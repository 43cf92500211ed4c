"""How an operation's outcome is classified around a target's call, and the contract checks.

Pure logic: the targets here are in-memory stand-ins whose calls return or raise as told.
"""

from __future__ import annotations

from typing import Any

import gevent
import gevent.event
import pytest

from cachestorm.history import ROW_COLUMNS, Recorder
from cachestorm.operations import Operations
from cachestorm.target import AfterCommit, NoEffect, Read


class Scripted:
    """A target whose next read and write results (or exceptions) are set by the test."""

    def __init__(self) -> None:
        self.reads: list[Any] = []
        self.writes: list[Any] = []

    def key(self, index: int) -> str:
        return f"k{index}"

    def _next(self, queue: list[Any]) -> Any:
        got = queue.pop(0)
        if isinstance(got, BaseException):
            raise got
        return got

    def read(self, key: str) -> Any:
        return self._next(self.reads)

    def write(self, key: str) -> Any:
        return self._next(self.writes)


class Harness:
    def __init__(self) -> None:
        self.target = Scripted()
        self.recorder = Recorder()
        self.events: list[dict[str, Any]] = []
        self.broken: list[str] = []
        self.ops = Operations(self.target, self.recorder, self.fire, self.broken.append, keys=3)

    def fire(self, **kw: Any) -> None:
        self.events.append(kw)

    def rows(self) -> list[dict[str, Any]]:
        return [dict(zip(ROW_COLUMNS, r, strict=True)) for r in self.recorder.take()]


@pytest.fixture
def h() -> Harness:
    return Harness()


def test_reads_record_version_and_source(h: Harness) -> None:
    h.target.reads = [Read(3, "hit"), 4, (5, "hit:l1")]
    assert [h.ops.read(1, 2) for _ in range(3)] == ["ok", "ok", "ok"]
    rows = h.rows()
    assert [(r["f"], r["key"], r["status"], r["version"], r["source"]) for r in rows] == [
        ("read", "k2", "ok", 3, "hit"),
        ("read", "k2", "ok", 4, None),
        ("read", "k2", "ok", 5, "hit:l1"),
    ]
    assert all(r["t_complete"] >= r["t_invoke"] for r in rows)
    assert [e["name"] for e in h.events] == ["read hit", "read", "read hit:l1"]
    assert not h.broken


def test_a_read_that_raises_certainly_had_no_effect(h: Harness) -> None:
    h.target.reads = [TimeoutError("slow"), ConnectionError("gone")]
    assert h.ops.read(1, 0) == "fail"
    assert h.ops.read(1, 0) == "fail"
    assert [r["status"] for r in h.rows()] == ["fail", "fail"]
    assert all(isinstance(e["exception"], Exception) for e in h.events)


@pytest.mark.parametrize(
    ("raised", "status", "version"),
    [
        (NoEffect("409 conflict"), "fail", None),
        (AfterCommit(7, "invalidation timed out"), "info", 7),
        (TimeoutError("no answer"), "info", None),
        (ConnectionResetError("lost"), "info", None),
        (RuntimeError("app bug mid-write"), "info", None),
    ],
)
def test_a_write_that_raises_is_fail_only_when_it_certainly_had_no_effect(
    h: Harness, raised: BaseException, status: str, version: int | None
) -> None:
    h.target.writes = [raised]
    assert h.ops.write(1, 0) == status
    (row,) = h.rows()
    assert (row["f"], row["status"], row["version"]) == ("write", status, version)


def test_a_write_stopped_mid_call_is_info_and_the_stop_goes_on(h: Harness) -> None:
    h.target.writes = [gevent.GreenletExit()]
    with pytest.raises(gevent.GreenletExit):
        h.ops.write(1, 0)
    assert [r["status"] for r in h.rows()] == ["info"]


def test_writes_that_keep_the_contract(h: Harness) -> None:
    h.target.writes = [1, 2, 3]
    assert [h.ops.write(1, 0) for _ in range(3)] == ["ok", "ok", "ok"]
    assert [r["version"] for r in h.rows()] == [1, 2, 3]
    assert not h.broken


@pytest.mark.parametrize(
    ("results", "says"),
    [
        ([None], "returned nothing"),
        (["3"], "returned '3', not an integer version"),
        ([1.0], "not an integer version"),
        ([True], "not an integer version"),
        ([0], "version 0 was already committed"),
        ([1, 2, 2], "version 2, but version 2 was already committed"),
        ([3, 2], "version 2, but version 3 was already committed"),
    ],
)
def test_writes_that_break_the_contract(h: Harness, results: list[Any], says: str) -> None:
    h.target.writes = list(results)
    statuses = [h.ops.write(1, 0) for _ in results]
    assert statuses[-1] == "info"
    assert len(h.broken) == 1 and says in h.broken[0] and "'k0'" in h.broken[0]


def test_overlapping_writes_may_complete_out_of_order(h: Harness) -> None:
    """Two writes in flight together: the later-completing one may hold the lower version."""
    gate = gevent.event.Event()

    class Overlapping(Scripted):
        def write(self, key: str) -> Any:
            if not gate.is_set():
                gate.set()
                gevent.sleep(0.05)  # commits version 1, completes after the other
                return 1
            return 2

    h.ops = Operations(Overlapping(), h.recorder, h.fire, h.broken.append, keys=1)
    first = gevent.spawn(h.ops.write, 1, 0)
    gate.wait()
    assert h.ops.write(2, 0) == "ok"
    assert first.get() == "ok"
    assert not h.broken


def test_the_same_version_from_two_writes_breaks_it_even_when_they_overlapped(h: Harness) -> None:
    h.ops.contract.started(None)
    floor = h.ops.contract.floor("k0")
    assert h.ops.contract.check_write("k0", 1, floor) == 1
    with pytest.raises(Exception, match="two writes of key 'k0' returned version 1"):
        h.ops.contract.check_write("k0", 1, floor)


def test_reported_start_versions_are_the_floor(h: Harness) -> None:
    h.ops.contract.started({"k0": 10})
    h.target.writes = [10]
    assert h.ops.write(1, 0) == "info"
    assert "version 10 was already committed" in h.broken[0]


@pytest.mark.parametrize("got", ["v3", None, -1, (None, "hit"), 3.5])
def test_reads_that_break_the_contract(h: Harness, got: Any) -> None:
    h.target.reads = [got]
    assert h.ops.read(1, 0) == "info"
    assert len(h.broken) == 1 and "the read of key 'k0'" in h.broken[0]


def test_a_target_whose_clients_report_requests_fires_none_itself() -> None:
    target = Scripted()
    target.reports_requests = True  # type: ignore[attr-defined]
    target.reads = [1]
    events: list[Any] = []
    ops = Operations(target, Recorder(), lambda **kw: events.append(kw), lambda m: None, keys=1)
    assert ops.read(1, 0) == "ok"
    assert events == []
