"""The live coherence view on real runs: what it shows equals the analysis on the same rows.

Each run is the contention locustfile (fast readers and writers on few keys) with its web UI,
watched through /coherence, /stats/requests and /metrics while it goes. Cache-aside with a fill
delay is the positive control (stale reads); the versioned strategy under the same load must
show none. Then, for every snapshot the view showed mid-run, the same checks are run on the final
history's rows completed up to that snapshot's watermark: the figures must be equal, which shows
that the watermark held back every row still on its way. The view's final snapshot must equal the
post-run analysis.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from analysis.kernels import sharing
from analysis.live import LIVE_CHECKS, SHOWN
from analysis.load import load_history
from analysis.options import Options
from analysis.registry import BY_NAME, Context
from cachestorm.services import ServiceURLs
from tests.conftest import run_analysis
from tests.live_runs import Watched, coherence_failures, run_dir, watch_run
from tests.test_dashboards import DASHBOARD, queries, selectors

pytestmark = pytest.mark.integration

CONTENTION = "tests/locustfiles/contention.py"


def contention_args(strategy: str, *extra: str) -> list[str]:
    args = f"-f {CONTENTION} --ramp-users 30 --ramp-time 0 --hold-time 8 --quiesce-time 1"
    args += f" --keys 40 --strategy {strategy} --fill-delay-ms 50 --listeners 2"
    return [*args.split(), *extra]


def urls(s: ServiceURLs) -> list[str]:
    return ["--redis-url", s.redis_url, "--pg-dsn", s.pg_dsn, "--ws-url", s.ws_url]


def same_rows(history: Any, snap: dict[str, Any]) -> dict[str, tuple[int, Any]]:
    """The live checks on the rows of ``history`` completed up to the snapshot's watermark."""
    rows = history.loc[history["t_complete"] <= snap["watermark_ns"]].reset_index(drop=True)
    options = Options.resolve({"clock_uncertainty_ns": snap["tolerance_ns"]})
    out: dict[str, tuple[int, Any]] = {"rows": (len(rows), None)}
    with sharing(rows) as h:
        for name in LIVE_CHECKS:
            r = BY_NAME[name].call(Context(h, None, options, len(h)))
            out[name] = (int(r.violations), r.to_dict().get(SHOWN[name][0]))
    return out


def assert_live_equals_analysis(w: Watched, results: Path) -> dict[str, Any]:
    """Every mid-run snapshot equals the checks on the same rows; the last equals summary.json:
    the run-end analysis's when it ran (the view takes its figures), else one run now."""
    directory = run_dir(results)
    history = load_history(directory)
    mid = w.running()
    assert len(mid) >= 3, w.log[-3000:]
    for snap in mid:
        expected = same_rows(history, snap)
        assert snap["rows_judged"] == expected["rows"][0], snap["watermark_ns"]
        for name in LIVE_CHECKS:
            shown = snap["checks"][name]
            if shown["judged"]:
                assert (shown["violations"], shown["checked"]) == expected[name], (name, snap["watermark_ns"])
            else:  # not run on this window: it would have found nothing
                assert expected[name][0] == 0, (name, snap["watermark_ns"])
        assert all(snap["checks"][n]["judged"] for n in ("stale_read", "future_read", "monotonic_read"))
        assert snap["checks"]["ws_delivery"]["judged"]
    final = w.last()
    assert final["state"] == "finished", w.log[-3000:]
    if not (directory / "summary.json").exists():  # --end-analysis off: the view judged its rows
        assert final["verdict_reason"].startswith("every row, judged by the live view")
        assert run_analysis(directory, "--thresholds", "none").returncode in (0, 1, 3)
    summary = json.loads((directory / "summary.json").read_text())
    for name, shown in final["checks"].items():
        post = summary["checks"][name]
        assert (shown["outcome"], shown["violations"]) == (post["outcome"], post["violations"]), name
    assert final["verdict"] == summary["verdict"]
    return summary


def metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise AssertionError(f"/metrics has no {name}{labels}")


def test_cache_aside_shows_its_stale_reads_live_and_as_locust_failures(
    services: ServiceURLs, tmp_path: Path
) -> None:
    w = watch_run([*contention_args("cache-aside", "--exit-code-on-error", "7"), *urls(services)], tmp_path)
    summary = assert_live_equals_analysis(w, tmp_path)
    assert summary["checks"]["stale_read"]["violations"] > 0
    # Seen while the run went, not only at its end.
    assert any(s["checks"]["stale_read"]["violations"] > 0 for s in w.running()), w.log[-2000:]
    assert any(s["verdict"] == "fail" for s in w.running())
    # Locust's own statistics count them: the COHERENCE entries, the failure ratio, the exit code.
    failures = coherence_failures(w.stats)
    assert failures["stale_read"] == w.last()["checks"]["stale_read"]["violations"]
    assert w.stats["fail_ratio"] > 0
    assert any(e["method"] == "COHERENCE" and e["name"] == "stale_read" for e in w.stats["errors"])
    assert w.code == 7
    # /metrics holds the same figures, in Prometheus's text format.
    assert metric(w.metrics, "cachestorm_live_violations", check="stale_read") == failures["stale_read"]
    assert metric(w.metrics, "cachestorm_live_verdict") == 1
    assert metric(w.metrics, "cachestorm_live_check_outcome", check="stale_read") == 1
    # Every figure the Grafana dashboard reads of the coherence checks is in a real run's /metrics.
    dashboard = json.loads(DASHBOARD.read_text())
    for name, labels in (s for q in queries(dashboard) for s in selectors(q)):
        if labels.get("check") in ("stale_read", "future_read", "monotonic_read", "ws_delivery"):
            metric(w.metrics, name, **labels)
    # The tab's rows ride on /stats/requests, as Locust's UI polls it.
    rows = next(e["data"] for e in w.stats["extended_stats"] if e["key"] == "coherence")
    stale = next(r for r in rows if r["check"] == "stale_read")
    assert stale["outcome"] == "FAIL" and int(stale["violations"]) > 0


def test_versioned_shows_no_violation_and_no_failure(services: ServiceURLs, tmp_path: Path) -> None:
    # With no analysis at the run's end, the view's final figures are its own checks on every row.
    w = watch_run([*contention_args("versioned", "--end-analysis", "off"), *urls(services)], tmp_path)
    summary = assert_live_equals_analysis(w, tmp_path)
    assert summary["verdict"] == "pass"
    assert all(s["verdict"] != "fail" for s in w.snapshots)
    assert w.running()[-1]["checks"]["stale_read"]["checked"] > 500
    assert w.last()["verdict"] == "pass"
    assert coherence_failures(w.stats) == {}
    assert w.stats["fail_ratio"] == 0
    assert w.code == 0
    assert metric(w.metrics, "cachestorm_live_verdict") == 0


def test_two_workers_are_aggregated(tmp_path: Path) -> None:
    w = watch_run(contention_args("cache-aside", "--processes", "2", "--exit-code-on-error", "0"), tmp_path)
    assert_live_equals_analysis(w, tmp_path)
    workers = [n for n in w.last()["nodes"] if n != "master"]
    assert len(workers) == 2, w.last()["nodes"]
    # Both workers' rows were judged mid-run: the watermark waits for the slower one.
    run = json.loads((run_dir(tmp_path) / "run.json").read_text())
    assert w.last()["rows_seen"] == run["rows"]
    # Logged once, on the master: the workers' reports add to its statistics and never repeat them.
    failures = coherence_failures(w.stats)
    assert failures.get("stale_read", 0) == w.last()["checks"]["stale_read"]["violations"] > 0
    assert w.code == 0
