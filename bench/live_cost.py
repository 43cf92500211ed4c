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

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.check_cost import bare, locust, median_ratio, parse_arguments, side_by_side  # noqa: E402
from cachestorm.services import EmbeddedServices  # noqa: E402


def main() -> None:
    a = parse_arguments(__doc__.splitlines()[0])
    with EmbeddedServices() as svc, tempfile.TemporaryDirectory() as tmp:
        urls = svc.start()
        runs = {
            "bare": lambda: bare(urls, a),
            "live-on": lambda: locust(urls, a, "on", Path(tmp), ["--live", "on"], "live-on"),
            "live-off": lambda: locust(urls, a, "on", Path(tmp), ["--live", "off"], "live-off"),
        }
        rates = side_by_side(runs, a.rounds)
    on, off = median_ratio(rates, "live-on", "bare"), median_ratio(rates, "live-off", "bare")
    print(f"median ratio live-on / bare:  {on:.3f}")
    print(f"median ratio live-off / bare: {off:.3f}")
    print(f"(live-on / bare) / (live-off / bare): {on / off:.3f}  (goal >= 0.95)")


if __name__ == "__main__":
    main()
