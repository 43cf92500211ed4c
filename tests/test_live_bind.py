"""``--live-bind HOST:PORT``: the live view's /coherence and /metrics on a server of their own, for
headless runs, whose master has no web UI to serve them."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.error
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from analysis.live import BindError, parse_bind
from cachestorm.services import ServiceURLs
from tests.conftest import ROOT, run_locust
from tests.live_runs import get

CONTENTION = "tests/locustfiles/contention.py"
ANNOUNCED = re.compile(r"live figures at http://127\.0\.0\.1:(\d+)/metrics")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:9646", ("127.0.0.1", 9646)), ("0.0.0.0:0", ("0.0.0.0", 0)), ("[::1]:80", ("::1", 80))],
)
def test_host_and_port_are_read(text: str, expected: tuple[str, int]) -> None:
    assert parse_bind(text) == expected


@pytest.mark.parametrize("text", ["9646", "127.0.0.1", ":9646", "127.0.0.1:http", "127.0.0.1:70000", ""])
def test_anything_else_is_refused_with_an_example(text: str) -> None:
    with pytest.raises(BindError, match=r"not HOST:PORT; give e\.g\. 127\.0\.0\.1:9646"):
        parse_bind(text)


def urls(services: ServiceURLs) -> list[str]:
    return ["--redis-url", services.redis_url, "--pg-dsn", services.pg_dsn, "--ws-url", services.ws_url]


def metric(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


@pytest.mark.integration
def test_a_headless_run_serves_its_live_figures(services: ServiceURLs, tmp_path: Path) -> None:
    # The positive control of the figures: cache-aside with a fill delay serves stale reads, which
    # /metrics must show as they are found, while the run goes.
    args = f"-f {CONTENTION} --headless --only-summary --ramp-users 20 --ramp-time 0 --hold-time 8"
    args += " --quiesce-time 1 --keys 40 --listeners 2 --strategy cache-aside --fill-delay-ms 50"
    args += f" --live-bind 127.0.0.1:0 --end-analysis off --results-dir {tmp_path} --run-id bound"
    log = tmp_path / "locust.log"
    found: dict[str, Any] = {}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "locust", *args.split(), *urls(services)],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            port = None
            while port is None and time.monotonic() < deadline and proc.poll() is None:
                if m := ANNOUNCED.search(log.read_text()):
                    port = int(m.group(1))
                time.sleep(0.1)
            assert port is not None, log.read_text()[-3000:]
            base = f"http://127.0.0.1:{port}"
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    text = get(base + "/metrics").decode()
                    snapshot = json.loads(get(base + "/coherence"))
                except (OSError, ValueError):
                    time.sleep(0.2)
                    continue
                if metric(text, "cachestorm_live_verdict") == 1.0 and snapshot["state"] == "running":
                    found = {"metrics": text, "snapshot": snapshot}
                    with pytest.raises(urllib.error.HTTPError, match="404"):
                        get(base + "/stats/requests")  # the figures alone: no web UI behind them
                    break
                time.sleep(0.2)
        finally:
            code = proc.wait(timeout=90)
    assert found, log.read_text()[-3000:]
    stale = metric(found["metrics"], "cachestorm_live_violations", check="stale_read")
    assert stale is not None and stale > 0, found["metrics"]
    assert found["snapshot"]["checks"]["stale_read"]["outcome"] == "fail"
    assert metric(found["metrics"], "cachestorm_live_running") == 1.0
    # The violations were Locust failures too, so Locust exits 1 on them.
    assert code == 1, log.read_text()[-3000:]


@pytest.mark.integration
@pytest.mark.parametrize(
    ("flags", "says"),
    [
        ("--live-bind nowhere", "--live-bind 'nowhere': not HOST:PORT"),
        ("--live-bind 127.0.0.1:{busy}", "--live-bind 127.0.0.1:{busy}: cannot listen there"),
        ("--live off --live-bind 127.0.0.1:0", "--live-bind needs the live view"),
    ],
    ids=["not-an-address", "port-taken", "live-off"],
)
def test_a_bad_live_bind_is_one_line_and_exit_2(
    flags: str, says: str, services: ServiceURLs, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        args = f"-f {CONTENTION} --headless -t 5s --results-dir {tmp_path} {flags.format(busy=busy)}"
        out = run_locust([*args.split(), *urls(services)], timeout=60)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("cachestorm:")]
    assert lines == [lines[0]] and says.format(busy=busy) in lines[0], out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    assert not list(tmp_path.iterdir())  # refused before any run started
