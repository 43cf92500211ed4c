"""No password of a service URL reaches a page, an endpoint, a log line or a results file.

The services here require passwords (Redis ``requirepass``, PostgreSQL scram-sha-256), so a run
that completes proves the session used the real URLs, not the placeholders the form showed.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import psycopg
import pytest
import redis
from psycopg import sql

from cachestorm import schema
from cachestorm.secrecy import Secrets, guard_logs, passwords_in, secrets_of
from cachestorm.services import EmbeddedServices, redact
from tests.conftest import ROOT

# --------------------------------------------------------------------------------------------
# Units: what counts as a secret, the form's placeholders, the log filter
# --------------------------------------------------------------------------------------------


def test_passwords_are_found_in_every_way_a_url_or_dsn_can_hold_one() -> None:
    assert passwords_in("redis://:pw1@h:6379/0") == {"pw1"}
    assert passwords_in("postgresql://u:p%40ss@h/db") == {"p%40ss", "p@ss"}
    assert passwords_in("postgresql://u@h/db?sslmode=require&password=q1") == {"q1"}
    assert passwords_in("host=h user=u password='a b' dbname=d") == {"a b"}
    assert passwords_in("redis://h:6379/0") == set()
    assert secrets_of("hunter2", secret=True) == {"hunter2"}  # a bare secret is secret whole
    assert secrets_of("redis://h:6379/0", secret=True) == set()


def environment_with(**values: Any) -> Any:
    return SimpleNamespace(parsed_options=SimpleNamespace(**values))


def test_a_placeholder_or_blank_secret_field_keeps_the_sessions_value() -> None:
    url = "redis://:pw1@h:1/0"
    s = Secrets(
        environment_with(redis_url=url, token="t0ken", ws_url="ws://u:pw2@h/"), ["redis_url", "token"]
    )
    s._defaults = {"redis_url": url, "token": "t0ken", "ws_url": "ws://u:pw2@h/"}
    assert s.shown(url) == "redis://:***@h:1/0"
    assert s.shown("t0ken") == "***"
    assert s.shown("ws://u:pw2@h/") == "ws://u:***@h/"
    posted = [
        ("redis_url", "redis://:***@h:1/0"),
        ("token", "***"),
        ("ws_url", "ws://u:***@h/"),
        ("user_count", "3"),
    ]
    assert s.kept_fields(posted) == [("user_count", "3")]
    assert s.kept_fields([("redis_url", ""), ("token", "")]) == []
    # A new value is applied, even one typed with a mask in it: it is checked like any URL.
    new = [("redis_url", "redis://:new@h:2/0"), ("ws_url", ""), ("token", "***x")]
    assert s.kept_fields(new) == new


def test_a_password_that_is_also_a_word_is_masked_everywhere_and_its_placeholder_still_keeps() -> None:
    dsn = "postgresql://postgres:cachestorm@postgres:5432/cachestorm"  # docker-compose's default
    host = "http://u:hp@example.test"
    s = Secrets(environment_with(pg_dsn=dsn, host=host), ["pg_dsn"])
    s._defaults = {"pg_dsn": dsn}
    shown = s.shown(dsn)
    assert shown == "postgresql://postgres:***@postgres:5432/***"
    assert s.scrub("cachestorm: run 1") == "***: run 1"
    assert s.kept_fields([("pg_dsn", shown), ("host", s.shown(host))]) == []


@pytest.mark.parametrize("guarded", [True, False])
def test_log_lines_and_tracebacks_lose_their_passwords(guarded: bool) -> None:
    password = "lp-" + secrets.token_hex(6)
    s = Secrets(environment_with(pg_dsn=f"postgresql://u:{password}@h/db"), ["pg_dsn"])
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(handler.format(record))  # type: ignore[method-assign]
    logger = logging.getLogger("tests.secrets")
    logger.addHandler(handler)
    try:
        if guarded:
            guard_logs(s)
        logger.error("connecting to %s", f"postgresql://u:{password}@h/db")
        try:
            raise RuntimeError(f"refused {password}")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    text = "\n".join(lines)
    assert "RuntimeError" in text and "connecting to" in text
    # The positive control: without the filter the same check finds the password.
    assert (password in text) is not guarded


# --------------------------------------------------------------------------------------------
# A real session: services that require passwords, Locust's web UI, a run from the form
# --------------------------------------------------------------------------------------------


@dataclass
class Guarded:
    redis_url: str
    pg_dsn: str
    ws_url: str
    passwords: tuple[str, str]


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


def pg_refuses_no_password(dsn: str) -> bool:
    try:
        psycopg.connect(dsn, connect_timeout=2).close()
    except psycopg.OperationalError as e:
        return "password" in str(e)
    return False


@pytest.fixture(scope="module")
def guarded() -> Iterator[Guarded]:
    """Private Redis and PostgreSQL that take nobody without a password, and a notifier on them."""
    redis_pw, pg_pw = "rpw-" + secrets.token_hex(8), "ppw-" + secrets.token_hex(8)
    with EmbeddedServices() as svc:
        open_urls = svc.start()
        with redis.Redis.from_url(open_urls.redis_url) as r:
            r.config_set("requirepass", redis_pw)
        with psycopg.connect(open_urls.pg_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER USER postgres PASSWORD {}").format(sql.Literal(pg_pw)))
            row = conn.execute("SHOW hba_file").fetchone()
            assert row is not None
            Path(row[0]).write_text("host all all 127.0.0.1/32 scram-sha-256\n")
            conn.execute("SELECT pg_reload_conf()")
        wait_for(lambda: pg_refuses_no_password(open_urls.pg_dsn), 10, "PostgreSQL to ask for a password")
        with redis.Redis.from_url(open_urls.redis_url) as r, pytest.raises(redis.AuthenticationError):
            r.ping()
        redis_url = open_urls.redis_url.replace("redis://", f"redis://:{redis_pw}@", 1)
        pg_dsn = open_urls.pg_dsn.replace("postgres@", f"postgres:{pg_pw}@", 1)
        assert svc.tmpdir is not None
        log = svc.tmpdir / "guarded-notifier.log"
        with log.open("wb") as out:
            notifier = subprocess.Popen(
                [sys.executable, "-m", "cachestorm.notifier", "--host", "127.0.0.1", "--port", "0"],
                cwd=ROOT,
                env={**os.environ, "CACHESTORM_PG_DSN": pg_dsn, "PYTHONUNBUFFERED": "1"},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_for(lambda: "READY " in log.read_text(), 30, "the notifier's READY line")
            ws_url = log.read_text().split("READY ", 1)[1].split()[0]
            yield Guarded(redis_url, pg_dsn, ws_url, (redis_pw, pg_pw))
        finally:
            notifier.terminate()
            notifier.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_locust(locustfile: str, args: list[str], env: dict[str, str], log: Path) -> tuple[Any, str]:
    port = free_port()
    web = ["--web-host", "127.0.0.1", "--web-port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "locust", "-f", locustfile, *args, *web],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(base + "/", timeout=2):
                return True
        except OSError:
            return False

    wait_for(answers, 60, "the web UI")
    return proc, base


def fetch(base: str, path: str, data: dict[str, str] | None = None) -> str:
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    try:
        with urllib.request.urlopen(urllib.request.Request(base + path, data=body), timeout=30) as resp:
            return cast(str, resp.read().decode())
    except urllib.error.HTTPError as e:  # an error page is served too, and must not leak either
        return cast(str, e.read().decode())


def template_args(page: str) -> dict[str, Any]:
    m = re.search(r"window\.templateArgs = (\{.*?\})\s*\n", page)
    assert m is not None, page[:2000]
    return cast(dict[str, Any], json.loads(m.group(1)))


def leaks(texts: dict[str, bytes], passwords: tuple[str, ...]) -> list[str]:
    """Which texts hold a password, in any spelling a page, a log or a file would use."""
    spellings = {s for p in passwords for s in (p, urllib.parse.quote(p), json.dumps(p)[1:-1])}
    return sorted(name for name, blob in texts.items() if any(s.encode() in blob for s in spellings))


def service_env(g: Guarded) -> dict[str, str]:
    return {"CACHESTORM_REDIS_URL": g.redis_url, "CACHESTORM_PG_DSN": g.pg_dsn, "CACHESTORM_WS_URL": g.ws_url}


def form_fields(args: dict[str, Any]) -> dict[str, str]:
    """The start form's post, as its page sets it up: every option with the value it shows."""
    fields = {"user_count": "20", "spawn_rate": "20"}
    for name, option in args["extra_options"].items():
        v = option["default_value"]
        if isinstance(v, list):
            continue
        fields[name] = "" if v is None else str(v).lower() if isinstance(v, bool) else str(v)
    return fields


ENDPOINTS = (
    "/",
    "/stats/requests",
    "/stats/report",
    "/stats/report?download=1",
    "/stats/requests/csv",
    "/stats/requests_full_history/csv",
    "/stats/failures/csv",
    "/exceptions",
    "/exceptions/csv",
    "/tasks",
    "/logs",
    "/worker-count",
    "/no-such-page",
)


@pytest.mark.integration
def test_locust_alone_gives_the_passwords_away(guarded: Guarded, tmp_path: Path) -> None:
    """The positive control: the check below finds the passwords in Locust's own start form."""
    log = tmp_path / "locust.log"
    proc, base = start_locust("tests/locustfiles/options_only.py", [], service_env(guarded), log)
    try:
        page = fetch(base, "/")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert leaks({"/": page.encode()}, guarded.passwords) == ["/"]
    assert template_args(page)["extra_options"]["redis_url"]["default_value"] == guarded.redis_url


@pytest.mark.integration
@pytest.mark.parametrize("nodes", ["local", "master and worker"])
def test_no_password_reaches_a_page_an_endpoint_a_log_or_a_file(
    guarded: Guarded, tmp_path: Path, nodes: str
) -> None:
    results, log = tmp_path / "results", tmp_path / "locust.log"
    args = ["--results-dir", str(results), "--ramp-time", "0", "--hold-time", "3", "--quiesce-time", "1"]
    args += ["--keys", "60", "--listeners", "2", "--ramp-users", "20", "--verdict"]
    args += ["--loglevel", "DEBUG", "--logfile", str(tmp_path / "locust-file.log")]
    args += ["--html", str(tmp_path / "locust-report.html"), "--csv", str(tmp_path / "csv" / "stats")]
    if nodes != "local":
        # A forked worker: its log lines reach the master's /logs, and it gets the URLs by message.
        args += ["--processes", "1"]
    proc, base = start_locust("locustfile.py", args, service_env(guarded), log)
    texts: dict[str, bytes] = {}
    try:
        page = fetch(base, "/")
        shown = template_args(page)["extra_options"]
        # The form shows where the services are, without their passwords.
        assert shown["redis_url"]["default_value"] == redact(guarded.redis_url) != guarded.redis_url
        assert shown["pg_dsn"]["default_value"] == redact(guarded.pg_dsn) != guarded.pg_dsn
        # The post carries the placeholders back; the run must use the real URLs all the same.
        reply = fetch(base, "/swarm", form_fields(template_args(page)))
        texts["POST /swarm"] = reply.encode()
        assert json.loads(reply)["success"] is True, reply
        # Every run ends with its analysis, whose files are searched for passwords below.
        wait_for(lambda: list(results.glob("*/report.html")), 120, "the analysis's report.html")
        wait_for(lambda: json.loads(fetch(base, "/stats/requests"))["state"] == "stopped", 30, "the stop")
        for path in ENDPOINTS:
            texts[path] = fetch(base, path).encode()
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C: Locust writes its --html report on the way out
        proc.wait(timeout=60)
    (run_json,) = [p for p in results.glob("*/run.json") if not p.parent.is_symlink()]
    run = json.loads(run_json.read_text())
    assert run["history_complete"] and run["rows"] > 100, run
    assert run["locust"]["runner"] == ("LocalRunner" if nodes == "local" else "MasterRunner")
    assert run["options"]["redis_url"] == redact(guarded.redis_url)
    assert run["options"]["pg_dsn"] == redact(guarded.pg_dsn)
    # The load really went to the password-protected services.
    with psycopg.connect(guarded.pg_dsn) as conn:
        row = conn.execute(f"SELECT count(*) FROM {schema.TABLE} WHERE version > 0").fetchone()
        assert row is not None and row[0] > 0
    with redis.Redis.from_url(guarded.redis_url) as r:
        assert r.dbsize() > 0
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    texts |= {str(p.relative_to(tmp_path)): p.read_bytes() for p in files}
    for expected in ("locust.log", "locust-file.log", "locust-report.html", "csv/stats_stats.csv"):
        assert expected in texts, sorted(t for t in texts if not t.startswith("/"))
    assert (run_json.parent / "summary.json").exists() and (run_json.parent / "report.html").exists()
    assert leaks(texts, guarded.passwords) == []
