"""Real runs with Redis paused (SIGSTOP) longer than a client's timeout while writes go on.

A write whose invalidation timed out after its commit is ``info`` with its version; ``stale_read``
counts that commit. The reference cache's timed-out invalidation still runs when Redis resumes, so
its cache converges, and any read stale meanwhile is one behind an unconfirmed invalidation (the
safe case). A target that skips the invalidation when Redis is slow loses it
for real: the reads of the older entry after such a write are caught by ``stale_read`` as
``stale_after_unconfirmed`` (the positive control), which a judge of ok writes alone would miss.

Services of their own, so that pausing Redis touches no other test.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import psutil
import psycopg
import pytest

from analysis import check_divergence, check_stale_read, load_history
from cachestorm import schema
from cachestorm.services import EmbeddedServices, ServiceURLs
from tests.conftest import ROOT

pytestmark = pytest.mark.integration

CONTENTION = "tests/locustfiles/contention.py"
LOSSY = "tests/targets/lossy.py:SkipsInvalidationWhenRedisIsSlow"
# Longer than InstrumentedRedis's 5 s socket timeout, so the invalidations in flight time out.
PAUSE_S = 6.0


@pytest.fixture(scope="module")
def own() -> Iterator[tuple[EmbeddedServices, ServiceURLs]]:
    with EmbeddedServices() as svc:
        yield svc, svc.start()


def committed(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    row = conn.execute(f"SELECT coalesce(sum(version), 0) FROM {schema.TABLE}").fetchone()
    return int(row[0]) if row else 0


def run_with_redis_paused(
    own: tuple[EmbeddedServices, ServiceURLs], results: Path, *extra: str
) -> pd.DataFrame:
    svc, urls = own
    args = f"-f {CONTENTION} --headless --only-summary --ramp-users 12 --ramp-time 0 --hold-time 14"
    args += " --quiesce-time 2 --keys 20 --strategy versioned --listeners 0 --run-id paused"
    command = [sys.executable, "-m", "locust", *args.split(), *extra, "--results-dir", str(results)]
    command += ["--redis-url", urls.redis_url, "--pg-dsn", urls.pg_dsn, "--ws-url", urls.ws_url]
    log = results.with_suffix(".log")
    redis_server = psutil.Process(svc.pids["redis"])
    with log.open("w") as out, psycopg.connect(urls.pg_dsn, autocommit=True) as conn:
        schema.reset(conn, 20)  # so that the count below sees this run's writes, not the last run's
        proc = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            # Writes of this run, well inside its hold.
            while committed(conn) < 300:
                assert time.monotonic() < deadline and proc.poll() is None, log.read_text()[-3000:]
                time.sleep(0.05)
            redis_server.suspend()
            try:
                time.sleep(PAUSE_S)  # the fault's duration, not a wait for something
            finally:
                redis_server.resume()
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert (results / "paused" / "run.json").exists(), log.read_text()[-3000:]
    return load_history(results / "paused")


def unconfirmed(history: pd.DataFrame) -> int:
    writes = history.loc[history["f"] == "write"]
    return int(((writes["status"] == "info") & writes["version"].notna()).sum())


def ok_writes_only(history: pd.DataFrame) -> pd.DataFrame:
    """The history as a judge of ok writes alone saw it."""
    info = (history["f"] == "write") & (history["status"] == "info")
    return history.loc[~info.to_numpy()].reset_index(drop=True)


def test_a_timed_out_invalidation_still_applied_converges(
    own: tuple[EmbeddedServices, ServiceURLs], tmp_path: Path
) -> None:
    """The reference cache: a timed-out invalidation still runs when Redis resumes.

    Until it does, a read that Redis happens to serve first (it takes its resumed connections in
    no set order) may still see the old entry after the write gave up waiting: such a read is
    stale, and must be counted as stale after an unconfirmed invalidation, never as anything
    else. Once Redis has caught up the cache holds nothing older than the database.
    """
    history = run_with_redis_paused(own, tmp_path / "reference")
    assert unconfirmed(history) >= 1  # the pause did time out invalidations after their commit
    result = check_stale_read(history)
    assert result.violations == result.figures["stale_after_unconfirmed"], result.examples
    assert check_divergence(history).violations == 0


def test_a_skipped_invalidation_is_caught_as_stale_after_unconfirmed(
    own: tuple[EmbeddedServices, ServiceURLs], tmp_path: Path
) -> None:
    history = run_with_redis_paused(own, tmp_path / "lossy", "--target", LOSSY)
    assert unconfirmed(history) >= 1
    result = check_stale_read(history)
    assert result.outcome == "fail"
    assert result.figures["stale_after_unconfirmed"] >= 1
    # What the judge of ok writes alone saw: fewer stale reads, by exactly those.
    blind = check_stale_read(ok_writes_only(history))
    assert blind.violations == result.violations - result.figures["stale_after_unconfirmed"]
    print(  # the figures, for the record (-s shows them)
        {"unconfirmed": unconfirmed(history), "with": result.figures["stale"], "blind": blind.violations}
    )
