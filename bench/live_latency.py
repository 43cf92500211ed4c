"""Time from a planted stale read to its appearance in the live view's /coherence (what the tab polls).

    python bench/live_latency.py [--trials 20] [--readers 20]

One Locust run (bench/plant_locustfile.py: readers, and a planter whose strategy forgets its
invalidations, so that its read after each write is stale) with its web UI; /coherence is polled
every 50 ms. After the run, the history says when each stale read completed. A planted read
counts as shown at the first poll whose stale_read count includes it: more than the number of
stale reads completed before it (the view judges every row up to its watermark, so its count is
a prefix of the history's stale reads; tests/test_live.py checks that). Prints p50 and max over
the trials, in seconds.
"""

from __future__ import annotations

import argparse
import bisect
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analysis.kernels import stale_flags  # noqa: E402
from analysis.load import load_history, load_run  # noqa: E402
from analysis.options import Options  # noqa: E402
from cachestorm.services import EmbeddedServices  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
PLANT_EVERY_S = 2.5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--readers", type=int, default=20)
    p.add_argument("--keys", type=int, default=200)
    a = p.parse_args()
    # Margin for planted reads that were not stale (a key the planter found uncached twice) and the end.
    seconds = round(a.trials * PLANT_EVERY_S * 1.5 + 10)
    port, master = free_port(), free_port()
    polls: list[tuple[int, int]] = []
    with EmbeddedServices() as svc, tempfile.TemporaryDirectory() as tmp:
        urls = svc.start()
        argv = [sys.executable, "-m", "locust", "-f", "bench/plant_locustfile.py", "--autostart"]
        argv += ["--autoquit", "2", "-u", str(a.readers + 1), "-r", "100", "-t", f"{seconds}s"]
        argv += ["--strategy", "forgets-invalidation", "--keys", str(a.keys), "--results-dir", tmp]
        argv += ["--web-host", "127.0.0.1", "--web-port", str(port), "--master-bind-port", str(master)]
        argv += ["--redis-url", urls.redis_url, "--pg-dsn", urls.pg_dsn, "--ws-url", urls.ws_url]
        argv += ["--exit-code-on-error", "0"]
        log = Path(tmp) / "locust.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=ENV, start_new_session=True
            )
            deadline = time.monotonic() + seconds + 90
            try:
                while proc.poll() is None and time.monotonic() < deadline:
                    try:
                        with urllib.request.urlopen(f"http://127.0.0.1:{port}/coherence", timeout=2) as r:
                            snap = json.loads(r.read())
                    except (OSError, ValueError):
                        time.sleep(0.05)
                        continue
                    if snap["state"] == "running" and "stale_read" in snap["checks"]:
                        polls.append((time.time_ns(), int(snap["checks"]["stale_read"]["violations"])))
                    time.sleep(0.05)
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=60)
        run_dir = next(p.parent for p in Path(tmp).glob("*/run.json") if not p.parent.is_symlink())
        history = load_history(run_dir)
        options = Options.resolve(load_run(run_dir))
    reads, writes, stale = stale_flags(history, options.tolerance_ns)
    stale_done = sorted(reads.loc[stale, "t_complete"].tolist())
    planters = set(writes["process"].tolist())
    planted = reads.loc[stale & reads["process"].isin(planters)].sort_values("t_complete")
    delays = []
    for t_read in planted["t_complete"].tolist():
        before = bisect.bisect_left(stale_done, t_read)
        seen = next((t for t, n in polls if t >= t_read and n > before), None)
        if seen is not None:
            delays.append((seen - t_read) / 1e9)
        if len(delays) == a.trials:
            break
    if len(delays) < a.trials:
        sys.exit(f"live_latency: only {len(delays)} planted stale reads were seen live; see {log}")
    print(f"trials: {len(delays)}  delays (s): " + " ".join(f"{d:.2f}" for d in delays))
    print(f"p50 {statistics.median(delays):.2f} s  max {max(delays):.2f} s  (goal: within 5 s)")


if __name__ == "__main__":
    main()
