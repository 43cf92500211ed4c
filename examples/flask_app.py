"""A Flask app with Flask-Caching (Redis) over PostgreSQL: the system under test of the HTTP target.

    FLASK_APP_PG_DSN=postgresql://... FLASK_APP_REDIS_URL=redis://... python examples/flask_app.py

Items live in PostgreSQL (``flask_items``: id, JSON payload, version) and are cached in Redis by
Flask-Caching under ``item:<id>``. A read serves the cache, or on a miss reads the row, waits
``FILL_DELAY_MS`` and caches it; a write is UPDATE + commit, then ``cache.delete``. ``CACHE_MODE``:

- ``cache-aside`` (the bug): the fill reads the row and sets it with nothing to stop a write
  landing in between, so an older row can be cached after the write's delete; the delay widens
  that window.
- ``locked-fill`` (safe): the fill holds the row ``FOR SHARE`` from its read until its
  ``cache.set`` is done. A write's UPDATE waits for every fill that read the row before it, and
  any fill after it reads the new row (PostgreSQL re-reads a row it waited for), so no older row
  can land after the write's delete.

``/_cachestorm/reset``, ``/_cachestorm/sweep`` and ``/_cachestorm/peek/<id>`` implement the HTTP
target's reset and sweep contract (docs/targets.md). It prints ``READY <port>`` once it listens.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

from flask import Flask, Response, jsonify, request
from flask_caching import Cache
from psycopg_pool import ConnectionPool
from werkzeug.serving import WSGIRequestHandler, make_server

MODES = ("cache-aside", "locked-fill")
SCHEMA = """CREATE TABLE IF NOT EXISTS flask_items
    (id int PRIMARY KEY, payload jsonb NOT NULL, version int NOT NULL)"""
SELECT = "SELECT payload, version FROM flask_items WHERE id = %s"


def create_app(pg_dsn: str, redis_url: str, mode: str, fill_delay_ms: float) -> Flask:
    if mode not in MODES:
        raise ValueError(f"CACHE_MODE is {mode!r}: use one of {', '.join(MODES)}")
    app = Flask(__name__)
    cache = Cache(
        app,
        config={
            "CACHE_TYPE": "RedisCache",
            "CACHE_REDIS_URL": redis_url,
            "CACHE_KEY_PREFIX": "flaskapp:",
            "CACHE_DEFAULT_TIMEOUT": 0,  # no expiry: only writes change what is cached
        },
    )
    pool = ConnectionPool(pg_dsn, min_size=2, max_size=32, open=True)
    with pool.connection() as conn:
        conn.execute(SCHEMA)
    delay_s = fill_delay_ms / 1000

    def item_of(item_id: int, row: tuple[Any, int]) -> dict[str, Any]:
        return {"id": item_id, "payload": row[0], "version": row[1]}

    def fill(item_id: int) -> dict[str, Any] | None:
        with pool.connection() as conn:  # one transaction, committed when the block ends
            row = conn.execute(
                SELECT + (" FOR SHARE" if mode == "locked-fill" else ""), (item_id,)
            ).fetchone()
            if row is None:
                return None
            item = item_of(item_id, row)
            if mode == "cache-aside":
                conn.commit()  # the row is read and nothing holds it: the race's window opens
            time.sleep(delay_s)
            cache.set(f"item:{item_id}", item)
        return item

    @app.get("/items/<int:item_id>")
    def read(item_id: int) -> Response | tuple[Response, int]:
        item = cache.get(f"item:{item_id}")
        state = "HIT"
        if item is None:
            item, state = fill(item_id), "MISS"
            if item is None:
                return jsonify(error="no such item"), 404
        resp = jsonify(item)
        resp.headers["X-Cache"] = state
        return resp

    @app.put("/items/<int:item_id>")
    def write(item_id: int) -> Response | tuple[Response, int]:
        payload = request.get_json(silent=True)
        if not isinstance(payload, dict):
            return jsonify(error="the body must be a JSON object"), 400
        with pool.connection() as conn:
            row = conn.execute(
                "UPDATE flask_items SET payload = %s, version = version + 1 WHERE id = %s RETURNING version",
                (json.dumps(payload), item_id),
            ).fetchone()
        if row is None:
            return jsonify(error="no such item"), 404
        cache.delete(f"item:{item_id}")  # after the commit, which the block above made
        return jsonify(id=item_id, version=row[0])

    @app.post("/_cachestorm/reset")
    def reset() -> Response:
        count = int((request.get_json(silent=True) or {}).get("count", 0))
        with pool.connection() as conn:
            conn.execute("TRUNCATE flask_items")
            conn.execute(
                "INSERT INTO flask_items SELECT i, '{}'::jsonb, 0 FROM generate_series(0, %s - 1) AS i",
                (count,),
            )
        cache.clear()
        return jsonify()

    def entry(item_id: int, db: dict[int, int]) -> dict[str, Any]:
        item = cache.get(f"item:{item_id}")  # a plain get: it fills nothing
        cached = None if item is None else item["version"]
        return {"cached": cached, "db": db.get(item_id), "held": "absent" if item is None else "entry"}

    def db_versions(ids: list[int]) -> dict[int, int]:
        with pool.connection() as conn:
            rows = conn.execute("SELECT id, version FROM flask_items WHERE id = ANY(%s)", (ids,)).fetchall()
        return dict(rows)

    @app.post("/_cachestorm/sweep")
    def sweep() -> Response:
        ids = [int(i) for i in (request.get_json(silent=True) or {}).get("indexes", [])]
        db = db_versions(ids)
        return jsonify(entries=[{"index": i, **entry(i, db)} for i in ids])

    @app.get("/_cachestorm/peek/<int:item_id>")
    def peek(item_id: int) -> Response:
        return jsonify(entry(item_id, db_versions([item_id])))

    return app


class KeepAlive(WSGIRequestHandler):
    # HTTP/1.1 keeps the load generator's connections open instead of one per request.
    protocol_version = "HTTP/1.1"


def main() -> int:
    env = os.environ
    try:
        app = create_app(
            env["FLASK_APP_PG_DSN"],
            env["FLASK_APP_REDIS_URL"],
            env.get("CACHE_MODE", "cache-aside"),
            float(env.get("FILL_DELAY_MS", "0")),
        )
    except KeyError as e:
        print(
            f"flask_app: {e.args[0]} is not set: give the PostgreSQL DSN and the Redis URL", file=sys.stderr
        )
        return 2
    except ValueError as e:
        print(f"flask_app: {e}", file=sys.stderr)
        return 2
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = make_server(
        "127.0.0.1", int(env.get("PORT", "0")), app, threaded=True, request_handler=KeepAlive
    )
    print(f"READY {server.port}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
