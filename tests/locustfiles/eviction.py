"""Readers and writers on a few keys while MemoryPressureUser makes Redis evict, for the tests.

Run with --redis-maxmemory and --redis-eviction-policy; no URLs, so the embedded Redis applies
them. The StepRamp shape with --ramp-time 0: straight to --ramp-users, then the quiesce.
"""

from __future__ import annotations

from typing import Any

from locust import between, events

from analysis import at_run_end, live
from cachestorm import events as cachestorm_events
from cachestorm import options, plugin
from shapes import StepRamp
from users import CacheReader, CacheWriter, MemoryPressureUser

__all__ = ["FastReader", "FastWriter", "Pressure", "StepRamp"]

events.init_command_line_parser.add_listener(options.add_arguments)
cachestorm_events.run_finished.add_listener(at_run_end.judge)
live.wire()


class FastReader(CacheReader):
    weight = 4
    wait_time = between(0.0, 0.01)


class FastWriter(CacheWriter):
    weight = 2
    wait_time = between(0.0, 0.02)


class Pressure(MemoryPressureUser):
    weight = 1


del CacheReader, CacheWriter, MemoryPressureUser


@events.init.add_listener
def _register(environment: Any, **_kwargs: Any) -> None:
    plugin.register(environment)
