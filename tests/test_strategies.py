"""The strategies' fill and invalidation, step by step on a real Redis.

Each test plays one interleaving of a reader and a writer by hand, so the stale-set race happens
every time rather than by chance: cache-aside must install the stale version (the positive
control), versioned must refuse it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from cachestorm.clients import InstrumentedRedis
from cachestorm.services import ServiceURLs
from cachestorm.strategies import CacheAside, Versioned, encode_entry, parse

pytestmark = pytest.mark.integration

KEY = "cs:e:7"


def _ignore(**_kw: object) -> None:
    pass


@pytest.fixture
def r(services: ServiceURLs) -> Iterator[InstrumentedRedis]:
    client = InstrumentedRedis(services.redis_url, _ignore)
    client.client.delete(KEY)
    yield client
    client.close()


def cached(r: InstrumentedRedis) -> tuple[int | None, int | None]:
    return parse(r.client.get(KEY))


def test_parse() -> None:
    assert parse(None) == (None, None)
    assert parse(b"v12:payload:with:colons") == (12, None)
    assert parse(b"t3") == (None, 3)
    with pytest.raises(ValueError, match="unrecognised"):
        parse(b"garbage")


def stale_set_race(strategy: CacheAside | Versioned) -> None:
    # Reader misses and loads version 5 from the database ...
    loaded = 5
    # ... a writer commits version 6 and invalidates ...
    strategy.invalidate(KEY, 6)
    # ... and only then does the reader's fill arrive.
    strategy.fill(KEY, loaded, "old")


def test_cache_aside_installs_the_stale_version(r: InstrumentedRedis) -> None:
    stale_set_race(CacheAside(r))
    assert cached(r) == (5, None)


def test_versioned_refuses_the_stale_version(r: InstrumentedRedis) -> None:
    stale_set_race(Versioned(r))
    assert cached(r) == (None, 6)


def test_versioned_fill_rules(r: InstrumentedRedis) -> None:
    v = Versioned(r)
    assert v.fill(KEY, 3, "a") is True  # empty key: installed
    assert v.fill(KEY, 2, "b") is False  # older than the entry
    assert v.fill(KEY, 3, "c") is False  # same version: nothing to gain
    assert cached(r) == (3, None)
    assert r.client.get(KEY) == encode_entry(3, "a").encode()
    v.invalidate(KEY, 4)
    assert cached(r) == (None, 4)
    assert v.fill(KEY, 3, "d") is False  # older than the tombstone
    assert v.fill(KEY, 4, "e") is True  # the tombstoned version itself is fresh
    assert cached(r) == (4, None)


def test_versioned_invalidation_never_moves_backwards(r: InstrumentedRedis) -> None:
    v = Versioned(r)
    v.invalidate(KEY, 7)
    v.invalidate(KEY, 6)  # a slower writer's older invalidation arrives late
    assert cached(r) == (None, 7)
    v.fill(KEY, 8, "x")
    v.invalidate(KEY, 8)  # the entry already holds the committed version
    assert cached(r) == (8, None)
    v.invalidate(KEY, 9)
    assert cached(r) == (None, 9)


def test_instrumented_calls_fire_request_events(services: ServiceURLs) -> None:
    events: list[dict[str, object]] = []
    client = InstrumentedRedis(services.redis_url, lambda **kw: events.append(kw))
    Versioned(client).fill(KEY, 1, "p")
    client.get(KEY)
    assert [(e["request_type"], e["name"], e["exception"]) for e in events] == [
        ("REDIS", "fill_cas", None),
        ("REDIS", "get", None),
    ]
    assert all(isinstance(e["response_time"], float) and e["response_time"] >= 0 for e in events)
    broken = InstrumentedRedis("redis://127.0.0.1:1/0", lambda **kw: events.append(kw), timeout=0.5)
    with pytest.raises(redis.ConnectionError):
        broken.get(KEY)
    assert events[-1]["exception"] is not None
