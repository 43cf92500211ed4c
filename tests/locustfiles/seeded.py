"""Readers, writers and counters with no shape, for the --seed replay test (tests/test_seed_runs.py).

``-u``/``-r``/``--run-time`` drive the run. A slow spawn rate starts the users while the earlier
ones' writes are being probed, and each probe takes a process id: the process ids the users get
then depend on timing, which their key choices must not.
"""

from __future__ import annotations

from typing import Any

from locust import between, events

from analysis import at_run_end, live
from cachestorm import events as cachestorm_events
from cachestorm import options, plugin
from users import CacheReader, CacheWriter, CounterUser, contention

__all__ = ["SeededCounter", "SeededReader", "SeededWriter"]

events.init_command_line_parser.add_listener(options.add_arguments)
cachestorm_events.run_finished.add_listener(at_run_end.judge)
live.wire()
events.init_command_line_parser.add_listener(contention.add_arguments)


class SeededReader(CacheReader):
    weight = 1
    wait_time = between(0.005, 0.02)


class SeededWriter(CacheWriter):
    weight = 1
    wait_time = between(0.005, 0.02)


class SeededCounter(CounterUser):
    weight = 1


# Only the subclasses run.
del CacheReader, CacheWriter, CounterUser


@events.init.add_listener
def _register(environment: Any, **_kwargs: Any) -> None:
    plugin.register(environment)
