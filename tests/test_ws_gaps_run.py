"""A real run whose notifier loses PostgreSQL mid-run: ws_delivery must not blame the system for the
notifications PostgreSQL dropped while the notifier re-LISTENed, and must still blame a live
notifier's loss.

Services of its own, so that killing the notifier's LISTEN connection touches no other test.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest

from analysis import check_ws_delivery, load_history
from cachestorm import schema
from cachestorm.services import EmbeddedServices, ServiceURLs
from tests.conftest import ROOT, run_analysis

pytestmark = pytest.mark.integration

CONTENTION = "tests/locustfiles/contention.py"
LISTENERS = "SELECT pid FROM pg_stat_activity WHERE query LIKE 'LISTEN%%' AND pid <> pg_backend_pid()"
# How long the notifier is kept off PostgreSQL: every LISTEN connection it makes meanwhile is killed.
OUTAGE_S = 1.5


@pytest.fixture(scope="module")
def own() -> Iterator[ServiceURLs]:
    with EmbeddedServices() as svc:
        yield svc.start()


def committed(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    row = conn.execute(f"SELECT coalesce(sum(version), 0) FROM {schema.TABLE}").fetchone()
    return int(row[0]) if row else 0


def wait_for_writes(conn: psycopg.Connection[tuple[object, ...]], more_than: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while committed(conn) <= more_than:
        assert time.monotonic() < deadline, "the run's writers did not commit"
        time.sleep(0.05)


def keep_notifier_off_postgres(conn: psycopg.Connection[tuple[object, ...]], seconds: float) -> int:
    """Terminate the notifier's LISTEN backends as soon as they appear, for ``seconds``."""
    killed = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        row = conn.execute(f"SELECT count(pg_terminate_backend(pid)) FROM ({LISTENERS}) l").fetchone()
        killed += int(row[0]) if row else 0
        time.sleep(0.01)
    return killed


def test_loss_while_the_notifier_reconnects_is_attributed(own: ServiceURLs, tmp_path: Path) -> None:
    args = f"-f {CONTENTION} --headless --only-summary --ramp-users 12 --ramp-time 0 --hold-time 9"
    args += " --quiesce-time 1 --keys 20 --strategy versioned --listeners 3 --run-id gap"
    urls = ["--redis-url", own.redis_url, "--pg-dsn", own.pg_dsn, "--ws-url", own.ws_url]
    log = tmp_path / "locust.log"
    with log.open("w") as out, psycopg.connect(own.pg_dsn, autocommit=True) as conn:
        proc = subprocess.Popen(
            [sys.executable, "-m", "locust", *args.split(), "--results-dir", str(tmp_path), *urls],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_writes(conn, 0, timeout=60)
            # The run resets versions at its start; wait for writes after that, well inside the hold.
            wait_for_writes(conn, 300, timeout=60)
            killed = keep_notifier_off_postgres(conn, OUTAGE_S)
            code = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert code == 0, log.read_text()[-3000:]
    assert killed >= 1
    history = load_history(tmp_path / "gap")
    gaps = history.loc[history["f"] == "ws_gap"]
    assert (gaps["source"] == "reconnect").sum() >= 3  # each listener was told

    # Positive control, the old judgement: without the gap rows the lost deliveries are blamed.
    blind = check_ws_delivery(history.loc[history["f"] != "ws_gap"].reset_index(drop=True))
    assert blind.outcome == "fail" and blind.violations > 0

    judged = check_ws_delivery(history)
    figures = judged.figures
    assert figures["missing"] == 0, judged.examples
    assert figures["missing_during_notifier_gap"] == blind.violations
    assert judged.outcome == "unknown" and judged.violations == 0
    assert figures["delivery_ratio"] == 1.0  # of the deliveries judged

    # The whole analysis: unknown (exit 3), not pass, and no threshold turns the gap into a fail.
    verdict = run_analysis(tmp_path / "gap")
    summary = json.loads((tmp_path / "gap" / "summary.json").read_text())
    assert verdict.returncode == 3, verdict.stdout[-3000:]
    assert summary["checks"]["ws_delivery"]["outcome"] == "unknown"

    # A live notifier that failed to send: one delivery received well outside the outage, dropped
    # from the history, is blamed although the gap rows are there.
    start = gaps.loc[gaps["source"] == "reconnect", "t_invoke"].min()
    end = gaps.loc[gaps["source"] == "reconnect", "t_complete"].max()
    recv = history.loc[(history["f"] == "ws_recv") & (history["status"] == "ok")]
    far = recv.loc[(recv["t_complete"] < start - 3 * 10**9) | (recv["t_complete"] > end + 3 * 10**9)]
    assert len(far), "no delivery far from the outage to plant a loss on"
    victim = far.iloc[len(far) // 2]
    same = (history["f"] == "ws_recv") & (history["process"] == victim["process"])
    same &= (history["key"] == victim["key"]) & (history["version"] == victim["version"])
    planted = check_ws_delivery(history.loc[~same.to_numpy()].reset_index(drop=True))
    assert planted.outcome == "fail" and planted.violations == 1
    assert planted.figures["missing_during_notifier_gap"] == figures["missing_during_notifier_gap"]
    assert planted.examples[0]["key"] == victim["key"]
    assert np.int64(planted.examples[0]["version"]) == victim["version"]
