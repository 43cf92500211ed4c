"""The run marker on real services: a worker's check passes on the master's own instances only."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import psycopg
import pytest
import redis

from cachestorm import marker
from cachestorm.services import EmbeddedServices, ServiceURLs, with_host
from tests.conftest import run_locust


@pytest.fixture(scope="module")
def remote() -> Iterator[ServiceURLs]:
    """Embedded services on every interface, as for workers on other hosts, named by loopback."""
    with EmbeddedServices() as svc:
        yield svc.start(bind="0.0.0.0", advertise="127.0.0.1")


def test_bound_beyond_loopback_the_services_ask_for_the_password_their_urls_carry(
    remote: ServiceURLs,
) -> None:
    redis.Redis.from_url(remote.redis_url).ping()
    psycopg.connect(remote.pg_dsn).close()
    redis_port, pg_port = urlsplit(remote.redis_url).port, urlsplit(remote.pg_dsn).port
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(f"redis://127.0.0.1:{redis_port}/0").get("k")
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(f"postgresql://postgres@127.0.0.1:{pg_port}/cachestorm").close()


def test_with_host_keeps_user_port_and_path() -> None:
    assert with_host("redis://:pw@127.0.0.1:6379/0", "10.0.0.5") == "redis://:pw@10.0.0.5:6379/0"
    assert with_host("ws://0.0.0.0:81/", "h") == "ws://h:81/"


def test_the_marker_passes_on_the_masters_instances_and_names_the_wrong_one(
    remote: ServiceURLs, services: ServiceURLs
) -> None:
    run_marker = marker.new("run-a")
    marker.write(remote.redis_url, remote.pg_dsn, run_marker)
    assert marker.problem("w1", remote.redis_url, remote.pg_dsn, remote.ws_url, run_marker) is None
    # The session's other services: reachable, but not the instances the master marked.
    wrong = marker.problem("w1", services.redis_url, remote.pg_dsn, remote.ws_url, run_marker)
    assert wrong is not None and wrong.startswith(f"worker w1: Redis at {services.redis_url}: it is not")
    wrong = marker.problem("w1", remote.redis_url, services.pg_dsn, remote.ws_url, run_marker)
    assert wrong is not None and wrong.startswith("worker w1: PostgreSQL at ")
    # A later run's marker replaces this one's.
    assert marker.problem("w1", remote.redis_url, remote.pg_dsn, remote.ws_url, marker.new("run-b"))


def test_an_unreachable_service_is_named_with_its_password_hidden(remote: ServiceURLs) -> None:
    run_marker = marker.new("run-c")
    marker.write(remote.redis_url, remote.pg_dsn, run_marker)
    wrong = marker.problem("w2", "redis://:sekrit@127.0.0.1:1/0", remote.pg_dsn, remote.ws_url, run_marker)
    assert (
        wrong == "worker w2: Redis at redis://:***@127.0.0.1:1/0: it cannot be reached (Connection refused)"
    )
    wrong = marker.problem("w2", remote.redis_url, remote.pg_dsn, "ws://127.0.0.1:1/", run_marker)
    assert wrong is not None and wrong.startswith(
        "worker w2: notifier at ws://127.0.0.1:1/: it is unreachable"
    )


def test_binding_every_interface_without_an_advertised_host_is_one_line() -> None:
    out = run_locust(
        ["-f", "locustfile.py", "--headless", "-t", "3s", "--services-bind", "0.0.0.0"], timeout=60
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    last = [line for line in out.stderr.splitlines() if line.strip()][-1]
    assert last == (
        "cachestorm: --services-bind 0.0.0.0 needs --services-advertise HOST: "
        "the address workers reach the embedded services by."
    )
