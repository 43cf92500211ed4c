"""The nemesis's network faults (partition, latency, loss) inside the multi-host namespaces.

tests/netns.py's hosts, on their own subnet and names so as not to meet test_multihost.py's: the
master and its services in one namespace, two workers in theirs, the faults applied in the first
worker's (``--nemesis-netns``). First the faults alone, measured from the worker: a TCP connect to
the services' address that a partition blocks and a latency slows, while the master's address,
on the same link, stays as it was; healed, nothing of them is left. Then the fault matrix, as
tests/test_nemesis.py's: with the versioned strategy no coherence check may fail, with cache-aside
and a fill delay the stale-set race must still be found. docs/reliability.md holds the figures.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from cachestorm import netfaults
from cachestorm.netfaults import NET_FAULTS
from tests import netns
from tests.conftest import run_locust
from tests.faults import COHERENCE, judged, print_figures
from tests.netns import Hosts, finished, netns_missing, wait_for

SUBNET = "10.78.0"
SECOND_SUBNET = "10.78.1"
NODES = {"m": 2, "w1": 3, "w2": 4}
MASTER_PORT = "15581"
PROBE_PORT = 15582


def skip_without_namespaces() -> None:
    reason = netns_missing()
    if reason is None:
        for tool in ("iptables", "tc"):
            if shutil.which(tool) is None:
                reason = f"needs `{tool}` for network faults (Debian: iptables, iproute2)"
    if reason:
        pytest.skip(reason)


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    skip_without_namespaces()
    with netns.hosts(f"csn{os.getpid()}", SUBNET, NODES) as h:
        yield h


@pytest.fixture
def two_sets_of_hosts() -> Iterator[tuple[Hosts, Hosts]]:
    """Two sets of the same hosts on two subnets, for two runs at once that cannot meet."""
    skip_without_namespaces()
    with (
        netns.hosts(f"csn{os.getpid()}", SUBNET, NODES) as first,
        netns.hosts(f"csm{os.getpid()}", SECOND_SUBNET, NODES) as second,
    ):
        yield first, second


def connect_s(h: Hosts, address: str, timeout: float = 1.5) -> float | None:
    """Seconds a TCP connect from the first worker's host to ``address`` took; None: it failed."""
    code = (
        "import socket, time; t = time.monotonic()\n"
        f"try: socket.create_connection(({address!r}, {PROBE_PORT}), timeout={timeout}).close()\n"
        "except OSError: print('none')\n"
        "else: print(time.monotonic() - t)"
    )
    out = subprocess.run(
        ["ip", "netns", "exec", h.names["w1"], sys.executable, "-c", code],
        capture_output=True, text=True, timeout=15, check=True,
    )  # fmt: skip
    text = out.stdout.strip()
    return None if text == "none" else float(text)


def test_a_fault_without_a_namespace_is_refused(tmp_path: Path) -> None:
    out = run_locust(
        ["-f", "tests/locustfiles/contention.py", "--headless", "-t", "3s", "--nemesis", "partition@1s",
         "--results-dir", str(tmp_path)],
        timeout=60,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr[-2000:]
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("cachestorm:")]
    assert len(lines) == 1 and "--nemesis-netns NAME" in lines[0], out.stderr[-2000:]
    assert "Traceback" not in out.stderr


MASTER_IP = f"{SUBNET}.2"


def listen(hosts: Hosts, tmp_path: Path) -> None:
    """A TCP listener on each of the master host's two addresses, once it accepts."""
    for address in (hosts.services_ip, MASTER_IP):
        # A listener on each of the master host's two addresses.
        hosts.start("m", [sys.executable, "-m", "http.server", "--bind", address, str(PROBE_PORT)],
                    tmp_path / f"probe-{address}.log")  # fmt: skip
    wait_for(lambda: connect_s(hosts, hosts.services_ip) is not None, 20, "the probe listener")
    wait_for(lambda: connect_s(hosts, MASTER_IP) is not None, 20, "the probe listener")


@pytest.mark.integration
def test_partition_and_loss_act_toward_the_services_only_and_heal_to_nothing(
    hosts: Hosts, tmp_path: Path
) -> None:
    listen(hosts, tmp_path)
    master_ip, w1, services = MASTER_IP, hosts.names["w1"], [hosts.services_ip]
    baseline = connect_s(hosts, hosts.services_ip)
    assert baseline is not None and baseline < 0.1

    netfaults.apply("partition", w1, services)
    try:
        assert connect_s(hosts, hosts.services_ip) is None
        assert connect_s(hosts, master_ip) is not None
    finally:
        netfaults.heal("partition", w1, services)
    assert netfaults.active(w1) == []
    assert connect_s(hosts, hosts.services_ip) is not None

    netfaults.apply("loss", w1, services)
    try:
        # A SYN lost is retried after 1 s: of 20 connects, some are that late, most are not.
        times = [connect_s(hosts, hosts.services_ip, timeout=5) for _ in range(20)]
        late = sum(1 for t in times if t is None or t >= 0.9)
        assert 1 <= late <= 15, times
        direct = [connect_s(hosts, master_ip) for _ in range(10)]
        assert all(t is not None and t < 0.1 for t in direct), direct
    finally:
        netfaults.heal("loss", w1, services)
        netfaults.heal("loss", w1, services)  # healing twice is harmless
    assert netfaults.active(w1) == []
    healed = connect_s(hosts, hosts.services_ip)
    assert healed is not None and healed < 0.1


@pytest.mark.integration
def test_latency_slows_the_services_only_and_heals_to_nothing(hosts: Hosts, tmp_path: Path) -> None:
    master_ip, w1, services = MASTER_IP, hosts.names["w1"], [hosts.services_ip]
    if reason := netfaults.netem_missing(w1):
        pytest.skip(reason)
    listen(hosts, tmp_path)
    netfaults.apply("latency", w1, services)
    try:
        slowed = connect_s(hosts, hosts.services_ip)
        assert slowed is not None and slowed >= 0.2, slowed
        direct = connect_s(hosts, master_ip)
        assert direct is not None and direct < 0.1, direct
    finally:
        netfaults.heal("latency", w1, services)
    assert netfaults.active(w1) == []


def faulted_run(h: Hosts, tmp_path: Path, fault: str, strategy: str) -> dict[str, Any]:
    """A short two-worker contention run with ``fault`` in the first worker's host; its figures."""
    run_id = f"{fault}-{strategy}"
    results = tmp_path / "results"
    log = tmp_path / f"{run_id}-master.log"
    master_ip = f"{h.subnet}.{NODES['m']}"
    args = f"--master --master-bind-host {master_ip} --master-bind-port {MASTER_PORT} --expect-workers 2"
    args += " --headless --only-summary --ramp-users 20 --ramp-time 0 --hold-time 10 --quiesce-time 2"
    args += f" --keys 40 --listeners 2 --strategy {strategy} --fill-delay-ms 50 --seed 1"
    args += f" --services-bind {h.services_ip} --services-advertise {h.services_ip}"
    args += f" --nemesis {fault}@3s:4s --nemesis-netns {h.names['w1']} --exit-code-on-error 0"
    args += f" --results-dir {results} --run-id {run_id}"
    master = h.locust("m", args, log)
    workers = [
        h.locust(
            role,
            f"--worker --master-host {master_ip} --master-port {MASTER_PORT}",
            tmp_path / f"{run_id}-{role}.log",
        )
        for role in ("w1", "w2")
    ]
    code = finished(master, 120, log)
    for w in workers:
        finished(w, 30, log)
    assert code == 0, log.read_text()[-3000:]
    assert netfaults.active(h.names["w1"]) == []  # healed before the final sweep, and gone
    summary, history = judged(results / run_id)
    faults = history.loc[history["f"] == "nemesis"]
    # Each worker's p99 latency (ms) of the operations started while the fault was on.
    t0, t1 = faults["t_invoke"].min(), faults["t_complete"].max()
    during = history.loc[history["t_invoke"].between(t0, t1) & ~history["f"].isin(["nemesis"])]
    during = during.loc[during["node"] != "master"]
    lat_ms = (during["t_complete"] - during["t_invoke"]) / 1e6
    summary["p99_ms"] = sorted(lat_ms.groupby(during["node"], observed=True).quantile(0.99).round().tolist())
    print_figures(run_id, summary, p99_ms=summary["p99_ms"])
    return summary


@pytest.mark.integration
@pytest.mark.parametrize("fault", sorted(NET_FAULTS))
def test_the_network_fault_matrix(fault: str, two_sets_of_hosts: tuple[Hosts, Hosts], tmp_path: Path) -> None:
    hosts, other = two_sets_of_hosts
    if fault == "latency" and (reason := netfaults.netem_missing(hosts.names["w1"])):
        pytest.skip(reason)
    # Both runs at once, each in hosts of its own with services of its own, as tests/test_nemesis.py
    # does: neither judgement depends on speed, and the one latency bound is a floor that load only
    # raises. It halves the matrix's time.
    with ThreadPoolExecutor(2) as pool:
        runs = [
            pool.submit(faulted_run, h, tmp_path, fault, s)
            for h, s in ((hosts, "versioned"), (other, "cache-aside"))
        ]
        safe, unsafe = (run.result() for run in runs)
    assert safe["fault_rows"] == [(fault, "end", "ok"), (fault, "start", "ok")]
    for name in COHERENCE:
        assert safe["checks"][name]["outcome"] == "pass", (name, safe["checks"][name].get("examples"))
    assert safe["exit_code"] in (0, 3)
    assert safe["rows"] > 1000
    # The fault struck, else the matrix would judge a healthy run: the faulted worker waited. The
    # other worker is held to no limit: under the versioned strategy its readers wait for leases
    # that the faulted worker's readers took and cannot fill.
    assert len(safe["p99_ms"]) == 2 and safe["p99_ms"][1] >= 300, safe["p99_ms"]

    assert unsafe["fault_rows"] == [(fault, "end", "ok"), (fault, "start", "ok")]
    assert unsafe["exit_code"] == 1
    assert unsafe["checks"]["stale_read"]["violations"] + unsafe["checks"]["divergence"]["violations"] > 0
