"""cachestorm's locustfile: coherence and contention load tests of a Redis cache over PostgreSQL.

    locust -f locustfile.py --headless                          # coherence scenario, StepRamp to 500
    locust -f locustfile.py                                     # the same in the web UI
    locust -f locustfile.py --strategy cache-aside --fill-delay-ms 20   # the positive control
    locust -f locustfile.py --headless --scenario contention --shape Spike
    locust -f locustfile.py --headless --arrival-rate 0:200,30:2000   # open model, OpenModel shape

See README.md and docs/ for the options, the op history and the checks.
"""

from __future__ import annotations

import sys
from typing import Any

from locust import events

from analysis import at_run_end, live
from cachestorm import embedded, options, plugin
from cachestorm import events as cachestorm_events
from shapes import OpenModel, Soak, Spike, Stages, StagesError, StepRamp, load_stages, open_model_problem
from users import (
    CacheReader,
    CacheWriter,
    CounterUser,
    Invalidator,
    LockUser,
    MemoryPressureUser,
    StampedeTrigger,
    StampedeUser,
    TransactionUser,
    WebSocketListener,
    contention,
    scenarios,
)

__all__ = [
    "CacheReader",
    "CacheWriter",
    "CounterUser",
    "Invalidator",
    "LockUser",
    "MemoryPressureUser",
    "OpenModel",
    "Soak",
    "Spike",
    "Stages",
    "StampedeTrigger",
    "StampedeUser",
    "StepRamp",
    "TransactionUser",
    "WebSocketListener",
]

events.init_command_line_parser.add_listener(options.add_arguments)
events.init_command_line_parser.add_listener(contention.add_arguments)
cachestorm_events.run_finished.add_listener(at_run_end.judge)
live.wire()


def choose_shape(environment: Any) -> None:
    """``--shape NAME``; by default OpenModel with ``--arrival-rate``, else StepRamp (Locust would
    take whichever shape it found first)."""
    parsed = environment.parsed_options
    name = parsed.shape or ("OpenModel" if parsed.arrival_rate else "StepRamp")
    shapes = environment.available_shape_classes or {}
    if name not in shapes:
        embedded.fatal(f"--shape is {name!r}: use one of {', '.join(sorted(shapes))}.")
    problem = open_model_problem(parsed, name)
    if problem is not None:
        embedded.fatal(problem)
    environment.shape_class = shapes[name]
    environment.shape_class.runner = environment.runner


def run_shape_problem(environment: Any) -> str | None:
    """At each test start: the web UI may have set a rate, or picked a shape, since start-up."""
    shape = environment.shape_class
    # "Default" is what the web UI's picker calls running without a shape.
    name = type(shape).__name__ if shape is not None else "Default"
    return open_model_problem(environment.parsed_options, name)


@events.init.add_listener
def _register(environment: Any, **_kwargs: Any) -> None:
    parsed = environment.parsed_options
    if parsed is None:
        return
    problems = contention.problems(parsed)
    if problems:
        embedded.fatal(problems[0])
    WebSocketListener.fixed_count = parsed.listeners
    scenarios.apply(environment)
    choose_shape(environment)
    if parsed.stages:
        try:
            load_stages(parsed.stages, list(environment.available_user_classes or {}))
        except StagesError as e:
            embedded.fatal(str(e))
    plugin.register(environment, run_rules=[run_shape_problem])


if __name__ == "__main__":
    sys.exit("run me with locust: locust -f locustfile.py")
