"""Reads and writes through the cache, each recorded as one history operation.

This is the layer between the users and the instrumented clients: it decides what an operation
is (a read-through, a write with its invalidation), and what its status is. ``ok`` means the
operation took effect, ``fail`` that it certainly did not, ``info`` that nobody can tell; see
docs/history.md.
"""

from __future__ import annotations

import time

import gevent
import psycopg
import redis

from cachestorm.clients import InstrumentedPG, InstrumentedRedis, UnknownOutcome
from cachestorm.history import Recorder
from cachestorm.probes import Prober
from cachestorm.schema import KEY_PREFIX, entity_key
from cachestorm.strategies import ENTRY, LEASE_TTL_MS, Strategy, parse

now = time.time_ns
#: How long a reader without the lease waits for the holder's fill: the lease's own lifetime.
WAIT_FOR_FILL_S = LEASE_TTL_MS / 1000


class CacheClient:
    """Read-through and write-invalidate over one Redis, one PostgreSQL and one strategy.

    Each method returns the status it recorded, so that a user can take a fresh process id after
    an ``info`` operation, as the history's process model requires.
    """

    def __init__(
        self,
        r: InstrumentedRedis,
        pg: InstrumentedPG,
        strategy: Strategy,
        recorder: Recorder,
        fill_delay_ms: float = 0.0,
        prober: Prober | None = None,
    ) -> None:
        self.r = r
        self.pg = pg
        self.strategy = strategy
        self.recorder = recorder
        self.record = recorder.record
        self.fill_delay_s = fill_delay_ms / 1000.0
        self.prober = prober

    def read(self, process: int, entity_id: int, t_intended: int | None = None) -> str:
        """GET; on a miss, load from PostgreSQL and fill the cache.

        ``t_intended`` is when an open-model schedule meant the read to start (docs/history.md).
        """
        key = KEY_PREFIX + str(entity_id)
        t0 = now()
        try:
            raw = self.r.get(key)
            if raw is not None and raw[0] == ENTRY:
                # The hit path, inlined: it is most of what a load test does.
                version = int(raw[1 : raw.index(b":")])
                row = (process, "read", key, "ok", t0, now(), version, None, "hit", t_intended)
                self.recorder.append(row)
                return "ok"
            parse(raw)  # a tombstone or nothing: a miss; anything else is corrupt (ValueError)
            token = self.strategy.lease(key)
            if token is None:
                # Another reader holds the lease and will fill: wait for its entry.
                waited, token = self._await_fill(key)
                if waited is not None:
                    self.record(process, "read", key, "ok", t0, now(), waited, None, "miss", t_intended)
                    return "ok"
            version, payload = self.pg.read(entity_id)
        except (redis.RedisError, psycopg.Error, LookupError, ValueError, UnknownOutcome):
            # A read changes nothing, so a read that failed for any reason certainly had no effect
            # (an unknown lease only makes a later fill fail).
            self.record(process, "read", key, "fail", t0, now(), None, None, None, t_intended)
            return "fail"
        if token is None:
            # The holder never filled and its lease never lapsed within the wait: serve the
            # database's version unfilled, rather than keep the caller waiting any longer.
            self.record(process, "read", key, "ok", t0, now(), version, None, "miss", t_intended)
            return "ok"
        if self.fill_delay_s:
            gevent.sleep(self.fill_delay_s)
        status = self._fill(process, key, version, payload, token)
        self.record(process, "read", key, "ok", t0, now(), version, None, "miss", t_intended)
        return "info" if status == "info" else "ok"

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

    def _fill(self, process: int, key: str, version: int, payload: str, token: str) -> str:
        t0 = now()
        try:
            installed = self.strategy.fill(key, version, payload, token)
        except UnknownOutcome:
            self.record(process, "fill", key, "info", t0, now(), version)
            return "info"
        except redis.RedisError:
            self.record(process, "fill", key, "fail", t0, now(), version)
            return "fail"
        status = "ok" if installed else "fail"
        self.record(process, "fill", key, status, t0, now(), version)
        return status

    def write(self, process: int, entity_id: int, payload: str, t_intended: int | None = None) -> str:
        """Update the row and commit, then invalidate. ``ok`` only when both succeeded.

        A sample of ok writes is handed to the prober (``--probe-rate``), which re-reads the key
        from the cache at each probe delay after the write completed.
        """
        key = entity_key(entity_id)
        t0 = now()
        version: int | None = None
        try:
            version = self.pg.write(entity_id, payload)
            self.strategy.invalidate(key, version)
        except UnknownOutcome:
            self.record(process, "write", key, "info", t0, now(), version, None, None, t_intended)
            return "info"
        except redis.RedisError:
            # The commit happened; the invalidation was refused, so the cache may now be stale.
            self.record(process, "write", key, "info", t0, now(), version, None, None, t_intended)
            return "info"
        except (psycopg.Error, LookupError):
            self.record(process, "write", key, "fail", t0, now(), None, None, None, t_intended)
            return "fail"
        except gevent.GreenletExit:
            # The user was stopped mid-write: the commit may or may not have happened.
            self.record(process, "write", key, "info", t0, now(), version, None, None, t_intended)
            raise
        done = now()
        self.record(process, "write", key, "ok", t0, done, version, None, None, t_intended)
        if self.prober is not None:
            self.prober.after_write(key, version, done)
        return "ok"
