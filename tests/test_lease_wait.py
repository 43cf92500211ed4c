"""A reader without the lease waits for the holder's fill instead of reading the database.

The race it closes, found by monotonic_read in a two-worker run: a write commits version 34 but
has not invalidated yet; the cache holds 33 under another reader's lease. A reader that went to the
database saw 34, then, on its next read, the cached 33: one process shown a version older than one
it had already seen. Waiting for the fill, every read of a process comes from the cache (whose
versions only grow) or from a database read made under its own lease.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, cast

import gevent
import gevent.event
import pytest

from cachestorm.cache import WAIT_FOR_FILL_S, CacheClient
from cachestorm.clients import InstrumentedPG, InstrumentedRedis
from cachestorm.history import ROW_COLUMNS, Recorder
from cachestorm.services import ServiceURLs
from cachestorm.strategies import LEASE_PREFIX, make
from tests.conftest import no_events

pytestmark = pytest.mark.integration

KEY = "cs:e:4"


@pytest.fixture
def clients(fresh: ServiceURLs) -> Iterator[tuple[InstrumentedRedis, InstrumentedPG]]:
    r = InstrumentedRedis(fresh.redis_url, no_events)
    pg = InstrumentedPG(fresh.pg_dsn, no_events, pool_size=4)
    yield r, pg
    r.close()
    pg.close()


def fills(rec: Recorder) -> list[dict[str, Any]]:
    return [d for d in (dict(zip(ROW_COLUMNS, row, strict=True)) for row in rec.take()) if d["f"] == "fill"]


def fill_recorder(rec: Recorder, who: int) -> Any:
    """Records each fill under ``who``, so that the test can tell the holder's from the waiter's."""
    return lambda key, status, t0, t1, version: rec.record(who, "fill", key, status, t0, t1, version)


class SignallingPG:
    """The holder's PostgreSQL: sets ``read_done`` once a read has returned.

    So a test starts the race once the holder is between its database read and its fill, however
    slow the machine, rather than after a guessed sleep.
    """

    def __init__(self, pg: InstrumentedPG) -> None:
        self.pg = pg
        self.read_done = gevent.event.Event()

    def read(self, entity: int) -> tuple[int, str]:
        got = self.pg.read(entity)
        self.read_done.set()
        return got


def holder_between_read_and_fill(
    r: InstrumentedRedis, pg: InstrumentedPG, fill_delay_ms: float, **kwargs: Any
) -> gevent.Greenlet:
    """Starts a holder's read of ``KEY`` and returns once it holds the lease and has read."""
    signalling = SignallingPG(pg)
    holder = CacheClient(
        r, cast(InstrumentedPG, signalling), make("versioned", r), fill_delay_ms=fill_delay_ms, **kwargs
    )
    first = gevent.spawn(holder.read, KEY)
    assert signalling.read_done.wait(timeout=10), "the holder never read the database"
    assert r.client.get(LEASE_PREFIX + KEY) is not None
    return first


def test_the_reader_without_the_lease_serves_the_holders_fill(
    clients: tuple[InstrumentedRedis, InstrumentedPG],
) -> None:
    r, pg = clients
    # The holder's fill comes 1 s after its read: time for the write and the waiter's miss even on
    # a loaded machine, since the test needs both to come before the fill.
    first = holder_between_read_and_fill(r, pg, fill_delay_ms=1000)
    waiter = CacheClient(r, pg, make("versioned", r))
    # Meanwhile version 1 commits; its invalidation has not run yet (the window of the race).
    assert pg.write(4, "new") == 1
    t0 = time.monotonic()
    served = waiter.read(KEY)
    waited = time.monotonic() - t0
    held = first.get()
    # The waiter served the cached version 0, not the database's 1, after waiting for the fill.
    assert (held.version, served.version) == (0, 0)
    assert served.source == "miss"
    assert 0.08 < waited < WAIT_FOR_FILL_S


def test_the_waiter_takes_the_lease_when_an_invalidation_revokes_it(
    clients: tuple[InstrumentedRedis, InstrumentedPG],
) -> None:
    r, pg = clients
    rec = Recorder()
    strategy = make("versioned", r)
    first = holder_between_read_and_fill(r, pg, fill_delay_ms=1000, record_fill=fill_recorder(rec, 1))
    waiter = CacheClient(r, pg, strategy, fill_recorder(rec, 2))
    writer = gevent.spawn(lambda: strategy.invalidate(KEY, pg.write(4, "new")))  # revokes the lease
    served = waiter.read(KEY)
    writer.join()
    first.join()
    # The waiter got the lease once the write revoked the holder's, and read and filled version 1
    # itself; the holder's fill of version 0 was refused.
    by = {(d["f"], d["process"]): d for d in fills(rec)}
    assert served.version == 1
    assert (by["fill", 2]["status"], by["fill", 2]["version"]) == ("ok", 1)
    assert (by["fill", 1]["status"], by["fill", 1]["version"]) == ("fail", 0)
    cached = r.client.get(KEY)
    assert cached is not None and cached.startswith(b"v1:")
