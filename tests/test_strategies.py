"""The strategies' fill and invalidation, step by step on a real Redis.

Each test plays one interleaving of a reader and a writer by hand, so the stale-set race happens
every time rather than by chance: cache-aside must install the stale version (the positive
control), versioned must refuse it.
"""

from __future__ import annotations

import pytest
import redis

from cachestorm.clients import InstrumentedRedis
from cachestorm.services import ServiceURLs
from cachestorm.strategies import LEASE_PREFIX, CacheAside, Versioned, VersionedCAS, encode_entry, parse

pytestmark = pytest.mark.integration

KEY = "cs:e:7"


@pytest.fixture
def r(redis_client: InstrumentedRedis) -> InstrumentedRedis:
    redis_client.client.delete(KEY, LEASE_PREFIX + KEY)
    return redis_client


def cached(r: InstrumentedRedis) -> tuple[int | None, int | None]:
    return parse(r.client.get(KEY))


def test_parse() -> None:
    assert parse(None) == (None, None)
    assert parse(b"v12:payload:with:colons") == (12, None)
    assert parse(b"t3") == (None, 3)
    with pytest.raises(ValueError, match="unrecognised"):
        parse(b"garbage")


def stale_set_race(strategy: CacheAside | Versioned | VersionedCAS) -> None:
    # The reader misses, takes its lease (if the strategy has any) and loads version 5 ...
    token = strategy.lease(KEY)
    assert token is not None
    loaded = 5
    # ... a writer commits version 6 and invalidates ...
    strategy.invalidate(KEY, 6)
    # ... and only then does the reader's fill arrive.
    strategy.fill(KEY, loaded, "old", token)


def test_cache_aside_installs_the_stale_version(r: InstrumentedRedis) -> None:
    stale_set_race(CacheAside(r))
    assert cached(r) == (5, None)


@pytest.mark.parametrize("strategy", [Versioned, VersionedCAS])
def test_versioned_strategies_refuse_the_stale_version(r: InstrumentedRedis, strategy: type) -> None:
    stale_set_race(strategy(r))
    assert cached(r) == (None, 6)


def evicted_tombstone_race(strategy: Versioned | VersionedCAS, r: InstrumentedRedis) -> None:
    """Meta's case: the tombstone that should stop a late fill is evicted before the fill."""
    token = strategy.lease(KEY)
    assert token is not None
    loaded = 5
    strategy.invalidate(KEY, 6)
    r.client.delete(KEY)  # what maxmemory eviction does to the tombstone
    strategy.fill(KEY, loaded, "old", token)


def test_versioned_cas_installs_the_stale_version_once_its_tombstone_is_evicted(r: InstrumentedRedis) -> None:
    evicted_tombstone_race(VersionedCAS(r), r)
    assert cached(r) == (5, None)  # the positive control for eviction


def test_versioned_with_leases_stays_correct_when_the_tombstone_is_evicted(r: InstrumentedRedis) -> None:
    evicted_tombstone_race(Versioned(r), r)
    assert cached(r) == (None, None)  # the fill was refused: a miss, never a stale entry


def test_an_evicted_lease_refuses_the_fill(r: InstrumentedRedis) -> None:
    v = Versioned(r)
    token = v.lease(KEY)
    assert token is not None
    r.client.delete(LEASE_PREFIX + KEY)  # evicted
    assert v.fill(KEY, 5, "p", token) is False
    assert cached(r) == (None, None)


def test_one_lease_at_a_time(r: InstrumentedRedis) -> None:
    v = Versioned(r)
    first = v.lease(KEY)
    assert first is not None
    assert v.lease(KEY) is None  # a second reader waits for the holder's fill
    assert v.fill(KEY, 1, "p", first) is True
    assert v.lease(KEY) is not None  # the fill gave the lease back


def test_versioned_fill_rules(r: InstrumentedRedis) -> None:
    v = VersionedCAS(r)
    assert v.fill(KEY, 3, "a", "") is True  # empty key: installed
    assert v.fill(KEY, 2, "b", "") is False  # older than the entry
    assert v.fill(KEY, 3, "c", "") is False  # same version: nothing to gain
    assert cached(r) == (3, None)
    assert r.client.get(KEY) == encode_entry(3, "a").encode()
    v.invalidate(KEY, 4)
    assert cached(r) == (None, 4)
    assert v.fill(KEY, 3, "d", "") is False  # older than the tombstone
    assert v.fill(KEY, 4, "e", "") is True  # the tombstoned version itself is fresh
    assert cached(r) == (4, None)


def test_versioned_invalidation_never_moves_backwards(r: InstrumentedRedis) -> None:
    v = Versioned(r)
    v.invalidate(KEY, 7)
    v.invalidate(KEY, 6)  # a slower writer's older invalidation arrives late
    assert cached(r) == (None, 7)
    token = v.lease(KEY)
    assert token is not None
    v.fill(KEY, 8, "x", token)
    v.invalidate(KEY, 8)  # the entry already holds the committed version
    assert cached(r) == (8, None)
    v.invalidate(KEY, 9)
    assert cached(r) == (None, 9)


@pytest.mark.parametrize("strategy", [Versioned, VersionedCAS, CacheAside])
def test_bulk_invalidation_never_lets_an_older_version_in(r: InstrumentedRedis, strategy: type) -> None:
    s = strategy(r)
    keys = [f"cs:e:{i}" for i in range(100, 110)]
    r.client.delete(*keys, *(LEASE_PREFIX + k for k in keys))
    for k in keys:
        r.client.set(k, encode_entry(4, "p"))
    token = s.lease(keys[0])  # a reader in flight on the first key
    assert token is not None
    s.invalidate_many(keys)
    assert all(parse(r.client.get(k))[0] is None for k in keys)  # no entry is served any more
    s.fill(keys[1], 3, "older", "")  # an old fill arriving late
    s.fill(keys[0], 4, "same", token)
    if strategy is CacheAside:
        assert parse(r.client.get(keys[1])) == (3, None)  # cache-aside has no defence
    else:
        assert parse(r.client.get(keys[1])) == (None, 4)
        expected = (None, 4) if strategy is Versioned else (4, None)  # the lease was revoked
        assert parse(r.client.get(keys[0])) == expected


def test_instrumented_calls_fire_request_events(services: ServiceURLs) -> None:
    events: list[dict[str, object]] = []
    client = InstrumentedRedis(services.redis_url, lambda **kw: events.append(kw))
    VersionedCAS(client).fill(KEY, 1, "p", "")
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
