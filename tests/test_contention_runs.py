"""Contention workloads under Locust on real services: each unsafe mode flagged, each safe mode clean."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from analysis import check_stampede, load_history
from cachestorm.services import ServiceURLs
from tests.conftest import run_analysis, run_locust

pytestmark = pytest.mark.integration


def run(args: str, results: Path, run_id: str) -> dict[str, Any]:
    out = run_locust([*args.split(), "--results-dir", str(results), "--run-id", run_id])
    assert out.returncode in (0, 1), out.stderr[-3000:]  # 1: Locust saw failed requests
    assert (results / run_id / "run.json").exists(), out.stderr[-3000:]
    verdict = run_analysis(results / run_id, "--thresholds", "none")
    assert verdict.returncode in (0, 1), verdict.stderr
    summary: dict[str, Any] = json.loads((results / run_id / "summary.json").read_text())
    return summary["checks"]


@pytest.mark.parametrize("strategy", ["versioned-cas", "versioned"])
def test_eviction_never_serves_stale_data_with_leases(strategy: str, tmp_path: Path) -> None:
    # Embedded services (no URLs), so the embedded Redis gets the memory limit. allkeys-random
    # evicts fresh tombstones too, which is what exposes versioned-cas (Meta's case, 2022).
    args = "-f tests/locustfiles/eviction.py --headless --only-summary --ramp-users 35 --ramp-time 0"
    args += " --hold-time 10 --quiesce-time 2 --keys 60 --fill-delay-ms 20 --redis-maxmemory 8mb"
    args += f" --redis-eviction-policy allkeys-random --memory-value-bytes 16384 --strategy {strategy}"
    checks = run(args, tmp_path, strategy)
    eviction = checks["eviction"]
    assert not eviction.get("skipped"), eviction
    assert eviction["evictions"] > 100  # Redis did evict
    if strategy == "versioned-cas":
        assert eviction["violations"] > 0  # the positive control: a stale fill after an evicted tombstone
        assert checks["stale_read"]["violations"] > 0
    else:
        assert eviction["violations"] == 0, eviction
        assert checks["stale_read"]["violations"] == 0
        assert checks["divergence"]["violations"] == 0


CONTENTION = "-f locustfile.py --headless --only-summary --scenario contention --ramp-users 60 --ramp-time 0"
CONTENTION += " --hold-time 10 --quiesce-time 1 --counters 3 --tx-groups 2 --locks 2 --lock-ttl-ms 200"
CONTENTION += " --stampede-keys 2 --stampede-interval 1 --recompute-ms 30"


def urls(s: ServiceURLs) -> str:
    return f" --redis-url {s.redis_url} --pg-dsn {s.pg_dsn} --ws-url {s.ws_url}"


def test_safe_contention_modes_pass(services: ServiceURLs, tmp_path: Path) -> None:
    modes = " --counter-mode atomic --tx-mode atomic --lock-mode locked --stampede-guard lock"
    checks = run(CONTENTION + modes + urls(services), tmp_path, "safe")
    for name in ("counter", "tx_atomicity", "lock_safety", "stampede", "stale_read", "divergence"):
        assert not checks[name].get("skipped"), (name, checks[name])
        assert checks[name]["violations"] == 0, (name, checks[name])
    assert checks["counter"]["increments_ok"] > 100
    assert checks["tx_atomicity"]["transfers_ok"] > 100
    assert checks["lock_safety"]["guarded_writes_accepted"] > 100
    # Exactly one recomputation per epoch across every stampeding user.
    assert checks["stampede"]["epochs"] >= 5
    assert checks["stampede"]["max_loads_per_epoch"] == 1
    assert checks["invalidation_latency"]["count"] > 0


def test_unsafe_contention_modes_are_flagged(services: ServiceURLs, tmp_path: Path) -> None:
    modes = " --counter-mode unsafe --tx-mode unsafe --lock-mode unsafe --stampede-guard none"
    checks = run(CONTENTION + modes + urls(services), tmp_path, "unsafe")
    assert checks["counter"]["violations"] > 0  # lost updates from GET-then-SET
    assert checks["tx_atomicity"]["violations"] > 0  # a read between the two SETs of a transfer
    assert checks["lock_safety"]["violations"] > 0  # two holders at once, stale tokens written
    # Unguarded, an epoch sees many recomputations; judged as if a lock were expected, they fail.
    assert checks["stampede"]["max_loads_per_epoch"] > 1
    history = load_history(tmp_path / "unsafe")
    assert check_stampede(history, expect_single=True).violations > 0
