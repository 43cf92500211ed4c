"""No client call may block the gevent loop.

Runs in a subprocess, because gevent's monkey patching must happen before anything imports
socket, and must not leak into the rest of the test session.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cachestorm.services import ServiceURLs

pytestmark = pytest.mark.integration

PROBE = r"""
from gevent import monkey; monkey.patch_all()
import json, sys, time
import gevent
from cachestorm.clients import InstrumentedPG, InstrumentedRedis

dsn, redis_url = sys.argv[1], sys.argv[2]
pg = InstrumentedPG(dsn, lambda **kw: None, pool_size=50)
pg.pool.wait(timeout=30)
r = InstrumentedRedis(redis_url, lambda **kw: None)
done = {"pg": 0, "redis": 0}

def pg_user(deadline):
    while time.monotonic() < deadline:
        with pg.pool.connection() as conn:
            conn.execute("SELECT pg_sleep(0.1)")
        done["pg"] += 1

def redis_user(deadline):
    # BLPOP on an empty list blocks server-side for 0.1 s: cooperative only if the socket wait yields.
    while time.monotonic() < deadline:
        r.call("blpop", r.client.blpop, ["cs:nothing"], 0.1)
        done["redis"] += 1

t0 = time.monotonic()
deadline = t0 + 3
gevent.joinall([gevent.spawn(pg_user, deadline) for _ in range(50)]
               + [gevent.spawn(redis_user, deadline) for _ in range(50)])
elapsed = time.monotonic() - t0
print(json.dumps({k: v / elapsed for k, v in done.items()}))
"""


def test_pg_and_redis_calls_are_cooperative(services: ServiceURLs) -> None:
    # 50 users each sleeping 0.1 s server-side: 500/s if they overlap, 10/s if each blocks the loop.
    # The bounds sit 6 to 10 times above blocking and far below overlap, so a loaded machine passes.
    out = subprocess.run(
        [sys.executable, "-c", PROBE, services.pg_dsn, services.redis_url],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    rates = json.loads(out.stdout.strip().splitlines()[-1])
    assert rates["pg"] > 100, rates
    # Redis times blocking commands out on its 10 Hz cron, so each BLPOP lasts 0.1-0.2 s: 250-500/s
    # when cooperative, still 10/s when not (5 to 10/s).
    assert rates["redis"] > 60, rates
