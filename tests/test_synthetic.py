"""The synthetic history generator (bench/synthetic.py): schema, determinism, planted anomalies found."""

from __future__ import annotations

import json
import sys
from pathlib import Path

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
