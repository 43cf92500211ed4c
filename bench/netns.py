"""Hosts emulated by Linux network namespaces, for the benchmarks: one namespace per role.

Each role gets a namespace and an address on ``<subnet>.<n>/24``, joined by veth links to a bridge
in a hub namespace; extra addresses on a role (the master's services) are given per role.
Traffic stays inside these namespaces. Everything made is removed on the way out, also on failure:
deleting a namespace takes its veth ends with it.

The benchmarks (bench/multihost.py) and the tests (tests/netns.py, which adds the tests' conventions
on top) share this harness; the figures are in docs/performance.md.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeVar


def ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=False)


def must(*args: str) -> None:
    out = ip(*args)
    if out.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {out.stderr.strip()}")


def missing() -> str | None:
    """Why this host cannot build the namespaces, or None."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "needs `ip` (iproute2) for network namespaces"
    probe = f"csbprobe{os.getpid()}"
    out = ip("netns", "add", probe)
    if out.returncode != 0:
        return f"`ip netns add` failed here: {out.stderr.strip()}"
    ip("netns", "del", probe)
    return None


@dataclass
class Hosts:
    """The namespaces of one run, named by role; every process started in them is stopped."""

    names: dict[str, str]
    cwd: Path
    #: The first three octets of every address made, e.g. ``10.79.0``.
    subnet: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[IO[bytes]] = field(default_factory=list)

    def start(self, role: str, argv: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
        out = open(log, "wb")  # noqa: SIM115  # closed with the processes, in stop()
        self.logs.append(out)
        # `ip netns exec` execs the command, so the pid is the command's own.
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.names[role], *argv],
            cwd=self.cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        return proc

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


H = TypeVar("H", bound=Hosts)


@contextmanager
def hosts(
    prefix: str,
    subnet: str,
    nodes: Mapping[str, int],
    cwd: Path,
    extra_addresses: Mapping[str, Sequence[str]] | None = None,
    kind: type[H] = Hosts,  # type: ignore[assignment]
) -> Iterator[H]:
    """Namespaces ``<prefix>-<role>`` for ``nodes`` (role to last octet on ``subnet``, e.g.
    ``10.79.0``), plus ``<prefix>-hub`` with the bridge. ``extra_addresses``: more addresses per role.
    ``kind``: a subclass of :class:`Hosts` to hand back, for callers with helpers of their own."""
    hub = f"{prefix}-hub"
    names = {role: f"{prefix}-{role}" for role in nodes}
    made: list[str] = []
    h = kind(names, cwd, subnet)
    try:
        must("netns", "add", hub)
        made.append(hub)
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
            for address in (extra_addresses or {}).get(role, ()):
                must("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
            must("-n", ns, "link", "set", "eth0", "up")
            must("-n", ns, "link", "set", "lo", "up")
        yield h
    finally:
        h.stop()
        for ns in reversed(made):
            ip("netns", "del", ns)  # takes its veth ends, iptables rules and qdiscs with it
