"""Bulk invalidation while readers read: ``Invalidator``.

Every so often it drops what the cache holds for ``--invalidate-batch`` (default 100) entity keys
in one pipelined round trip, the strategy's way (``Strategy.invalidate_many``: UNLINK for
cache-aside; for the versioned strategies each entry becomes the tombstone of its own version and
its lease is revoked), then sends one notification (``pg_notify`` on ``cachestorm_invalidation``
with the keys). The whole is one ``invalidate_batch`` operation in the history, timed from the
first command to the notification's completion. Readers go on meanwhile; the stale_read and
divergence checks judge whether any of them saw what the invalidation should have removed.
"""

from __future__ import annotations

import json
import random
import time

import psycopg
import redis
from locust import User, between, task

from cachestorm import keys
from cachestorm.clients import UnknownOutcome
from cachestorm.plugin import node_worker
from cachestorm.schema import entity_key

now = time.time_ns
CHANNEL = "cachestorm_invalidation"


class Invalidator(User):
    """Invalidates a batch of random entity keys about once a second."""

    weight = 1
    wait_time = between(0.5, 1.5)

    def on_start(self) -> None:
        self.node = node_worker(self.environment)
        self.process = self.node.new_process()
        parsed = self.environment.parsed_options
        self.batch = int(getattr(parsed, "invalidate_batch", 100))
        self.keys = int(getattr(parsed, "keys", 10000))
        self.rng = random.Random(keys.user_seed(self.node.options.seed, self.environment, self))

    @task
    def invalidate(self) -> None:
        assert self.node.cache is not None and self.node.pg is not None
        ids = self.rng.sample(range(self.keys), min(self.batch, self.keys))
        keys = [entity_key(i) for i in ids]
        t0 = now()
        try:
            self.node.cache.strategy.invalidate_many(keys)
            with self.node.pg.pool.connection() as conn:
                conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, json.dumps(keys)))
        except (redis.RedisError, psycopg.Error, UnknownOutcome):
            # Part of the batch may have been dropped: the outcome is unknown.
            self.node.recorder.record(
                self.process, "invalidate_batch", None, "info", t0, now(), None, len(keys)
            )
            self.process = self.node.new_process()
            return
        self.node.recorder.record(self.process, "invalidate_batch", None, "ok", t0, now(), None, len(keys))
