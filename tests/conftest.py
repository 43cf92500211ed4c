"""Shared fixtures: one set of embedded services for the tests that need real Redis and PostgreSQL."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from playwright.sync_api import sync_playwright

from cachestorm import schema
from cachestorm.clients import InstrumentedRedis
from cachestorm.services import EmbeddedServices, ServiceURLs
from tests.browser import CHROMIUM_ARGS, chromium_path

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def services() -> Iterator[ServiceURLs]:
    """Embedded Redis, PostgreSQL (schema installed) and notifier, shared by the session."""
    with EmbeddedServices() as svc:
        yield svc.start()


def no_events(**_kw: object) -> None:
    """Where instrumented clients tested without Locust send their request events: nowhere."""


@pytest.fixture
def redis_client(services: ServiceURLs) -> Iterator[InstrumentedRedis]:
    """An instrumented client of the shared Redis, its events dropped; closed after the test."""
    client = InstrumentedRedis(services.redis_url, no_events)
    yield client
    client.close()


@pytest.fixture
def fresh(services: ServiceURLs) -> Iterator[ServiceURLs]:
    """The shared services, reset: 20 entities at version 0, no cached entries."""
    with psycopg.connect(services.pg_dsn, autocommit=True) as conn:
        schema.install(conn)
        schema.reset(conn, 20)
    r = redis.Redis.from_url(services.redis_url)
    r.flushdb()
    r.close()
    yield services


@pytest.fixture(autouse=True)
def own_master_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's Locust masters listen on a port of their own (Locust reads LOCUST_* variables).

    On Locust's default port, a forked worker left over from an earlier test (a SIGKILLed master's
    workers wait 60 s for a heartbeat before they quit) joins the next test's master and its rows
    land in that run; an explicit --master-port or --master-bind-port still wins.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    monkeypatch.setenv("LOCUST_MASTER_BIND_PORT", port)
    monkeypatch.setenv("LOCUST_MASTER_NODE_PORT", port)


def run_locust(
    args: list[str], timeout: float = 180, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the locust command from the repo root; its output is returned, not printed."""
    return subprocess.run(
        [sys.executable, "-m", "locust", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        # The tests judge a run with run_analysis themselves, so the analysis every run ends with
        # would be done twice (about 3 s a run); a test that wants it passes --verdict or the env.
        env={"CACHESTORM_END_ANALYSIS": "off", **os.environ, **(env or {})},
        check=False,
    )


def run_analysis(results: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "analysis", str(results), *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture
def browser() -> Iterator[Any]:
    """A headless Debian chromium, driven by Playwright, for one test.

    Not shared across tests: Playwright's sync API holds an asyncio loop running in the main
    thread while it is open, and later tests that call ``asyncio.run`` (the notifier's) would fail.
    """
    path = chromium_path()
    if path is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run does it as root)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh 1400x1000 page in a context of its own (no cookies or storage from other tests)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        yield context.new_page()
    finally:
        context.close()
