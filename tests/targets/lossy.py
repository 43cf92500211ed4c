"""A reference cache with a planted bug, for tests/test_redis_pause_run.py: when Redis does not
answer a quick health check, its write skips the invalidation and reports the commit only.

The invalidation is then truly lost (never sent), and the write says so: ``info`` with the
version, as ``AfterCommit`` makes it. Unlike the reference cache, it does not send a timed-out
invalidation again either (it gives up at the first timeout), so its writers come back within a
pause and reach the skipping path while Redis is still stopped.
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
        self.cache.invalidation_retry_s = 0.0
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
