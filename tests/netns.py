"""Hosts emulated by Linux network namespaces, for the multi-host and network-fault tests.

Each node gets its own namespace and address, joined by veth links to a bridge in a hub namespace;
the master's namespace also holds the services' address (``.1``). Each test module picks its own
name prefix and subnet, so that two of them running at once (or in parallel CI jobs) cannot clash.
Every namespace made is deleted on the way out, also on failure, and its veth ends with it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from tests.conftest import ROOT

LOCUSTFILE = "tests/locustfiles/contention.py"


def ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=False)


def must(*args: str) -> None:
    out = ip(*args)
    if out.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {out.stderr.strip()}")


def netns_missing() -> str | None:
    """Why this host cannot build the namespaces, or None."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "needs `ip` (iproute2) for network namespaces"
    probe = f"csprobe{os.getpid()}"
    out = ip("netns", "add", probe)
    if out.returncode != 0:
        return f"`ip netns add` failed here: {out.stderr.strip()}"
    ip("netns", "del", probe)
    return None


@dataclass
class Hosts:
    """The namespaces of one test, named by role; every process started in them is stopped."""

    names: dict[str, str]
    subnet: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[IO[bytes]] = field(default_factory=list)

    @property
    def services_ip(self) -> str:
        return f"{self.subnet}.1"

    def start(self, role: str, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        out = open(log, "wb")  # noqa: SIM115  # closed with the processes, in stop()
        self.logs.append(out)
        # `ip netns exec` execs the command, so the pid is the command's own.
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.names[role], *argv], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
        )
        self.procs.append(proc)
        return proc

    def locust(self, role: str, args: str, log: Path) -> subprocess.Popen[bytes]:
        return self.start(role, [sys.executable, "-m", "locust", "-f", LOCUSTFILE, *args.split()], log)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for out in self.logs:
            out.close()


@contextmanager
def hosts(prefix: str, subnet: str, nodes: dict[str, int]) -> Iterator[Hosts]:
    """Namespaces ``PREFIX-ROLE`` at ``SUBNET.N`` for each role and last octet of ``nodes``.

    The role ``m`` (the master) also holds ``SUBNET.1``, where the services are bound.
    """
    hub = f"{prefix}-hub"
    names = {role: f"{prefix}-{role}" for role in nodes}
    made = [hub]
    h = Hosts(names, subnet)
    try:
        must("netns", "add", hub)
        must("-n", hub, "link", "add", "br0", "type", "bridge")
        must("-n", hub, "link", "set", "br0", "up")
        for role, last in nodes.items():
            ns = names[role]
            must("netns", "add", ns)
            made.append(ns)
            # Both ends are named inside their own namespaces, so parallel runs cannot clash.
            must("-n", hub, "link", "add", f"p-{role}", "type", "veth", "peer", "name", "eth0", "netns", ns)
            must("-n", hub, "link", "set", f"p-{role}", "master", "br0", "up")
            must("-n", ns, "addr", "add", f"{subnet}.{last}/24", "dev", "eth0")
            if role == "m":
                must("-n", ns, "addr", "add", f"{h.services_ip}/24", "dev", "eth0")
            must("-n", ns, "link", "set", "eth0", "up")
            must("-n", ns, "link", "set", "lo", "up")
        yield h
    finally:
        h.stop()
        for ns in reversed(made):
            ip("netns", "del", ns)  # takes its veth ends, iptables rules and qdiscs with it


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
