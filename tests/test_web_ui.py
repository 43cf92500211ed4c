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


def test_two_runs_from_the_web_ui(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = "-f tests/locustfiles/contention.py --web-host 127.0.0.1 --ramp-time 0 --hold-time 4"
    args += " --quiesce-time 2 --keys 60 --listeners 2 --ramp-users 30"
    log = (tmp_path / "locust.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "locust",
            *args.split(),
            "--web-port",
            str(port),
            "--results-dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(base + "/", timeout=2).read()
                break
            except OSError:
                time.sleep(0.3)
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
