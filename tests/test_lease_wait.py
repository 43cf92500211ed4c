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
from typing import Any

import gevent
import pytest

from cachestorm.cache import CacheClient
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


def test_the_reader_without_the_lease_serves_the_holders_fill(
    clients: tuple[InstrumentedRedis, InstrumentedPG],
) -> None:
    r, pg = clients
    holder = CacheClient(r, pg, make("versioned", r), fill_delay_ms=150)
    waiter = CacheClient(r, pg, make("versioned", r))
    first = gevent.spawn(holder.read, KEY)
    gevent.sleep(0.03)  # the holder has its lease and is between its database read and its fill
    assert r.client.get(LEASE_PREFIX + KEY) is not None
    # Meanwhile version 1 commits; its invalidation has not run yet (the window of the race).
    assert pg.write(4, "new") == 1
    t0 = time.monotonic()
    served = waiter.read(KEY)
    waited = time.monotonic() - t0
    held = first.get()
    # The waiter served the cached version 0, not the database's 1, after waiting for the fill.
    assert (held.version, served.version) == (0, 0)
    assert served.source == "miss"
    assert 0.08 < waited < 1.0


def test_the_waiter_takes_the_lease_when_an_invalidation_revokes_it(
    clients: tuple[InstrumentedRedis, InstrumentedPG],
) -> None:
    r, pg = clients
    rec = Recorder()
    strategy = make("versioned", r)
    holder = CacheClient(r, pg, strategy, fill_recorder(rec, 1), fill_delay_ms=300)
    waiter = CacheClient(r, pg, strategy, fill_recorder(rec, 2))
    first = gevent.spawn(holder.read, KEY)
    gevent.sleep(0.03)
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
