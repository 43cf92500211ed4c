"""A synthetic op history in schema v2 (docs/history.md), for benchmarking the checks.

    python bench/synthetic.py OUT_DIR --ops 10000000 --keys 100000 --seed 1 [--anomalies 100]

Writes ``OUT_DIR/history/part-*.parquet`` (1M rows each, zstd), ``OUT_DIR/run.json`` and
``OUT_DIR/planted.json``, and prints the planted anomalies as JSON. Everything is vectorised numpy,
deterministic per seed.

The history is built so that, without planted anomalies, every check passes:

- user *slots* are laid out per Locust user, one operation at a time with think time between them,
  so a process never overlaps itself; a user takes a fresh process id after an ``info`` operation;
- an ok write *commits* at a point inside its interval; versions of a key are 1, 2, 3 ... in commit
  order; a read takes effect 50 us after its invocation and returns the number of commits of its key
  before that point (so it is never stale, never from the future, and monotonic per process);
- a read is a miss when the key's previous event was a write (invalidated) or there was none (plus a
  few TTL misses), and a miss fills the cache with the version it read;
- counters, transfers and locks follow the same idea (counter reads see the increments committed
  before they take effect, transfer sums are 0, lock sessions of one lock never overlap).

Anomalies (``--anomalies`` of each kind) are then planted so that each one is exactly one violation
of its check: stale reads, future reads, monotonic-read regressions, missed WebSocket deliveries,
divergent sweep entries, counter lost updates, non-zero transaction sums and lock overlaps.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

# Run as a script (python bench/synthetic.py) or imported by the tests: the schema is the recorder's.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cachestorm.history import SCHEMA

NS_US = 1_000
NS_MS = 1_000_000
NS_S = 1_000_000_000
NULL = np.iinfo("int64").min  # sentinel for a null version / value
T0 = 1_763_600_000 * NS_S  # fixed start, so that the output depends on the seed only
RANK_BITS = 40  # events are ordered as (key << RANK_BITS) | rank of their time (_Timeline)
PART_ROWS = 1_000_000
LISTENERS = 2
COUNTERS, GROUPS, LOCKS = 16, 8, 32

F_NAMES = (
    "read",
    "write",
    "fill",
    "ws_open",
    "ws_recv",
    "ws_close",
    "sweep",
    "incr",
    "counter_read",
    "invalidate",
    "db_load",
    "tx_transfer",
    "tx_read",
    "lock_acquire",
    "lock_release",
    "guarded_write",
    "invalidate_batch",
    "redis_stat",
)
F = {name: i for i, name in enumerate(F_NAMES)}
STATUSES = ("ok", "fail", "info")
OK, FAIL, INFO = 0, 1, 2
SOURCES = ("hit", "miss", "entry", "tombstone", "absent", "atomic", "locked", "invalidate", "none")
SRC = {name: i for i, name in enumerate(SOURCES)}
STATS = ("evicted_keys", "keyspace_hits", "keyspace_misses", "used_memory")
NODES = ("master", "worker1_3fa2", "worker2_9b1c", "worker3_c07e", "worker4_51d8")
#: Slot kinds of the users, with their probabilities.
KINDS = {
    "read": 0.824,
    "write": 0.085,
    "incr": 0.03,
    "counter_read": 0.01,
    "tx_transfer": 0.02,
    "tx_read": 0.005,
    "lock": 0.01,
    "invalidate": 0.003,
    "db_load": 0.012,
    "invalidate_batch": 0.001,
}
ANOMALY_KINDS = (
    "stale_read",
    "future_read",
    "monotonic_read",
    "ws_delivery",
    "divergence",
    "counter",
    "tx_atomicity",
    "lock_safety",
)


@dataclass
class Rows:
    """Column blocks appended as the history is built; concatenated once at the end."""

    blocks: dict[str, list[np.ndarray]] = field(
        default_factory=lambda: {
            c: []
            for c in ("process", "f", "key", "status", "t_invoke", "t_complete", "version", "value", "source")
        }
    )

    def add(
        self,
        *,
        process: Any,
        f: str,
        key: Any,
        status: Any,
        t_invoke: np.ndarray,
        t_complete: Any,
        version: Any = NULL,
        value: Any = NULL,
        source: Any = -1,
    ) -> None:
        n = len(t_invoke)
        if n == 0:
            return
        columns = {
            "process": process,
            "f": F[f],
            "key": key,
            "status": status,
            "t_invoke": t_invoke,
            "t_complete": t_complete,
            "version": version,
            "value": value,
            "source": source,
        }
        dtypes = {"f": "int8", "status": "int8", "source": "int8", "key": "int32"}
        for name, values in columns.items():
            array = np.broadcast_to(np.asarray(values, dtype=dtypes.get(name, "int64")), (n,))
            self.blocks[name].append(np.ascontiguousarray(array))

    def concat(self) -> dict[str, np.ndarray]:
        return {name: np.concatenate(parts) for name, parts in self.blocks.items()}


def _lognormal(rng: np.random.Generator, median_ns: float, sigma: float, n: int) -> np.ndarray:
    return (median_ns * rng.lognormal(0.0, sigma, n)).astype("int64")


def _zipf_keys(rng: np.random.Generator, n_keys: int, n: int, s: float = 0.9) -> np.ndarray:
    """``n`` key indices with a zipf-like popularity (rank ``r`` has weight ``1 / (r + 1) ** s``)."""
    weights = 1.0 / np.arange(1, n_keys + 1, dtype="float64") ** s
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    ranks = np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), n_keys - 1)
    # Popular keys scattered over the key space, not all at the low indices.
    return rng.permutation(n_keys)[ranks].astype("int64")


class _Timeline:
    """Events of several keys, each with a time (and a weight): per (key, t), what lies before t.

    Events are ordered by key, then by the *rank* of their time among all the timeline's times,
    packed as ``(key << RANK_BITS) | rank``. Ranks, unlike times, never outgrow their bits, so a
    history of any length keeps every key's events apart (packing the time itself overflowed into
    the key after 2**42 ns, 73 minutes, and merged one key's late events into the next key's).
    Equal times keep their input order.
    """

    def __init__(self, key: np.ndarray, t: np.ndarray, weights: np.ndarray | None = None) -> None:
        if len(t) >= 1 << RANK_BITS:
            raise ValueError("too many events for a timeline")
        by_time = np.argsort(t, kind="stable")
        self.times = t[by_time]
        rank = np.empty(len(t), dtype="int64")
        rank[by_time] = np.arange(len(t), dtype="int64")
        codes = (key.astype("int64") << RANK_BITS) | rank
        #: Events in (key, time) order: ``order[i]`` is the input index of the i-th.
        self.order = np.argsort(codes, kind="stable")
        self.codes = codes[self.order]
        self.key = key.astype("int64")[self.order]
        self.t = t[self.order]
        self.cum = None if weights is None else np.concatenate([[0], np.cumsum(weights[self.order])])

    def _bounds(self, key: np.ndarray, t: np.ndarray, strict: bool) -> tuple[np.ndarray, np.ndarray]:
        side: Literal["left", "right"] = "left" if strict else "right"
        rank = np.searchsorted(self.times, t, side=side)
        high = key.astype("int64") << RANK_BITS
        lo = np.searchsorted(self.codes, high, side="left")
        return lo, np.searchsorted(self.codes, high | rank, side="left")

    def count_before(self, key: np.ndarray, t: np.ndarray, *, strict: bool) -> np.ndarray:
        """Per (key, t): how many events of that key lie before ``t`` (``<`` or ``<=``)."""
        lo, hi = self._bounds(key, t, strict)
        return hi - lo

    def sum_before(self, key: np.ndarray, t: np.ndarray, *, strict: bool) -> np.ndarray:
        """Per (key, t): the sum of the weights of the events of that key before ``t``."""
        assert self.cum is not None
        lo, hi = self._bounds(key, t, strict)
        return self.cum[hi] - self.cum[lo]

    def rank_in_key(self) -> np.ndarray:
        """Per event (input order): 1 for its key's first event in time, 2 for the next..."""
        first = np.searchsorted(self.codes, (self.codes >> RANK_BITS) << RANK_BITS, side="left")
        out = np.empty(len(self.codes), dtype="int64")
        out[self.order] = np.arange(len(self.codes)) - first + 1
        return out

    def next_time(self) -> np.ndarray:
        """Per event (input order): the time of its key's next event (int64 max for the last)."""
        following = np.full(len(self.t), np.iinfo("int64").max, dtype="int64")
        same = self.key[1:] == self.key[:-1]
        following[:-1] = np.where(same, self.t[1:], following[:-1])
        out = np.empty(len(self.t), dtype="int64")
        out[self.order] = following
        return out


def _pick(rng: np.random.Generator, candidates: np.ndarray, n: int) -> np.ndarray:
    """Up to ``n`` distinct elements of ``candidates``, sorted."""
    n = min(n, len(candidates))
    return np.sort(rng.choice(candidates, size=n, replace=False)) if n else candidates[:0]


def run_seconds(ops: int) -> float:
    """How long a run of ``ops`` operations lasts by default: 1800 s per 10M (at least 60)."""
    return max(60.0, 1800.0 * ops / 10_000_000)


def generate(
    ops: int,
    keys: int,
    seed: int,
    anomalies: int,
    seconds: float | None = None,
    *,
    shard: int = 0,
    shards: int = 1,
    key_offset: int = 0,
    first_pid: int = 1 + LISTENERS,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The history's columns (codes for strings, ``NULL`` for nulls) and facts about it.

    ``seconds`` is how long the run lasts (default :func:`run_seconds`). With ``shards`` > 1 this is
    shard ``shard`` of a run: its own entity keys (``cs:e:{key_offset}`` on), counters, groups,
    locks and users (processes from ``first_pid``), over the whole run's time. The WebSocket
    listeners are the run's, so every shard's ok writes reach them; shard 0 writes their
    connections and the Redis INFO samples. The run's end (users stop at ``seconds``, connections
    close 10 s later, then the sweep) is the same for every shard.
    """
    if keys < 1 or keys >= 1 << 20:
        raise ValueError("--keys must be in [1, 2**20)")
    rng = np.random.default_rng(seed if shards == 1 else [seed, shard])
    duration = int((seconds if seconds is not None else run_seconds(ops)) * NS_S)
    # Users start no operation after the deadline; none lasts 8 s (cap below), so all are done by
    # the time the listeners disconnect.
    deadline = T0 + duration
    ws_close_t = deadline + 10 * NS_S
    rows = Rows()

    # ---- user slots, laid out per user -------------------------------------------------------------
    p = np.array(list(KINDS.values()))
    per_slot = 1 + KINDS["read"] * 0.1 + KINDS["write"] * 0.97 * LISTENERS + KINDS["lock"] * 2
    fixed = keys + (4 * duration // NS_S if shard == 0 else 0) + COUNTERS
    n_slots = max(int((ops - fixed) / per_slot), 1000)
    n_users = int(np.clip(n_slots // 4000, 16, 2000))
    kind = rng.choice(len(p), size=n_slots, p=p / p.sum()).astype("int8")
    kind_names = list(KINDS)
    user = np.sort(rng.integers(0, n_users, n_slots))
    first = np.ones(n_slots, dtype=bool)
    first[1:] = user[1:] != user[:-1]
    mean_gap = n_users * duration / n_slots
    floor = 2 * NS_MS
    gaps = (floor + rng.exponential(max(mean_gap - floor, NS_MS), n_slots)).astype("int64")
    cum = np.cumsum(gaps)
    start_of_user = np.maximum.accumulate(np.where(first, np.arange(n_slots), 0))
    offset = rng.integers(0, int(mean_gap), n_users)
    t_slot = T0 + offset[user] + cum - cum[start_of_user]
    running = t_slot < deadline  # a user's slots grow in time: this drops the tail of each user
    kind, user, first, gaps, t_slot = (
        kind[running],
        user[running],
        first[running],
        gaps[running],
        t_slot[running],
    )
    n_slots = len(t_slot)
    next_gap = np.full(n_slots, 10 * NS_S, dtype="int64")
    next_gap[:-1] = np.where(user[1:] == user[:-1], gaps[1:], next_gap[:-1])
    cap = (next_gap * 0.8).astype("int64")  # an operation ends well before its user's next one

    def slots(name: str) -> np.ndarray:
        return np.flatnonzero(kind == kind_names.index(name))

    # Status per slot (only reads, writes, increments and transfers can be info).
    u = rng.random(n_slots)
    status = np.zeros(n_slots, dtype="int8")
    is_read = kind == kind_names.index("read")
    status[is_read & (u < 0.03)] = FAIL  # ~ the read_fail share
    status[is_read & (u >= 0.03) & (u < 0.032)] = INFO
    for name, fail, info in (("write", 0.015, 0.015), ("incr", 0.01, 0.01), ("tx_transfer", 0.09, 0.01)):
        mask = kind == kind_names.index(name)
        status[mask & (u < fail)] = FAIL
        status[mask & (u >= fail) & (u < fail + info)] = INFO
    # A user takes a fresh process id after an info operation.
    segment = first.copy()
    segment[1:] |= status[:-1] == INFO
    pid = first_pid + np.cumsum(segment) - 1

    # ---- writes --------------------------------------------------------------------------------
    w = slots("write")
    w_key = _zipf_keys(rng, keys, len(w))
    w_ti = t_slot[w]
    w_dur = np.minimum(np.maximum(_lognormal(rng, 3 * NS_MS, 0.5, len(w)), 200 * NS_US), cap[w])
    w_tc = w_ti + w_dur
    w_commit = w_ti + (w_dur * rng.uniform(0.3, 0.7, len(w))).astype("int64")
    w_ok = status[w] == OK
    commits = _Timeline(w_key[w_ok], w_commit[w_ok])
    # Version = rank of the commit among the key's commits.
    ok_version = commits.rank_in_key()
    w_version = np.full(len(w), NULL, dtype="int64")
    w_version[w_ok] = ok_version
    db_version = np.bincount(w_key[w_ok], minlength=keys)  # PostgreSQL's version at the end

    # ---- reads (and db_loads, which read like them) ---------------------------------------------
    r = slots("read")
    r_key = _zipf_keys(rng, keys, len(r))
    r_ti = t_slot[r]
    r_point = r_ti + 50 * NS_US
    r_ok = status[r] == OK
    r_version = np.full(len(r), NULL, dtype="int64")
    r_version[r_ok] = commits.count_before(r_key[r_ok], r_point[r_ok], strict=False)
    # Hit or miss: the key's previous event (ok reads and ok commits, in time order).
    ok_r = np.flatnonzero(r_ok)
    ev_all_key = np.concatenate([r_key[ok_r], w_key[w_ok]])
    ev_write = np.concatenate([np.zeros(len(ok_r), bool), np.ones(int(w_ok.sum()), bool)])
    # By key, then time; at equal times a read comes before a commit (lexsort is stable).
    ev_order = np.lexsort((np.concatenate([r_point[ok_r], w_commit[w_ok]]), ev_all_key))
    ev_key = ev_all_key[ev_order]
    del ev_all_key
    ev_is_write = ev_write[ev_order]
    prev_read = np.zeros(len(ev_order), dtype=bool)
    prev_read[1:] = (ev_key[1:] == ev_key[:-1]) & ~ev_is_write[:-1]
    hit_ev = np.zeros(len(ev_order), dtype=bool)
    hit_ev[ev_order] = prev_read
    hit = hit_ev[: len(ok_r)] & (rng.random(len(ok_r)) > 0.03)  # plus a few TTL expiries
    r_source = np.full(len(r), -1, dtype="int8")
    r_source[ok_r] = np.where(hit, SRC["hit"], SRC["miss"])
    # The sweep: what Redis holds at the end follows the key's last event.
    last = np.ones(len(ev_order), dtype=bool)
    last[:-1] = ev_key[:-1] != ev_key[1:]
    sweep_source = np.full(keys, SRC["absent"], dtype="int8")
    sweep_version = np.full(keys, NULL, dtype="int64")
    last_key, last_write = ev_key[last], ev_is_write[last]
    sweep_source[last_key[~last_write]] = SRC["entry"]
    sweep_version[last_key[~last_write]] = db_version[last_key[~last_write]]
    sweep_source[last_key[last_write]] = np.where(
        rng.random(int(last_write.sum())) < 0.5, SRC["tombstone"], SRC["absent"]
    )

    miss = r_source == SRC["miss"]
    r_dur = np.where(
        miss,
        _lognormal(rng, 2500 * NS_US, 0.5, len(r)),
        _lognormal(rng, 400 * NS_US, 0.5, len(r)),
    )
    r_dur = np.minimum(np.maximum(r_dur, 100 * NS_US), np.maximum(cap[r], 100 * NS_US))
    r_tc = r_ti + r_dur
    rows.add(
        process=pid[r],
        f="read",
        key=r_key,
        status=status[r],
        t_invoke=r_ti,
        t_complete=r_tc,
        version=r_version,
        source=r_source,
    )
    # A miss fills the cache, on the read's own path (inside its interval).
    m = np.flatnonzero(miss)
    rows.add(
        process=pid[r[m]],
        f="fill",
        key=r_key[m],
        status=np.where(rng.random(len(m)) < 0.02, FAIL, OK),
        t_invoke=r_ti[m] + (r_dur[m] * 0.6).astype("int64"),
        t_complete=r_ti[m] + (r_dur[m] * 0.9).astype("int64"),
        version=r_version[m],
    )
    rows.add(
        process=pid[w],
        f="write",
        key=w_key,
        status=status[w],
        t_invoke=w_ti,
        t_complete=w_tc,
        version=w_version,
    )

    # ---- stampede: invalidations and db loads on entity keys -------------------------------------
    inv = slots("invalidate")
    inv_dur = np.minimum(_lognormal(rng, 300 * NS_US, 0.3, len(inv)), cap[inv])
    rows.add(
        process=pid[inv],
        f="invalidate",
        key=_zipf_keys(rng, keys, len(inv)),
        status=OK,
        t_invoke=t_slot[inv],
        t_complete=t_slot[inv] + inv_dur,
        source=SRC["invalidate"],
    )
    dbl = slots("db_load")
    dbl_key = _zipf_keys(rng, keys, len(dbl))
    dbl_ti = t_slot[dbl]
    dbl_dur = np.maximum(np.minimum(_lognormal(rng, 15 * NS_MS, 0.4, len(dbl)), cap[dbl]), 100 * NS_US)
    rows.add(
        process=pid[dbl],
        f="db_load",
        key=dbl_key,
        status=OK,
        t_invoke=dbl_ti,
        t_complete=dbl_ti + dbl_dur,
        version=commits.count_before(dbl_key, dbl_ti + 50 * NS_US, strict=False),
        source=SRC["none"],
    )
    ib = slots("invalidate_batch")
    ib_dur = np.minimum(_lognormal(rng, 4 * NS_MS, 0.4, len(ib)), cap[ib])
    rows.add(
        process=pid[ib],
        f="invalidate_batch",
        key=-1,
        status=OK,
        t_invoke=t_slot[ib],
        t_complete=t_slot[ib] + ib_dur,
        value=100,
    )

    # ---- WebSocket listeners: every ok write, to every listener ----------------------------------
    ws_open_t = T0 - 3 * NS_S
    last_complete = ws_close_t - 2 * NS_S
    n_ok = int(w_ok.sum())
    for listener in range(LISTENERS if shard == 0 else 0):
        rows.add(
            process=1 + listener,
            f="ws_open",
            key=-1,
            status=OK,
            t_invoke=np.array([ws_open_t]),
            t_complete=ws_open_t + 5 * NS_MS,
        )
        rows.add(
            process=1 + listener,
            f="ws_close",
            key=-1,
            status=OK,
            t_invoke=np.array([ws_close_t]),
            t_complete=ws_close_t + NS_MS,
        )

    # ---- counters ------------------------------------------------------------------------------
    c_base = keys
    inc = slots("incr")
    inc_key = c_base + rng.integers(0, COUNTERS, len(inc))
    inc_ti = t_slot[inc]
    inc_dur = np.maximum(np.minimum(_lognormal(rng, 500 * NS_US, 0.4, len(inc)), cap[inc]), 100 * NS_US)
    inc_tc = inc_ti + inc_dur
    inc_commit = inc_ti + inc_dur // 2
    inc_value = rng.integers(1, 4, len(inc))
    inc_ok = status[inc] == OK
    rows.add(
        process=pid[inc],
        f="incr",
        key=inc_key,
        status=status[inc],
        t_invoke=inc_ti,
        t_complete=inc_tc,
        value=inc_value,
        source=SRC["atomic"],
    )
    cr = slots("counter_read")
    cr_key = np.concatenate([c_base + rng.integers(0, COUNTERS, len(cr)), c_base + np.arange(COUNTERS)])
    cr_ti = np.concatenate([t_slot[cr], np.full(COUNTERS, last_complete + NS_S)])
    cr_tc = cr_ti + np.maximum(
        np.minimum(_lognormal(rng, 400 * NS_US, 0.4, len(cr_ti)), 1 * NS_MS), 100 * NS_US
    )
    cr_pid = np.concatenate([pid[cr], np.zeros(COUNTERS, dtype="int64")])  # final reads by the run
    applied = _Timeline(inc_key[inc_ok], inc_commit[inc_ok], inc_value[inc_ok])
    cr_value = applied.sum_before(cr_key, cr_ti + 50 * NS_US, strict=False)
    completed = _Timeline(inc_key[inc_ok], inc_tc[inc_ok], inc_value[inc_ok])
    lower = completed.sum_before(cr_key, cr_ti, strict=True)

    # ---- transactions --------------------------------------------------------------------------
    g_base = keys + COUNTERS
    tx = slots("tx_transfer")
    tx_dur = np.maximum(np.minimum(_lognormal(rng, 2 * NS_MS, 0.4, len(tx)), cap[tx]), 100 * NS_US)
    rows.add(
        process=pid[tx],
        f="tx_transfer",
        key=g_base + rng.integers(0, GROUPS, len(tx)),
        status=status[tx],
        t_invoke=t_slot[tx],
        t_complete=t_slot[tx] + tx_dur,
        value=rng.integers(1, 100, len(tx)),
        source=SRC["atomic"],
    )
    txr = slots("tx_read")
    txr_dur = np.maximum(np.minimum(_lognormal(rng, 600 * NS_US, 0.4, len(txr)), cap[txr]), 100 * NS_US)
    txr_value = np.zeros(len(txr), dtype="int64")

    # ---- locks: acquire, guarded write, release per session --------------------------------------
    l_base = g_base + GROUPS
    ls = slots("lock")
    ls_key = l_base + rng.integers(0, LOCKS, len(ls))
    span = np.clip(cap[ls], 1 * NS_MS, 20 * NS_MS)  # session length
    a_ti = t_slot[ls]
    a_tc = a_ti + span // 10
    g_ti, g_tc = a_ti + span * 2 // 10, a_ti + span * 6 // 10
    rel_ti, rel_tc = a_ti + span * 7 // 10, a_ti + span * 8 // 10
    order = np.lexsort((a_ti, ls_key))
    sk, start, end = ls_key[order], a_ti[order], rel_tc[order]
    group_first = np.ones(len(order), dtype=bool)
    group_first[1:] = sk[1:] != sk[:-1]
    # Running max of session ends per lock: each lock's ends are lifted above every earlier lock's
    # (by lock index times the whole span of times), so one running max keeps the groups apart.
    t_min = int(min(start.min(initial=T0), end.min(initial=T0)))
    lift = int(end.max(initial=T0)) - t_min + 1
    if LOCKS * lift >= 1 << 62:
        raise ValueError("history too long for the lock sessions' running max")
    running = np.maximum.accumulate((sk - l_base) * lift + (end - t_min))
    before = np.empty(len(order), dtype="int64")
    before[0] = -1
    before[1:] = running[:-1]
    ok_sorted_s = group_first | ((sk - l_base) * lift + (start - t_min) > before)
    held = np.cumsum(ok_sorted_s)
    token_sorted = held - np.maximum.accumulate(np.where(group_first, held - ok_sorted_s, 0))
    ls_ok = np.zeros(len(ls), dtype=bool)
    ls_ok[order] = ok_sorted_s
    token = np.zeros(len(ls), dtype="int64")
    token[order] = token_sorted
    rows.add(
        process=pid[ls],
        f="lock_acquire",
        key=ls_key,
        status=np.where(ls_ok, OK, FAIL),
        t_invoke=a_ti,
        t_complete=a_tc,
        value=np.where(ls_ok, token, NULL),
        source=SRC["locked"],
    )
    k = ls_ok
    rows.add(
        process=pid[ls][k],
        f="guarded_write",
        key=ls_key[k],
        status=OK,
        t_invoke=g_ti[k],
        t_complete=g_tc[k],
        value=token[k],
        source=SRC["locked"],
    )
    rows.add(
        process=pid[ls][k],
        f="lock_release",
        key=ls_key[k],
        status=OK,
        t_invoke=rel_ti[k],
        t_complete=rel_tc[k],
        value=token[k],
        source=SRC["locked"],
    )

    # ---- planted anomalies ---------------------------------------------------------------------
    planted: dict[str, int] = {}
    next_pid = int(pid.max(initial=first_pid)) + 1
    a = anomalies

    def fresh(n: int) -> np.ndarray:
        nonlocal next_pid
        out = np.arange(next_pid, next_pid + n, dtype="int64")
        next_pid += n
        return out

    okw_key, okw_tc, okw_commit = w_key[w_ok], w_tc[w_ok], w_commit[w_ok]
    # Stale: a read invoked after write v completed, returning v - 1.
    s = _pick(rng, np.flatnonzero(ok_version >= 1), a)
    planted["stale_read"] = len(s)
    rows.add(
        process=fresh(len(s)),
        f="read",
        key=okw_key[s],
        status=OK,
        t_invoke=okw_tc[s] + 100 * NS_US,
        t_complete=okw_tc[s] + 400 * NS_US,
        version=ok_version[s] - 1,
        source=SRC["hit"],
    )
    # Future: a version above every write of the key, ever.
    fk = _zipf_keys(rng, keys, a)
    all_writes = np.bincount(w_key, minlength=keys)
    ft = rng.integers(T0, T0 + duration, a)
    planted["future_read"] = a
    rows.add(
        process=fresh(a),
        f="read",
        key=fk,
        status=OK,
        t_invoke=ft,
        t_complete=ft + 300 * NS_US,
        version=all_writes[fk] + 1,
        source=SRC["hit"],
    )
    # Monotonic: a process reads v just after write v committed, then v - 1, both before write v
    # completed and before the key's next commit (so neither read is stale).
    next_of = commits.next_time()
    room = np.minimum(okw_tc, next_of) - okw_commit
    mono = _pick(rng, np.flatnonzero((ok_version >= 1) & (room > 300 * NS_US)), a)
    planted["monotonic_read"] = len(mono)
    mono_pid = fresh(len(mono))
    c0 = okw_commit[mono]
    for lo, hi, dv in ((20, 80, 0), (120, 200, 1)):
        rows.add(
            process=mono_pid,
            f="read",
            key=okw_key[mono],
            status=OK,
            t_invoke=c0 + lo * NS_US,
            t_complete=c0 + hi * NS_US,
            version=ok_version[mono] - dv,
            source=SRC["hit"],
        )
    # WebSocket: drop (listener, write) receipts of writes well inside the connection.
    inside = np.flatnonzero((okw_tc > ws_open_t + 3 * NS_S) & (okw_tc < ws_close_t - 3 * NS_S))
    pairs = _pick(rng, (inside[:, None] * LISTENERS + np.arange(LISTENERS)).ravel(), a)
    planted["ws_delivery"] = len(pairs)
    for listener in range(LISTENERS):
        keep = np.ones(n_ok, dtype=bool)
        keep[pairs[pairs % LISTENERS == listener] // LISTENERS] = False
        recv_t = okw_commit[keep] + 100 * NS_US + _lognormal(rng, NS_MS, 0.5, int(keep.sum()))
        rows.add(
            process=1 + listener,
            f="ws_recv",
            key=okw_key[keep],
            status=OK,
            t_invoke=recv_t,
            t_complete=recv_t,
            version=ok_version[keep],
            value=okw_commit[keep],
        )
    # Divergence: a cached entry one version behind PostgreSQL.
    div = _pick(rng, np.flatnonzero(db_version >= 1), a)
    planted["divergence"] = len(div)
    sweep_source[div] = SRC["entry"]
    sweep_version[div] = db_version[div] - 1
    sweep_t = ws_close_t + NS_S
    rows.add(
        process=0,
        f="sweep",
        key=np.arange(keys),
        status=OK,
        t_invoke=np.full(keys, sweep_t),
        t_complete=sweep_t + NS_MS,
        version=sweep_version,
        value=db_version,
        source=sweep_source,
    )
    # Counter: a read below what had certainly been applied (a lost update).
    lost = _pick(rng, np.flatnonzero(lower >= 1), a)
    planted["counter"] = len(lost)
    cr_value[lost] = lower[lost] - 1
    rows.add(
        process=cr_pid,
        f="counter_read",
        key=cr_key,
        status=OK,
        t_invoke=cr_ti,
        t_complete=cr_tc,
        value=cr_value,
    )
    # Transactions: a group read whose sum is not 0.
    bad_tx = _pick(rng, np.arange(len(txr)), a)
    planted["tx_atomicity"] = len(bad_tx)
    txr_value[bad_tx] = rng.integers(1, 50, len(bad_tx)) * rng.choice([-1, 1], len(bad_tx))
    rows.add(
        process=pid[txr],
        f="tx_read",
        key=g_base + rng.integers(0, GROUPS, len(txr)),
        status=OK,
        t_invoke=t_slot[txr],
        t_complete=t_slot[txr] + txr_dur,
        value=txr_value,
    )
    # Locks: an intruder acquires a held lock (another token) inside the holder's interval.
    victims = _pick(rng, np.flatnonzero(ls_ok), a)
    planted["lock_safety"] = len(victims)
    h0, h1 = a_tc[victims], rel_ti[victims]
    intruder = fresh(len(victims))
    intruder_token = 1_000_000_000 + np.arange(len(victims))
    for f, lo, hi in (("lock_acquire", 1, 2), ("lock_release", 6, 7)):
        rows.add(
            process=intruder,
            f=f,
            key=ls_key[victims],
            status=OK,
            t_invoke=h0 + (h1 - h0) * lo // 10,
            t_complete=h0 + (h1 - h0) * hi // 10,
            value=intruder_token,
            source=SRC["locked"],
        )

    # ---- Redis INFO samples, once a second --------------------------------------------------------
    # Shard 0 samples for the whole run: its figures scaled by the shards (figures only, no check).
    sampled = np.arange(T0, last_complete, NS_S, dtype="int64") if shard == 0 else np.zeros(0, "int64")
    n_hits = int(hit.sum()) * shards
    progress = (sampled - T0) / max(duration, 1)
    stat_values = (
        np.zeros(len(sampled), dtype="int64"),
        (progress * n_hits).astype("int64"),
        (progress * (len(ok_r) * shards - n_hits)).astype("int64"),
        (50_000_000 + 100 * np.minimum(np.arange(len(sampled)), keys * shards)).astype("int64"),
    )
    s_base = l_base + LOCKS
    for i, values in enumerate(stat_values):
        rows.add(
            process=0,
            f="redis_stat",
            key=s_base + i,
            status=OK,
            t_invoke=sampled,
            t_complete=sampled + 200 * NS_US,
            value=values,
        )

    columns = rows.concat()
    key_names = (
        [f"cs:e:{key_offset + i}" for i in range(keys)]
        + [f"cs:c:{shard * COUNTERS + i}" for i in range(COUNTERS)]
        + [f"cs:g:{shard * GROUPS + i}" for i in range(GROUPS)]
        + [f"cs:l:{shard * LOCKS + i}" for i in range(LOCKS)]
        + list(STATS)
    )
    facts = {
        "key_names": key_names,
        "started_ns": T0,
        "stopped_ns": int(sweep_t + NS_MS),
        "planted": planted,
        "next_pid": next_pid,
    }
    return columns, facts


def _strings(codes: np.ndarray, names: list[str] | tuple[str, ...]) -> pa.Array:
    """Codes into ``names`` (-1 for null) as a plain string array."""
    indices = pa.array(codes.astype("int32"), mask=codes < 0)
    return pa.DictionaryArray.from_arrays(indices, pa.array(list(names), pa.string())).cast(pa.string())


def write_parts(
    history: Path, columns: dict[str, np.ndarray], key_names: list[str], first_part: int
) -> np.ndarray:
    """One shard's rows as Parquet parts (in completion order, as a collector would write them),
    numbered from ``first_part``; returns the rows per node."""
    order = np.argsort(columns["t_complete"], kind="stable")
    n = len(order)
    node = np.where(columns["process"] == 0, 0, 1 + columns["process"] % (len(NODES) - 1))
    node_rows = np.bincount(node, minlength=len(NODES))
    for part, lo in enumerate(range(0, n, PART_ROWS), start=first_part):
        idx = order[lo : lo + PART_ROWS]
        version, value = columns["version"][idx], columns["value"][idx]
        table = pa.Table.from_arrays(
            [
                pa.array(columns["process"][idx], pa.int64()),
                _strings(node[idx], NODES),
                _strings(columns["f"][idx], F_NAMES),
                _strings(columns["key"][idx], key_names),
                _strings(columns["status"][idx], STATUSES),
                pa.array(columns["t_invoke"][idx], pa.int64()),
                pa.array(columns["t_complete"][idx], pa.int64()),
                pa.array(version, pa.int64(), mask=version == NULL),
                pa.array(value, pa.int64(), mask=value == NULL),
                _strings(columns["source"][idx], SOURCES),
                pa.nulls(len(idx), pa.int64()),  # t_intended: a closed-model run
            ],
            schema=SCHEMA,
        )
        tmp = history / f".part-{part:05d}.parquet.tmp"
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, history / f"part-{part:05d}.parquet")
    return node_rows


def write_run(
    out_dir: Path, facts: dict[str, Any], meta: dict[str, Any], parts: int, node_rows: np.ndarray
) -> int:
    """``run.json`` of the synthetic run; returns its row count."""
    n = int(node_rows.sum())
    run = {
        "schema_version": 2,
        "run_id": f"synthetic-{meta['ops']}-{meta['keys']}-seed{meta['seed']}",
        "started_ns": facts["started_ns"],
        "stopped_ns": facts["stopped_ns"],
        "options": {
            "scenario": "synthetic",
            "strategy": "versioned",
            "keys": meta["keys"],
            "lock_ttl_ms": 1000,
            "stampede_guard": "none",
            "synthetic": meta,
        },
        "clock_uncertainty_ns": 0,
        "nodes": {
            name: {
                "batches": parts,
                "rows": int(node_rows[i]),
                "missing_batches": [],
                "clock_offset_ns": 0,
                "clock_uncertainty_ns": 0,
            }
            for i, name in enumerate(NODES)
        },
        "history_complete": True,
        "rows": n,
    }
    (out_dir / "run.json").write_text(json.dumps(run, indent=2) + "\n", encoding="utf-8")
    return n


#: Operations per shard: a shard is generated whole in memory (about 200 bytes per operation), then
#: written and dropped, so the generator's memory is that of one shard at any length.
SHARD_OPS = 10_000_000


def _split(total: int, shards: int, i: int) -> int:
    return total // shards + (1 if i < total % shards else 0)


def synthesize(
    out_dir: str | Path,
    ops: int,
    keys: int,
    seed: int,
    anomalies: int = 100,
    seconds: float | None = None,
    shard_ops: int = SHARD_OPS,
) -> dict[str, Any]:
    """Generate and write a synthetic results directory; returns what ``planted.json`` holds.

    A run of more than ``shard_ops`` operations is generated in key shards (:func:`generate`), each
    with ``ops`` and ``keys`` shared out, over the run's whole time, and written as it is made.
    """
    out = Path(out_dir)
    history = out / "history"
    history.mkdir(parents=True, exist_ok=True)
    for old in history.glob("*.parquet"):
        old.unlink()
    shards = max(1, -(-ops // shard_ops))
    if keys < shards:
        raise ValueError(f"--keys must be at least the number of shards ({shards})")
    length = seconds if seconds is not None else run_seconds(ops)
    meta: dict[str, Any] = {"ops": ops, "keys": keys, "seed": seed, "anomalies": anomalies}
    if seconds is not None:
        meta["seconds"] = seconds
    planted = dict.fromkeys(ANOMALY_KINDS, 0)
    node_rows = np.zeros(len(NODES), dtype="int64")
    generate_s = write_s = 0.0
    parts, key_offset, first_pid = 0, 0, 1 + LISTENERS
    facts: dict[str, Any] = {}
    for shard in range(shards):
        started = time.perf_counter()
        shard_keys = _split(keys, shards, shard)
        columns, facts = generate(
            _split(ops, shards, shard),
            shard_keys,
            seed,
            _split(anomalies, shards, shard),
            length,
            shard=shard,
            shards=shards,
            key_offset=key_offset,
            first_pid=first_pid,
        )
        generated = time.perf_counter()
        node_rows += write_parts(history, columns, facts["key_names"], parts)
        parts += -(-len(columns["t_complete"]) // PART_ROWS)
        del columns
        write_s += time.perf_counter() - generated
        generate_s += generated - started
        for kind, n in facts["planted"].items():
            planted[kind] += n
        key_offset += shard_keys
        first_pid = facts["next_pid"]
    rows = write_run(out, facts, meta, parts, node_rows)
    report = {
        **meta,
        "rows": rows,
        "shards": shards,
        "planted": planted,
        "generate_s": round(generate_s, 3),
        "write_s": round(write_s, 3),
    }
    (out / "planted.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a synthetic cachestorm op history (schema v2).")
    parser.add_argument("out_dir")
    parser.add_argument("--ops", type=int, default=10_000_000, help="approximate number of rows")
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--anomalies", type=int, default=100, help="planted anomalies of each kind")
    parser.add_argument("--seconds", type=float, default=None, help="run length (default 1800 s per 10M ops)")
    args = parser.parse_args(argv)
    report = synthesize(args.out_dir, args.ops, args.keys, args.seed, args.anomalies, args.seconds)
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
