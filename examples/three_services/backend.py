"""backend: serves users from an in-process L1 (a dict with a TTL) over the shared Redis L2, falling
back to auth's database, and drops L1 entries on auth's invalidations.

``GET /users/<id>`` answers ``{"id", "name", "email", "version"}`` with ``X-Served-By: l1|l2|db``:
the tier that served it. A miss in both caches reads the database, fills L2 through the guarded
:data:`common.FILL_L2` and then L1.

The L1 guards its fills as the L2 does: an invalidation leaves the key's invalidated version behind
(an L1 tombstone), and a fill of an older version, one read before that commit, is refused. An
invalidation drops the L1 entry, records the drop (``GET /debug/events``) and is acknowledged to
auth (an ``RPUSH`` on the message's ``ack`` list). A subscription that breaks loses messages, so on
re-subscribing the backend empties its L1.

Bug mode ``--ignore-invalidations``: the subscriber acknowledges every invalidation but drops
nothing, so the L1 serves what it holds until its TTL runs out.

``GET /debug/sweep?keys=n``: per key, what L1 and L2 hold and the database's version.
``POST /admin/reset``: empty the L1.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from typing import Any

import gevent
import redis
from gevent.event import Event
from psycopg_pool import ConnectionPool

from examples.three_services import common

log = logging.getLogger("three_services.backend")
READ = "SELECT name, email, version FROM users WHERE id = %s"


class Backend:
    def __init__(
        self, pg_dsn: str, redis_url: str, l1_ttl_s: float, l2_ttl_ms: int, ignore_invalidations: bool
    ) -> None:
        self.pool = ConnectionPool(pg_dsn, min_size=2, max_size=40, kwargs={"autocommit": True}, open=True)
        self.redis = redis.Redis.from_url(redis_url, socket_timeout=5)
        self.redis_url = redis_url
        self.fill_l2 = self.redis.register_script(common.FILL_L2)
        self.l1_ttl_s = l1_ttl_s
        self.l2_ttl_ms = l2_ttl_ms
        self.ignore_invalidations = ignore_invalidations
        #: user id -> (version, user, monotonic expiry)
        self.l1: dict[int, tuple[int, dict[str, Any], float]] = {}
        #: user id -> the highest version an invalidation announced: older fills are refused.
        self.l1_invalidated: dict[int, int] = {}
        self.log = common.EventLog("l1")
        self.subscribed = Event()
        gevent.spawn(self.subscribe_forever)
        if not self.subscribed.wait(10):
            raise SystemExit("backend: could not subscribe to auth's invalidations")

    def routes(self) -> dict[tuple[str, str], common.Handler]:
        return {
            ("GET", "users"): self.get_user,
            ("POST", "admin"): self.reset,
            ("GET", "debug"): self.debug,
            ("GET", "health"): lambda _e, _p: (200, {"ok": True}, {}),
        }

    # -- reads -------------------------------------------------------------------------------

    def get_user(self, _environ: dict[str, Any], path: list[str]) -> tuple[int, Any, dict[str, str]]:
        if len(path) != 1 or not path[0].isdigit():
            return 404, {"error": "no such user"}, {}
        uid = int(path[0])
        cached = self.l1.get(uid)
        if cached is not None and cached[2] > time.monotonic():
            return 200, {**cached[1], "version": cached[0]}, {common.SERVED_BY: "l1"}
        held, version, user = common.parse_l2(self.redis.get(common.l2_key(uid)))
        if held == "entry" and version is not None and user is not None:
            self._fill_l1(uid, version, user)
            return 200, {**user, "version": version}, {common.SERVED_BY: "l2"}
        with self.pool.connection() as conn:
            row = conn.execute(READ, (uid,)).fetchone()
        if row is None:
            return 404, {"error": "no such user"}, {}
        user = {"id": uid, "name": row[0], "email": row[1]}
        version = int(row[2])
        self.fill_l2(keys=[common.l2_key(uid)], args=[version, json.dumps(user), self.l2_ttl_ms])
        self._fill_l1(uid, version, user)
        return 200, {**user, "version": version}, {common.SERVED_BY: "db"}

    def _fill_l1(self, uid: int, version: int, user: dict[str, Any]) -> None:
        held = self.l1.get(uid)
        if version < self.l1_invalidated.get(uid, 0) or (held is not None and held[0] > version):
            return
        self.l1[uid] = (version, user, time.monotonic() + self.l1_ttl_s)

    # -- invalidations ---------------------------------------------------------------------------

    def subscribe_forever(self) -> None:
        while True:
            pubsub = redis.Redis.from_url(self.redis_url).pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(common.INVALIDATE_CHANNEL)
                # Messages published while no subscription stood are gone: nothing in L1 is known good.
                self.l1.clear()
                self.subscribed.set()
                for message in pubsub.listen():
                    if message.get("type") == "message":
                        self.on_invalidation(json.loads(message["data"]))
            except (redis.RedisError, OSError) as e:
                log.error("lost the invalidation subscription (%s); re-subscribing", e)
            finally:
                pubsub.close()
            gevent.sleep(0.1)

    def on_invalidation(self, note: dict[str, Any]) -> None:
        uid = common.user_id(str(note["key"]))
        version = int(note["version"])
        if not self.ignore_invalidations:
            if version > self.l1_invalidated.get(uid, 0):
                self.l1_invalidated[uid] = version
            held = self.l1.get(uid)
            if held is not None and held[0] < version:
                del self.l1[uid]
            self.log.add(str(note["key"]), version, "drop")
        ack = str(note["ack"])
        pipe = self.redis.pipeline(transaction=False)
        pipe.rpush(ack, 1)
        pipe.pexpire(ack, 10_000)
        pipe.execute()

    # -- the target's view -----------------------------------------------------------------------

    def reset(self, _environ: dict[str, Any], path: list[str]) -> tuple[int, Any, dict[str, str]]:
        if path != ["reset"]:
            return 404, {"error": "no such route"}, {}
        self.l1.clear()
        self.l1_invalidated.clear()
        return 200, {"ok": True}, {}

    def debug(self, environ: dict[str, Any], path: list[str]) -> tuple[int, Any, dict[str, str]]:
        if path == ["events"]:
            return 200, self.log.since(common.query_int(environ, "since", 0)), {}
        if path == ["sweep"]:
            return 200, self.sweep(common.query_int(environ, "keys", 0)), {}
        return 404, {"error": "no such route"}, {}

    def sweep(self, keys: int) -> list[dict[str, Any]]:
        now = time.monotonic()
        ids = list(range(keys))
        with self.pool.connection() as conn:
            db: dict[int, int] = dict(
                conn.execute("SELECT id, version FROM users WHERE id < %s", (keys,)).fetchall()
            )
        raws: list[Any] = self.redis.mget([common.l2_key(i) for i in ids]) if ids else []
        out = []
        for uid, raw in zip(ids, raws, strict=True):
            held = self.l1.get(uid)
            live = held is not None and held[2] > now
            l1 = (
                {"held": "entry", "version": held[0]}
                if live and held
                else {"held": "absent", "version": None}
            )
            kind, version, _ = common.parse_l2(raw)
            out.append({"id": uid, "db": db.get(uid), "l1": l1, "l2": {"held": kind, "version": version}})
        return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pg-dsn", required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--l1-ttl-ms", type=float, default=5000.0)
    parser.add_argument("--l2-ttl-ms", type=int, default=30_000)
    parser.add_argument(
        "--ignore-invalidations",
        action="store_true",
        help="bug mode: acknowledge invalidations without dropping L1 entries (the L1 TTL alone ages them)",
    )


def make(args: argparse.Namespace) -> Backend:
    return Backend(
        args.pg_dsn, args.redis_url, args.l1_ttl_ms / 1000, args.l2_ttl_ms, args.ignore_invalidations
    )
