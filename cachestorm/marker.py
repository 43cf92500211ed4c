"""The run marker: proof that a worker's service URLs lead to the master's own instances.

A URL that works on the master may lead a worker elsewhere: ``127.0.0.1`` is each host's own, and
a name may resolve differently on another machine. A worker on a different Redis or PostgreSQL
would record a history of services nobody sweeps, and the verdict would judge the wrong system.
So at each run start the master writes a fresh marker (run id and a nonce) into its Redis and its
PostgreSQL (:func:`write`), and each worker reads it back through the URLs it was given before its
users start (:func:`problem`); for the notifier, which holds no state, a handshake must succeed.
"""

from __future__ import annotations

import secrets

import psycopg
import redis

from cachestorm.services import ServiceError, _reason, check_ws, redact

REDIS_KEY = "cachestorm:run-marker"
TABLE = "cachestorm_run_marker"
TIMEOUT_S = 5.0


def new(run_id: str) -> str:
    return f"{run_id}:{secrets.token_hex(8)}"


def write(redis_url: str, pg_dsn: str, marker: str) -> None:
    """On the master: put this run's marker into its Redis and PostgreSQL."""
    with redis.Redis.from_url(redis_url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S) as r:
        r.set(REDIS_KEY, marker)
    with psycopg.connect(pg_dsn, autocommit=True, connect_timeout=int(TIMEOUT_S)) as conn:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (marker text NOT NULL)")
        with conn.transaction():
            conn.execute(f"DELETE FROM {TABLE}")
            conn.execute(f"INSERT INTO {TABLE} (marker) VALUES (%s)", (marker,))


def _found(found: str | None, marker: str) -> str | None:
    if found == marker:
        return None
    run = marker.partition(":")[0]
    what = "no run marker" if found is None else f"the marker of another run ({found.partition(':')[0]})"
    return f"it is not the master's instance (it holds {what}, not run {run}'s)"


def _redis_marker(url: str) -> str | None:
    with redis.Redis.from_url(url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S) as r:
        raw = r.get(REDIS_KEY)
    return raw.decode(errors="replace") if isinstance(raw, bytes) else None


def _pg_marker(dsn: str) -> str | None:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=int(TIMEOUT_S)) as conn:
        exists = conn.execute("SELECT to_regclass(%s)", (TABLE,)).fetchone()
        if exists is None or exists[0] is None:
            return None
        row = conn.execute(f"SELECT marker FROM {TABLE} LIMIT 1").fetchone()
    return None if row is None else str(row[0])


def problem(node: str, redis_url: str, pg_dsn: str, ws_url: str, marker: str) -> str | None:
    """On a worker: what is wrong with its services, in one line naming it, the service and the
    URL (password hidden), or None when they are the master's."""
    checks = (("Redis", redis_url, _redis_marker), ("PostgreSQL", pg_dsn, _pg_marker))
    for service, url, read in checks:
        try:
            wrong = _found(read(url), marker)
        except (redis.RedisError, psycopg.Error, OSError) as e:
            # Through ServiceError, which keeps the URL's password out of the driver's message.
            wrong = f"it cannot be reached ({ServiceError(service, url, _reason(e), '').problem})"
        if wrong:
            return f"worker {node}: {service} at {redact(url)}: {wrong}"
    try:
        check_ws(ws_url, timeout=TIMEOUT_S)
    except ServiceError as e:
        return f"worker {node}: notifier at {e.url}: it {e.problem}"
    return None
