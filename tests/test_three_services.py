"""The three-service sample under real load: the correct mode passes, each bug mode is flagged by
the check that should flag it.

Every run starts auth, the backend and the frontend as processes over the session's Redis and
PostgreSQL. The frontend drops its LISTEN connection every second for 200 ms in every mode, so the
correct mode's replay is exercised by the same reconnects that make the bug mode lose changes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from analysis.live import LIVE_CHECKS
from cachestorm.services import ServiceURLs
from tests.conftest import run_analysis, run_locust

pytestmark = pytest.mark.integration

TARGET = "examples/three_services/target.py:ThreeServices"


def three_services_run(services: ServiceURLs, results: Path, name: str, *bug: str) -> dict[str, Any]:
    # 30 users (6 writers, 5 tabs) on 40 keys for 10 s: about 60 writes, a fifth of them committed
    # while the frontend is away from PostgreSQL.
    args = f"-f locustfile.py --headless --only-summary --target {TARGET} --ramp-users 30 --ramp-time 2"
    args += " --hold-time 8 --keys 40 --listeners 5 --key-distribution uniform"
    args += " --frontend-reconnect-every-s 1 --frontend-reconnect-pause-ms 200"
    stores = ["--redis-url", services.redis_url, "--pg-dsn", services.pg_dsn]
    out = run_locust([*args.split(), *stores, *bug, "--results-dir", str(results), "--run-id", name])
    verdict = run_analysis(results / name)
    summary: dict[str, Any] = json.loads((results / name / "summary.json").read_text())
    # The live view logged a Locust failure (COHERENCE <check>) for each check the analysis failed
    # among those it judges, so Locust's exit code says whether there was one.
    logged = [n for n in (*LIVE_CHECKS, "divergence") if summary["checks"][n]["outcome"] == "fail"]
    assert out.returncode == (1 if logged else 0), (logged, out.stderr[-3000:])
    summary["exit_code"] = verdict.returncode
    summary["console"] = verdict.stdout
    return summary


def test_correct_mode_passes(services: ServiceURLs, tmp_path: Path) -> None:
    s = three_services_run(services, tmp_path, "correct")
    checks = s["checks"]
    assert s["exit_code"] == 0, s["console"]
    tiers = checks["tier_staleness"]
    assert tiers["passed"] and not tiers["skipped"]
    assert set(tiers["tiers"]) == {"l1", "l2", "db", "tab"}
    assert all(t["stale"] == 0 for name, t in tiers["tiers"].items() if name != "tab")
    assert tiers["tiers"]["tab"]["stale_beyond_grace"] == 0
    assert tiers["tiers"]["l1"]["reads"] > 500
    cascade = checks["cascade"]
    assert cascade["passed"] and cascade["writes"] > 30
    for leg in ("drop:l1", "drop:l2", "push:frontend", "recv:tab"):
        figures = cascade["legs"][leg]
        assert figures["missing"] == 0 and figures["before_commit"] == 0, (leg, figures)
        assert figures["p50_us"] is not None and figures["p99_us"] <= figures["max_us"], (leg, figures)
    assert checks["ws_delivery"]["missing"] == 0 and checks["ws_delivery"]["expected"] > 100
    assert "STALENESS BY TIER" in s["console"] and "CASCADE" in s["console"]
    assert "Tiers and invalidation cascade" in (tmp_path / "correct" / "report.html").read_text()


def test_l1_ignoring_invalidations_serves_stale_reads_from_l1(services: ServiceURLs, tmp_path: Path) -> None:
    s = three_services_run(services, tmp_path, "l1", "--backend-l1-ignores-invalidations")
    checks = s["checks"]
    assert s["exit_code"] == 1
    tiers = checks["tier_staleness"]["tiers"]
    assert not checks["tier_staleness"]["passed"] and tiers["l1"]["stale"] > 0
    assert tiers["l2"]["stale"] == 0 and tiers["db"]["stale"] == 0
    assert checks["stale_read"]["violations"] == tiers["l1"]["stale"]
    cascade = checks["cascade"]
    assert cascade["legs"]["drop:l1"]["missing"] == cascade["writes"]
    assert cascade["legs"]["drop:l2"]["missing"] == 0


def test_frontend_missing_changes_across_reconnects_is_flagged(services: ServiceURLs, tmp_path: Path) -> None:
    s = three_services_run(services, tmp_path, "frontend", "--frontend-misses-reconnect")
    checks = s["checks"]
    assert s["exit_code"] == 1
    assert checks["ws_delivery"]["missing"] > 0
    tiers = checks["tier_staleness"]["tiers"]
    # The tabs' own reads may or may not catch a lost change before the next one arrives; the
    # missing deliveries and pushes always show.
    assert "tab" in tiers
    assert all(tiers[t]["stale"] == 0 for t in ("l1", "l2", "db"))
    assert checks["cascade"]["legs"]["push:frontend"]["missing"] > 0
    assert checks["cascade"]["legs"]["drop:l1"]["missing"] == 0
