"""Helpers for the live view's tests: a Locust run with its web UI, watched through /coherence."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import ROOT
from tests.test_web_ui import free_port


def get(url: str, timeout: float = 5) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return bytes(resp.read())


@dataclass
class Watched:
    """What a watched run showed: every distinct /coherence answer, the last /stats/requests and
    /metrics, the exit code and the log."""

    snapshots: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    metrics: str = ""
    code: int | None = None
    log: str = ""

    def last(self) -> dict[str, Any]:
        return self.snapshots[-1]

    def running(self) -> list[dict[str, Any]]:
        return [s for s in self.snapshots if s["state"] == "running" and s["watermark_ns"] is not None]


def watch_run(args: list[str], tmp_path: Path, timeout: float = 150) -> Watched:
    """Run Locust with ``--autostart --autoquit`` and its web UI on a free port; poll /coherence,
    /stats/requests and /metrics every 0.3 s until the process exits (bounded by ``timeout``)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "locust.log"
    argv = [sys.executable, "-m", "locust", *args, "--autostart", "--autoquit", "3"]
    argv += ["--web-host", "127.0.0.1", "--web-port", str(port), "--results-dir", str(tmp_path)]
    w = Watched()
    with log_path.open("w") as log:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        try:
            while proc.poll() is None and time.monotonic() < deadline:
                try:
                    snap = json.loads(get(base + "/coherence"))
                    stats = json.loads(get(base + "/stats/requests"))
                    metrics = get(base + "/metrics").decode()
                except (OSError, ValueError):
                    time.sleep(0.3)
                    continue
                if not w.snapshots or snap["updated_ns"] != w.snapshots[-1]["updated_ns"]:
                    w.snapshots.append(snap)
                if snap["state"] != "idle":
                    w.stats, w.metrics = stats, metrics
                time.sleep(0.3)
        finally:
            if proc.poll() is None:
                proc.terminate()
            w.code = proc.wait(timeout=60)
    w.log = log_path.read_text()
    return w


def coherence_failures(stats: dict[str, Any]) -> dict[str, int]:
    """The COHERENCE entries of a /stats/requests answer: check name to failures."""
    return {s["name"]: int(s["num_failures"]) for s in stats.get("stats", []) if s["method"] == "COHERENCE"}


def run_dir(tmp_path: Path) -> Path:
    runs = sorted(p.parent for p in tmp_path.glob("*/run.json") if not p.parent.is_symlink())
    assert len(runs) == 1, runs
    return runs[0]
