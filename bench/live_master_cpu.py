"""The Locust master's CPU with the live view on and off, at 500 users on two workers.

    python bench/live_master_cpu.py [--rounds 1] [--users 500] [--hold 20]

Each run: locustfile.py with ``--processes 2`` (one master, two forked workers), the StepRamp shape
to ``--users`` over 10 s, held ``--hold`` seconds, its web UI polled the way the UI polls it
(/stats/requests every 2 s) and /coherence with it. The master is the locust process itself; its
CPU (percent of one core, psutil, every second) is sampled from the end of the ramp to the end of
the hold. Prints the median and max per run, with the live view's last judgement time and rows.
One set of embedded services is shared by all runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cachestorm.services import EmbeddedServices, ServiceURLs  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
RAMP_S = 10


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fetch(url: str) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            data = json.loads(r.read())
            return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def run(urls: ServiceURLs, a: argparse.Namespace, live: str, results: Path) -> dict[str, object]:
    port, master = free_port(), free_port()
    argv = [sys.executable, "-m", "locust", "-f", "locustfile.py", "--autostart", "--autoquit", "2"]
    argv += ["--processes", "2", "--master-bind-port", str(master), "--master-port", str(master)]
    argv += ["--ramp-users", str(a.users), "--ramp-time", str(RAMP_S), "--hold-time", str(a.hold)]
    argv += [
        "--quiesce-time",
        "2",
        "--live",
        live,
        "--results-dir",
        str(results),
        "--exit-code-on-error",
        "0",
    ]
    argv += ["--web-host", "127.0.0.1", "--web-port", str(port)]
    argv += ["--redis-url", urls.redis_url, "--pg-dsn", urls.pg_dsn, "--ws-url", urls.ws_url]
    base = f"http://127.0.0.1:{port}"
    log = results / f"locust-{live}.log"
    samples: list[float] = []
    last: dict[str, object] | None = None
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=ENV, start_new_session=True
        )
        master_proc = psutil.Process(proc.pid)
        try:
            while fetch(base + "/stats/requests") is None and proc.poll() is None:
                time.sleep(0.5)
            started = time.monotonic()
            master_proc.cpu_percent(None)
            deadline = started + RAMP_S + a.hold + 60
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(1.0)
                cpu = master_proc.cpu_percent(None)
                into = time.monotonic() - started
                if RAMP_S + 2 <= into <= RAMP_S + a.hold:
                    samples.append(cpu)
                if int(into) % 2 == 0:
                    fetch(base + "/stats/requests")
                    snap = fetch(base + "/coherence")
                    if snap is not None and snap.get("state") == "running":
                        last = snap
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=90)
    if not samples:
        sys.exit(f"live_master_cpu: no CPU samples; see {log}")
    return {
        "live": live,
        "median": statistics.median(samples),
        "max": max(samples),
        "samples": len(samples),
        "analysis_s": None if last is None else last.get("analysis_s"),
        "rows_judged": None if last is None else last.get("rows_judged"),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--users", type=int, default=500)
    p.add_argument("--hold", type=int, default=20)
    a = p.parse_args()
    with EmbeddedServices() as svc, tempfile.TemporaryDirectory() as tmp:
        urls = svc.start()
        for i in range(a.rounds):
            for live in ("on", "off") if i % 2 == 0 else ("off", "on"):
                r = run(urls, a, live, Path(tmp))
                print(
                    f"round {i + 1} live {live}: master CPU median {r['median']:.1f}% max {r['max']:.1f}% "
                    f"({r['samples']} samples); last judgement {r['analysis_s']} s "
                    f"on {r['rows_judged']} rows",
                    flush=True,
                )


if __name__ == "__main__":
    main()
