"""Users that read through and write around the Redis cache.

Each user is one *process* of the history: it runs one operation at a time and takes a fresh
process id after an operation whose outcome is unknown (``info``).
"""

from __future__ import annotations

from locust import User, between, task

from cachestorm import keys
from cachestorm.plugin import node_worker


class _CacheUser(User):
    abstract = True

    def on_start(self) -> None:
        self.node = node_worker(self.environment)
        o = self.node.options
        assert self.node.cache is not None
        self.cache = self.node.cache
        self.process = self.node.new_process()
        self.keys = keys.from_name(o.key_distribution, o.keys, keys.derive_seed(o.seed, self.process))
        self.next_key = self.keys.next

    def renew(self, status: str) -> None:
        if status == "info":
            self.process = self.node.new_process()


class CacheReader(_CacheUser):
    """Read-through: GET; on a miss, load the row from PostgreSQL and fill the cache."""

    weight = 8
    wait_time = between(0.05, 0.25)

    @task
    def read(self) -> None:
        if self.cache.read(self.process, self.next_key()) == "info":
            self.process = self.node.new_process()


class CacheWriter(_CacheUser):
    """Update a row, commit, then invalidate its cache entry the strategy's way."""

    weight = 2
    wait_time = between(0.5, 1.5)

    def on_start(self) -> None:
        super().on_start()
        self.written = 0
        self.payload_bytes = self.node.options.payload_bytes

    @task
    def write(self) -> None:
        if self.node.writes_paused:
            return  # a shape is quiescing: readers go on, writes stop
        self.written += 1
        payload = f"{self.process}:{self.written}:".ljust(self.payload_bytes, "x")
        self.renew(self.cache.write(self.process, self.next_key(), payload))
