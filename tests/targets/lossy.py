"""A reference cache with a planted bug, for tests/test_redis_pause_run.py: when Redis does not
answer a quick health check, its write skips the invalidation and reports the commit only.

The invalidation is then truly lost (never sent), unlike a timed-out one, which Redis still runs
when it resumes. Its writes are ``info`` with the version, as ``AfterCommit`` makes them.
"""

from __future__ import annotations

import contextlib

import redis

from cachestorm import schema
from cachestorm.reference import ReferenceCache
from cachestorm.target import AfterCommit, TargetContext

# Far below the data client's 5 s, so that a pause of a few seconds trips it.
HEALTH_TIMEOUT_S = 0.3


class SkipsInvalidationWhenRedisIsSlow(ReferenceCache):
    def __init__(self, context: TargetContext) -> None:
        super().__init__(context)
        self.health = redis.Redis.from_url(
            self.options.redis_url, socket_timeout=HEALTH_TIMEOUT_S, socket_connect_timeout=HEALTH_TIMEOUT_S
        )

    def write(self, key: str) -> int:
        try:
            self.health.ping()
        except redis.RedisError as e:
            version = self.pg.write(schema.entity_id(key), "lossy")
            raise AfterCommit(version, f"Redis unhealthy ({e}); invalidation skipped") from e
        return super().write(key)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.health.close()
        super().close()
