"""--ttl-ms: an entry expires, and the next read refreshes it from PostgreSQL."""

from __future__ import annotations

import time

import pytest

from cachestorm.cache import CacheClient
from cachestorm.clients import InstrumentedPG, InstrumentedRedis
from cachestorm.history import Recorder
from cachestorm.services import ServiceURLs
from cachestorm.strategies import STRATEGIES, make
from tests.conftest import no_events

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_a_read_after_expiry_refreshes_from_the_database(fresh: ServiceURLs, strategy: str) -> None:
    r = InstrumentedRedis(fresh.redis_url, no_events)
    pg = InstrumentedPG(fresh.pg_dsn, no_events, pool_size=2)
    rec = Recorder()
    cache = CacheClient(r, pg, make(strategy, r, ttl_ms=150), rec)
    try:
        assert cache.read(1, 3) == "ok"  # miss: fills with a TTL
        assert 0 < r.client.pttl("cs:e:3") <= 150
        assert cache.read(1, 3) == "ok"  # hit
        assert cache.write(2, 3, "new") == "ok"  # version 1 committed
        assert cache.read(1, 3) == "ok"  # refills version 1 with a TTL
        time.sleep(0.3)
        assert r.client.get("cs:e:3") is None  # expired
        assert cache.read(1, 3) == "ok"
        reads = [row for row in rec.take() if row[1] == "read"]
        assert [(row[8], row[6]) for row in reads] == [("miss", 0), ("hit", 0), ("miss", 1), ("miss", 1)]
    finally:
        r.close()
        pg.close()
