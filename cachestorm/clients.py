"""Instrumented Redis, PostgreSQL and WebSocket clients.

Each wrapper times every call and fires Locust's ``request`` event with request_type ``REDIS``,
``PG`` or ``WS`` and the operation as the name, so Locust's statistics, charts, CSV and HTML show
them and errors show as Locust failures. The wrappers know nothing of caching or of the history:
that is :mod:`cachestorm.cache`'s job, one layer up.

All three libraries do blocking socket I/O that gevent's monkey patching makes cooperative
(tests/test_gevent.py keeps that true for PostgreSQL).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg
import redis
import websocket
from psycopg_pool import ConnectionPool

from cachestorm import schema

Fire = Callable[..., None]


class UnknownOutcome(Exception):
    """The call may or may not have taken effect (the history records it as ``info``)."""


def _event(fire: Fire, request_type: str, name: str, t0: int, exc: BaseException | None = None) -> None:
    fire(
        request_type=request_type,
        name=name,
        response_time=(time.perf_counter_ns() - t0) / 1e6,
        response_length=0,
        exception=exc,
        context=None,
    )


class InstrumentedRedis:
    """The Redis calls cachestorm makes, each timed and reported to Locust."""

    def __init__(self, url: str, fire: Fire, timeout: float = 5.0, pool_size: int = 200) -> None:
        # A blocking pool: past pool_size concurrent calls, a greenlet waits for a connection (and
        # that wait is in the timing, as it would be in an application) instead of failing.
        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=pool_size,
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )
        self.client = redis.Redis(connection_pool=pool)
        self.fire = fire

    def get(self, key: str) -> bytes | None:
        t0 = time.perf_counter_ns()
        try:
            raw: bytes | None = self.client.get(key)  # type: ignore[assignment]
        except redis.RedisError as e:
            _event(self.fire, "REDIS", "get", t0, e)
            raise
        # _event inlined: every cache hit passes here.
        self.fire(
            request_type="REDIS",
            name="get",
            response_time=(time.perf_counter_ns() - t0) / 1e6,
            response_length=0,
            exception=None,
            context=None,
        )
        return raw

    def call(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` (a redis-py method or registered script), reported under ``name``.

        A timeout or a lost connection is an unknown outcome: the command may have run.
        """
        t0 = time.perf_counter_ns()
        try:
            result = fn(*args)
        except (redis.TimeoutError, redis.ConnectionError) as e:
            _event(self.fire, "REDIS", name, t0, e)
            raise UnknownOutcome(f"Redis {name}: {e}") from e
        except redis.RedisError as e:
            _event(self.fire, "REDIS", name, t0, e)
            raise
        _event(self.fire, "REDIS", name, t0)
        return result

    def close(self) -> None:
        self.client.close()


class InstrumentedPG:
    """The PostgreSQL statements cachestorm runs, over a per-process connection pool."""

    def __init__(self, dsn: str, fire: Fire, pool_size: int, timeout: float = 10.0) -> None:
        self.pool = ConnectionPool(
            dsn,
            min_size=1,
            max_size=pool_size,
            timeout=timeout,
            kwargs={"connect_timeout": int(timeout)},
            open=True,
            name="cachestorm",
        )
        self.fire = fire

    def read(self, entity_id: int) -> tuple[int, str]:
        """The entity's committed (version, payload)."""
        t0 = time.perf_counter_ns()
        try:
            with self.pool.connection() as conn:
                row = conn.execute(schema.READ, (entity_id,)).fetchone()
        except psycopg.Error as e:
            _event(self.fire, "PG", "select", t0, e)
            raise
        if row is None:
            err = LookupError(f"entity {entity_id} is not in {schema.TABLE}")
            _event(self.fire, "PG", "select", t0, err)
            raise err
        _event(self.fire, "PG", "select", t0)
        return int(row[0]), str(row[1])

    def write(self, entity_id: int, payload: str) -> int:
        """Increment the entity's version in its own transaction; return the committed version.

        An error before COMMIT was sent means the transaction rolled back (certainly no effect). An
        error during COMMIT leaves the outcome unknown, and raises :class:`UnknownOutcome`.
        """
        t0 = time.perf_counter_ns()
        try:
            with self.pool.connection() as conn:
                try:
                    row = conn.execute(schema.WRITE, (payload, entity_id)).fetchone()
                except psycopg.Error:
                    conn.rollback()
                    raise
                try:
                    conn.commit()
                except psycopg.Error as e:
                    raise UnknownOutcome(f"PostgreSQL commit: {e}") from e
        except (psycopg.Error, UnknownOutcome) as e:
            _event(self.fire, "PG", "update", t0, e)
            raise
        if row is None:
            err = LookupError(f"entity {entity_id} is not in {schema.TABLE}")
            _event(self.fire, "PG", "update", t0, err)
            raise err
        _event(self.fire, "PG", "update", t0)
        return int(row[0])

    def warm(self, connections: int, timeout: float = 30.0) -> None:
        """Open ``connections`` (at most the pool's size) now and keep them open.

        The pool otherwise opens connections one at a time as callers queue for them, which an
        open-model run would count as its first second's operations starting late.
        """
        n = max(1, min(connections, self.pool.max_size))
        if n > self.pool.min_size:
            self.pool.resize(min_size=n, max_size=self.pool.max_size)
        self.pool.wait(timeout=timeout)

    def close(self) -> None:
        self.pool.close()


class InstrumentedWebSocket:
    """A WebSocket client connection (websocket-client), timed and reported to Locust."""

    def __init__(self, url: str, fire: Fire, timeout: float = 5.0) -> None:
        self.url = url
        self.fire = fire
        self.timeout = timeout
        self.conn: websocket.WebSocket | None = None

    def open(self) -> None:
        t0 = time.perf_counter_ns()
        try:
            self.conn = websocket.create_connection(self.url, timeout=self.timeout)
        except Exception as e:
            _event(self.fire, "WS", "open", t0, e)
            raise
        _event(self.fire, "WS", "open", t0)

    def recv(self, timeout: float) -> str | None:
        """The next text message, or None when none arrived within ``timeout`` seconds."""
        assert self.conn is not None
        self.conn.settimeout(timeout)
        try:
            msg = self.conn.recv()
        except websocket.WebSocketTimeoutException:
            return None
        return msg if isinstance(msg, str) else msg.decode()

    def received(self, latency_ms: float) -> None:
        """Report one notification to Locust; its time is commit-to-receive."""
        self.fire(
            request_type="WS",
            name="recv",
            response_time=latency_ms,
            response_length=0,
            exception=None,
            context=None,
        )

    def close(self) -> None:
        if self.conn is None:
            return
        t0 = time.perf_counter_ns()
        try:
            self.conn.close(timeout=self.timeout)
        except Exception as e:
            _event(self.fire, "WS", "close", t0, e)
            raise
        finally:
            self.conn = None
        _event(self.fire, "WS", "close", t0)
