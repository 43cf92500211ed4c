"""cachestorm's locustfile: coherence load test of a Redis cache in front of PostgreSQL.

    locust -f locustfile.py --headless                 # embedded services, StepRamp to 500 users
    locust -f locustfile.py                            # the same in the web UI
    locust -f locustfile.py --strategy cache-aside --fill-delay-ms 5   # the positive control

See README.md and docs/ for the options, the op history and the checks.
"""

from __future__ import annotations

from typing import Any

from locust import events

from cachestorm import options, plugin
from shapes import StepRamp
from users import CacheReader, CacheWriter, WebSocketListener

__all__ = ["CacheReader", "CacheWriter", "StepRamp", "WebSocketListener"]

events.init_command_line_parser.add_listener(options.add_arguments)


@events.init.add_listener
def _register(environment: Any, **_kwargs: Any) -> None:
    if environment.parsed_options is not None:
        WebSocketListener.fixed_count = environment.parsed_options.listeners
    plugin.register(environment)
