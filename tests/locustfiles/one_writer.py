"""Fast readers and a single writer, for the clock-skew tests (tests/test_clock_skew.py).

With one writer, every write of the run is stamped by one clock, whichever worker it runs on: a
worker's skewed clock can then only put reads out of order with writes (false stale or future
reads), never two writes out of order with each other (which the analysis would refuse as input
that breaks the version contract, not judge).
"""

from __future__ import annotations

from typing import Any

from locust import between, events

from analysis import at_run_end, live
from cachestorm import events as cachestorm_events
from cachestorm import options, plugin
from shapes import StepRamp
from users import CacheReader, CacheWriter, WebSocketListener

__all__ = ["FastReader", "Listener", "OnlyWriter", "StepRamp"]

events.init_command_line_parser.add_listener(options.add_arguments)
cachestorm_events.run_finished.add_listener(at_run_end.judge)
live.wire()


class FastReader(CacheReader):
    wait_time = between(0.0, 0.01)


class OnlyWriter(CacheWriter):
    fixed_count = 1
    wait_time = between(0.0, 0.02)


class Listener(WebSocketListener):
    pass


# Only the subclasses run.
del CacheReader, CacheWriter, WebSocketListener


@events.init.add_listener
def _register(environment: Any, **_kwargs: Any) -> None:
    Listener.fixed_count = environment.parsed_options.listeners
    plugin.register(environment)
