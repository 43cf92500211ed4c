"""Workarounds for Locust behaviour that distorts what cachestorm measures.

:func:`apply` is called once per process by :func:`cachestorm.plugin.register`.

- **Spawn messages block a worker.** Locust 2.47's ``WorkerRunner`` filters the options in each
  ``spawn`` message with ``k not in argument_parser.default_args_dict()``, which builds a whole
  argument parser for every key of the message. With cachestorm's options that is 109
  parsers at about 3 ms each, so every spawn message (one a second per worker while users are
  spawning) stopped the worker's event loop for a few hundred milliseconds, and each user's
  operation in flight then took that long. The defaults do not change within a process, so they
  are built once. Measured in the demo, read_hit p95 while users spawn: docs/performance.md.
"""

from __future__ import annotations

import functools
from typing import Any

from locust import argument_parser

_applied = False


def apply() -> None:
    """Install the workarounds (idempotent)."""
    global _applied
    if _applied:
        return
    _applied = True
    original = argument_parser.default_args_dict
    cached = functools.cache(original)

    def default_args_dict() -> dict[str, Any]:
        # A copy, so that no caller can change what the next one sees.
        return dict(cached())

    default_args_dict.__doc__ = original.__doc__
    argument_parser.default_args_dict = default_args_dict
