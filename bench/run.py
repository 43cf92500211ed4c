"""Cache-hit throughput of the instrumented CacheReader against a bare redis-py GET loop.

    python bench/run.py [--rounds 5] [--seconds 10] [--concurrency 20]

Starts one set of embedded services, then, in each round and in rotating order, runs:

- ``bare``: bench/bare_get.py, a gevent GET loop with no Locust, no events, no history;
- ``history-on``: Locust running bench/reader_locustfile.py (CacheReader, no wait, every read a
  hit), with the op history recorded;
- ``history-off``: the same with ``--history off``.

Each in its own process on the same Redis, one at a time. It prints each round's ops/s and the
medians of two ratios: history-on / bare (goal >= 0.85) and history-on / history-off (goal >= 0.9).
The machines are shared and noisy, hence rounds, rotation and medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cachestorm.services import EmbeddedServices, ServiceURLs  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def run(argv: list[str]) -> str:
    out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, env=ENV, check=False)
    if out.returncode != 0:
        sys.exit(f"bench: {' '.join(argv[:3])} failed with exit {out.returncode}:\n{out.stderr[-2000:]}")
    return out.stdout


def bare(urls: ServiceURLs, a: argparse.Namespace) -> float:
    out = run(
        [
            sys.executable,
            "bench/bare_get.py",
            urls.redis_url,
            "--concurrency",
            str(a.concurrency),
            "--seconds",
            str(a.seconds),
            "--keys",
            str(a.keys),
        ]
    )
    return float(json.loads(out.strip().splitlines()[-1])["ops_per_s"])


def locust(urls: ServiceURLs, a: argparse.Namespace, history: str, results: Path) -> float:
    stats = results / f"stats-{history}.json"
    run(
        [
            sys.executable,
            "-m",
            "locust",
            "-f",
            "bench/reader_locustfile.py",
            "--headless",
            "--only-summary",
            "-u",
            str(a.concurrency),
            "-r",
            str(a.concurrency * 10),
            "-t",
            f"{round(a.seconds)}s",
            "--keys",
            str(a.keys),
            "--history",
            history,
            "--results-dir",
            str(results),
            "--json-file",
            str(stats.with_suffix("")),
            "--redis-url",
            urls.redis_url,
            "--pg-dsn",
            urls.pg_dsn,
            "--ws-url",
            urls.ws_url,
        ]
    )
    entries = json.loads(stats.read_text())
    get = next(e for e in entries if e["method"] == "REDIS" and e["name"] == "get")
    return get["num_requests"] / (get["last_request_timestamp"] - get["start_time"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--concurrency", type=int, default=20)
    p.add_argument("--keys", type=int, default=1000)
    a = p.parse_args()
    rates: dict[str, list[float]] = {"bare": [], "history-on": [], "history-off": []}
    with EmbeddedServices() as svc, tempfile.TemporaryDirectory() as tmp:
        urls = svc.start()
        runs = {
            "bare": lambda: bare(urls, a),
            "history-on": lambda: locust(urls, a, "on", Path(tmp)),
            "history-off": lambda: locust(urls, a, "off", Path(tmp)),
        }
        order = list(runs)
        for i in range(a.rounds):
            for name in order[i % 3 :] + order[: i % 3]:
                rates[name].append(runs[name]())
            print(f"round {i + 1}: " + "  ".join(f"{k} {v[-1]:8.0f}/s" for k, v in rates.items()), flush=True)
    on_bare = statistics.median(o / b for o, b in zip(rates["history-on"], rates["bare"], strict=True))
    on_off = statistics.median(o / f for o, f in zip(rates["history-on"], rates["history-off"], strict=True))
    med = {k: statistics.median(v) for k, v in rates.items()}
    print("median ops/s: " + "  ".join(f"{k} {v:.0f}" for k, v in med.items()))
    print(f"median ratio history-on / bare:        {on_bare:.3f}  (goal >= 0.85)")
    print(f"median ratio history-on / history-off: {on_off:.3f}  (goal >= 0.90)")


if __name__ == "__main__":
    main()
