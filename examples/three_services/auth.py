"""auth: owns the ``users`` table; each write commits, then invalidates the caches before it answers.

``PUT`` (or ``PATCH``) ``/users/<id>`` with ``{"name": ..., "email": ...}``:

1. ``UPDATE users SET ..., version = version + 1 ... RETURNING version`` and commit; a deferred
   trigger appends the change to ``user_changes`` (the frontend's outbox) and NOTIFYs it;
2. the L2 entry is replaced by a tombstone of the committed version (:data:`common.INVALIDATE_L2`);
3. the invalidation is published on :data:`common.INVALIDATE_CHANNEL`, and auth waits until every
   subscriber (each backend) has acknowledged it, so that once the write has answered no L1 serves
   an older version.

Answers ``200 {"version", "commit_ns"}``; ``404`` for an unknown user (nothing committed);
``502``/``504`` with the committed ``version`` when the invalidation failed or was not confirmed in
time (the write took effect, its effect on the caches is unknown).

Its admin endpoints serve the target: ``POST /admin/reset {"keys": n}`` (users 0..n-1 at version
0, L2 emptied), ``GET /admin/versions`` and ``GET /debug/events?since=NS`` (its commits, and
when it replaced each L2 entry by its tombstone).
"""

from __future__ import annotations

import argparse
import json
import secrets
import time
from typing import Any

import psycopg
import redis
from psycopg_pool import ConnectionPool

from examples.three_services import common

DDL = f"""
CREATE TABLE IF NOT EXISTS users (
    id      bigint PRIMARY KEY,
    name    text   NOT NULL,
    email   text   NOT NULL,
    version bigint NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS user_changes (
    id        bigserial PRIMARY KEY,
    user_id   bigint NOT NULL,
    version   bigint NOT NULL,
    commit_ns bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS user_changes_commit_ns ON user_changes (commit_ns);
CREATE INDEX IF NOT EXISTS user_changes_user_version ON user_changes (user_id, version);

CREATE OR REPLACE FUNCTION users_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    stamp bigint := (extract(epoch FROM clock_timestamp()) * 1000000)::bigint * 1000;
    change bigint;
BEGIN
    INSERT INTO user_changes (user_id, version, commit_ns) VALUES (NEW.id, NEW.version, stamp)
        RETURNING id INTO change;
    PERFORM pg_notify('{common.NOTIFY_CHANNEL}', json_build_object(
        'change', change, 'key', '{common.KEY_PREFIX}' || NEW.id, 'version', NEW.version,
        'commit_ns', stamp)::text);
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS users_changed_on_commit ON users;
CREATE CONSTRAINT TRIGGER users_changed_on_commit
    AFTER UPDATE ON users DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION users_changed();
"""
WRITE = (
    "UPDATE users SET name = coalesce(%s, name), email = coalesce(%s, email), version = version + 1"
    " WHERE id = %s RETURNING version"
)
COMMIT_NS = "SELECT commit_ns FROM user_changes WHERE user_id = %s AND version = %s"


class Auth:
    def __init__(self, pg_dsn: str, redis_url: str, ack_timeout_s: float) -> None:
        self.pool = ConnectionPool(pg_dsn, min_size=2, max_size=40, kwargs={"autocommit": True}, open=True)
        self.redis = redis.Redis.from_url(redis_url, socket_timeout=5)
        self.invalidate_l2 = self.redis.register_script(common.INVALIDATE_L2)
        self.ack_timeout_s = ack_timeout_s
        self.log = common.EventLog("auth")
        #: auth itself invalidates the L2, so it is auth that knows when the L2 dropped a version.
        self.l2_log = common.EventLog("l2")
        with self.pool.connection() as conn:
            conn.execute("SELECT pg_advisory_lock(4243)")
            try:
                conn.execute(DDL)
            finally:
                conn.execute("SELECT pg_advisory_unlock(4243)")

    def routes(self) -> dict[tuple[str, str], common.Handler]:
        return {
            ("PUT", "users"): self.put_user,
            ("POST", "admin"): self.admin,
            ("GET", "admin"): self.versions,
            ("GET", "debug"): self.events,
            ("GET", "health"): lambda _e, _p: (200, {"ok": True}, {}),
        }

    def put_user(self, environ: dict[str, Any], path: list[str]) -> tuple[int, Any, dict[str, str]]:
        if len(path) != 1 or not path[0].isdigit():
            return 404, {"error": "no such user"}, {}
        uid = int(path[0])
        fields = common.body_of(environ) or {}
        with self.pool.connection() as conn:
            with conn.transaction():
                row = conn.execute(WRITE, (fields.get("name"), fields.get("email"), uid)).fetchone()
            if row is None:
                return 404, {"error": "no such user"}, {}
            version = int(row[0])
            # The trigger's stamp, taken inside the commit: no tier can see the change before it,
            # whereas a clock read here, after COMMIT returned, may come after the frontend's push.
            stamp = conn.execute(COMMIT_NS, (uid, version)).fetchone()
        commit_ns = int(stamp[0]) if stamp else time.time_ns()
        key = common.user_key(uid)
        self.log.add(key, version, "commit", commit_ns)
        ack = f"{common.ACK_PREFIX}{secrets.token_hex(8)}"
        message = json.dumps({"key": key, "version": version, "commit_ns": commit_ns, "ack": ack})
        try:
            self.invalidate_l2(keys=[common.l2_key(uid)], args=[version, common.TOMBSTONE_TTL_MS])
            self.l2_log.add(key, version, "drop")
            subscribers = int(self.redis.publish(common.INVALIDATE_CHANNEL, message))
            deadline = time.monotonic() + self.ack_timeout_s
            acked = 0
            while acked < subscribers and (left := deadline - time.monotonic()) > 0:
                # BLPOP counts whole seconds in old servers; a float works from Redis 6 on.
                if self.redis.blpop([ack], timeout=max(left, 0.01)) is not None:
                    acked += 1
        except (redis.RedisError, OSError) as e:
            return 502, {"version": version, "error": f"invalidation failed: {e}"}, {}
        if acked < subscribers:
            return 504, {"version": version, "error": f"{acked} of {subscribers} backends confirmed"}, {}
        return 200, {"version": version, "commit_ns": commit_ns}, {}

    def admin(self, environ: dict[str, Any], path: list[str]) -> tuple[int, Any, dict[str, str]]:
        if path != ["reset"]:
            return 404, {"error": "no such route"}, {}
        keys = int((common.body_of(environ) or {}).get("keys", 0))
        with self.pool.connection() as conn, conn.transaction():
            conn.execute("ALTER TABLE users DISABLE TRIGGER users_changed_on_commit")
            conn.execute("TRUNCATE users, user_changes")
            conn.execute(
                "INSERT INTO users (id, name, email, version) SELECT g, 'user ' || g,"
                " 'user' || g || '@example.com', 0 FROM generate_series(0, %s - 1) AS g",
                (keys,),
            )
            conn.execute("ALTER TABLE users ENABLE TRIGGER users_changed_on_commit")
        batch = list(self.redis.scan_iter(match=f"{common.L2_PREFIX}*", count=5000))
        for start in range(0, len(batch), 5000):
            self.redis.unlink(*batch[start : start + 5000])
        return 200, {"keys": keys}, {}

    def versions(self, _environ: dict[str, Any], path: list[str]) -> tuple[int, Any, dict[str, str]]:
        if path != ["versions"]:
            return 404, {"error": "no such route"}, {}
        with self.pool.connection() as conn:
            rows = conn.execute("SELECT id, version FROM users").fetchall()
        return 200, {str(i): int(v) for i, v in rows}, {}

    def events(self, environ: dict[str, Any], path: list[str]) -> tuple[int, Any, dict[str, str]]:
        if path != ["events"]:
            return 404, {"error": "no such route"}, {}
        since = common.query_int(environ, "since", 0)
        return 200, self.log.since(since) + self.l2_log.since(since), {}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pg-dsn", required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument(
        "--ack-timeout-ms", type=float, default=2000.0, help="how long a write waits for the backends"
    )


def make(args: argparse.Namespace) -> Auth:
    try:
        return Auth(args.pg_dsn, args.redis_url, args.ack_timeout_ms / 1000)
    except psycopg.Error as e:
        raise SystemExit(f"auth: cannot prepare PostgreSQL: {e}") from e
