"""The contention clients on a real Redis: counters, transfers and fenced locks.

The first tests play interleavings by hand, through each client's ``between`` hook (called inside
the race window), so a race happens every time rather than by chance: the unsafe modes must show
the anomaly (the positive controls), the safe modes must not. The last ones run 50 greenlets under
gevent in a subprocess, as Locust would, and check the recorded history rows.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import gevent
import pytest
import redis

from cachestorm.clients import InstrumentedRedis, UnknownOutcome
from cachestorm.contention import (
    Counters,
    Locks,
    Transfers,
    counter_key,
    final_counter_reads,
    final_group_reads,
    lock_key,
    member_key,
    reset_contention_keys,
)
from cachestorm.history import ROW_COLUMNS, Recorder
from cachestorm.services import ServiceURLs
from tests.conftest import ROOT

pytestmark = pytest.mark.integration


class Events:
    """Locust request events fired by the client under test."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def __call__(self, **kw: Any) -> None:
        self.seen.append(kw)

    def failures(self) -> list[str]:
        return [e["name"] for e in self.seen if e["exception"] is not None]


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
def r(services: ServiceURLs, events: Events) -> Iterator[InstrumentedRedis]:
    client = InstrumentedRedis(services.redis_url, events)
    reset_contention_keys(client)
    yield client
    client.close()


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


def rows(rec: Recorder, f: str | None = None) -> list[dict[str, Any]]:
    """The recorded rows (of operation ``f``, if given) as dicts."""
    return [dict(zip(ROW_COLUMNS, row, strict=True)) for row in rec.rows if f is None or row[1] == f]


def once(fn: Callable[[], Any]) -> Callable[[], None]:
    """A hook that runs ``fn`` the first time only."""
    done: list[Any] = []

    def hook() -> None:
        if not done:
            done.append(fn())

    return hook


def value(r: InstrumentedRedis, key: str) -> int:
    raw = r.client.get(key)
    return 0 if raw is None else int(raw)


# Keys and reset -----------------------------------------------------------------------------------
def test_reset_removes_only_contention_keys(r: InstrumentedRedis) -> None:
    c = r.client
    c.mset({"cs:c:1": 5, "cs:c:1:lock": "x", "cs:g:2:0": 1, "cs:l:3:fence": 9, "cs:e:4": "v1:p"})
    assert reset_contention_keys(r) == 4
    assert c.exists("cs:c:1", "cs:c:1:lock", "cs:g:2:0", "cs:l:3:fence") == 0
    assert c.get("cs:e:4") == b"v1:p"
    c.delete("cs:e:4")


# Counters -----------------------------------------------------------------------------------------
def test_unsafe_counter_loses_an_interleaved_update(r: InstrumentedRedis, rec: Recorder) -> None:
    a, b = Counters(r, rec, "unsafe"), Counters(r, rec, "unsafe")
    # A reads 0; B increments 0 -> 1; A writes its 0 + 1 over B's update.
    a.between = once(lambda: b.incr(2, 0))
    assert a.incr(1, 0) == "ok"
    assert value(r, counter_key(0)) == 1  # two increments acknowledged, one survived
    incrs = rows(rec, "incr")
    assert [(x["process"], x["status"], x["value"], x["source"]) for x in incrs] == [
        (2, "ok", 1, "unsafe"),
        (1, "ok", 1, "unsafe"),
    ]


def test_atomic_counter_keeps_every_update(r: InstrumentedRedis, rec: Recorder) -> None:
    a, b = Counters(r, rec, "atomic"), Counters(r, rec, "atomic")
    called: list[int] = []
    a.between = b.between = lambda: called.append(1)
    assert a.incr(1, 0, 3) == "ok"
    assert b.incr(2, 0, 4) == "ok"
    assert value(r, counter_key(0)) == 7
    assert called == []  # INCRBY has no read-modify-write window
    assert [x["value"] for x in rows(rec, "incr")] == [3, 4]


def test_locked_counter_second_locker_fails(r: InstrumentedRedis, rec: Recorder) -> None:
    a = Counters(r, rec, "locked", lock_ttl_ms=5000)
    b = Counters(r, rec, "locked", lock_ttl_ms=5000, lock_wait_ms=30)
    statuses: list[str] = []
    a.between = once(lambda: statuses.append(b.incr(2, 0)))
    assert a.incr(1, 0) == "ok"
    assert statuses == ["fail"]  # B never got the lock, so it wrote nothing
    assert value(r, counter_key(0)) == 1
    assert r.client.exists(counter_key(0) + ":lock") == 0  # A released it
    assert [(x["process"], x["status"], x["source"]) for x in rows(rec, "incr")] == [
        (2, "fail", "locked"),
        (1, "ok", "locked"),
    ]


def test_locked_counter_second_locker_waits(r: InstrumentedRedis, rec: Recorder) -> None:
    a = Counters(r, rec, "locked", lock_ttl_ms=5000)
    b = Counters(r, rec, "locked", lock_ttl_ms=5000, lock_wait_ms=2000)
    waiter: list[Any] = []

    def start_b_and_pause() -> None:
        # B starts while A holds the lock between its GET and SET; A pauses so B runs and retries.
        waiter.append(gevent.spawn(b.incr, 2, 0))
        gevent.sleep(0.05)

    a.between = once(start_b_and_pause)
    assert a.incr(1, 0) == "ok"
    assert waiter[0].get(timeout=5) == "ok"
    assert value(r, counter_key(0)) == 2


def test_counter_read(r: InstrumentedRedis, rec: Recorder) -> None:
    c = Counters(r, rec, "atomic")
    assert c.read(1, 3) == "ok"
    c.incr(1, 3, 5)
    assert c.read(1, 3) == "ok"
    r.client.set(counter_key(4), "garbage")
    assert c.read(1, 4) == "fail"
    assert [(x["key"], x["status"], x["value"]) for x in rows(rec, "counter_read")] == [
        ("cs:c:3", "ok", 0),
        ("cs:c:3", "ok", 5),
        ("cs:c:4", "fail", None),
    ]


@pytest.mark.parametrize(
    ("mode", "failing", "expected"),
    [
        ("atomic", "incrby", "info"),  # INCRBY sent, reply lost: may have been applied
        ("unsafe", "get", "fail"),  # nothing written yet
        ("unsafe", "set", "info"),
        ("locked", "counter_lock", "fail"),
        ("locked", "get", "fail"),
        ("locked", "set", "info"),
    ],
)
def test_counter_unknown_outcomes(
    r: InstrumentedRedis,
    rec: Recorder,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    failing: str,
    expected: str,
) -> None:
    real = r.call

    def call(name: str, fn: Callable[..., Any], *args: Any) -> Any:
        if name == failing:
            raise UnknownOutcome(f"{name}: timed out")
        return real(name, fn, *args)

    monkeypatch.setattr(r, "call", call)
    c = Counters(r, rec, mode)
    assert c.incr(1, 0) == expected
    assert rows(rec, "incr")[0]["status"] == expected
    assert r.client.exists(counter_key(0) + ":lock") == 0  # never left held


def stop_user() -> None:
    raise gevent.GreenletExit  # what Locust raises in a user it kills


def test_a_stopped_user_records_info_only_once_a_write_was_sent(r: InstrumentedRedis, rec: Recorder) -> None:
    c = Counters(r, rec, "locked")
    c.between = stop_user  # stopped between the GET and the SET: nothing written
    with pytest.raises(gevent.GreenletExit):
        c.incr(1, 0)
    t = Transfers(r, rec, "unsafe")
    t.between = stop_user  # stopped between the two SETs: half a transfer applied
    with pytest.raises(gevent.GreenletExit):
        t.transfer(1, 0, 0, 1, 2)
    assert [(x["f"], x["status"]) for x in rows(rec)] == [("incr", "fail"), ("tx_transfer", "info")]
    assert r.client.exists(counter_key(0) + ":lock") == 0


def test_final_counter_reads(r: InstrumentedRedis, rec: Recorder) -> None:
    r.client.set(counter_key(1), 42)
    assert final_counter_reads(r.client, rec, 3, process=0) == {0: 0, 1: 42, 2: 0}
    assert [(x["process"], x["key"], x["status"], x["value"]) for x in rows(rec, "counter_read")] == [
        (0, "cs:c:0", "ok", 0),
        (0, "cs:c:1", "ok", 42),
        (0, "cs:c:2", "ok", 0),
    ]


# Transfers ----------------------------------------------------------------------------------------
def test_atomic_transfer(r: InstrumentedRedis, rec: Recorder) -> None:
    t = Transfers(r, rec, "atomic", group_size=3)
    assert t.transfer(1, 0, 0, 2, 7) == "ok"
    assert (value(r, member_key(0, 0)), value(r, member_key(0, 2))) == (-7, 7)
    assert t.read(1, 0) == "ok"
    assert [(x["f"], x["key"], x["status"], x["value"], x["source"]) for x in rows(rec)] == [
        ("tx_transfer", "cs:g:0", "ok", 7, "atomic"),
        ("tx_read", "cs:g:0", "ok", 0, None),
    ]


def test_watch_abort_is_fail_and_applies_nothing(r: InstrumentedRedis, rec: Recorder) -> None:
    t, other = Transfers(r, rec, "atomic"), Transfers(r, rec, "atomic")
    # Between T's WATCH/GET and its EXEC, another transfer changes a watched key.
    t.between = once(lambda: other.transfer(2, 0, 1, 0, 5))
    assert t.transfer(1, 0, 0, 1, 3) == "fail"
    assert (value(r, member_key(0, 0)), value(r, member_key(0, 1))) == (5, -5)  # only the other's
    assert t.sum(0) == 0
    assert [(x["process"], x["status"], x["value"]) for x in rows(rec, "tx_transfer")] == [
        (2, "ok", 5),
        (1, "fail", 3),
    ]


def test_partial_exec_is_info_and_a_locust_failure(
    r: InstrumentedRedis, rec: Recorder, events: Events
) -> None:
    r.client.set(member_key(0, 1), "not a number")  # INCRBY fails inside EXEC; DECRBY does not
    t = Transfers(r, rec, "atomic")
    assert t.transfer(1, 0, 0, 1, 3) == "info"
    assert value(r, member_key(0, 0)) == -3  # Redis applied the other command: no rollback
    assert "multi_exec_partial" in events.failures()


def test_connection_lost_at_exec_is_not_fail(
    services: ServiceURLs, r: InstrumentedRedis, rec: Recorder
) -> None:
    admin = redis.Redis.from_url(services.redis_url)
    t = Transfers(r, rec, "atomic")
    # Every other client's connection dies after the WATCH; redis-py reports that as a WatchError,
    # which must not be taken for an abort: the EXEC may have run.
    t.between = once(lambda: admin.client_kill_filter(_type="normal", skipme=True))
    try:
        assert t.transfer(1, 0, 0, 1, 3) == "info"
    finally:
        admin.close()


def test_unsafe_transfer_shows_a_nonzero_sum_in_between(r: InstrumentedRedis, rec: Recorder) -> None:
    t, reader = Transfers(r, rec, "unsafe"), Transfers(r, rec, "unsafe")
    t.between = once(lambda: reader.read(2, 0))
    assert t.transfer(1, 0, 0, 1, 4) == "ok"
    assert [(x["process"], x["status"], x["value"]) for x in rows(rec, "tx_read")] == [(2, "ok", -4)]
    assert t.sum(0) == 0  # whole again once both SETs landed
    assert rows(rec, "tx_transfer")[0]["source"] == "unsafe"


def test_unsafe_transfers_lose_an_update(r: InstrumentedRedis, rec: Recorder) -> None:
    t, other = Transfers(r, rec, "unsafe", window_s=0), Transfers(r, rec, "unsafe", window_s=0)
    # T has read both members and written one; the other transfer runs; T's second SET overwrites it.
    t.between = once(lambda: other.transfer(2, 0, 1, 0, 5))
    assert t.transfer(1, 0, 0, 1, 3) == "ok"
    assert t.sum(0) != 0


def test_final_group_reads(r: InstrumentedRedis, rec: Recorder) -> None:
    r.client.mset({member_key(1, 0): -2, member_key(1, 3): 5})
    assert final_group_reads(r, rec, 2, 4) == {0: 0, 1: 3}
    assert [x["value"] for x in rows(rec, "tx_read")] == [0, 3]


# Locks --------------------------------------------------------------------------------------------
def test_lock_cycle(r: InstrumentedRedis, rec: Recorder) -> None:
    locks = Locks(r, rec, "locked", ttl_ms=5000)
    status, token = locks.acquire(1, 0)
    assert (status, token) == ("ok", 1)
    assert locks.acquire(2, 0) == ("fail", None)  # held
    assert locks.guarded_write(1, 0, 1) == "ok"
    assert locks.release(1, 0, 1) == "ok"
    assert locks.acquire(2, 0) == ("ok", 2)
    assert [(x["f"], x["process"], x["key"], x["status"], x["value"], x["source"]) for x in rows(rec)] == [
        ("lock_acquire", 1, "cs:l:0", "ok", 1, "locked"),
        ("lock_acquire", 2, "cs:l:0", "fail", None, "locked"),
        ("guarded_write", 1, "cs:l:0", "ok", 1, "locked"),
        ("lock_release", 1, "cs:l:0", "ok", 1, "locked"),
        ("lock_acquire", 2, "cs:l:0", "ok", 2, "locked"),
    ]


def test_expired_lock_is_not_released_by_its_old_owner(r: InstrumentedRedis, rec: Recorder) -> None:
    locks = Locks(r, rec, "locked", ttl_ms=50)
    # The new holder's lock lasts: on a loaded machine 50 ms can pass between two of its steps.
    lasting = Locks(r, rec, "locked", ttl_ms=30_000)
    _, old = locks.acquire(1, 0)
    time.sleep(0.1)  # the TTL runs out while process 1 still thinks it holds the lock
    status, new = lasting.acquire(2, 0)
    assert status == "ok"
    assert old is not None and new is not None and new > old
    assert locks.release(1, 0, old) == "fail"
    assert r.client.get(lock_key(0)) == str(new).encode()  # the new holder keeps it
    assert lasting.release(2, 0, new) == "ok"


def test_guarded_write_refuses_a_stale_token(r: InstrumentedRedis, rec: Recorder) -> None:
    locks = Locks(r, rec, "locked", ttl_ms=50)
    _, old = locks.acquire(1, 0)
    time.sleep(0.1)
    _, new = locks.acquire(2, 0)
    assert old is not None and new is not None
    assert locks.guarded_write(2, 0, new) == "ok"
    assert locks.guarded_write(1, 0, old) == "fail"  # the paused old holder comes back: fenced off
    assert locks.guarded_write(2, 0, new) == "ok"  # the current holder may write again
    assert r.client.get(lock_key(0) + ":res") == f"2:{new}".encode()
    writes = rows(rec, "guarded_write")
    assert [(x["process"], x["status"], x["value"]) for x in writes] == [
        (2, "ok", new),
        (1, "fail", old),
        (2, "ok", new),
    ]


def test_unlocked_writes(r: InstrumentedRedis, rec: Recorder) -> None:
    locks = Locks(r, rec, "unlocked")
    assert locks.unlocked_write(1, 0) == ("ok", 1)
    assert locks.unlocked_write(2, 0) == ("ok", 2)
    assert r.client.get(lock_key(0) + ":max") == b"2"
    assert r.client.exists(lock_key(0)) == 0  # no lock taken
    assert [(x["f"], x["status"], x["value"], x["source"]) for x in rows(rec)] == [
        ("guarded_write", "ok", 1, "unlocked"),
        ("guarded_write", "ok", 2, "unlocked"),
    ]


# Options ------------------------------------------------------------------------------------------
OPTIONS_PROBE = r"""
import json, os, sys
from locust.argument_parser import get_empty_argument_parser
from users.contention import add_arguments, problems

parser = get_empty_argument_parser(add_help=False, default_config_files=[])
locust_own = set(vars(parser.parse_args([])))
add_arguments(parser)
out = {}
for name, env, args in (("default", {}, []), ("env", {"CACHESTORM_COUNTER_MODE": "unsafe",
                        "CACHESTORM_LOCK_TTL_MS": "250"}, ["--tx-group-size", "1"])):
    os.environ.update(env)
    o = parser.parse_args(args)
    added = {k: v for k, v in vars(o).items() if k not in locust_own}
    out[name] = {"options": added, "problems": problems(o)}
print(json.dumps(out))
"""


def test_options() -> None:
    # In a subprocess: importing locust monkey-patches the process with gevent.
    out = subprocess.run(
        [sys.executable, "-c", OPTIONS_PROBE],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=ROOT,
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["default"] == {
        "options": {
            "counter_mode": "atomic",
            "counters": 10,
            "tx_mode": "atomic",
            "tx_groups": 10,
            "tx_group_size": 4,
            "lock_mode": "locked",
            "locks": 5,
            "lock_ttl_ms": 1000,
        },
        "problems": [],
    }
    env = got["env"]
    assert (env["options"]["counter_mode"], env["options"]["lock_ttl_ms"]) == ("unsafe", 250)
    assert env["problems"] == ["--tx-group-size is 1: it must be at least 2."]


# Concurrency under gevent -------------------------------------------------------------------------
PROBE = r"""
from gevent import monkey; monkey.patch_all()
import json, sys
import gevent
from cachestorm.clients import InstrumentedRedis
from cachestorm.contention import Counters, final_counter_reads, reset_contention_keys
from cachestorm.history import ROW_COLUMNS, Recorder

redis_url, mode, per_user = sys.argv[1], sys.argv[2], int(sys.argv[3])
r = InstrumentedRedis(redis_url, lambda **kw: None)
reset_contention_keys(r)
rec = Recorder()
# A generous lock wait, so that in locked mode every increment gets the lock in the end.
counters = Counters(r, rec, mode, lock_ttl_ms=5000, lock_wait_ms=60000)

def user(process):
    for _ in range(per_user):
        counters.incr(process, 0)

gevent.joinall([gevent.spawn(user, p) for p in range(1, 51)])
final = final_counter_reads(r, rec, 1, process=0)[0]
print(json.dumps({"final": final, "rows": rec.rows}))
"""


#: Increments per greenlet. The locked mode's go one at a time through the lock (about 11 ms each
#: here, 57 s for 100 each): 10 each still has all fifty contend for it throughout.
PER_USER = {"unsafe": 100, "atomic": 100, "locked": 10}


@pytest.mark.parametrize("mode", ["unsafe", "atomic", "locked"])
def test_fifty_greenlets(services: ServiceURLs, mode: str) -> None:
    per_user = PER_USER[mode]
    out = subprocess.run(
        [sys.executable, "-c", PROBE, services.redis_url, mode, str(per_user)],
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
        cwd=ROOT,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    final, recorded = result["final"], result["rows"]
    incrs = [row for row in recorded if row[1] == "incr"]
    reads = [row for row in recorded if row[1] == "counter_read"]
    total = 50 * per_user
    assert len(incrs) == total
    assert {(row[2], row[3], row[6], row[7], row[8]) for row in incrs} == {("cs:c:0", "ok", None, 1, mode)}
    assert len({row[0] for row in incrs}) == 50
    assert all(row[4] <= row[5] for row in incrs)
    assert reads == [[0, "counter_read", "cs:c:0", "ok", reads[0][4], reads[0][5], None, final, None, None]]
    if mode == "unsafe":
        assert final < total  # every increment acknowledged, fewer in the counter: lost updates
    else:
        assert final == total
