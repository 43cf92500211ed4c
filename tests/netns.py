"""Hosts emulated by Linux network namespaces, for the multi-host and network-fault tests.

The harness is bench/netns.py's (one namespace per node, joined by veth links to a bridge in a hub
namespace); this adds the tests' conventions: the master's namespace also holds the services'
address (``.1``), and nodes run ``tests/locustfiles/contention.py`` from the repository's root.
Each test module picks its own name prefix and subnet, so that two of them running at once (or in
parallel CI jobs) cannot clash. Every namespace made is deleted on the way out, also on failure.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bench import netns
from bench.netns import missing as netns_missing
from tests.conftest import ROOT

__all__ = ["Hosts", "finished", "hosts", "netns_missing", "wait_for"]

LOCUSTFILE = "tests/locustfiles/contention.py"


class Hosts(netns.Hosts):
    """The namespaces of one test, named by role; every process started in them is stopped."""

    @property
    def services_ip(self) -> str:
        return f"{self.subnet}.1"

    def locust(self, role: str, args: str, log: Path) -> subprocess.Popen[bytes]:
        return self.start(role, [sys.executable, "-m", "locust", "-f", LOCUSTFILE, *args.split()], log)


@contextmanager
def hosts(prefix: str, subnet: str, nodes: dict[str, int]) -> Iterator[Hosts]:
    """Namespaces ``PREFIX-ROLE`` at ``SUBNET.N`` for each role and last octet of ``nodes``.

    The role ``m`` (the master) also holds ``SUBNET.1``, where the services are bound.
    """
    with netns.hosts(prefix, subnet, nodes, ROOT, {"m": [f"{subnet}.1"]}, kind=Hosts) as h:
        yield h


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def finished(proc: subprocess.Popen[bytes], timeout: float, log: Path) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"still running after {timeout:g} s:\n{log.read_text()[-3000:]}") from None
