"""A master and workers on separate hosts, emulated by Linux network namespaces.

Each node gets its own namespace and address, joined by veth links to a bridge in a hub namespace:
the master 10.77.0.2 (and the services it starts, on their own 10.77.0.1), the workers .3 and .4.
Traffic stays inside these namespaces. The safe case: the embedded services bound to 10.77.0.1 and
advertised there, two workers, a versioned run that passes. The positive control: services left on
127.0.0.1, which in a worker's namespace is its own loopback, where a second Redis waits on the
master's port; the worker's run-marker check must stop the run with one line naming it and Redis.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest

from cachestorm.services import _redis_server
from tests.conftest import ROOT, run_analysis

pytestmark = pytest.mark.integration

LOCUSTFILE = "tests/locustfiles/contention.py"
SUBNET = "10.77.0"
MASTER_PORT = "15571"
NODES = {"m": 2, "w1": 3, "w2": 4}
SERVICES_IP = f"{SUBNET}.1"


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
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[IO[bytes]] = field(default_factory=list)

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


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    reason = netns_missing()
    if reason:
        pytest.skip(reason)
    tag = str(os.getpid())
    hub = f"cs{tag}-hub"
    names = {role: f"cs{tag}-{role}" for role in NODES}
    made = [hub]
    h = Hosts(names)
    try:
        must("netns", "add", hub)
        must("-n", hub, "link", "add", "br0", "type", "bridge")
        must("-n", hub, "link", "set", "br0", "up")
        for role, last in NODES.items():
            ns = names[role]
            must("netns", "add", ns)
            made.append(ns)
            # Both ends are named inside their own namespaces, so parallel runs cannot clash.
            must("-n", hub, "link", "add", f"p-{role}", "type", "veth", "peer", "name", "eth0", "netns", ns)
            must("-n", hub, "link", "set", f"p-{role}", "master", "br0", "up")
            must("-n", ns, "addr", "add", f"{SUBNET}.{last}/24", "dev", "eth0")
            if role == "m":
                must("-n", ns, "addr", "add", f"{SERVICES_IP}/24", "dev", "eth0")
            must("-n", ns, "link", "set", "eth0", "up")
            must("-n", ns, "link", "set", "lo", "up")
        yield h
    finally:
        h.stop()
        for ns in reversed(made):
            ip("netns", "del", ns)  # takes its veth ends with it


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


def master_args(results: Path, run_id: str, workers: int, extra: str) -> str:
    args = (
        f"--master --master-bind-host {SUBNET}.2 --master-bind-port {MASTER_PORT} --expect-workers {workers}"
    )
    args += " --headless --only-summary --ramp-users 20 --ramp-time 0 --hold-time 6 --quiesce-time 1"
    args += f" --keys 50 --listeners 2 --strategy versioned --results-dir {results} --run-id {run_id} {extra}"
    return args


WORKER = f"--worker --master-host {SUBNET}.2 --master-port {MASTER_PORT}"


def test_two_workers_on_other_hosts_reach_the_advertised_services(hosts: Hosts, tmp_path: Path) -> None:
    results = tmp_path / "results"
    log = tmp_path / "master.log"
    services = f"--services-bind {SERVICES_IP} --services-advertise {SERVICES_IP}"
    master = hosts.locust("m", master_args(results, "mh", 2, services), log)
    for role in ("w1", "w2"):
        hosts.locust(role, WORKER, tmp_path / f"{role}.log")
    code = finished(master, 120, log)
    text = log.read_text()
    assert code == 0, text[-3000:]
    assert f"redis://:***@{SERVICES_IP}:" in text  # advertised, and its password hidden
    run = json.loads((results / "mh" / "run.json").read_text())
    assert run["history_complete"] is True and run["stopped_for"] is None
    workers = {n: v for n, v in run["nodes"].items() if n != "master"}
    assert len(workers) == 2 and all(v["rows"] > 100 for v in workers.values()), workers
    verdict = run_analysis(results / "mh")
    assert verdict.returncode == 0, verdict.stdout[-2000:] + verdict.stderr[-2000:]


def test_a_worker_whose_loopback_holds_another_redis_stops_the_run(hosts: Hosts, tmp_path: Path) -> None:
    results = tmp_path / "results"
    log = tmp_path / "master.log"
    master = hosts.locust("m", master_args(results, "wrong", 1, ""), log)

    def announced() -> bool:
        return "embedded services:" in log.read_text() or master.poll() is not None

    wait_for(announced, 60, "the master's embedded services")
    found = re.search(r"redis://127\.0\.0\.1:(\d+)/0", log.read_text())
    assert found, log.read_text()[-3000:]
    port = found.group(1)
    # Another Redis at the very address the master advertised, as seen from the worker's host.
    hosts.start(
        "w1",
        [str(_redis_server()), "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        tmp_path / "other-redis.log",
    )

    def other_redis_up() -> bool:
        out = subprocess.run(
            ["ip", "netns", "exec", hosts.names["w1"], sys.executable, "-c",
             f"import redis; redis.Redis(port={port}, socket_connect_timeout=1).ping()"],
            capture_output=True, timeout=10, check=False,
        )  # fmt: skip
        return out.returncode == 0

    wait_for(other_redis_up, 20, "the worker's own Redis")
    hosts.locust("w1", WORKER, tmp_path / "w1.log")
    code = finished(master, 90, log)
    text = log.read_text()
    assert code == 2, text[-3000:]
    lines = [ln for ln in text.splitlines() if "it is not the master's instance" in ln]
    assert lines, text[-3000:]
    assert re.search(rf"worker \S+: Redis at redis://127\.0\.0\.1:{port}/0: it is not the master's", lines[0])
    assert "Traceback" not in text
    run = json.loads((results / "wrong" / "run.json").read_text())
    assert f"Redis at redis://127.0.0.1:{port}/0" in run["stopped_for"]
    assert run["stopped_ns"] - run["started_ns"] < 15e9  # stopped at once, not after its hold
    assert run["history_complete"] is False
    assert any("Redis at" in (v.get("lost_reason") or "") for v in run["nodes"].values()), run["nodes"]
    verdict = run_analysis(results / "wrong")
    assert verdict.returncode == 2 and "the run was stopped before its end" in verdict.stderr
