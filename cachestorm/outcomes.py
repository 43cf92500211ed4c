"""One recorded operation and its outcome, for code that records its own history rows.

The target's reads and writes are recorded by :mod:`cachestorm.operations`; cachestorm's own
Redis workloads (counters, transfers, locks: :mod:`cachestorm.contention`) record theirs with
:class:`Operation`, which times the call, records exactly one row, and classifies an exception
the same way everywhere:

- before anything was sent that could change state (``sent`` still False), any exception means
  the operation certainly had no effect: ``fail``;
- after, a timeout, a lost connection (:class:`~cachestorm.clients.UnknownOutcome`) or the user
  being stopped mid-call (``GreenletExit``) leaves it unknown: ``info``; Redis refusing the
  command (any other ``RedisError``) means it was not applied: ``fail``;
- a read changes nothing, so a read that raised is always ``fail``.

Example::

    with Operation(record, process, "incr", key, value=amount, source="atomic") as op:
        op.sent = True
        client.incrby(key, amount)
        op.done("ok")
    return op.status             # "ok", or what the exception made it

The exceptions in ``handled`` (by default Redis's, UnknownOutcome and ValueError for a corrupt
value) end the ``with`` block with the operation recorded; any other exception, GreenletExit
included, is recorded and then raised on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType

import gevent
import redis

from cachestorm.clients import UnknownOutcome

now = time.time_ns
HANDLED: tuple[type[BaseException], ...] = (UnknownOutcome, redis.RedisError, ValueError)


def outcome(exc: BaseException, *, sent: bool, read: bool = False) -> str:
    """The status of an operation that raised ``exc``."""
    if read or not sent:
        return "fail"
    if isinstance(exc, UnknownOutcome | gevent.GreenletExit | redis.ConnectionError | redis.TimeoutError):
        return "info"
    if isinstance(exc, redis.RedisError):
        return "fail"
    return "info"


class Operation:
    """A context manager around one operation; :meth:`done` or an exception records it once."""

    __slots__ = (
        "f",
        "handled",
        "key",
        "process",
        "read",
        "record",
        "sent",
        "source",
        "status",
        "t0",
        "value",
    )

    def __init__(
        self,
        record: Callable[..., None],
        process: int,
        f: str,
        key: str | None,
        *,
        value: int | None = None,
        source: str | None = None,
        read: bool = False,
        handled: tuple[type[BaseException], ...] = HANDLED,
    ) -> None:
        self.record = record
        self.process = process
        self.f = f
        self.key = key
        self.value = value
        self.source = source
        self.read = read
        self.handled = handled
        #: Set once a command that may change state has been sent.
        self.sent = False
        self.status = ""
        self.t0 = 0

    def __enter__(self) -> Operation:
        self.t0 = now()
        return self

    def done(self, status: str, value: int | None = None, source: str | None = None) -> str:
        """Record the operation with ``status`` (and ``value``, ``source`` if given); returns it."""
        if value is not None:
            self.value = value
        if source is not None:
            self.source = source
        self.status = status
        self.record(self.process, self.f, self.key, status, self.t0, now(), None, self.value, self.source)
        return status

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if exc is None:
            if not self.status:
                raise RuntimeError(f"{self.f}: the operation ended without done()")
            return False
        if not self.status:
            self.done(outcome(exc, sent=self.sent, read=self.read))
        return isinstance(exc, self.handled)


def recorded_read(
    record: Callable[..., None], process: int, f: str, key: str, read: Callable[[], int]
) -> int | None:
    """Record ``read()`` as one read operation whose ``value`` is what it returned; None if it failed."""
    with Operation(record, process, f, key, read=True) as op:
        op.done("ok", value=read())
        return op.value
    return None
