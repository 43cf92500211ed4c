"""What the live coherence view costs the generator: history-on / bare with the view on and off.

    python bench/live_cost.py [--rounds 5] [--seconds 8] [--concurrency 20] [--processes 2]

The method of bench/check_cost.py, whose runs it reuses: one set of embedded services, then, in
each round and in rotating order,

- ``bare``: ``--processes`` copies of bench/bare_get.py side by side (no Locust at all);
- ``live-on``: Locust on bench/reader_locustfile.py (every read a hit, history on) with ``--processes``
  workers under a local master and ``--live on`` (the default): the master judges the rows as they
  come (analysis/live.py);
- ``live-off``: the same with ``--live off``.

It prints each round's ops/s, the medians of live-on / bare and live-off / bare, and the ratio of
the two (goal >= 0.95).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.check_cost import bare, locust  # noqa: E402
from cachestorm.services import EmbeddedServices  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=int, default=8)
    p.add_argument("--concurrency", type=int, default=20)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--keys", type=int, default=1000)
    a = p.parse_args()
    rates: dict[str, list[float]] = {"bare": [], "live-on": [], "live-off": []}
    with EmbeddedServices() as svc, tempfile.TemporaryDirectory() as tmp:
        urls = svc.start()
        runs = {
            "bare": lambda: bare(urls, a),
            "live-on": lambda: locust(urls, a, "on", Path(tmp), ["--live", "on"], "live-on"),
            "live-off": lambda: locust(urls, a, "on", Path(tmp), ["--live", "off"], "live-off"),
        }
        order = list(runs)
        for i in range(a.rounds):
            for name in order[i % 3 :] + order[: i % 3]:
                rates[name].append(runs[name]())
            print(f"round {i + 1}: " + "  ".join(f"{k} {v[-1]:8.0f}/s" for k, v in rates.items()), flush=True)

    def ratio(x: str, y: str) -> float:
        return statistics.median(n / d for n, d in zip(rates[x], rates[y], strict=True))

    on, off = ratio("live-on", "bare"), ratio("live-off", "bare")
    print("median ops/s: " + "  ".join(f"{k} {statistics.median(v):.0f}" for k, v in rates.items()))
    print(f"median ratio live-on / bare:  {on:.3f}")
    print(f"median ratio live-off / bare: {off:.3f}")
    print(f"(live-on / bare) / (live-off / bare): {on / off:.3f}  (goal >= 0.95)")


if __name__ == "__main__":
    main()
