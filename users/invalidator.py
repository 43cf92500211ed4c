"""Bulk invalidation while readers read: ``Invalidator``.

Every so often it drops what the caches hold for ``--invalidate-batch`` (default 100) of the
target's keys through the target's ``invalidate_many`` (the reference cache does it in one
pipelined round trip, the strategy's way, then sends one notification with the keys). The whole
is one ``invalidate_batch`` operation in the history, timed from the first command to the
notification's completion. Readers go on meanwhile; the stale_read and
divergence checks judge whether any of them saw what the invalidation should have removed.
"""

from __future__ import annotations

import random
import time

from locust import User, between, task

from cachestorm import keys
from cachestorm.node import node_of

now = time.time_ns


class Invalidator(User):
    """Invalidates a batch of random entity keys about once a second."""

    weight = 1
    wait_time = between(0.5, 1.5)

    def on_start(self) -> None:
        self.node = node_of(self.environment)
        self.process = self.node.new_process()
        parsed = self.environment.parsed_options
        self.batch = int(getattr(parsed, "invalidate_batch", 100))
        self.keys = int(getattr(parsed, "keys", 10000))
        self.rng = random.Random(keys.user_seed(self.node.options.seed, self.environment, self))

    @task
    def invalidate(self) -> None:
        assert self.node.operations is not None
        invalidate_many = getattr(self.node.target, "invalidate_many", None)
        if invalidate_many is None:
            raise RuntimeError("Invalidator needs a target with invalidate_many(keys) (docs/targets.md)")
        ids = self.rng.sample(range(self.keys), min(self.batch, self.keys))
        batch = [self.node.operations.keys[i] for i in ids]
        t0 = now()
        try:
            invalidate_many(batch)
        except Exception:
            # Part of the batch may have been dropped: the outcome is unknown.
            self.node.recorder.record(
                self.process, "invalidate_batch", None, "info", t0, now(), None, len(batch)
            )
            self.process = self.node.new_process()
            return
        self.node.recorder.record(self.process, "invalidate_batch", None, "ok", t0, now(), None, len(batch))
