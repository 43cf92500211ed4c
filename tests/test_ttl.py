"""--ttl-ms: an entry expires, and the next read refreshes it from PostgreSQL."""

from __future__ import annotations

import time

import pytest

from cachestorm.cache import CacheClient
from cachestorm.clients import InstrumentedPG, InstrumentedRedis
from cachestorm.services import ServiceURLs
from cachestorm.strategies import STRATEGIES, make
from tests.conftest import no_events

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_a_read_after_expiry_refreshes_from_the_database(fresh: ServiceURLs, strategy: str) -> None:
    r = InstrumentedRedis(fresh.redis_url, no_events)
    pg = InstrumentedPG(fresh.pg_dsn, no_events, pool_size=2)
    cache = CacheClient(r, pg, make(strategy, r, ttl_ms=150))
    key = "cs:e:3"
    try:
        reads = [cache.read(key)]  # miss: fills with a TTL
        assert 0 < r.client.pttl(key) <= 150
        reads.append(cache.read(key))  # hit
        assert cache.write(key, "new") == 1  # version 1 committed
        reads.append(cache.read(key))  # refills version 1 with a TTL
        time.sleep(0.3)
        assert r.client.get(key) is None  # expired
        reads.append(cache.read(key))
        assert [(x.source, x.version) for x in reads] == [("miss", 0), ("hit", 0), ("miss", 1), ("miss", 1)]
    finally:
        r.close()
        pg.close()
