"""cachestorm's own reference cache, the default target: Redis over PostgreSQL, with a notifier.

Its keys are ``cs:e:<n>``, its table ``cachestorm_entity`` (:mod:`cachestorm.schema`), its values
``v<version>:<payload>`` and its behaviour the ``--strategy`` (:mod:`cachestorm.strategies`),
``--fill-delay-ms`` and ``--ttl-ms`` options: none of which users/, the history or analysis/ know.

Per session, on the master, :meth:`ReferenceCache.setup` starts the embedded Redis, PostgreSQL
and notifier when no URLs were given, or checks the given ones, and puts the URLs in the parsed
options, which Locust sends to every worker. Per run, each node's instance opens its own pools.

Example, outside Locust::

    cache = ReferenceCache(TargetContext(parsed, fire, "users", record, new_process))
    cache.reset([cache.key(i) for i in range(100)])
    cache.write(cache.key(7))          # 1
    cache.read(cache.key(7))           # Read(version=1, source='miss'), then 'hit'
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from itertools import count
from typing import Any

import psycopg

from cachestorm import embedded, schema
from cachestorm.cache import CacheClient
from cachestorm.clients import InstrumentedPG, InstrumentedRedis, UnknownOutcome
from cachestorm.options import Options
from cachestorm.strategies import held, parse
from cachestorm.strategies import make as make_strategy
from cachestorm.target import Cached, Read, TargetContext

#: The notifier's channel for bulk invalidations (the Invalidator's), beside per-commit changes.
INVALIDATION_CHANNEL = "cachestorm_invalidation"
REDIS_STATS = {"stats": ("evicted_keys", "keyspace_hits", "keyspace_misses"), "memory": ("used_memory",)}
SWEEP_BATCH = 1000


def _no_fire(**_kw: Any) -> None:
    return None


def peek_redis(r: InstrumentedRedis, key: str) -> Cached:
    """What Redis holds for ``key``, by a plain GET (``REDIS probe_get``): a miss fills nothing."""
    raw = r.call("probe_get", r.client.get, key)
    entry, tomb = parse(raw)
    return Cached(key, entry, None, held(entry, tomb))


class ReferenceCache:
    """Redis + PostgreSQL + notifier, read through and invalidated the ``--strategy``'s way."""

    #: Its Redis and PostgreSQL clients fire ``REDIS`` and ``PG`` request events of their own.
    reports_requests = True

    def __init__(self, context: TargetContext) -> None:
        self.options = o = Options.from_parsed(context.options)
        users = context.role == "users"
        fire = context.fire if users else _no_fire
        self.r = InstrumentedRedis(o.redis_url, fire, pool_size=o.redis_pool_size if users else 4)
        self.pg = InstrumentedPG(o.pg_dsn, fire, o.pg_pool_size if users else 2)
        self.strategy = make_strategy(o.strategy, self.r, o.ttl_ms)
        record, new_process = context.record, context.new_process

        def record_fill(key: str, status: str, t0: int, t1: int, version: int) -> None:
            # A fill is its own one-operation process: the reader's process may go on meanwhile.
            record(new_process(), "fill", key, status, t0, t1, version)

        self.cache = CacheClient(self.r, self.pg, self.strategy, record_fill, o.fill_delay_ms)
        self.read = self.cache.read  # type: ignore[method-assign]  # the hit path: one call less
        self.payload_bytes = o.payload_bytes
        self._written = count(1)

    # -- the target ----------------------------------------------------------------------

    def key(self, index: int) -> str:
        return schema.entity_key(index)

    def read(self, key: str) -> Read:  # replaced per instance by the cache's own method
        return self.cache.read(key)

    def write(self, key: str) -> int:
        payload = f"{next(self._written)}:".ljust(self.payload_bytes, "x")
        return self.cache.write(key, payload)

    def reset(self, keys: Sequence[str]) -> None:
        """Every entity at version 0, and none of cachestorm's keys in Redis (``cs:*``: entries,
        tombstones, leases, counters, groups, locks, stampede and memory-pressure keys)."""
        with psycopg.connect(self.options.pg_dsn, autocommit=True) as conn:
            schema.install(conn)
            schema.reset(conn, len(keys))
        client = self.r.client
        batch: list[bytes] = []
        for key in client.scan_iter(match="cs:*", count=5000):
            batch.append(key)
            if len(batch) >= 5000:
                client.unlink(*batch)
                batch = []
        if batch:
            client.unlink(*batch)

    def sweep(self, keys: Sequence[str]) -> Iterator[Cached]:
        """What Redis holds for each key beside what PostgreSQL holds."""
        with psycopg.connect(self.options.pg_dsn, autocommit=True) as conn:
            db: dict[int, int] = dict(conn.execute(schema.READ_ALL_VERSIONS).fetchall())
        for start in range(0, len(keys), SWEEP_BATCH):
            chunk = list(keys[start : start + SWEEP_BATCH])
            raws: list[bytes | None] = self.r.client.mget(chunk)  # type: ignore[assignment]
            for key, raw in zip(chunk, raws, strict=True):
                entry, tomb = parse(raw)
                cached = entry if entry is not None else tomb
                yield Cached(key, cached, db.get(schema.entity_id(key)), held(entry, tomb))

    def peek(self, key: str) -> Cached:
        return peek_redis(self.r, key)

    def notifications_url(self) -> str:
        return self.options.ws_url

    def invalidate_many(self, keys: list[str]) -> None:
        """Drop what the cache holds for ``keys`` the strategy's way, then notify the notifier."""
        self.strategy.invalidate_many(keys)
        try:
            with self.pg.pool.connection() as conn:
                conn.execute("SELECT pg_notify(%s, %s)", (INVALIDATION_CHANNEL, json.dumps(keys)))
        except psycopg.Error as e:
            raise UnknownOutcome(f"PostgreSQL notify: {e}") from e

    def warm(self, users: int) -> None:
        """Open a PostgreSQL connection per open-model user before the schedule starts."""
        self.pg.warm(users)

    def stats(self) -> dict[str, int]:
        """Redis INFO's eviction and hit counters, and its memory use."""
        values: dict[str, int] = {}
        for section, names in REDIS_STATS.items():
            info = self.r.client.info(section)
            values.update({n: int(info[n]) for n in names if n in info})
        return values

    def describe(self) -> str:
        o = self.options
        extra = "".join(
            f", {label} {value}"
            for label, value in (("fill delay ms", o.fill_delay_ms), ("ttl ms", o.ttl_ms))
            if value
        )
        return f"reference cache, strategy {o.strategy}{extra}"

    def close(self) -> None:
        for client in (self.r, self.pg):
            with contextlib.suppress(Exception):
                client.close()

    # -- the session ---------------------------------------------------------------------

    @classmethod
    def setup(cls, environment: Any) -> None:
        """Start the embedded services, or check the given ones, once per session on the master."""
        embedded.setup_services(environment)

    @classmethod
    def run_problem(cls, environment: Any) -> str | None:
        """A run started from the web UI may name other services: check them first."""
        return embedded.adopt_posted_urls(environment)

    @classmethod
    def teardown(cls) -> None:
        embedded.stop()
