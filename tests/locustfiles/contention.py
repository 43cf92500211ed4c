"""Readers and writers contending hard on a few keys, for the integration tests.

The StepRamp shape with --ramp-time 0: straight to --ramp-users, held for --hold-time, then
--quiesce-time of reads only. Same users as locustfile.py, shorter waits.
"""

from __future__ import annotations

from typing import Any

from locust import between, events

from analysis import at_run_end, live
from cachestorm import events as cachestorm_events
from cachestorm import options, plugin
from shapes import StepRamp
from users import CacheReader, CacheWriter, WebSocketListener

__all__ = ["FastReader", "FastWriter", "Listener", "StepRamp"]

events.init_command_line_parser.add_listener(options.add_arguments)
cachestorm_events.run_finished.add_listener(at_run_end.judge)
live.wire()


class FastReader(CacheReader):
    weight = 3
    wait_time = between(0.0, 0.01)


class FastWriter(CacheWriter):
    weight = 1
    wait_time = between(0.0, 0.02)


class Listener(WebSocketListener):
    pass


# Only the subclasses run.
del CacheReader, CacheWriter, WebSocketListener


@events.init.add_listener
def _register(environment: Any, **_kwargs: Any) -> None:
    Listener.fixed_count = environment.parsed_options.listeners
    plugin.register(environment)
