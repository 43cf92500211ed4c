"""What the workers' clock sync and service check cost the generator: history-on / bare, with and without.

    python bench/check_cost.py [--rounds 5] [--seconds 8] [--concurrency 20] [--processes 2]

Both run on workers only (a local runner has no master to sync with and no marker to read), so
Locust runs with ``--processes`` workers under a local master, on its own port (15580). Starts one
set of embedded services, then, in each round and in rotating order, runs:

- ``bare``: ``--processes`` copies of bench/bare_get.py side by side, each with its share of
  ``--concurrency``, their ops/s summed: the same parallelism with no Locust at all;
- ``checks-on``: Locust on bench/reader_locustfile.py (every read a hit, history on) with
  ``--clock-sync on --check-services on``, the defaults;
- ``checks-off``: the same with ``--clock-sync off --check-services off``.

It prints each round's ops/s and the medians of checks-on / bare, checks-off / bare and
checks-on / checks-off. Rounds, rotation and medians as in bench/run.py, for the same noisy machines.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cachestorm.services import EmbeddedServices, ServiceURLs  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
MASTER_PORT = "15580"


def bare(urls: ServiceURLs, a: argparse.Namespace) -> float:
    share = max(1, a.concurrency // a.processes)
    argv = [sys.executable, "bench/bare_get.py", urls.redis_url, "--concurrency", str(share)]
    argv += ["--seconds", str(a.seconds), "--keys", str(a.keys)]
    procs = [
        subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
        for _ in range(a.processes)
    ]
    total = 0.0
    for proc in procs:
        out, err = proc.communicate(timeout=a.seconds + 60)
        if proc.returncode != 0:
            sys.exit(f"check_cost: bare_get.py failed with exit {proc.returncode}:\n{err[-2000:]}")
        total += float(json.loads(out.strip().splitlines()[-1])["ops_per_s"])
    return total


def locust(
    urls: ServiceURLs,
    a: argparse.Namespace,
    checks: str,
    results: Path,
    extra: Sequence[str] = (),
    label: str = "",
) -> float:
    """ops/s of one Locust run on --processes workers; ``extra`` options are added (bench/live_cost.py)."""
    label = label or checks
    stats = results / f"stats-{label}"
    argv = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        "bench/reader_locustfile.py",
        "--headless",
        "--only-summary",
    ]
    # Both: the forked workers dial --master-port, which is 5557 unless given.
    argv += ["--processes", str(a.processes), "--master-bind-port", MASTER_PORT, "--master-port", MASTER_PORT]
    argv += ["-u", str(a.concurrency), "-r", str(a.concurrency * 10), "-t", f"{a.seconds}s"]
    argv += ["--keys", str(a.keys), "--history", "on", "--results-dir", str(results)]
    argv += ["--clock-sync", checks, "--check-services", checks, "--json-file", str(stats)]
    argv += ["--redis-url", urls.redis_url, "--pg-dsn", urls.pg_dsn, "--ws-url", urls.ws_url, *extra]
    log = results / f"locust-{label}.log"
    # To a file, not a pipe: the forked workers hold a pipe open after their master has exited.
    with open(log, "wb") as out:
        # A session of its own, so that the forked workers go with their master whatever happens.
        proc = subprocess.Popen(
            argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=ENV, start_new_session=True
        )
        try:
            code = proc.wait(timeout=a.seconds + 90)
        except subprocess.TimeoutExpired:
            code = -1
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if code != 0:
        sys.exit(f"check_cost: locust ({label}) failed with exit {code}:\n{log.read_text()[-3000:]}")
    entries = json.loads(stats.with_suffix(".json").read_text())
    get = next(e for e in entries if e["method"] == "REDIS" and e["name"] == "get")
    return float(get["num_requests"] / (get["last_request_timestamp"] - get["start_time"]))


def parse_arguments(description: str) -> argparse.Namespace:
    """The load of every round: its length, users, worker processes and keys."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=int, default=8)
    p.add_argument("--concurrency", type=int, default=20)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--keys", type=int, default=1000)
    return p.parse_args()


def side_by_side(runs: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Each run's ops/s, round after round; each round starts with a different run, so none is
    always the first on a warm or a cold machine."""
    rates: dict[str, list[float]] = {name: [] for name in runs}
    order = list(runs)
    for i in range(rounds):
        k = i % len(order)
        for name in order[k:] + order[:k]:
            rates[name].append(runs[name]())
        print(f"round {i + 1}: " + "  ".join(f"{n} {v[-1]:8.0f}/s" for n, v in rates.items()), flush=True)
    print("median ops/s: " + "  ".join(f"{n} {statistics.median(v):.0f}" for n, v in rates.items()))
    return rates


def median_ratio(rates: dict[str, list[float]], x: str, y: str) -> float:
    """The median over rounds of run ``x``'s rate over run ``y``'s in the same round."""
    return statistics.median(n / d for n, d in zip(rates[x], rates[y], strict=True))


def main() -> None:
    a = parse_arguments(__doc__.splitlines()[0])
    with EmbeddedServices() as svc, tempfile.TemporaryDirectory() as tmp:
        urls = svc.start()
        runs = {
            "bare": lambda: bare(urls, a),
            "checks-on": lambda: locust(urls, a, "on", Path(tmp)),
            "checks-off": lambda: locust(urls, a, "off", Path(tmp)),
        }
        rates = side_by_side(runs, a.rounds)
    print(f"median ratio checks-on / bare:       {median_ratio(rates, 'checks-on', 'bare'):.3f}")
    print(f"median ratio checks-off / bare:      {median_ratio(rates, 'checks-off', 'bare'):.3f}")
    print(f"median ratio checks-on / checks-off: {median_ratio(rates, 'checks-on', 'checks-off'):.3f}")


if __name__ == "__main__":
    main()
