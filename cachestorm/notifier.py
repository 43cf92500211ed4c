"""The reference frontend notification service: PostgreSQL NOTIFY in, WebSocket messages out.

Run as ``python -m cachestorm.notifier --pg-dsn DSN [--host 127.0.0.1] [--port 0]
[--channel cachestorm]``. It LISTENs on the channel that :mod:`cachestorm.schema`'s commit
trigger notifies, and sends every notification, as JSON text, to every connected WebSocket
client::

    {"key": "cs:e:42", "version": 7, "commit_ns": 1763688000123456000, "seq": 1}

``seq`` counts messages from 1 across the whole notifier, so a client that sees a gap in it knows
the live notifier did not send it something (a client too far behind is skipped). Clients need not
send anything; whatever they send is ignored.

Once LISTEN is active and the server is listening it prints exactly one line,
``READY ws://HOST:PORT/``, to stdout. Everything else goes to stderr.

If the PostgreSQL connection drops, it reconnects with backoff. Notifications committed while
it is disconnected are lost (PostgreSQL does not queue them for a listener that is gone, and how
many is unknowable), so once LISTEN is active again it tells every client where loss was possible
with a message of its own, which takes the next ``seq``::

    {"gap": "reconnect", "from_ns": 1763688000100000000, "to_ns": 1763688000900000000, "seq": 42}

``from_ns`` is when the notifier last heard from the lost connection (its last notification, or
its LISTEN), ``to_ns`` when LISTEN was active on the new one, both ns since the epoch: a change
committed in between may have been lost. A gap message is never skipped for a lagging client, so
``seq`` stays continuous across a reconnect and a hole in it always means a message not sent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from typing import Any

import psycopg
from psycopg import sql
from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

from cachestorm import schema
from cachestorm.procutil import raise_nofile_limit
from cachestorm.services import redact

log = logging.getLogger("cachestorm.notifier")

# A client whose unsent backlog exceeds this is skipped rather than buffered without bound; it
# notices through the gap in seq. 1 MiB is thousands of messages, far beyond any healthy lag.
MAX_CLIENT_BACKLOG = 1 << 20
# libpq TCP keepalives, so a silently dead PostgreSQL connection is noticed in ~20 s, not hours.
KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 2,
}


class StartupError(Exception):
    """A problem at start that deserves one line on stderr and exit code 2, not a traceback."""


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


async def listen(dsn: str, channel: str) -> psycopg.AsyncConnection[object]:
    """An autocommit connection with LISTEN active on ``channel``."""
    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True, connect_timeout=10, **KEEPALIVES)
    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
    return conn


class Relay:
    """Moves notifications from one PostgreSQL connection to all WebSocket clients."""

    def __init__(self, dsn: str, channel: str, conn: psycopg.AsyncConnection[object]) -> None:
        self.dsn = dsn
        self.channel = channel
        self.conn = conn
        self.seq = 0
        # When the current connection last proved alive; changes committed after it may be lost.
        self.heard_ns = time.time_ns()

    def publish(self, payload: str, server: Server) -> None:
        try:
            change = json.loads(payload)
            fields = {"key": change["key"], "version": change["version"], "commit_ns": change["commit_ns"]}
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a notification that is not the trigger's JSON: %.200r", payload)
            return
        self.heard_ns = time.time_ns()
        self.seq += 1
        message = json.dumps({**fields, "seq": self.seq})
        clients = [c for c in server.connections if c.transport.get_write_buffer_size() <= MAX_CLIENT_BACKLOG]
        broadcast(clients, message)

    async def run(self, server: Server) -> None:
        """Relay forever, reconnecting to PostgreSQL whenever the connection is lost."""
        while True:
            try:
                async for notify in self.conn.notifies():
                    self.publish(notify.payload, server)
                reason = "notification stream ended"
            except psycopg.OperationalError as exc:
                reason = _one_line(exc)
            log.error("lost the PostgreSQL connection (%s); reconnecting", reason)
            with contextlib.suppress(psycopg.Error):
                await self.conn.close()
            lost_from = self.heard_ns
            self.conn = await self._reconnect()
            self.heard_ns = time.time_ns()
            self.seq += 1
            # Every client, however far behind: without it the loss would look like nothing at all.
            gap = {"gap": "reconnect", "from_ns": lost_from, "to_ns": self.heard_ns, "seq": self.seq}
            broadcast(server.connections, json.dumps(gap))
            log.warning(
                "LISTEN active again on %s; notifications committed while disconnected were lost"
                " (gap message seq %d)",
                redact(self.dsn),
                self.seq,
            )

    async def _reconnect(self) -> psycopg.AsyncConnection[object]:
        delay = 0.1
        while True:
            try:
                return await listen(self.dsn, self.channel)
            except psycopg.Error as exc:
                log.error("reconnect to PostgreSQL failed (%s); retrying in %.1f s", _one_line(exc), delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def ignore_input(websocket: ServerConnection) -> None:
    """Per-client handler: drain and drop whatever the client sends until it goes away.

    Reading (rather than just waiting for close) keeps websockets' receive queue from filling
    up, which would stall ping/pong and eventually the connection.
    """
    with contextlib.suppress(ConnectionClosed):
        async for _ in websocket:
            pass


async def main(dsn: str, host: str, port: int, channel: str) -> int:
    """Run until SIGTERM/SIGINT; return the process exit code."""
    raise_nofile_limit()
    try:
        conn = await listen(dsn, channel)
    except psycopg.Error as exc:
        raise StartupError(
            f"notifier: cannot LISTEN on PostgreSQL at {redact(dsn)} ({_one_line(exc)});"
            " check --pg-dsn / CACHESTORM_PG_DSN"
        ) from exc

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    relay = Relay(dsn, channel, conn)
    try:
        # compression=None: permessage-deflate would cost ~64 KiB per client for tiny messages.
        # backlog: 1,000 clients connecting at once must not overflow the default accept queue.
        server_cm = serve(ignore_input, host, port, compression=None, max_size=64 * 1024, backlog=2048)
        server = await server_cm.__aenter__()
    except OSError as exc:
        await conn.close()
        raise StartupError(f"notifier: cannot listen on {host}:{port} ({_one_line(exc)})") from exc
    try:
        bound = server.sockets[0].getsockname()
        shown = f"[{host}]" if ":" in host else host
        print(f"READY ws://{shown}:{bound[1]}/", flush=True)
        task = asyncio.create_task(relay.run(server))
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # an unexpected crash of the relay: let it surface
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        await server_cm.__aexit__(None, None, None)
        with contextlib.suppress(psycopg.Error):
            await relay.conn.close()
    log.info("stopped")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ
    parser = argparse.ArgumentParser(
        prog="python -m cachestorm.notifier",
        description="Relay PostgreSQL NOTIFY messages to WebSocket clients as JSON.",
    )
    parser.add_argument(
        "--pg-dsn",
        default=env.get("CACHESTORM_PG_DSN"),
        required="CACHESTORM_PG_DSN" not in env,
        help="PostgreSQL DSN or URL (env CACHESTORM_PG_DSN)",
    )
    parser.add_argument(
        "--host",
        default=env.get("CACHESTORM_NOTIFIER_HOST", "127.0.0.1"),
        help="env CACHESTORM_NOTIFIER_HOST",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(env.get("CACHESTORM_NOTIFIER_PORT", "0")),
        help="0 picks a free port (env CACHESTORM_NOTIFIER_PORT)",
    )
    parser.add_argument("--channel", default=schema.CHANNEL, help="NOTIFY channel to LISTEN on")
    return parser.parse_args(argv)


def cli(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="notifier: %(levelname)s %(message)s")
    # Handshake failures of port probes and half-open clients are routine; keep them quiet.
    logging.getLogger("websockets").setLevel(logging.WARNING)
    try:
        return asyncio.run(main(args.pg_dsn, args.host, args.port, args.channel))
    except StartupError as exc:
        print(exc, file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(cli())
