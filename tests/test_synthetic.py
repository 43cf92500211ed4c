"""The synthetic history generator (bench/synthetic.py): schema, determinism, planted anomalies found."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from analysis import load_history, load_run, run_checks
from cachestorm.history import SCHEMA

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.synthetic import ANOMALY_KINDS, synthesize  # noqa: E402


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("syn") / "run"
    return out, synthesize(out, ops=100_000, keys=2_000, seed=7, anomalies=25)


def test_schema_is_exactly_the_recorders(small: tuple[Path, dict]) -> None:
    out, report = small
    parts = sorted((out / "history").glob("part-*.parquet"))
    assert parts
    for part in parts:
        assert pq.read_schema(part).remove_metadata().equals(SCHEMA)
    run = json.loads((out / "run.json").read_text())
    assert run["schema_version"] == 2 and run["history_complete"] is True
    assert run["rows"] == report["rows"] == sum(pq.ParquetFile(p).metadata.num_rows for p in parts)
    assert sum(node["rows"] for node in run["nodes"].values()) == run["rows"]
    assert 90_000 < run["rows"] < 110_000
    assert json.loads((out / "planted.json").read_text())["planted"] == report["planted"]


def test_deterministic_per_seed(tmp_path: Path, small: tuple[Path, dict]) -> None:
    out, _ = small
    again = synthesize(tmp_path / "again", ops=100_000, keys=2_000, seed=7, anomalies=25)
    other = synthesize(tmp_path / "other", ops=100_000, keys=2_000, seed=8, anomalies=25)
    first = load_history(out)
    assert first.equals(load_history(tmp_path / "again"))
    assert again["rows"] == len(first)
    assert not first.equals(load_history(tmp_path / "other")) or other["rows"] != len(first)


def test_planted_anomalies_found_exactly(small: tuple[Path, dict]) -> None:
    out, report = small
    assert set(report["planted"]) == set(ANOMALY_KINDS)
    assert all(n == 25 for n in report["planted"].values())
    verdict = run_checks(load_history(out), load_run(out))
    for kind, n in report["planted"].items():
        assert verdict.check(kind).violations == n, kind
    # Nothing else fails: the unplanted history is coherent.
    assert set(verdict.failed) == set(ANOMALY_KINDS)
    assert not any(verdict.check(c).skipped for c in ("ws_delivery", "stampede", "eviction", "latency"))


def test_clean_history_passes(tmp_path: Path) -> None:
    synthesize(tmp_path, ops=50_000, keys=1_000, seed=3, anomalies=0)
    verdict = run_checks(load_history(tmp_path), load_run(tmp_path))
    assert verdict.passed, verdict.failed


def test_long_history_keeps_every_invariant(tmp_path: Path) -> None:
    """A run of 5 hours, made in 4 shards: four times the 2**42 ns (73 minutes) after which packed
    times used to spill into the next key, restarting its versions. The invariants of
    docs/history.md, checked directly."""
    report = synthesize(
        tmp_path, ops=400_000, keys=800, seed=4, anomalies=0, seconds=5 * 3600, shard_ops=100_000
    )
    assert report["shards"] == 4
    h = load_history(tmp_path)
    assert h["key"].nunique() > 800  # every shard's entity keys, counters, groups and locks
    span = int(h["t_complete"].max() - h["t_invoke"].min())
    assert span > 4 * 2**42
    assert (h["t_complete"] >= h["t_invoke"]).all()
    entity = h["key"].astype(str).str.startswith("cs:e:")

    # Versions of each key's ok writes are 1, 2, 3 ... and grow with time: no version completed
    # before a lower one began.
    w = h[(h["f"] == "write") & (h["status"] == "ok")].sort_values(["key", "version"], kind="stable")
    assert w["version"].notna().all()
    assert (w.groupby("key", observed=True).cumcount() + 1 == w["version"]).all()
    assert w.groupby("key", observed=True).size().max() > 100
    later_min = w.iloc[::-1].groupby("key", observed=True)["t_complete"].cummin().iloc[::-1]
    higher_min = later_min.groupby(w["key"], observed=True).shift(-1)
    assert not (higher_min < w["t_invoke"]).any()

    # Each ok read returns a version at least that of every write completed before it began and at
    # most the number of writes begun before it ended.
    reads = h[(h["f"] == "read") & (h["status"] == "ok") & entity]
    all_writes = h[(h["f"] == "write") & entity]
    checked = 0
    for key, r in reads.groupby("key", observed=True):
        kw = w[w["key"] == key]
        done = np.sort(kw["t_complete"].to_numpy())
        begun = np.sort(all_writes.loc[all_writes["key"] == key, "t_invoke"].to_numpy())
        version = r["version"].to_numpy(dtype="int64")
        assert (version >= np.searchsorted(done, r["t_invoke"].to_numpy(), side="left")).all(), key
        assert (version <= np.searchsorted(begun, r["t_complete"].to_numpy(), side="left")).all(), key
        checked += len(r)
    assert checked > 50_000

    # A user's operations follow one another (a fill runs on its read's path, inside it).
    users = h[(h["process"] > 2) & (h["f"] != "fill")].sort_values(["process", "t_invoke"], kind="stable")
    same = users["process"].to_numpy()[1:] == users["process"].to_numpy()[:-1]
    gap = users["t_invoke"].to_numpy()[1:] - users["t_complete"].to_numpy()[:-1]
    assert (gap[same] >= 0).all()
    # Reads of one process and key never go back.
    by_user = reads.sort_values(["process", "key", "t_invoke"], kind="stable")
    step = by_user.groupby(["process", "key"], observed=True)["version"].diff()
    assert not (step < 0).any()

    verdict = run_checks(h, load_run(tmp_path))
    assert verdict.passed, verdict.failed


def test_planted_anomalies_found_exactly_across_shards(tmp_path: Path) -> None:
    report = synthesize(tmp_path, ops=160_000, keys=3_000, seed=9, anomalies=10, shard_ops=40_000)
    assert report["shards"] == 4
    assert all(n == 10 for n in report["planted"].values()), report["planted"]
    verdict = run_checks(load_history(tmp_path), load_run(tmp_path))
    for kind, n in report["planted"].items():
        assert verdict.check(kind).violations == n, kind
    assert set(verdict.failed) == set(ANOMALY_KINDS)
