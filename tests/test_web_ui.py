"""Two runs started from Locust's web UI, as a person would: new run id, reset, the form's options.

The form posts every field, blank ones included, so this also proves that leaving the service
URLs blank keeps the embedded services, and that each run takes the strategy chosen in the form.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import IO

import pytest

from tests.conftest import ROOT, run_analysis

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def post(url: str, fields: dict[str, str]) -> dict[str, object]:
    data = urllib.parse.urlencode(fields).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=30) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def finished_runs(results: Path) -> list[Path]:
    return sorted(p.parent for p in results.glob("*/run.json") if not p.parent.is_symlink())


def start_web_ui(args: str, tmp_path: Path) -> tuple[subprocess.Popen[bytes], str, IO[str]]:
    """Locust with its web UI on a free port, logging to tmp_path/locust.log; its URL once it answers."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = (tmp_path / "locust.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "locust",
            *args.split(),
            "--web-host",
            "127.0.0.1",
            "--web-port",
            str(port),
            "--results-dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(base + "/", timeout=2).read()
            break
        except OSError:
            time.sleep(0.3)
    return proc, base, log


def test_two_runs_from_the_web_ui(tmp_path: Path) -> None:
    args = "-f tests/locustfiles/contention.py --ramp-time 0 --hold-time 4"
    args += " --quiesce-time 2 --keys 60 --listeners 2 --ramp-users 30"
    proc, base, log = start_web_ui(args, tmp_path)
    try:
        form = {"user_count": "30", "spawn_rate": "30", "redis_url": "", "pg_dsn": "", "ws_url": ""}
        for n, (strategy, delay) in enumerate((("cache-aside", "50"), ("versioned", "50")), start=1):
            reply = post(base + "/swarm", {**form, "strategy": strategy, "fill_delay_ms": delay})
            assert reply["success"] is True, reply
            deadline = time.monotonic() + 60
            while len(finished_runs(tmp_path)) < n and time.monotonic() < deadline:
                time.sleep(0.5)
            assert len(finished_runs(tmp_path)) == n, (tmp_path / "locust.log").read_text()[-3000:]
            time.sleep(1)  # let the runner settle in "stopped" before the next start
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()
    first, second = sorted(
        finished_runs(tmp_path), key=lambda p: json.loads((p / "run.json").read_text())["started_ns"]
    )
    runs = [json.loads((p / "run.json").read_text()) for p in (first, second)]
    assert [r["options"]["strategy"] for r in runs] == ["cache-aside", "versioned"]
    assert all(r["history_complete"] and r["rows"] > 1000 for r in runs)
    assert runs[0]["run_id"] != runs[1]["run_id"]
    # Each run started from version 0 and was judged on its own.
    assert run_analysis(first).returncode == 1
    assert run_analysis(second).returncode == 0


def runner_state(base: str) -> str:
    with urllib.request.urlopen(base + "/stats/requests", timeout=10) as resp:
        return str(json.loads(resp.read())["state"])


def test_a_run_the_form_makes_impossible_is_refused_at_its_start(tmp_path: Path) -> None:
    """StepRamp was chosen at start-up; an arrival rate, or a bad value, typed in the form must not
    start a run that would follow neither (users on a schedule, their number set by StepRamp)."""
    args = "-f locustfile.py --ramp-time 0 --hold-time 3 --quiesce-time 1 --keys 60 --listeners 2"
    args += " --ramp-users 20"
    proc, base, log = start_web_ui(args, tmp_path)
    form = {"user_count": "20", "spawn_rate": "20", "redis_url": "", "pg_dsn": "", "ws_url": ""}
    form |= {"arrival_rate": "", "probe_rate": "1.0"}
    refusals = [
        ({"arrival_rate": "100"}, "cachestorm: --shape is 'StepRamp' but --arrival-rate sets the load"),
        ({"probe_rate": "2"}, "cachestorm: --probe-rate is 2.0: it must be between 0 and 1."),
    ]
    try:
        for fields, line in refusals:
            assert post(base + "/swarm", {**form, **fields})["success"] is True
            deadline = time.monotonic() + 30
            while line not in (tmp_path / "locust.log").read_text() and time.monotonic() < deadline:
                time.sleep(0.3)
            while runner_state(base) != "stopped" and time.monotonic() < deadline:
                time.sleep(0.3)
            assert runner_state(base) == "stopped", (tmp_path / "locust.log").read_text()[-3000:]
            # Refused before anything was reset or recorded: no run directory at all.
            assert not [p for p in tmp_path.iterdir() if p.is_dir()], fields
            time.sleep(1)
        # The session is not harmed: a run the form allows starts and completes.
        assert post(base + "/swarm", form)["success"] is True
        deadline = time.monotonic() + 60
        while not finished_runs(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()
    text = (tmp_path / "locust.log").read_text()
    for _, line in refusals:
        assert text.count(line) == 1, line
    assert "Traceback" not in text, text[-3000:]
    (run,) = finished_runs(tmp_path)
    meta = json.loads((run / "run.json").read_text())
    assert meta["history_complete"] and meta["rows"] > 100
    assert meta["options"]["arrival_rate"] == "" and meta["options"]["probe_rate"] == 1.0
