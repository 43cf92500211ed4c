"""Shared work between checks (analysis.kernels.sharing) and the packed-integer helpers behind them.

Each helper is compared with the plain (slow) computation it replaces, on random data with many ties,
and on inputs that force its fallback path.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from analysis import arrays, checks, contention, kernels, load_history, load_run, normalise, run_checks
from analysis.arrays import (
    _count_before,
    _group_cummax,
    _group_order,
    _max_before,
    _regressions,
    _sorted_unique,
)
from analysis.kernels import sharing, stale_flags
from analysis.load import CATEGORICAL, frame_from_tables
from tests.histories import clean_rows, history, row

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.synthetic import synthesize  # noqa: E402

RNG = np.random.default_rng(20261121)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shared") / "run"
    synthesize(out, ops=60_000, keys=1_500, seed=3, anomalies=15)
    return out


# --- sharing --------------------------------------------------------------------------------------


def test_run_checks_equals_each_check_on_its_own(results: Path) -> None:
    h, run = load_history(results), load_run(results)
    verdict = run_checks(h, run)
    opts = checks.Options.resolve(run)
    tol, n = opts.tolerance_ns, opts.examples
    alone = {
        "stale_read": checks.check_stale_read(h, tol, n),
        "future_read": checks.check_future_read(h, tol, n),
        "monotonic_read": checks.check_monotonic_read(h, n),
        "ws_delivery": checks.check_ws_delivery(h, opts.ws_grace_ns, tol, n),
        "counter": contention.check_counter(h, tol, n),
        "lock_safety": contention.check_lock_safety(h, opts.lock_ttl_ns, tol, n),
        "eviction": contention.check_eviction(h, tol, n),
    }
    for name, result in alone.items():
        assert verdict.check(name).to_dict() == result.to_dict(), name
    assert verdict.check("stale_read").violations > 0


def test_fallbacks_give_the_same_verdict(results: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no packing allowed, every helper takes its general path; no result may change."""
    h, run = load_history(results), load_run(results)
    packed = run_checks(h, run).to_summary()
    monkeypatch.setattr(arrays, "_fits", lambda *factors: False)
    assert run_checks(h, run).to_summary() == packed


def test_sharing_computes_once_per_frame_and_tolerance(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = kernels._max_completed_before

    def counted(*args: Any) -> np.ndarray:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(kernels, "_max_completed_before", counted)
    h = history(*clean_rows(), row("read", 40, 41, 0, process=3, source="hit"))
    stale_flags(h)
    stale_flags(h)
    assert len(calls) == 2  # outside a block: every call computes
    with sharing(h) as shared:
        assert shared is h  # an already normalised frame is used as it is
        first = stale_flags(h)
        again = stale_flags(h)
        assert len(calls) == 3
        stale_flags(h, tolerance_ns=5)
        assert len(calls) == 4  # another tolerance is another result
        stale_flags(h.copy())
        assert len(calls) == 5  # another frame, even an equal one, is not shared
        assert first[2].tolist() == again[2].tolist() == [False, False, True]
    stale_flags(h)
    assert len(calls) == 6  # the memo ends with the block


def test_shared_results_cannot_be_changed_through_what_is_handed_out() -> None:
    h = history(*clean_rows())
    with sharing(h):
        reads, writes, stale = stale_flags(h)
        reads["version"] = -1
        writes.loc[0, "max_version"] = 99
        with pytest.raises(ValueError):
            stale[0] = True
        again_reads, again_writes, _ = stale_flags(h)
        assert again_reads["version"].tolist() == [0, 1]
        assert again_writes["max_version"].tolist() == [1]


def test_sharing_normalises_a_raw_frame() -> None:
    raw = pd.DataFrame(clean_rows())
    with sharing(raw) as h:
        assert h is not raw and h.equals(normalise(raw))
        assert checks.check_stale_read(h).passed


# --- packed-integer helpers -----------------------------------------------------------------------


def _ties(n: int, high: int) -> np.ndarray:
    return RNG.integers(0, high, n).astype("int64")


@pytest.mark.parametrize("n", [0, 1, 7, 5_000])
def test_group_order_is_lexsort(n: int) -> None:
    group, t = _ties(n, 40), _ties(n, 30)
    assert np.array_equal(_group_order(group, t), np.lexsort((t, group)))
    huge = group * (1 << 55)  # too wide to pack with the rank: the lexsort path
    assert np.array_equal(_group_order(huge, t), np.lexsort((t, huge)))


@pytest.mark.parametrize("scale", [1, 1 << 61])
def test_group_cummax_is_grouped_cummax(scale: int) -> None:
    n = 3_000
    starts = RNG.random(n) < 0.05
    starts[0] = True
    values = (RNG.integers(-50, 50, n) * scale).astype("int64")  # a huge scale takes the pandas path
    expected = pd.Series(values).groupby(np.cumsum(starts)).cummax().to_numpy()
    assert np.array_equal(_group_cummax(starts, values), expected)


@pytest.mark.parametrize("span", [10_000, 1 << 62])
@pytest.mark.parametrize("strict", [True, False])
def test_max_and_count_before_match_brute_force(span: int, strict: bool) -> None:
    # A span this long cannot be packed next to the key: times are replaced by their ranks.
    n_events, n_queries = 400, 300
    times = np.sort(RNG.integers(0, span, 60)).astype("int64") - (span // 2)
    ek, et = _ties(n_events, 9), times[RNG.integers(0, len(times), n_events)]
    ev = RNG.integers(-20, 20, n_events).astype("int64")
    qk, qt = _ties(n_queries, 11), times[RNG.integers(0, len(times), n_queries)]
    before = (et[None, :] < qt[:, None]) if strict else (et[None, :] <= qt[:, None])
    mine = before & (ek[None, :] == qk[:, None])
    counts = _count_before(qk, qt, ek, et, strict=strict)
    maxima = _max_before(qk, qt, ek, et, ev, strict=strict)
    assert np.array_equal(counts, mine.sum(axis=1))
    expected = np.where(mine.any(axis=1), np.where(mine, ev[None, :], -(10**9)).max(axis=1), np.nan)
    assert np.array_equal(maxima, expected, equal_nan=True)
    weights = RNG.integers(1, 5, n_events).astype("int64")
    sums = contention._sum_before(qk, qt, ek, et, weights, strict=strict)
    assert np.array_equal(sums, (mine * weights[None, :]).sum(axis=1))


def test_helpers_take_empty_inputs() -> None:
    empty = np.zeros(0, dtype="int64")
    one = np.ones(1, dtype="int64")
    assert _count_before(one, one, empty, empty, strict=True).tolist() == [0]
    assert np.isnan(_max_before(one, one, empty, empty, empty, strict=True)).all()
    assert _count_before(empty, empty, one, one, strict=False).tolist() == []
    order, previous = _regressions(empty, empty, empty, empty)
    assert len(order) == len(previous) == 0


@pytest.mark.parametrize("process_scale", [1, 1 << 40])
def test_regressions_match_lexsort_and_grouped_cummax(process_scale: int) -> None:
    n = 4_000
    process = _ties(n, 30) * process_scale + 7  # a sparse range is numbered densely first
    key, t, version = _ties(n, 25), _ties(n, 500), _ties(n, 12)
    order, previous = _regressions(process, key, t, version)
    expected_order = np.lexsort((t, key, process))
    assert np.array_equal(order, expected_order)
    p, k, v = process[order], key[order], version[order].astype("float64")
    starts = np.r_[True, (p[1:] != p[:-1]) | (k[1:] != k[:-1])]
    running = pd.Series(v).groupby(np.cumsum(starts)).cummax().to_numpy()
    expected = np.r_[-np.inf, running[:-1]]
    expected[starts] = -np.inf
    assert np.array_equal(previous, expected)


@pytest.mark.parametrize("high", [3, 1 << 62])
def test_sorted_unique_is_a_stable_argsort(high: int) -> None:
    values = RNG.integers(-(1 << 20), high, 2_000).astype("int64")
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    keep = np.r_[True, ordered[1:] != ordered[:-1]]
    distinct, first = _sorted_unique(values)
    assert np.array_equal(distinct, ordered[keep]) and np.array_equal(first, order[keep])


# --- loading --------------------------------------------------------------------------------------


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows as an Arrow table of the history schema: strings as dictionaries, integers as int64."""
    arrays = {}
    for name in rows[0]:
        values = [r.get(name) for r in rows]
        if name in CATEGORICAL:
            arrays[name] = pa.array(values, pa.string()).dictionary_encode()
        else:
            arrays[name] = pa.array(values, pa.int64())
    return pa.table(arrays)


def test_frame_from_tables_equals_the_general_path() -> None:
    rows = [
        {**r, "t_intended": None}
        for r in [*clean_rows(), row("ws_recv", 12, 12, 1, process=4, value=1_763_600_000_123_456_789)]
    ]
    table = _table(rows)
    other = _table([{**rows[0], "key": "cs:e:9", "t_intended": 5}])
    frame = frame_from_tables([table, other])
    exact = {pa.int64(): pd.Int64Dtype()}.get
    expected = normalise(pa.concat_tables([table, other]).unify_dictionaries().to_pandas(types_mapper=exact))
    pd.testing.assert_frame_equal(frame, expected, check_exact=True)
    assert frame["value"].iloc[4] == 1_763_600_000_123_456_789  # exact: never through float64
    assert frame["t_intended"].isna().sum() == len(rows)
    assert list(frame["key"].cat.categories) == ["cs:e:1", "cs:e:9"]
    nulls = frame_from_tables([table])
    assert nulls["t_intended"].isna().all() and nulls["t_intended"].dtype == "Int64"
