"""Tests for the notifier (cachestorm.notifier) as a separate process, the way runs use it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from websockets.asyncio.client import ClientConnection, connect

from cachestorm import schema
from cachestorm.procutil import free_port, raise_nofile_limit
from cachestorm.services import EmbeddedServices, ServiceURLs

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(ROOT))
SECRET = "n0tif13r-secret"
CLIENTS = 1000


def run_notifier(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cachestorm.notifier", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
        check=False,
    )


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://cs:{secret}@127.0.0.1:{port}/cachestorm",
        "host=127.0.0.1 port={port} user=cs password={secret}",
        "not a dsn password={secret}",
    ],
)
def test_bad_dsn_exits_2_with_one_line(dsn: str) -> None:
    result = run_notifier("--pg-dsn", dsn.format(secret=SECRET, port=free_port()))
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "PostgreSQL" in lines[0]
    assert "***" in lines[0]
    assert SECRET not in result.stderr
    assert "Traceback" not in result.stderr


def test_dsn_from_environment() -> None:
    env = dict(ENV, CACHESTORM_PG_DSN=f"postgresql://cs:{SECRET}@127.0.0.1:{free_port()}/x")
    result = subprocess.run(
        [sys.executable, "-m", "cachestorm.notifier"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "cs:***@127.0.0.1" in result.stderr


# ---------------------------------------------------------------------------------------------
# Against a real PostgreSQL
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedded() -> Iterator[ServiceURLs]:
    with EmbeddedServices() as svc:
        yield svc.start()


class Notifier:
    """A notifier process of our own, with stderr in a file we can read while it runs."""

    def __init__(self, dsn: str, log: Path) -> None:
        self.log = log
        self._log_file = open(log, "w")  # noqa: SIM115 - kept open for the process's lifetime
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cachestorm.notifier", "--pg-dsn", dsn, "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            text=True,
            env=ENV,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("READY ws://127.0.0.1:"), (line, log.read_text())
        self.url = line.split()[1]

    def wait_for_log(self, text: str, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log.read_text():
            assert time.monotonic() < deadline, f"{text!r} not in notifier log:\n{self.log.read_text()}"
            time.sleep(0.05)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._log_file.close()


@pytest.fixture
def notifier(embedded: ServiceURLs, tmp_path: Path) -> Iterator[Notifier]:
    n = Notifier(embedded.pg_dsn, tmp_path / "notifier.log")
    yield n
    n.close()


def write(dsn: str, ids: list[int]) -> list[tuple[str, int]]:
    """Commit one UPDATE per id, in order, each in its own transaction; return (key, version)."""
    done = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for i in ids:
            row = conn.execute(schema.WRITE, ("x", i)).fetchone()
            assert row is not None
            done.append((schema.entity_key(i), row[0]))
    return done


def reset(dsn: str, keys: int = 100) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        schema.reset(conn, keys)


async def recv_json(ws: ClientConnection, timeout: float = 10) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return data


@pytest.mark.integration
def test_notifications_arrive_in_commit_order(embedded: ServiceURLs, notifier: Notifier) -> None:
    reset(embedded.pg_dsn)
    ids = [i % 7 for i in range(300)]

    async def scenario() -> tuple[list[dict[str, Any]], list[tuple[str, int]]]:
        async with connect(notifier.url) as ws:
            # Clients may send; the notifier must ignore it and keep going.
            await ws.send("hello")
            done = await asyncio.to_thread(write, embedded.pg_dsn, ids)
            got = [await recv_json(ws) for _ in ids]
            return got, done

    got, done = asyncio.run(scenario())
    assert [(m["key"], m["version"]) for m in got] == done
    assert [m["seq"] for m in got] == list(range(1, len(ids) + 1))
    commit_ns = [m["commit_ns"] for m in got]
    assert commit_ns == sorted(commit_ns)


@pytest.mark.integration
def test_thousand_clients_all_receive(embedded: ServiceURLs, notifier: Notifier) -> None:
    # Each client costs this process one descriptor; the default soft limit is often 1,024.
    assert raise_nofile_limit() > CLIENTS + 100
    reset(embedded.pg_dsn)

    async def scenario() -> tuple[list[dict[str, Any]], list[tuple[str, int]]]:
        clients = await asyncio.gather(
            *(connect(notifier.url, open_timeout=30, compression=None) for _ in range(CLIENTS))
        )
        try:
            done = await asyncio.to_thread(write, embedded.pg_dsn, [42])
            got = await asyncio.gather(*(recv_json(ws, timeout=30) for ws in clients))
        finally:
            await asyncio.gather(*(ws.close() for ws in clients), return_exceptions=True)
        return got, done

    got, done = asyncio.run(scenario())
    assert len(got) == CLIENTS
    key, version = done[0]
    assert all(m["key"] == key and m["version"] == version and m["seq"] == 1 for m in got)
    assert "Traceback" not in notifier.log.read_text()


@pytest.mark.integration
def test_reconnects_after_losing_postgres(embedded: ServiceURLs, notifier: Notifier) -> None:
    reset(embedded.pg_dsn)

    async def scenario() -> list[dict[str, Any]]:
        async with connect(notifier.url) as ws:
            await asyncio.to_thread(write, embedded.pg_dsn, [1])
            first = await recv_json(ws)
            with psycopg.connect(embedded.pg_dsn, autocommit=True) as conn:
                listeners = "SELECT pid FROM pg_stat_activity WHERE query LIKE 'LISTEN%%'"
                killed = conn.execute(
                    f"SELECT count(pg_terminate_backend(pid)) FROM ({listeners}) l"
                ).fetchone()
                assert killed is not None and killed[0] >= 1
            killed_ns = time.time_ns()
            gap = await recv_json(ws)
            await asyncio.to_thread(write, embedded.pg_dsn, [2])
            second = await recv_json(ws)
            return [first, gap, second, {"killed_ns": killed_ns, "after_ns": time.time_ns()}]

    first, gap, second, when = asyncio.run(scenario())
    assert first["seq"] == 1
    # The gap message takes the next number and says when loss was possible: from the last
    # notification heard on the lost connection until LISTEN was active on the new one.
    assert gap["gap"] == "reconnect" and gap["seq"] == 2
    assert gap["from_ns"] <= when["killed_ns"] <= gap["to_ns"] <= when["after_ns"]
    assert second["seq"] == 3
    assert second["key"] == schema.entity_key(2)
    log = notifier.log.read_text()
    assert "lost the PostgreSQL connection" in log
    assert "were lost" in log
    assert "Traceback" not in log


@pytest.mark.integration
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly(notifier: Notifier, sig: signal.Signals) -> None:
    async def connected_then_closed() -> int | None:
        async with connect(notifier.url) as ws:
            notifier.proc.send_signal(sig)
            await asyncio.wait_for(ws.wait_closed(), 10)
            return ws.close_code

    code = asyncio.run(connected_then_closed())
    assert code == 1001  # "going away": the server closed the connection properly
    assert notifier.proc.wait(timeout=10) == 0
    assert "Traceback" not in notifier.log.read_text()
