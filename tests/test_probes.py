"""The prober on a real Redis: when it reads, what it records, and that it stops."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from functools import partial
from itertools import count
from typing import Any

import gevent
import pytest

from cachestorm.clients import InstrumentedRedis
from cachestorm.history import ROW_COLUMNS, Recorder
from cachestorm.probes import Prober
from cachestorm.reference import peek_redis
from cachestorm.strategies import encode_entry

pytestmark = pytest.mark.integration

KEY = "cs:e:probe-test"


@pytest.fixture
def r(redis_client: InstrumentedRedis) -> Iterator[InstrumentedRedis]:
    redis_client.client.delete(KEY)
    yield redis_client
    redis_client.client.delete(KEY)


def rows(recorder: Recorder) -> list[dict[str, Any]]:
    return [dict(zip(ROW_COLUMNS, row, strict=True)) for row in recorder.take()]


def test_probes_read_the_cache_at_each_delay_after_the_write(r: InstrumentedRedis) -> None:
    recorder = Recorder()
    prober = Prober(partial(peek_redis, r), recorder, (0.05, 1.0), rate=1.0, new_process=count(100).__next__)
    r.client.set(KEY, encode_entry(4, "old"))  # an entry older than the write we probe
    done = time.time_ns()
    prober.after_write(KEY, 5, done)
    # The invalidation's tombstone lands between the two probes: once the first has read.
    deadline = time.monotonic() + 0.9
    while not recorder.rows and time.monotonic() < deadline:
        gevent.sleep(0.01)
    assert len(recorder.rows) == 1, "the first probe had not read within 0.9 s of the write"
    r.client.set(KEY, "t5")
    prober.group.join(timeout=5)
    first, second = rows(recorder)
    assert first["f"] == second["f"] == "probe"
    assert first["process"] == second["process"] == 100
    assert (first["t_intended"], second["t_intended"]) == (done + 50_000_000, done + 1_000_000_000)
    assert first["t_invoke"] >= first["t_intended"] and second["t_invoke"] >= second["t_intended"]
    assert (first["source"], first["version"], first["value"]) == ("entry", 4, 5)
    assert (second["source"], second["version"], second["value"]) == ("tombstone", None, 5)
    assert first["status"] == second["status"] == "ok"


def test_the_rate_samples_writes(r: InstrumentedRedis) -> None:
    recorder = Recorder()
    none = Prober(partial(peek_redis, r), recorder, (0.01,), rate=0.0, new_process=count().__next__)
    for v in range(200):
        none.after_write(KEY, v, time.time_ns())
    assert none.probed == 0 and len(none.group) == 0
    half = Prober(
        partial(peek_redis, r),
        recorder,
        (0.01,),
        rate=0.5,
        new_process=count().__next__,
        rng=random.Random(3),
    )
    for v in range(1000):
        half.after_write(KEY, v, time.time_ns())
    half.group.join(timeout=10)
    assert 430 <= half.probed <= 570
    assert len(rows(recorder)) == half.probed


def test_stop_drops_probes_still_waiting(r: InstrumentedRedis) -> None:
    recorder = Recorder()
    prober = Prober(partial(peek_redis, r), recorder, (0.02, 30.0), rate=1.0, new_process=count().__next__)
    prober.after_write(KEY, 1, time.time_ns())
    gevent.sleep(0.2)
    t0 = time.monotonic()
    prober.stop()
    assert time.monotonic() - t0 < 2
    assert [row["t_intended"] - row["t_invoke"] <= 0 for row in rows(recorder)] == [True]
    assert len(prober.group) == 0
