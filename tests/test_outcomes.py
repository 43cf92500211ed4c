"""cachestorm.outcomes: one row per operation, and exceptions classified the same way everywhere."""

from __future__ import annotations

import gevent
import pytest
import redis

from cachestorm.clients import UnknownOutcome
from cachestorm.history import ROW_COLUMNS, Recorder
from cachestorm.outcomes import Operation, outcome, recorded_read


def rows(rec: Recorder) -> list[dict]:
    return [dict(zip(ROW_COLUMNS, r, strict=True)) for r in rec.take()]


@pytest.mark.parametrize(
    ("exc", "sent", "read", "status"),
    [
        (UnknownOutcome("timeout"), True, False, "info"),
        (UnknownOutcome("timeout"), False, False, "fail"),
        (redis.ResponseError("WRONGTYPE"), True, False, "fail"),
        (redis.ConnectionError("lost"), True, False, "info"),
        (gevent.GreenletExit(), True, False, "info"),
        (gevent.GreenletExit(), False, False, "fail"),
        (UnknownOutcome("timeout"), True, True, "fail"),
        (ValueError("garbage"), True, False, "info"),
    ],
)
def test_outcome(exc: BaseException, sent: bool, read: bool, status: str) -> None:
    assert outcome(exc, sent=sent, read=read) == status


def test_a_handled_exception_is_recorded_once_and_ends_the_block() -> None:
    rec = Recorder()
    with Operation(rec.record, 3, "incr", "c", value=5, source="atomic") as op:
        op.sent = True
        raise UnknownOutcome("no reply")
    assert op.status == "info"
    (row,) = rows(rec)
    assert (row["process"], row["f"], row["key"], row["status"], row["value"], row["source"]) == (
        3,
        "incr",
        "c",
        "info",
        5,
        "atomic",
    )


def test_a_stop_mid_call_is_recorded_and_raised_on() -> None:
    rec = Recorder()
    with pytest.raises(gevent.GreenletExit), Operation(rec.record, 1, "incr", "c") as op:
        op.sent = True
        raise gevent.GreenletExit()
    assert [r["status"] for r in rows(rec)] == ["info"]


def test_done_is_recorded_once_even_if_something_raises_after_it() -> None:
    rec = Recorder()
    with Operation(rec.record, 1, "lock_acquire", "l") as op:
        op.done("ok", value=9)
        raise redis.ResponseError("after the fact")
    assert [(r["status"], r["value"]) for r in rows(rec)] == [("ok", 9)]


def test_a_block_that_forgets_done_is_a_bug() -> None:
    with pytest.raises(RuntimeError, match="without done"), Operation(Recorder().record, 1, "incr", "c"):
        pass


def test_recorded_read() -> None:
    rec = Recorder()
    assert recorded_read(rec.record, 1, "counter_read", "c", lambda: 7) == 7

    def broken() -> int:
        raise ValueError("not a number")

    assert recorded_read(rec.record, 1, "counter_read", "c", broken) is None
    assert [(r["status"], r["value"]) for r in rows(rec)] == [("ok", 7), ("fail", None)]
