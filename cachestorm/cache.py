"""The reference cache's read and write paths: read-through, and write then invalidate.

This is the code under test when the target is cachestorm's own reference cache
(:mod:`cachestorm.reference`). It decides what a read and a write do, the strategy's way; what
their outcome was is recorded one layer up, by :mod:`cachestorm.operations`. The exceptions say
what a failure means: :class:`~cachestorm.target.NoEffect` when the transaction certainly rolled
back, :class:`~cachestorm.target.AfterCommit` when the commit happened and the invalidation is
unknown, anything else when nobody can tell.

A write whose invalidation timed out or lost its connection after its commit sends it again until
Redis confirms it, for up to :data:`INVALIDATION_RETRY_S`. A timeout does not mean the command
reached Redis: redis-py opens a new connection with a handshake of its own (``CLIENT SETINFO``),
and a timeout there reads like any other ("Timeout reading from socket") although the command was
never sent. Such an invalidation is lost, and the entry it should have replaced is served until
the next write of the key. Sending an invalidation twice costs at most a miss: a delete, or a
tombstone that yields to anything as new, and the revocation of a lease taken after the commit.

Its fills are internal steps with an outcome of their own: each is recorded (``f=fill``) through
``record_fill``, under a process of its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import gevent
import psycopg
import redis

from cachestorm.clients import InstrumentedPG, InstrumentedRedis, UnknownOutcome
from cachestorm.schema import entity_id
from cachestorm.strategies import ENTRY, LEASE_TTL_MS, Strategy, parse
from cachestorm.target import AfterCommit, NoEffect, Read

now = time.time_ns
#: How long a reader without the lease waits for the holder's fill: the lease's own lifetime.
WAIT_FOR_FILL_S = LEASE_TTL_MS / 1000
#: How long a write keeps sending an unconfirmed invalidation before it gives up (``info``): longer
#: than the nemesis's Redis faults (a 6 s pause, a kill and restart), so that the reference cache
#: rides them out; a Redis away for longer leaves the entry stale, and the judge says so.
INVALIDATION_RETRY_S = 30.0
#: The pause between two tries: a refused connection fails at once, and must not spin.
INVALIDATION_RETRY_PAUSE_S = 0.05
HIT = "hit"
MISS = "miss"

#: ``record_fill(key, status, t_invoke, t_complete, version)``.
FillRecorder = Callable[[str, str, int, int, int], None]


def _no_record(key: str, status: str, t0: int, t1: int, version: int) -> None:
    return None


class CacheClient:
    """Read-through and write-invalidate over one Redis, one PostgreSQL and one strategy."""

    def __init__(
        self,
        r: InstrumentedRedis,
        pg: InstrumentedPG,
        strategy: Strategy,
        record_fill: FillRecorder = _no_record,
        fill_delay_ms: float = 0.0,
        invalidation_retry_s: float = INVALIDATION_RETRY_S,
    ) -> None:
        self.r = r
        self.pg = pg
        self.strategy = strategy
        self.record_fill = record_fill
        self.fill_delay_s = fill_delay_ms / 1000.0
        self.invalidation_retry_s = invalidation_retry_s

    def read(self, key: str) -> Read:
        """GET; on a miss, load from PostgreSQL and fill the cache. Raises when the read failed."""
        raw = self.r.get(key)
        if raw is not None and raw[0] == ENTRY:
            # The hit path, inlined: it is most of what a load test does.
            return Read(int(raw[1 : raw.index(b":")]), HIT)
        parse(raw)  # a tombstone or nothing: a miss; anything else is corrupt (ValueError)
        token = self.strategy.lease(key)
        if token is None:
            # Another reader holds the lease and will fill: wait for its entry.
            waited, token = self._await_fill(key)
            if waited is not None:
                return Read(waited, MISS)
        version, payload = self.pg.read(entity_id(key))
        if token is None:
            # The holder never filled and its lease never lapsed within the wait: serve the
            # database's version unfilled, rather than keep the caller waiting any longer.
            return Read(version, MISS)
        if self.fill_delay_s:
            gevent.sleep(self.fill_delay_s)
        self._fill(key, version, payload, token)
        return Read(version, MISS)

    def _await_fill(self, key: str) -> tuple[int | None, str | None]:
        """Poll the cache while another reader holds ``key``'s lease.

        Returns ``(version, None)`` once an entry is there, or ``(None, token)`` when this reader
        got the lease itself (the holder's fill failed, or an invalidation revoked it). Gives up
        with ``(None, None)`` after the lease's lifetime, by which time the holder's lease has
        lapsed whatever happened to it.
        """
        deadline = time.monotonic() + WAIT_FOR_FILL_S
        pause = 0.001
        while time.monotonic() < deadline:
            gevent.sleep(pause)
            pause = min(pause * 2, 0.016)
            raw = self.r.get(key)
            entry, _ = parse(raw)
            if entry is not None:
                return entry, None
            token = self.strategy.lease(key)
            if token is not None:
                return None, token
        return None, None

    def _fill(self, key: str, version: int, payload: str, token: str) -> str:
        t0 = now()
        try:
            installed = self.strategy.fill(key, version, payload, token)
        except UnknownOutcome:
            status = "info"
        except redis.RedisError:
            status = "fail"
        else:
            status = "ok" if installed else "fail"
        self.record_fill(key, status, t0, now(), version)
        return status

    def write(self, key: str, payload: str) -> int:
        """Update the row and commit, then invalidate until Redis confirms it; the version committed."""
        try:
            version = self.pg.write(entity_id(key), payload)
        except (psycopg.Error, LookupError) as e:
            raise NoEffect(str(e)) from e
        deadline = time.monotonic() + self.invalidation_retry_s
        while True:
            try:
                self.strategy.invalidate(key, version)
                return version
            except UnknownOutcome as e:
                # Lost or not, it is sent again; a refusal (below) is an answer, and final.
                if time.monotonic() + INVALIDATION_RETRY_PAUSE_S >= deadline:
                    raise AfterCommit(version, str(e)) from e
            except redis.RedisError as e:
                # The commit happened and Redis refused the invalidation: the cache may be stale.
                raise AfterCommit(version, str(e)) from e
            gevent.sleep(INVALIDATION_RETRY_PAUSE_S)
