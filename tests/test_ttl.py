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


TTL_MS = 1000


def expires(r: InstrumentedRedis, key: str, within_s: float) -> bool:
    """Whether ``key`` is gone from Redis within ``within_s`` seconds."""
    deadline = time.monotonic() + within_s
    while r.client.exists(key):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_a_read_after_expiry_refreshes_from_the_database(fresh: ServiceURLs, strategy: str) -> None:
    r = InstrumentedRedis(fresh.redis_url, no_events)
    pg = InstrumentedPG(fresh.pg_dsn, no_events, pool_size=2)
    # Long enough that the hit below comes before the expiry even on a loaded machine.
    cache = CacheClient(r, pg, make(strategy, r, ttl_ms=TTL_MS))
    key = "cs:e:3"
    try:
        reads = [cache.read(key)]  # miss: fills with a TTL
        assert 0 < r.client.pttl(key) <= TTL_MS
        reads.append(cache.read(key))  # hit
        assert cache.write(key, "new") == 1  # version 1 committed
        reads.append(cache.read(key))  # refills version 1 with a TTL
        assert expires(r, key, within_s=TTL_MS / 1000 + 10)
        reads.append(cache.read(key))
        assert [(x.source, x.version) for x in reads] == [("miss", 0), ("hit", 0), ("miss", 1), ("miss", 1)]
    finally:
        r.close()
        pg.close()
