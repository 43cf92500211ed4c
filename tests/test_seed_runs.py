"""Real headless runs: the same --seed makes every user choose the same keys, another seed not.

Each user is one process of the history until an ``info`` renews it, so the keys of a process's
operations in ``t_invoke`` order are a prefix of one user's key stream. The runs are compared by
the multiset of those prefixes: which process id a user got differs between the runs by design.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from cachestorm.services import ServiceURLs
from tests.conftest import run_locust

pytestmark = pytest.mark.integration

SEEDED = "tests/locustfiles/seeded.py"
USERS = 6
PREFIX = 20
USER_OPS = ("read", "write", "incr", "counter_read")


def seeded_run(services: ServiceURLs, results: Path, run_id: str, seed: int) -> list[tuple[str, ...]]:
    """The first PREFIX keys of each user's operations, sorted: one tuple per user."""
    args = f"-f {SEEDED} --headless --only-summary -u {USERS} -r 4 --run-time 4s --stop-timeout 5"
    args += f" --keys 1000 --counters 100 --seed {seed} --run-id {run_id} --results-dir {results}"
    args += f" --redis-url {services.redis_url} --pg-dsn {services.pg_dsn} --ws-url {services.ws_url}"
    out = run_locust(args.split())
    assert out.returncode == 0, out.stderr[-3000:]
    df = pd.read_parquet(results / run_id / "history", columns=["process", "f", "key", "status", "t_invoke"])
    # Process 0 is the counters' final reads, made once the users have stopped.
    ops = df[df.f.isin(USER_OPS) & (df.process != 0)]
    prefixes = [
        tuple(g.sort_values("t_invoke", kind="stable").key.head(PREFIX))
        for _, g in ops.groupby("process", observed=True)
    ]
    # One process per user: no user renewed its process mid-run (an operation cut short by the
    # stop is ``info`` too, but it is its process's last). A renewed process would start
    # mid-stream and not line up with the other run's users.
    assert len(prefixes) == USERS, sorted(ops.groupby("process", observed=True).size().items())
    assert all(len(p) == PREFIX for p in prefixes), [len(p) for p in prefixes]
    return sorted(prefixes)


def test_the_same_seed_replays_each_users_keys(services: ServiceURLs, tmp_path: Path) -> None:
    a = seeded_run(services, tmp_path, "a", seed=11)
    b = seeded_run(services, tmp_path, "b", seed=11)
    assert a == b
    # Every user drew its own stream.
    assert len(set(a)) == USERS
    c = seeded_run(services, tmp_path, "c", seed=12)
    assert not set(a) & set(c)
