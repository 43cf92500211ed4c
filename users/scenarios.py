"""Scenarios: which user classes a run starts when none are named on the command line.

``--scenario coherence`` is the spine's demo: readers, writers and WebSocket listeners.
``--scenario contention`` runs the contention workloads (counters, transactions, locks, stampedes,
bulk invalidation) with some readers to invalidate under, and MemoryPressureUser when
``--redis-maxmemory`` is set. ``--scenario all`` runs both. Every class stays importable from
the locustfile, so the web UI's class picker can choose any of them.

Example::

    locust -f locustfile.py --headless --scenario contention --counter-mode unsafe
"""

from __future__ import annotations

from typing import Any

from users.cache import CacheReader, CacheWriter
from users.contention import CounterUser, LockUser, TransactionUser
from users.invalidator import Invalidator
from users.memory import MemoryPressureUser
from users.stampede import StampedeTrigger, StampedeUser
from users.websocket import WebSocketListener

COHERENCE: list[Any] = [CacheReader, CacheWriter, WebSocketListener]
CONTENTION: list[Any] = [
    CounterUser,
    TransactionUser,
    LockUser,
    StampedeUser,
    StampedeTrigger,
    Invalidator,
    CacheReader,
]


def user_classes(scenario: str, redis_maxmemory: str = "") -> list[Any]:
    """The user classes of ``scenario``, in a stable order."""
    chosen = {"coherence": COHERENCE, "contention": CONTENTION, "all": COHERENCE + CONTENTION}[scenario]
    if scenario != "coherence" and redis_maxmemory:
        # Only with a memory limit: without one it would fill the machine's memory.
        chosen = [*chosen, MemoryPressureUser]
    return list(dict.fromkeys(chosen))


def apply(environment: Any) -> None:
    """Set the run's user classes from ``--scenario`` unless classes were named on the command line."""
    parsed = environment.parsed_options
    if parsed is None or getattr(parsed, "user_classes", None):
        return
    environment.user_classes = user_classes(parsed.scenario, parsed.redis_maxmemory)
