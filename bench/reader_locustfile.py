"""CacheReader with no wait, on a cache that holds every key: cache hits as fast as Locust goes.

Used by bench/run.py; not a load test of its own.
"""

from __future__ import annotations

from typing import Any

import redis
from locust import constant, events

from analysis import at_run_end, live
from cachestorm import events as cachestorm_events
from cachestorm import options, plugin
from cachestorm.schema import entity_key
from cachestorm.strategies import encode_entry
from users import CacheReader

events.init_command_line_parser.add_listener(options.add_arguments)
cachestorm_events.run_finished.add_listener(at_run_end.judge)
live.wire()


class HitReader(CacheReader):
    wait_time = constant(0)


del CacheReader


def prefill(environment: Any, **_kw: Any) -> None:
    # After the plugin's reset (registered after it), so that every read is a hit.
    o = environment.parsed_options
    r = redis.Redis.from_url(o.redis_url)
    with r.pipeline(transaction=False) as pipe:
        for i in range(o.keys):
            pipe.set(entity_key(i), encode_entry(0, "x" * o.payload_bytes))
        pipe.execute()
    r.close()


@events.init.add_listener
def _register(environment: Any, **_kwargs: Any) -> None:
    plugin.register(environment)
    environment.events.test_start.add_listener(prefill)
