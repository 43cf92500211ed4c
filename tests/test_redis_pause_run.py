"""Real runs with Redis paused (SIGSTOP) longer than a client's timeout while writes go on.

A timed-out invalidation may never have reached Redis: redis-py's handshake on a new connection
times out like the command would, with the command still unsent. The reference cache therefore
sends a timed-out invalidation again until Redis confirms it (cachestorm.cache), and its writes
through the pause end ok, late, with nothing stale after them. The first test shows the loss
itself, with the retry off and on, on one paused Redis.

A target that skips the invalidation when Redis is slow loses it for real and says so (``info``
with its version): the reads of the older entry after such a write are caught by ``stale_read``
as ``stale_after_unconfirmed`` (the positive control), which a judge of ok writes alone would
miss.

Services of their own, so that pausing Redis touches no other test.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import gevent
import pandas as pd
import psutil
import psycopg
import pytest

from analysis import check_divergence, check_stale_read, load_history
from cachestorm import schema
from cachestorm.cache import CacheClient
from cachestorm.clients import InstrumentedPG, InstrumentedRedis
from cachestorm.services import EmbeddedServices, ServiceURLs
from cachestorm.strategies import make, parse
from cachestorm.target import AfterCommit
from tests.conftest import ROOT, no_events

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


@pytest.mark.parametrize("retry_s", [0.0, 5.0], ids=["no-retry", "retry"])
def test_an_invalidation_timed_out_in_the_handshake_is_lost_unless_sent_again(
    own: tuple[EmbeddedServices, ServiceURLs], retry_s: float
) -> None:
    svc, urls = own
    key = schema.entity_key(3)
    with psycopg.connect(urls.pg_dsn, autocommit=True) as conn:
        schema.install(conn)
        schema.reset(conn, 20)
    warm = InstrumentedRedis(urls.redis_url, no_events)
    pg = InstrumentedPG(urls.pg_dsn, no_events, pool_size=2)
    warm.client.flushdb()
    CacheClient(warm, pg, make("versioned", warm)).read(key)  # the cache holds version 0
    # A client whose pool has no connection yet: its first command opens one, handshake first.
    cold = InstrumentedRedis(urls.redis_url, no_events, timeout=0.5)
    writer = CacheClient(cold, pg, make("versioned", cold), invalidation_retry_s=retry_s)
    svc.pause("redis")
    resume = gevent.spawn_later(1.5, svc.resume, "redis")
    try:
        try:
            version, outcome = writer.write(key, "new"), "ok"
        except AfterCommit as e:
            version, outcome = e.version, "info"
    finally:
        resume.join(timeout=5)
        svc.resume("redis")
    entry, tombstone = parse(warm.get(key))
    for client in (warm, cold, pg):
        client.close()
    assert version == 1
    if retry_s:
        # Sent again until Redis answered: confirmed, and the entry is gone for good.
        assert (outcome, entry, tombstone) == ("ok", None, 1)
    else:
        # The positive control: the write gave up, and the invalidation never ran at all.
        assert (outcome, entry, tombstone) == ("info", 0, None)


def test_writes_through_a_pause_confirm_their_invalidations_and_nothing_is_stale(
    own: tuple[EmbeddedServices, ServiceURLs], tmp_path: Path
) -> None:
    history = run_with_redis_paused(own, tmp_path / "reference")
    writes = history.loc[(history["f"] == "write") & (history["status"] == "ok")]
    # Writes that outlasted the clients' 5 s timeout: their invalidation was sent more than once.
    assert int(((writes["t_complete"] - writes["t_invoke"]) > 5e9).sum()) >= 1
    assert unconfirmed(history) == 0
    stale = check_stale_read(history)
    assert stale.outcome == "pass", stale.examples
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
