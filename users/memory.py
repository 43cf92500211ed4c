"""Memory pressure: ``MemoryPressureUser`` fills Redis with large values until it evicts.

Run it with ``--redis-maxmemory`` (e.g. ``64mb``) and ``--redis-eviction-policy`` (e.g.
``allkeys-lru``), which the embedded Redis applies at start. Its values (``cs:m:<node>.<ordinal>:<n>``,
``--memory-value-bytes`` each) push the cache's entries, tombstones and leases out; the run
samples ``evicted_keys``, ``keyspace_hits`` and ``keyspace_misses`` from INFO every second
(``redis_stat`` rows). Eviction may cause misses, never stale reads: the eviction check holds the
readers to that, and ``--strategy versioned-cas`` is the positive control that fails it.
"""

from __future__ import annotations

import itertools
import random

import redis
from locust import User, constant, task

from cachestorm import keys
from cachestorm.clients import UnknownOutcome
from cachestorm.node import node_of

KEY_PREFIX = "cs:m:"


class MemoryPressureUser(User):
    """SETs large values under fresh keys, one per task."""

    weight = 1
    wait_time = constant(0.01)

    def on_start(self) -> None:
        self.node = node_of(self.environment)
        size = int(getattr(self.environment.parsed_options, "memory_value_bytes", 65536))
        seed = keys.user_seed(self.node.options.seed, self.environment, self)
        # Random bytes: Redis does not compress, but random keeps any layer from deduplicating.
        self.value = random.Random(seed).randbytes(size)
        self.counter = itertools.count()
        # Named by the user's identity, not a process id, so that a seed replays the key names too.
        _, node, ordinal = keys.user_identity(self.environment, self)
        self.prefix = f"{KEY_PREFIX}{node}.{ordinal}:"

    @task
    def fill(self) -> None:
        assert self.node.r is not None
        key = f"{self.prefix}{next(self.counter)}"
        try:
            self.node.r.call("set_large", self.node.r.client.set, key, self.value)
        except (redis.RedisError, UnknownOutcome):
            return  # an OOM refusal (noeviction policy) counts as a Locust failure
