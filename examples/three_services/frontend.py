"""frontend: pushes every committed user change to the browser tabs over WebSocket.

Run as ``python -m examples.three_services.frontend --pg-dsn DSN [--host H] [--port P]
[--reconnect-every-s S] [--reconnect-pause-ms MS] [--no-replay]``; prints ``READY ws://HOST:PORT/``.

It LISTENs on auth's commit trigger (:data:`common.NOTIFY_CHANNEL`) and sends each change to every
connected tab as ``{"key", "version", "commit_ns", "seq"}``, logging the push time of each change
(``GET /debug/events?since=NS`` on the same port, as plain HTTP).

A NOTIFY sent while the LISTEN connection is down is lost: PostgreSQL queues nothing for a listener
that is gone. So after each reconnect the frontend replays from auth's outbox table,
``user_changes``: every change committed since shortly before the connection dropped that it has
not pushed yet. To make reconnects happen in a short run, it drops its connection on purpose every
``--reconnect-every-s`` seconds (as a database failover or a deploy would) and stays away for
``--reconnect-pause-ms``.

Bug mode ``--no-replay``: it reconnects without replaying, so the changes committed while it was
away never reach the tabs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from http import HTTPStatus
from typing import Any

import psycopg
from psycopg import sql
from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from examples.three_services import common

log = logging.getLogger("three_services.frontend")
#: A change committed this long before the connection dropped may still have been in flight.
REPLAY_MARGIN_NS = 2_000_000_000
REPLAY = "SELECT id, user_id, version, commit_ns FROM user_changes WHERE commit_ns >= %s ORDER BY id"


class Relay:
    def __init__(self, dsn: str, every_s: float, pause_s: float, replay: bool) -> None:
        self.dsn = dsn
        self.every_s = every_s
        self.pause_s = pause_s
        self.replay = replay
        self.seq = 0
        #: Change ids already pushed: a replay must not push them twice.
        self.pushed: set[int] = set()
        self.log = common.EventLog("frontend")
        self.server: Server | None = None
        self.reconnects = 0

    async def listen(self) -> psycopg.AsyncConnection[Any]:
        conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True, connect_timeout=10)
        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(common.NOTIFY_CHANNEL)))
        return conn

    def push(self, change: int, key: str, version: int, commit_ns: int) -> None:
        if change in self.pushed:
            return
        self.pushed.add(change)
        self.seq += 1
        message = json.dumps({"key": key, "version": version, "commit_ns": commit_ns, "seq": self.seq})
        assert self.server is not None
        broadcast(self.server.connections, message)
        self.log.add(key, version, "push")

    async def run(self, conn: psycopg.AsyncConnection[Any]) -> None:
        while True:
            away_since = await self._relay_until_drop(conn)
            await asyncio.sleep(self.pause_s)
            conn = await self._reconnect()
            self.reconnects += 1
            if self.replay:
                # LISTEN is active again before the outbox is read, so no change falls in between.
                cursor = await conn.execute(REPLAY, (away_since - REPLAY_MARGIN_NS,))
                for change, uid, version, commit_ns in await cursor.fetchall():
                    self.push(int(change), common.user_key(int(uid)), int(version), int(commit_ns))

    async def _relay_until_drop(self, conn: psycopg.AsyncConnection[Any]) -> int:
        """Relay until the planned drop (or a lost connection); returns when the connection went."""
        deadline = time.monotonic() + self.every_s if self.every_s > 0 else float("inf")
        try:
            while (left := deadline - time.monotonic()) > 0:
                async for notify in conn.notifies(timeout=min(left, 1.0)):
                    note = json.loads(notify.payload)
                    self.push(int(note["change"]), note["key"], int(note["version"]), int(note["commit_ns"]))
        except psycopg.OperationalError as e:
            log.error("lost the LISTEN connection: %s", e)
        away_since = time.time_ns()
        with contextlib.suppress(psycopg.Error):
            await conn.close()
        return away_since

    async def _reconnect(self) -> psycopg.AsyncConnection[Any]:
        delay = 0.1
        while True:
            try:
                return await self.listen()
            except psycopg.Error as e:
                log.error("reconnect failed (%s); retrying in %.1f s", e, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def http(self, connection: ServerConnection, request: Request) -> Response | None:
        """Plain HTTP on the WebSocket port: the push log for the target, and a health check."""
        path, _, query = request.path.partition("?")
        if path == "/debug/events":
            since = common.query_int({"QUERY_STRING": query}, "since", 0)
            return connection.respond(HTTPStatus.OK, json.dumps(self.log.since(since)))
        if path == "/health":
            return connection.respond(HTTPStatus.OK, json.dumps({"reconnects": self.reconnects}))
        return None


async def drain(websocket: ServerConnection) -> None:
    """A tab sends nothing that matters; reading keeps ping/pong flowing."""
    with contextlib.suppress(ConnectionClosed):
        async for _ in websocket:
            pass


async def main(args: argparse.Namespace) -> int:
    relay = Relay(args.pg_dsn, args.reconnect_every_s, args.reconnect_pause_ms / 1000, not args.no_replay)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    conn = await relay.listen()
    async with serve(drain, args.host, args.port, compression=None, process_request=relay.http) as server:
        relay.server = server
        port = server.sockets[0].getsockname()[1]
        task = asyncio.create_task(relay.run(conn))
        common.announce(f"ws://{args.host}:{port}/")
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m examples.three_services.frontend")
    parser.add_argument("--pg-dsn", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--reconnect-every-s", type=float, default=2.0, help="0: never drop on purpose")
    parser.add_argument("--reconnect-pause-ms", type=float, default=200.0)
    parser.add_argument("--no-replay", action="store_true", help="bug mode: lose what a reconnect missed")
    return parser.parse_args(argv)


def cli(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="frontend: %(levelname)s %(message)s")
    logging.getLogger("websockets").setLevel(logging.WARNING)
    try:
        return asyncio.run(main(args))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(cli())
