"""The nemesis: its schedules, its rows, and the fault matrix on real runs.

The matrix runs each fault against the contention load twice, on embedded services the run starts
itself (the nemesis faults nothing else): with the versioned strategy no coherence check may fail
(the fault must not make the judge see violations that are not there), and with cache-aside and a
fill delay the stale-set race must still be found under the same fault (the judge is not blinded
by it). Availability is not judged here: the success-rate threshold is off (``--thresholds none``),
since failing operations is what a fault does. docs/reliability.md holds the figures.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from analysis.report import fault_windows
from cachestorm.nemesis import FAULTS, Fault, parse_schedule
from cachestorm.netfaults import NET_FAULTS
from cachestorm.services import ServiceURLs
from tests.conftest import run_locust
from tests.faults import COHERENCE, judged, print_figures

CONTENTION = "tests/locustfiles/contention.py"
# When each fault strikes: after the warm-up, and healed well inside the 10 s hold.
AT = {"redis-kill": "3s", "redis-pause": "2s:6s", "pg-restart": "3s", "notifier-kill": "3s"}


def test_a_fixed_schedule_is_parsed_with_default_and_given_durations() -> None:
    s = parse_schedule("redis-kill@5s,redis-pause@12s:6s,pg-restart@20s,notifier-kill@500ms:2s")
    assert list(s.plan(None)) == [
        Fault("notifier-kill", 0.5, 2.0),
        Fault("redis-kill", 5.0, FAULTS["redis-kill"]),
        Fault("redis-pause", 12.0, 6.0),
        Fault("pg-restart", 20.0, FAULTS["pg-restart"]),
    ]


def test_a_random_schedule_is_replayed_by_its_seed() -> None:
    def first(seed: int) -> list[Fault]:
        plan = parse_schedule("random:8s").plan(seed)
        return [next(plan) for _ in range(12)]

    assert first(7) == first(7)
    assert [f.at_s for f in first(7)] == [8.0 * n for n in range(1, 13)]
    assert {f.name for f in first(7)} <= set(FAULTS)
    assert first(7) != first(8)


def test_a_random_schedule_draws_network_faults_only_when_it_has_a_namespace() -> None:
    def names(network: bool) -> set[str]:
        plan = parse_schedule("random:1s").plan(3, network=network)
        return {next(plan).name for _ in range(200)}

    assert names(False) == set(FAULTS) - set(NET_FAULTS)
    assert names(True) == set(FAULTS)


@pytest.mark.parametrize("spec", ["redis-explode@1s", "redis-kill", "redis-kill@soon", "random:0s", ""])
def test_a_bad_schedule_is_refused(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_schedule(spec)


def test_fault_windows_pair_each_start_with_its_end() -> None:
    s = 1_000_000_000
    rows = [
        ("nemesis", "redis-kill", "start", 2 * s, 2 * s + 1),
        ("read", "cs:e:1", "hit", 3 * s, 3 * s + 5),
        ("nemesis", "redis-kill", "end", 3 * s, 4 * s),
        ("nemesis", "pg-restart", "start", 6 * s, 6 * s),  # never healed: open to the end
        ("read", "cs:e:1", "hit", 9 * s, 10 * s),
    ]
    history = pd.DataFrame(rows, columns=["f", "key", "source", "t_invoke", "t_complete"])
    history["f"] = history["f"].astype("category")
    assert fault_windows(history, s) == [("redis-kill", 1.0, 3.0), ("pg-restart", 5.0, 9.0)]


def test_the_nemesis_refuses_services_given_by_url(services: ServiceURLs, tmp_path: Path) -> None:
    urls = ["--redis-url", services.redis_url, "--pg-dsn", services.pg_dsn, "--ws-url", services.ws_url]
    args = ["-f", CONTENTION, "--headless", "-t", "3s", "--nemesis", "redis-kill@1s", *urls]
    out = run_locust([*args, "--results-dir", str(tmp_path)], timeout=60)
    assert out.returncode == 2
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("cachestorm:")]
    assert len(lines) == 1 and "someone else's Redis" in lines[0], out.stderr[-2000:]
    assert "Traceback" not in out.stderr


def faulted_run(results: Path, fault: str, strategy: str) -> dict[str, Any]:
    """A short contention run under one fault; the analysis's summary, with the history's figures."""
    run_id = f"{fault}-{strategy}"
    args = f"-f {CONTENTION} --headless --only-summary --ramp-users 20 --ramp-time 0 --hold-time 10"
    args += f" --quiesce-time 2 --keys 40 --strategy {strategy} --fill-delay-ms 50 --listeners 2"
    args += f" --nemesis {fault}@{AT[fault]} --seed 1 --exit-code-on-error 0"
    # Failed requests are what a fault makes: Locust's own exit code is not the judge here.
    out = run_locust([*args.split(), "--results-dir", str(results), "--run-id", run_id], timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    summary, _ = judged(results / run_id)
    print_figures(run_id, summary)
    return summary


@pytest.mark.integration
@pytest.mark.parametrize("fault", sorted(set(FAULTS) - set(NET_FAULTS)))
def test_the_fault_matrix(fault: str, tmp_path: Path) -> None:
    # Both runs at once: each has embedded services of its own, which only its nemesis faults, and
    # neither judgement depends on speed (latency is not judged here). It halves the matrix's time.
    with ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(faulted_run, tmp_path, fault, s) for s in ("versioned", "cache-aside")]
        safe, unsafe = (run.result() for run in runs)
    # The fault happened and was healed, and it is in the history.
    assert safe["fault_rows"] == [(fault, "end", "ok"), (fault, "start", "ok")]
    for name in COHERENCE:
        assert safe["checks"][name]["outcome"] == "pass", (name, safe["checks"][name].get("examples"))
    assert safe["checks"]["ws_delivery"]["outcome"] != "fail", safe["checks"]["ws_delivery"]
    assert safe["exit_code"] in (0, 3)
    assert safe["rows"] > 1000

    assert unsafe["fault_rows"] == [(fault, "end", "ok"), (fault, "start", "ok")]
    assert unsafe["exit_code"] == 1
    assert unsafe["checks"]["stale_read"]["violations"] + unsafe["checks"]["divergence"]["violations"] > 0
