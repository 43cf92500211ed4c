"""Readers, and one user that plants a stale read every --plant-every seconds: for bench/live_latency.py.

The planted bug is a strategy that commits a write and leaves the cached entry as it was (no
invalidation): the planter reads a key (so that it is cached), writes it, and reads it again, which
returns the cached, older version after the write completed: a stale read. Not a load test of its own.
"""

from __future__ import annotations

from typing import Any

from locust import between, constant, events, task

from analysis import at_run_end, live
from cachestorm import events as cachestorm_events
from cachestorm import options, plugin
from cachestorm.strategies import CacheAside, register
from users import CacheReader, CacheWriter

events.init_command_line_parser.add_listener(options.add_arguments)
cachestorm_events.run_finished.add_listener(at_run_end.judge)
live.wire()


@register
class ForgetsInvalidation(CacheAside):
    """Cache-aside whose writes never invalidate: every write leaves a stale entry behind."""

    name = "forgets-invalidation"

    def invalidate(self, key: str, version: int) -> None:
        return None

    def invalidate_many(self, keys: list[str]) -> None:
        return None


class Reader(CacheReader):
    wait_time = between(0.005, 0.02)


class Planter(CacheWriter):
    fixed_count = 1
    wait_time = constant(2.5)

    @task
    def write(self) -> None:
        key = self.next_key()
        self.ops.read(self.process, key, None)
        self.renew(self.ops.write(self.process, key, None))
        self.ops.read(self.process, key, None)


del CacheReader, CacheWriter


@events.init.add_listener
def _register(environment: Any, **_kwargs: Any) -> None:
    plugin.register(environment)
