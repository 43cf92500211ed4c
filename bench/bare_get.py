"""Baseline: a bare gevent redis-py GET loop, the ceiling for CacheReader's cache hits.

    python bench/bare_get.py REDIS_URL --concurrency 20 --seconds 10 --keys 1000

Prints one JSON line: {"ops": N, "seconds": S, "ops_per_s": R}.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
import redis  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from cachestorm import keys  # noqa: E402
from cachestorm.schema import entity_key  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("redis_url")
    p.add_argument("--concurrency", type=int, default=20)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--keys", type=int, default=1000)
    a = p.parse_args()
    # The same client settings as cachestorm.clients.InstrumentedRedis, so only the wrapping differs.
    pool = redis.BlockingConnectionPool.from_url(
        a.redis_url, max_connections=200, timeout=5, socket_timeout=5
    )
    r = redis.Redis(connection_pool=pool)
    done = [0]
    deadline = time.monotonic() + a.seconds

    def loop(seed: int) -> None:
        choose = keys.zipfian(a.keys, seed).next
        n = 0
        while time.monotonic() < deadline:
            r.get(entity_key(choose()))
            n += 1
        done[0] += n

    t0 = time.monotonic()
    gevent.joinall([gevent.spawn(loop, i) for i in range(a.concurrency)])
    elapsed = time.monotonic() - t0
    print(json.dumps({"ops": done[0], "seconds": elapsed, "ops_per_s": done[0] / elapsed}))


if __name__ == "__main__":
    main()
