"""A master and workers on separate hosts, emulated by Linux network namespaces.

One namespace per node (tests/netns.py): the master 10.77.0.2 (and the services it starts, on
their own 10.77.0.1), the workers .3 and .4.
Traffic stays inside these namespaces. The safe case: the embedded services bound to 10.77.0.1 and
advertised there, two workers, a versioned run that passes. The positive control: services left on
127.0.0.1, which in a worker's namespace is its own loopback, where a second Redis waits on the
master's port; the worker's run-marker check must stop the run with one line naming it and Redis.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cachestorm.services import _redis_server
from tests import netns
from tests.conftest import run_analysis
from tests.netns import Hosts, finished, netns_missing, wait_for

pytestmark = pytest.mark.integration

SUBNET = "10.77.0"
MASTER_PORT = "15571"
NODES = {"m": 2, "w1": 3, "w2": 4}
SERVICES_IP = f"{SUBNET}.1"


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    reason = netns_missing()
    if reason:
        pytest.skip(reason)
    with netns.hosts(f"cs{os.getpid()}", SUBNET, NODES) as h:
        yield h


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
