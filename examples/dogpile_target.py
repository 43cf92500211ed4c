"""A target whose read path is dogpile.cache's ``region.get_or_create`` on its Redis backend.

    locust -f locustfile.py --headless --target examples/dogpile_target.py:DogpileApp \\
        --dogpile-instances 4 --dogpile-load-delay-ms 50 --dogpile-lock --keys 2 ...

The data are documents in PostgreSQL (``dogpile_docs``: name, JSON body, version), keyed
``doc:<n>``. A read is ``region.get_or_create(key, load)``, ``load`` reading the row (and taking
``--dogpile-load-delay-ms``, an expensive recomputation); a write is UPDATE + commit, then
``region.delete(key)``. A read is a ``miss`` when its own ``load`` ran, else a ``hit``: the
``stampede`` check counts the misses per key between writes.

``--dogpile-lock`` turns on the backend's ``distributed_lock``: one load per key across
every process. Without it dogpile still serialises the loads of one region with a mutex of its
process, so each node runs ``--dogpile-instances`` independent regions, like that many app servers
behind a balancer, reads spread over them in turn.

Without ``--dogpile-redis-url`` and ``--dogpile-pg-dsn`` the master starts embedded Redis and
PostgreSQL for the session and puts their URLs into the parsed options, which Locust sends to the
workers.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Iterator, Sequence
from itertools import count
from typing import Any

import psycopg
import redis
from dogpile.cache import make_region
from dogpile.cache.api import NO_VALUE
from dogpile.cache.region import CacheRegion
from psycopg_pool import ConnectionPool

from cachestorm import embedded
from cachestorm.services import ServiceError, check_pg, check_redis
from cachestorm.target import Cached, Read, TargetContext

PREFIX = "dogpile:"
SCHEMA = """CREATE TABLE IF NOT EXISTS dogpile_docs
    (name text PRIMARY KEY, body jsonb NOT NULL, version int NOT NULL)"""


class DogpileApp:
    """N dogpile.cache regions on one Redis, over PostgreSQL; optionally the distributed lock."""

    def __init__(self, context: TargetContext) -> None:
        o = context.options
        self.locked = bool(o.dogpile_lock)
        self.load_delay_s = float(o.dogpile_load_delay_ms) / 1000
        users = context.role == "users"
        self.pool = ConnectionPool(o.dogpile_pg_dsn, min_size=1, max_size=50 if users else 2, open=True)
        self.redis_url = o.dogpile_redis_url
        self.regions = [self._region(o) for _ in range(max(1, int(o.dogpile_instances)) if users else 1)]
        self._turn = count()
        self.keys: list[str] = []

    def _region(self, o: Any) -> CacheRegion:
        locked = self.locked
        return make_region(key_mangler=lambda key: PREFIX + key).configure(
            "dogpile.cache.redis",
            arguments={
                "url": self.redis_url,
                "distributed_lock": locked,
                # The lock must outlive a load and must not outlive a killed holder for long.
                "lock_timeout": 10,
                "lock_sleep": 0.005,
                "thread_local_lock": not locked,
            },
        )

    def _load(self, key: str) -> dict[str, Any]:
        with self.pool.connection() as conn:
            row = conn.execute("SELECT body, version FROM dogpile_docs WHERE name = %s", (key,)).fetchone()
        if row is None:
            raise KeyError(key)
        time.sleep(self.load_delay_s)
        return {"body": row[0], "version": row[1]}

    # -- the target ----------------------------------------------------------------------

    def key(self, index: int) -> str:
        return f"doc:{index}"

    def read(self, key: str) -> Read:
        region = self.regions[next(self._turn) % len(self.regions)]
        ran: list[bool] = []

        def creator() -> dict[str, Any]:
            ran.append(True)
            return self._load(key)

        doc = region.get_or_create(key, creator)
        return Read(int(doc["version"]), "miss" if ran else "hit")

    def write(self, key: str) -> int:
        body = json.dumps({"value": secrets.token_hex(8)})
        with self.pool.connection() as conn:
            row = conn.execute(
                "UPDATE dogpile_docs SET body = %s, version = version + 1 WHERE name = %s RETURNING version",
                (body, key),
            ).fetchone()
        if row is None:
            raise KeyError(key)
        self.regions[0].delete(key)  # after the commit; every region shares the one Redis
        return int(row[0])

    def reset(self, keys: Sequence[str]) -> None:
        with self.pool.connection() as conn:
            conn.execute(SCHEMA)
            conn.execute("TRUNCATE dogpile_docs")
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO dogpile_docs VALUES (%s, '{}'::jsonb, 0)", [(k,) for k in keys])
        r = redis.Redis.from_url(self.redis_url)
        try:
            stale = list(r.scan_iter(match=f"*{PREFIX}*", count=1000))
            if stale:
                r.delete(*stale)
        finally:
            r.close()

    def sweep(self, keys: Sequence[str]) -> Iterator[Cached]:
        with self.pool.connection() as conn:
            db: dict[str, int] = dict(conn.execute("SELECT name, version FROM dogpile_docs").fetchall())
        region = self.regions[0]
        for key in keys:
            doc = region.get(key, ignore_expiration=True)  # a plain get: it loads nothing
            version = None if doc is NO_VALUE else int(doc["version"])
            yield Cached(key, version, db.get(key))

    def describe(self) -> str:
        lock = "distributed lock" if self.locked else "no distributed lock"
        return (
            f"dogpile.cache redis backend, {len(self.regions)} regions per node, {lock}, "
            f"load {self.load_delay_s * 1000:g} ms"
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.pool.close()

    # -- the session ---------------------------------------------------------------------

    @classmethod
    def add_arguments(cls, parser: Any) -> None:
        parser.add_argument(
            "--dogpile-redis-url",
            env_var="CACHESTORM_DOGPILE_REDIS_URL",
            default="",
            is_secret=True,
            help="dogpile's Redis (empty: an embedded one).",
        )
        parser.add_argument(
            "--dogpile-pg-dsn",
            env_var="CACHESTORM_DOGPILE_PG_DSN",
            default="",
            is_secret=True,
            help="The documents' PostgreSQL (empty: an embedded one).",
        )
        parser.add_argument(
            "--dogpile-lock",
            env_var="CACHESTORM_DOGPILE_LOCK",
            action="store_true",
            default=False,
            help="The Redis backend's distributed_lock: one load per key across every region and node.",
        )
        parser.add_argument(
            "--dogpile-instances",
            env_var="CACHESTORM_DOGPILE_INSTANCES",
            type=int,
            default=4,
            help="Independent dogpile regions per node, as that many app servers.",
        )
        parser.add_argument(
            "--dogpile-load-delay-ms",
            env_var="CACHESTORM_DOGPILE_LOAD_DELAY_MS",
            type=float,
            default=50.0,
            help="How long a load (the creator) takes beyond its query: the recomputation's cost.",
        )

    @classmethod
    def setup(cls, environment: Any) -> None:
        parsed = environment.parsed_options
        problem = cls.run_problem(environment)
        if problem is not None:
            embedded.fatal(problem)
        given = (parsed.dogpile_redis_url, parsed.dogpile_pg_dsn)
        if all(given):
            try:
                check_redis(parsed.dogpile_redis_url)
                check_pg(parsed.dogpile_pg_dsn)
            except ServiceError as e:
                embedded.fatal(str(e))
            return
        if any(given):
            embedded.fatal(
                "--dogpile-redis-url and --dogpile-pg-dsn go together: give both, or neither "
                "for embedded ones."
            )
        urls = embedded.start_embedded().urls
        assert urls is not None
        parsed.dogpile_redis_url, parsed.dogpile_pg_dsn = urls.redis_url, urls.pg_dsn
        with psycopg.connect(urls.pg_dsn, autocommit=True) as conn:
            conn.execute(SCHEMA)

    @classmethod
    def run_problem(cls, environment: Any) -> str | None:
        parsed = environment.parsed_options
        if parsed.dogpile_instances < 1:
            return f"--dogpile-instances is {parsed.dogpile_instances}: give 1 or more regions."
        if parsed.dogpile_load_delay_ms < 0:
            return f"--dogpile-load-delay-ms is {parsed.dogpile_load_delay_ms:g}: give 0 or more."
        return None

    @classmethod
    def teardown(cls) -> None:
        embedded.stop()
