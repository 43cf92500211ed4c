"""Unit tests of the contention checks (counter, stampede, tx_atomicity, lock_safety,
invalidation_latency, eviction) on small hand-built histories.

Each check gets planted anomalies that must be caught and legitimate cases that must not be
flagged. Times are written in milliseconds for readability.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
import pytest

from analysis import (
    CHECK_NAMES,
    Options,
    check_counter,
    check_eviction,
    check_invalidation_latency,
    check_latency,
    check_lock_safety,
    check_stampede,
    check_tx_atomicity,
    normalise,
    run_checks,
)
from tests.histories import MS, complete_run, history, op

S = 1_000_000_000
TTL = 1000 * MS
NEW_CHECKS = ("counter", "stampede", "tx_atomicity", "lock_safety", "invalidation_latency", "eviction")


C = "cs:c:1"


def incr(t0: float, t1: float, amount: int = 1, **kw: Any) -> dict[str, Any]:
    kw.setdefault("source", "atomic")
    return op("incr", kw.pop("key", C), t0, t1, value=amount, **kw)


def cread(t0: float, t1: float, value: int, **kw: Any) -> dict[str, Any]:
    kw.setdefault("process", 9)
    return op("counter_read", kw.pop("key", C), t0, t1, value=value, **kw)


# --------------------------------------------------------------------------------------------------
# counter


def test_counter_read_below_completed_increments_is_a_lost_update() -> None:
    h = history(incr(0, 1), incr(2, 3, process=2), cread(10, 11, 1))
    r = check_counter(h)
    assert not r.passed and r.violations == 1
    assert r.figures["below_lower_bound"] == 1
    assert r.figures["lost_updates"] == 1 and r.figures["max_shortfall"] == 1
    assert r.examples[0]["violation"] == "lost_update"
    assert r.examples[0]["lower_bound"] == 2 and r.examples[0]["t_invoke"] == 10 * MS


def test_counter_read_above_ok_and_info_invoked_is_caught() -> None:
    h = history(incr(0, 1), incr(2, 3, status="info", process=2), cread(10, 11, 3))
    r = check_counter(h)
    assert not r.passed and r.violations == 1
    assert r.figures["above_upper_bound"] == 1
    assert r.examples[0]["upper_bound"] == 2


def test_counter_read_concurrent_with_an_increment_may_see_either_value() -> None:
    h = history(incr(0, 10, 5), cread(2, 3, 0), cread(4, 5, 5, process=8), cread(20, 21, 5))
    r = check_counter(h)
    assert r.passed and r.violations == 0
    assert r.figures["reads_checked"] == 3 and r.figures["lost_updates"] == 0


def test_counter_increment_completing_as_the_read_is_invoked_is_not_certain() -> None:
    # Completed at 10 ms, read invoked at 10 ms: not strictly before, so the read may miss it.
    assert check_counter(history(incr(0, 10), cread(10, 11, 0))).passed
    assert not check_counter(history(incr(0, 10), cread(10.001, 11, 0))).passed


def test_counter_info_increment_explains_a_higher_read_or_not() -> None:
    h = history(incr(0, 1), incr(2, 500, 4, status="info", process=2), cread(10, 11, 5), cread(12, 13, 1))
    r = check_counter(h)
    assert r.passed, r.examples
    assert r.figures["increments_info"] == 1


def test_counter_fail_increments_never_count() -> None:
    h = history(incr(0, 1, 3, status="fail"), cread(10, 11, 3))
    r = check_counter(h)
    assert not r.passed and r.figures["above_upper_bound"] == 1
    assert r.figures["increments_fail"] == 1


def test_counter_keys_are_separate_and_start_at_zero() -> None:
    h = history(incr(0, 1, 2, key="cs:c:2"), cread(10, 11, 0), cread(12, 13, 2, key="cs:c:2"))
    assert check_counter(h).passed
    h = history(incr(0, 1, 2, key="cs:c:2"), cread(10, 11, 2))
    assert check_counter(h).violations == 1


def test_counter_lost_updates_use_each_keys_final_read() -> None:
    h = history(
        *(incr(i * 2, i * 2 + 1, source="unsafe", process=i) for i in range(10)),
        cread(5, 6, 1),  # lower bound 3, shortfall 2: transient
        cread(30, 31, 7),  # final: lower bound 10, 3 updates lost for good
        incr(0, 1, 1, key="cs:c:2", source="locked", status="fail"),
    )
    r = check_counter(h)
    assert r.violations == 2
    assert r.figures["lost_updates"] == 3 and r.figures["max_shortfall"] == 3
    assert r.figures["by_source"] == {
        "locked": {"ok": 0, "info": 0, "fail": 1},
        "unsafe": {"ok": 10, "info": 0, "fail": 0},
    }


def test_counter_skipped_without_reads() -> None:
    r = check_counter(history(incr(0, 1)))
    assert r.skipped and r.passed and r.reason


# --------------------------------------------------------------------------------------------------
# stampede

E = "cs:e:1"


def inval(t0: float, **kw: Any) -> dict[str, Any]:
    kw.setdefault("source", "invalidate")
    return op("invalidate", kw.pop("key", E), t0, **kw)


def load(t0: float, guard: str = "lock", **kw: Any) -> dict[str, Any]:
    return op("db_load", kw.pop("key", E), t0, t0 + 5, source=guard, version=1, **kw)


def test_stampede_two_loads_in_one_epoch_fail_under_a_lock_guard() -> None:
    h = history(inval(0), load(2, process=1), load(3, process=2), load(50, key="cs:e:2"))
    r = check_stampede(h, expect_single=True)
    assert not r.passed and r.violations == 1
    assert r.figures["max_loads_per_epoch"] == 2 and r.figures["multi_load_epochs"] == 1
    assert r.examples[0]["loads_in_epoch"] == 2 and r.examples[0]["f"] == "db_load"
    assert r.examples[0]["epoch_opened_ns"] == 1 * MS
    reported = check_stampede(h, expect_single=False)
    assert reported.passed and reported.violations == 0
    assert reported.figures["multi_load_epochs"] == 1


def test_stampede_loads_in_different_epochs_are_fine() -> None:
    h = history(inval(0), load(2), inval(10), load(12), op("invalidate", E, 20, source="expire"), load(22))
    r = check_stampede(h, expect_single=True)
    assert r.passed and r.violations == 0
    assert r.figures["epochs"] == 3 and r.figures["db_loads"] == 3
    assert r.figures["max_loads_per_epoch"] == 1 and r.figures["mean_loads_per_epoch"] == 1


def test_stampede_load_at_the_invalidations_completion_belongs_to_it() -> None:
    # The epoch opens at the invalidation's t_complete (1 ms); a load invoked at 1 ms is in it.
    h = history(load(0.5), inval(0), load(1))
    r = check_stampede(h, expect_single=True)
    assert r.passed and r.figures["epochs"] == 2


def test_stampede_loads_before_any_invalidation_form_epoch_zero() -> None:
    cold = [load(0, "none"), load(1, "none", process=2), load(2, "none", process=3)]
    h = history(*cold, inval(100), load(200))
    r = check_stampede(h, expect_single=True)
    assert r.violations == 1
    assert r.figures["epochs"] == 2 and r.figures["db_loads"] == 4
    assert r.figures["max_loads_per_epoch"] == 3
    assert r.examples[0]["epoch_opened_ns"] is None
    assert r.figures["by_guard"]["none"]["max_loads_per_epoch"] == 3
    assert r.figures["by_guard"]["lock"]["db_loads"] == 1


def test_stampede_peak_loads_per_second() -> None:
    h = history(*(load(i * 10, key=f"cs:e:{i}") for i in range(5)), load(1500, key="cs:e:9"))
    r = check_stampede(h)
    assert r.figures["peak_db_loads_per_s"] == 5


def test_stampede_skipped_without_db_loads() -> None:
    assert check_stampede(history(inval(0))).skipped


# --------------------------------------------------------------------------------------------------
# tx_atomicity

G = "cs:g:1"


def test_tx_read_with_a_nonzero_sum_is_caught() -> None:
    h = history(
        op("tx_transfer", G, 0, 2, value=3, source="unsafe"),
        op("tx_read", G, 1, 2, value=3, process=2),
        op("tx_read", G, 5, 6, value=0, process=2),
    )
    r = check_tx_atomicity(h)
    assert not r.passed and r.violations == 1
    assert r.figures["max_abs_sum"] == 3
    assert r.examples[0]["value"] == 3


def test_watch_abort_is_not_a_violation() -> None:
    h = history(
        op("tx_transfer", G, 0, 2, value=3, source="atomic"),
        op("tx_transfer", G, 1, 3, value=5, status="fail", process=3, source="atomic"),
        op("tx_transfer", G, 4, 6, value=5, status="fail", process=3, source="atomic"),
        op("tx_transfer", G, 7, 9, value=5, status="info", process=4, source="atomic"),
        op("tx_read", G, 10, 11, value=0, process=2),
    )
    r = check_tx_atomicity(h)
    assert r.passed and r.violations == 0
    assert (r.figures["transfers_ok"], r.figures["transfers_fail"], r.figures["transfers_info"]) == (1, 2, 1)
    assert r.figures["watch_abort_rate"] == pytest.approx(0.5)


def test_tx_atomicity_skipped_without_reads() -> None:
    assert check_tx_atomicity(history(op("tx_transfer", G, 0, 1, value=1))).skipped


# --------------------------------------------------------------------------------------------------
# lock_safety

L = "cs:l:1"


def acquire(t0: float, token: int, process: int, **kw: Any) -> dict[str, Any]:
    kw.setdefault("source", "locked")
    return op("lock_acquire", kw.pop("key", L), t0, value=token, process=process, **kw)


def release(t0: float, token: int, process: int, **kw: Any) -> dict[str, Any]:
    return op("lock_release", kw.pop("key", L), t0, value=token, process=process, **kw)


def gwrite(t0: float, t1: float, token: int, process: int, **kw: Any) -> dict[str, Any]:
    return op("guarded_write", kw.pop("key", L), t0, t1, value=token, process=process, **kw)


def test_two_overlapping_holders_with_different_tokens_are_caught() -> None:
    h = history(acquire(0, 1, 1), acquire(5, 2, 2))
    r = check_lock_safety(h, ttl_ns=TTL)
    assert not r.passed and r.violations == 1
    assert r.figures["overlaps"] == 1
    assert r.examples[0]["violation"] == "overlap" and r.examples[0]["value"] == 2


def test_overlapping_pairs_are_counted() -> None:
    h = history(acquire(0, 1, 1), acquire(5, 2, 2), acquire(6, 3, 3), acquire(5, 4, 4, key="cs:l:2"))
    assert check_lock_safety(h, ttl_ns=TTL).figures["overlaps"] == 3


def test_a_release_ends_the_interval() -> None:
    h = history(acquire(0, 1, 1), release(10, 1, 1), acquire(12, 2, 2), release(20, 2, 2))
    r = check_lock_safety(h, ttl_ns=TTL)
    assert r.passed and r.figures["overlaps"] == 0 and r.figures["releases_ok"] == 2


def test_reacquired_after_the_ttl_expired_is_no_overlap() -> None:
    h = history(acquire(0, 1, 1), acquire(1001, 2, 2))
    assert check_lock_safety(h, ttl_ns=TTL).passed
    # The same schedule with a longer TTL: the first holder still held it.
    assert check_lock_safety(h, ttl_ns=2 * TTL).figures["overlaps"] == 1


def test_a_release_after_the_ttl_is_a_lost_lock_not_an_overlap() -> None:
    h = history(acquire(0, 1, 1), acquire(1100, 2, 2), release(1500, 1, 1, status="fail"))
    r = check_lock_safety(h, ttl_ns=TTL)
    assert r.passed and r.violations == 0
    assert r.figures["releases_fail"] == 1


def test_another_processs_release_does_not_end_an_interval() -> None:
    # Process 3 "releases" token 1 at 10 ms; process 1's interval still runs to its TTL.
    h = history(acquire(0, 1, 1), release(10, 1, 3, status="fail"), acquire(20, 2, 2))
    assert check_lock_safety(h, ttl_ns=TTL).figures["overlaps"] == 1


def test_same_token_intervals_do_not_overlap_each_other() -> None:
    h = history(acquire(0, 7, 1), acquire(5, 7, 1))
    assert check_lock_safety(h, ttl_ns=TTL).passed


def test_stale_token_accepted_is_caught() -> None:
    h = history(gwrite(0, 1, 2, 2), gwrite(5, 6, 1, 1))
    r = check_lock_safety(h, ttl_ns=TTL)
    assert not r.passed and r.violations == 1
    assert r.figures["stale_token_accepts"] == 1
    assert r.examples[0]["violation"] == "stale_token" and r.examples[0]["accepted_token_before"] == 2


def test_concurrent_or_refused_lower_tokens_are_fine() -> None:
    h = history(
        gwrite(0, 10, 1, 1),  # invoked before token 2's write completed: may come first
        gwrite(0, 1, 2, 2),
        gwrite(20, 21, 1, 3, status="fail"),  # refused, as it should be
        gwrite(30, 31, 2, 2),  # the same token again
    )
    r = check_lock_safety(h, ttl_ns=TTL)
    assert r.passed, r.examples
    assert r.figures["guarded_writes_accepted"] == 3 and r.figures["guarded_writes_refused"] == 1


def test_lock_modes_are_reported_side_by_side() -> None:
    h = history(
        acquire(0, 1, 1),
        gwrite(2, 3, 1, 1),
        release(4, 1, 1),
        acquire(10, 2, 2, source="unlocked", key="cs:l:2"),
        gwrite(12, 13, 2, 2, key="cs:l:2"),
        gwrite(14, 15, 2, 2, key="cs:l:2"),
        gwrite(16, 1012, 2, 2, key="cs:l:2", status="fail"),
    )
    r = check_lock_safety(h, ttl_ns=TTL)
    modes = r.figures["by_source"]
    assert set(modes) == {"locked", "unlocked"}
    assert modes["locked"]["guarded_writes"] == 1
    assert modes["unlocked"]["accepted"] == 2 and modes["unlocked"]["refused"] == 1
    assert modes["unlocked"]["ops_per_s"] == pytest.approx(3 / 1.0)


def test_lock_ttl_comes_from_run_json() -> None:
    h = history(acquire(0, 1, 1), acquire(600, 2, 2))
    run = {"options": {"lock_ttl_ms": 500}}
    assert run_checks(h, run).check("lock_safety").passed
    assert not run_checks(h, {"options": {}}).check("lock_safety").passed  # default 1000 ms


def test_lock_safety_skipped_without_lock_rows() -> None:
    assert check_lock_safety(history(incr(0, 1))).skipped


# --------------------------------------------------------------------------------------------------
# invalidation_latency


def test_invalidation_latency_figures() -> None:
    rows = [op("invalidate_batch", None, i * 100, i * 100 + (i + 1), value=100) for i in range(100)]
    r = check_invalidation_latency(history(*rows, op("invalidate_batch", None, 0, 900, status="info")))
    assert r.passed and r.violations == 0
    assert r.figures["count"] == 100
    assert r.figures["max_ms"] == 100 and r.figures["max_us"] == 100_000
    assert r.figures["p50_ms"] == pytest.approx(50.5)
    assert r.figures["p99_ms"] == pytest.approx(99.01)
    assert r.figures["mean_keys_per_batch"] == 100


def test_invalidation_latency_skipped_without_batches() -> None:
    assert check_invalidation_latency(history(incr(0, 1))).skipped


def test_latency_has_the_contention_groups() -> None:
    h = history(incr(0, 2), incr(1, 5), cread(0, 1, 0), op("invalidate_batch", None, 0, 100, value=100))
    groups = check_latency(h).figures
    assert groups["incr"]["count"] == 2 and groups["incr"]["max"] == 4000
    assert groups["counter_read"]["count"] == 1
    assert groups["invalidate_batch"]["p95"] == 100_000
    for group in ("tx_transfer", "tx_read", "lock_acquire", "guarded_write", "db_load"):
        assert groups[group]["count"] == 0


# --------------------------------------------------------------------------------------------------
# eviction


def stat(t: float, name: str, value: int) -> dict[str, Any]:
    return op("redis_stat", name, t, t, value=value, process=0)


def samples() -> list[dict[str, Any]]:
    rows = []
    for i, (evicted, hits, misses) in enumerate([(0, 0, 0), (0, 40, 10), (5, 60, 20), (9, 80, 20)]):
        t = i * 1000
        rows += [stat(t, "evicted_keys", evicted), stat(t, "keyspace_hits", hits)]
        rows += [stat(t, "keyspace_misses", misses), stat(t, "used_memory", 1000 + i)]
    return rows


def read(t0: float, version: int, process: int = 2) -> dict[str, Any]:
    return op("read", E, t0, t0 + 1, version=version, process=process, source="hit")


def test_stale_reads_during_eviction_are_caught() -> None:
    h = history(
        *samples(),
        op("write", E, 0, 10, version=1),
        read(500, 0),  # stale, but before Redis evicted anything
        read(1500, 0),  # stale while evicting
        read(2500, 1),
    )
    r = check_eviction(h)
    assert not r.passed and r.violations == 1
    assert r.figures["stale_reads"] == 2 and r.figures["stale_during_eviction"] == 1
    assert r.figures["evictions"] == 9
    assert r.figures["hit_ratio"] == pytest.approx(0.8)
    assert r.figures["samples"] == 4 and r.figures["used_memory_max"] == 1003
    assert r.examples[0]["t_invoke"] == 1500 * MS


def test_fresh_reads_during_eviction_pass() -> None:
    h = history(*samples(), op("write", E, 0, 10, version=1), read(5, 0), read(1500, 1), read(2500, 1))
    r = check_eviction(h)
    assert r.passed and r.violations == 0
    assert r.figures["reads_during_eviction"] == 2


def test_no_evictions_no_window() -> None:
    rows = [stat(t, "evicted_keys", 3) for t in (0, 1000, 2000)]
    h = history(*rows, op("write", E, 0, 10, version=1), read(1500, 0))
    r = check_eviction(h)
    assert r.passed and r.figures["evictions"] == 0 and r.figures["stale_reads"] == 1


def test_eviction_skipped_without_stats() -> None:
    assert check_eviction(history(read(0, 0))).skipped


# --------------------------------------------------------------------------------------------------
# Composition


def test_run_checks_includes_the_new_checks_skipped_on_a_coherence_history() -> None:
    h = history(
        op("write", E, 0, 10, version=1),
        read(20, 1),
        op("sweep", E, 30, 31, version=1, value=1, source="entry", process=0),
    )
    verdict = run_checks(h, complete_run(locust={"user_classes": ["CacheReader", "CacheWriter"]}), Options())
    assert [c.name for c in verdict.checks] == list(CHECK_NAMES)
    for name in NEW_CHECKS:
        assert verdict.check(name).skipped, name
        assert verdict.check(name).outcome == "not applicable", name  # no contention user ran
    assert verdict.passed


def test_stampede_guard_lock_in_run_json_makes_stampede_fail() -> None:
    h = history(inval(0), load(2, process=1), load(3, process=2))
    assert run_checks(h, complete_run(options={"stampede_guard": "none"})).passed
    verdict = run_checks(h, complete_run(options={"stampede_guard": "lock"}))
    assert verdict.failed == ["stampede"]


def test_checks_are_vectorised_on_a_large_history() -> None:
    rng = np.random.default_rng(7)
    n = 200_000
    t0 = np.sort(rng.integers(0, 60 * S, n))
    keys = np.array([f"cs:c:{i}" for i in range(100)])[rng.integers(0, 100, n)]
    f = np.where(rng.random(n) < 0.2, "counter_read", "incr")
    frame = pd.DataFrame(
        {
            "process": rng.integers(0, 500, n),
            "node": "local",
            "f": f,
            "key": keys,
            "status": "ok",
            "t_invoke": t0,
            "t_complete": t0 + rng.integers(1, 5 * MS, n),
            "version": pd.array([None] * n, dtype="Int64"),
            "value": pd.array(np.where(f == "incr", 1, 0), dtype="Int64"),
            "source": "atomic",
        }
    )
    frame.loc[::3, "f"] = "lock_acquire"
    frame.loc[1::7, "f"] = "guarded_write"
    h = normalise(frame)
    start = time.perf_counter()
    counter = check_counter(h)
    locks = check_lock_safety(h, ttl_ns=TTL)
    elapsed = time.perf_counter() - start
    assert counter.figures["reads_checked"] > 10_000 and not counter.passed  # reads of 0 lose updates
    assert locks.figures["intervals"] > 10_000 and locks.figures["overlaps"] > 0
    assert elapsed < 20
