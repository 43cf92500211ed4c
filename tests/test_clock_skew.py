"""A worker whose clock is 50 ms ahead (libfaketime), beside one on the host's clock.

A master and two workers run as separate processes on this host, the skewed worker sharing the
boot id of the others but not their clock. With the clock measured, the safe strategy shows no
stale or future read, and staleness planted wider than the uncertainty is still caught; with it
off (``--clock-sync off``), the same safe run shows stale reads that never happened.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import psutil
import pytest

from analysis.live import LIVE_CHECKS
from tests.conftest import ROOT, run_analysis

pytestmark = pytest.mark.integration

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
SKEW_NS = 50_000_000
LOCUSTFILE = "tests/locustfiles/one_writer.py"

needs_faketime = pytest.mark.skipif(
    not LIBFAKETIME.exists() or shutil.which("faketime") is None,
    reason="libfaketime is not installed (Debian: apt-get install faketime; .ci/run installs it as root)",
)


def free_port() -> int:
    # Not Locust's default 5557: other runs on this host may hold it.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def started(
    args: list[str], log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A locust process; whatever of it (and its children, the embedded services) is left is killed."""
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "locust", "-f", LOCUSTFILE, *args],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            parent = psutil.Process(proc.pid)
            for p in [parent, *parent.children(recursive=True)]:
                with suppress(psutil.NoSuchProcess):
                    p.kill()
        proc.wait(timeout=30)


def skewed_run(tmp: Path, strategy: str, *extra: str) -> dict[str, Any]:
    port = str(free_port())
    master = [
        "--master", "--headless", "--only-summary", "--expect-workers", "2",
        "--master-bind-host", "127.0.0.1", "--master-bind-port", port,
        "--ramp-users", "20", "--ramp-time", "0", "--hold-time", "6", "--quiesce-time", "1",
        "--keys", "30", "--listeners", "1", "--strategy", strategy,
        "--results-dir", str(tmp), "--run-id", "skew", *extra,
    ]  # fmt: skip
    worker = ["--worker", "--master-host", "127.0.0.1", "--master-port", port]
    faked = {"LD_PRELOAD": str(LIBFAKETIME), "FAKETIME": f"+{SKEW_NS / 1e9}", "FAKETIME_NO_CACHE": "1"}
    with (
        started(master, tmp / "master.log") as m,
        started(worker, tmp / "worker.log"),
        started(worker, tmp / "skewed.log", faked),
    ):
        code = m.wait(timeout=120)
    run_dir = tmp / "skew"
    verdict = run_analysis(run_dir)
    summary: dict[str, Any] = json.loads((run_dir / "summary.json").read_text())
    # The live view logged a Locust failure (COHERENCE <check>) for each check the analysis failed
    # among those it judges, so the master's exit code says whether there was one.
    logged = [n for n in (*LIVE_CHECKS, "divergence") if summary["checks"][n]["outcome"] == "fail"]
    assert code == (1 if logged else 0), (logged, (tmp / "master.log").read_text()[-3000:])
    summary["exit_code"] = verdict.returncode
    summary["run"] = json.loads((run_dir / "run.json").read_text())
    return summary


def violations(s: dict[str, Any], *names: str) -> dict[str, int]:
    return {n: s["checks"][n]["violations"] for n in names}


@needs_faketime
def test_a_skewed_worker_is_measured_and_the_safe_run_passes(tmp_path: Path) -> None:
    s = skewed_run(tmp_path, "versioned")
    nodes = s["run"]["nodes"]
    assert len(nodes) == 2, nodes
    offsets = sorted(n["clock_offset_ns"] for n in nodes.values())
    for n in nodes.values():
        clock = n["clock"]
        assert clock["sync"] == "on" and clock["rounds"] >= 2, clock
        # Loopback: a round trip well under a millisecond or two, even on a busy host.
        assert 0 < n["clock_uncertainty_ns"] == clock["uncertainty_ns"] < 5_000_000, clock
    # The skewed worker's rows are moved back by its 50 ms; the other's by about nothing.
    assert abs(offsets[0] + SKEW_NS) < 2_000_000 and abs(offsets[1]) < 2_000_000, offsets
    worst = max(n["clock_uncertainty_ns"] for n in nodes.values())
    assert s["run"]["clock_uncertainty_ns"] == worst == s["options"]["tolerance_ns"]
    assert s["exit_code"] == 0, violations(s, "stale_read", "future_read", "monotonic_read")
    assert violations(s, "stale_read", "future_read", "monotonic_read") == dict.fromkeys(
        ("stale_read", "future_read", "monotonic_read"), 0
    )
    assert s["checks"]["stale_read"]["reads_checked"] > 1000


@needs_faketime
def test_without_the_clock_sync_the_same_run_shows_reads_that_never_were_stale(tmp_path: Path) -> None:
    s = skewed_run(tmp_path, "versioned", "--clock-sync", "off")
    assert s["options"]["tolerance_ns"] == 0
    assert all(n["clock"]["sync"] == "off" and n["clock"]["rounds"] == 0 for n in s["run"]["nodes"].values())
    v = violations(s, "stale_read", "future_read")
    assert s["exit_code"] == 1 and v["stale_read"] + v["future_read"] > 0, v


@needs_faketime
def test_planted_staleness_wider_than_the_uncertainty_is_still_caught(tmp_path: Path) -> None:
    s = skewed_run(tmp_path, "cache-aside", "--fill-delay-ms", "50")
    assert 0 < s["options"]["tolerance_ns"] < 5_000_000
    assert s["exit_code"] == 1
    assert s["checks"]["stale_read"]["passed"] is False and s["checks"]["stale_read"]["violations"] > 0
