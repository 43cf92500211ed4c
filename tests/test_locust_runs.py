"""Whole Locust runs on real services, judged by the analysis.

The contention locustfile puts fast readers and writers on 60 keys. With cache-aside and a fill
delay the stale-set race must show as stale reads and divergence (the positive control); the
versioned strategy under the same load and delay must show none.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import pytest

from cachestorm.services import ServiceURLs
from tests.conftest import ROOT, run_analysis, run_locust

pytestmark = pytest.mark.integration

CONTENTION = "tests/locustfiles/contention.py"


def urls(s: ServiceURLs) -> list[str]:
    return ["--redis-url", s.redis_url, "--pg-dsn", s.pg_dsn, "--ws-url", s.ws_url]


def contention_run(services: ServiceURLs, results: Path, strategy: str) -> dict[str, Any]:
    # 8 s of 40 users on 60 keys, then 2 s of reads only: a stale entry left when the writes stop
    # stays, and the sweep must find it.
    args = f"-f {CONTENTION} --headless --only-summary --ramp-users 40 --ramp-time 0 --hold-time 8"
    args += f" --quiesce-time 2 --keys 60 --strategy {strategy} --fill-delay-ms 50 --listeners 3"
    out = run_locust([*args.split(), "--results-dir", str(results), "--run-id", strategy, *urls(services)])
    # The live view logs each violation as a Locust failure (COHERENCE <check>): exit-code-on-error.
    assert out.returncode == (1 if strategy == "cache-aside" else 0), out.stderr[-3000:]
    verdict = run_analysis(results / strategy)
    summary = json.loads((results / strategy / "summary.json").read_text())
    summary["exit_code"] = verdict.returncode
    return summary


def test_cache_aside_with_a_fill_delay_is_flagged(services: ServiceURLs, tmp_path: Path) -> None:
    s = contention_run(services, tmp_path, "cache-aside")
    assert s["exit_code"] == 1
    assert s["passed"] is False
    assert s["checks"]["stale_read"]["violations"] > 0
    assert s["checks"]["divergence"]["violations"] > 0
    # The probes see it too: some writes were still shadowed by an older entry 100 ms later.
    nines = s["nines"]
    assert nines["method"] == "probe"
    assert nines["writes_consistent"]["100ms"]["bad"] > 0


def test_versioned_under_the_same_load_passes(services: ServiceURLs, tmp_path: Path) -> None:
    s = contention_run(services, tmp_path, "versioned")
    checks = s["checks"]
    assert s["exit_code"] == 0, {k: v.get("violations") for k, v in checks.items()}
    for name in (
        "stale_read",
        "future_read",
        "monotonic_read",
        "ws_delivery",
        "divergence",
        "history_complete",
    ):
        assert checks[name]["passed"] is True and checks[name]["violations"] == 0, name
        assert not checks[name].get("skipped"), name
    # The run did contend: many reads, and misses that raced writes.
    assert checks["hit_ratio"]["reads"] > 1000
    assert checks["hit_ratio"]["misses"] > 100
    assert checks["ws_delivery"]["expected"] > 100
    # Every ok write was probed (--probe-rate 1 by default), and no probe found an older entry.
    nines = s["nines"]
    assert nines["method"] == "probe"
    assert nines["probed_writes"] == nines["ok_writes"] > 100
    for m in ("100ms", "1s"):
        assert nines["writes_consistent"][m]["bad"] == 0, m
        assert nines["writes_consistent"][m]["total"] >= 0.9 * nines["ok_writes"], m
    # The node sampled its own CPU about once a second of the run (about 8 s here).
    cpu = checks["generator_cpu"]
    assert not cpu.get("skipped") and cpu["nodes"] == 1
    assert cpu["per_node"]["local"]["samples"] >= 4 and 0 < cpu["max_percent"] <= 400
    # And its host's, at the same moments: percent of all cores, which this process's use is part of.
    assert 0 < cpu["host_max_percent"] <= 100 and cpu["host_saturated_seconds"] >= 0


def announced_ports(log: str) -> set[int]:
    """The ports of the embedded services, from the run's log line that names them."""
    line = next(ln for ln in log.splitlines() if "embedded services:" in ln)
    return {int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", line)}


def listening(ports: set[int]) -> set[int]:
    return {
        c.laddr.port for c in psutil.net_connections("tcp") if c.status == "LISTEN" and c.laddr.port in ports
    }


def test_two_worker_processes_on_embedded_services(tmp_path: Path) -> None:
    args = (
        f"-f {CONTENTION} --headless --only-summary --processes 2 --ramp-users 30 --ramp-time 0 --hold-time 6"
    )
    args += " --quiesce-time 1 --keys 50 --listeners 2 --run-id dist --verdict"
    args += f" --csv {tmp_path / 'dist' / 'locust'}"
    out = run_locust([*args.split(), "--results-dir", str(tmp_path)])
    assert out.returncode == 0, out.stderr[-3000:]
    # The analysis the run ended with (--verdict) saw about all of Locust's final figures, the ones
    # Locust wrote at its exit. Before, a worker's last report came only with the quit, after the
    # analysis: 81-83% of the final count. Some runs still miss about 5.5% (docs/checks.md).
    judged = json.loads((tmp_path / "dist" / "summary.json").read_text())["locust"]["stats"]
    final = pd.read_csv(tmp_path / "dist" / "locust_stats.csv")
    judged_total = next(r["requests"] for r in judged if r["name"] == "Aggregated")
    final_total = int(final.loc[final["Name"] == "Aggregated", "Request Count"].iloc[0])
    assert judged_total >= 0.9 * final_total, (judged_total, final_total)
    run = json.loads((tmp_path / "dist" / "run.json").read_text())
    assert run["history_complete"] is True
    workers = {n: v for n, v in run["nodes"].items() if n != "master"}
    assert len(workers) == 2
    assert all(
        v["rows"] > 100 and v["reported_final_count"] and not v["missing_batches"] for v in workers.values()
    )
    # Every row shipped by a worker is in the Parquet files.
    df = pd.read_parquet(tmp_path / "dist" / "history")
    per_node = (
        df[df.node != "master"].groupby("node", observed=True).size().to_dict()
    )  # the master sweeps, samples INFO
    assert per_node == {n: v["rows"] for n, v in workers.items()}
    assert df.groupby("process").node.nunique().max() == 1  # process ids are unique across nodes
    # Each worker sampled its own CPU; the master runs no users and sends none.
    assert all(v["cpu_percent"]["samples"] >= 3 for v in workers.values())
    assert run_analysis(tmp_path / "dist").returncode == 0
    # The embedded services went away with the run.
    ports = announced_ports(out.stderr)
    assert len(ports) == 3
    assert listening(ports) == set()


def one_line_error(out: Any) -> str:
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("cachestorm:")]
    assert len(lines) == 1, out.stderr[-2000:]
    return lines[0]


@pytest.mark.parametrize(
    ("service", "bad_url", "secret"),
    [
        ("Redis", "redis://:hunter2@127.0.0.1:1/0", "hunter2"),
        ("PostgreSQL", "postgresql://cs:s3cret@127.0.0.1:1/x", "s3cret"),
    ],
)
def test_an_unreachable_service_gets_one_line_with_the_password_hidden(
    service: str, bad_url: str, secret: str, services: ServiceURLs, tmp_path: Path
) -> None:
    given = {"Redis": services.redis_url, "PostgreSQL": services.pg_dsn}
    given[service] = bad_url
    args = f"-f locustfile.py --headless -t 3s --redis-url {given['Redis']} --pg-dsn {given['PostgreSQL']}"
    out = run_locust([*args.split(), "--ws-url", services.ws_url, "--results-dir", str(tmp_path)], timeout=60)
    line = one_line_error(out)
    assert service in line and "127.0.0.1:1" in line
    assert secret not in out.stderr + out.stdout


def test_verdict_makes_the_analysis_locusts_exit_code(services: ServiceURLs, tmp_path: Path) -> None:
    args = f"-f {CONTENTION} --headless --only-summary --ramp-users 30 --ramp-time 0 --hold-time 5"
    args += " --quiesce-time 2 --keys 60 --strategy cache-aside --fill-delay-ms 50 --listeners 1 --verdict"
    out = run_locust([*args.split(), "--results-dir", str(tmp_path), "--run-id", "v", *urls(services)])
    assert out.returncode == 1, out.stderr[-3000:]
    assert json.loads((tmp_path / "v" / "summary.json").read_text())["passed"] is False
    assert "VERDICT: FAIL" in out.stdout


def test_some_urls_but_not_all_is_refused(services: ServiceURLs, tmp_path: Path) -> None:
    out = run_locust(
        [
            "-f",
            "locustfile.py",
            "--headless",
            "-t",
            "3s",
            "--results-dir",
            str(tmp_path),
            "--redis-url",
            services.redis_url,
        ],
        timeout=60,
    )
    assert "--pg-dsn" in one_line_error(out)


def test_a_bad_option_value_is_refused(tmp_path: Path) -> None:
    out = run_locust(["-f", "locustfile.py", "--headless", "-t", "3s", "--keys", "0"], timeout=60)
    assert "--keys" in one_line_error(out)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_mid_run_closes_the_run_and_stops_the_services(sig: int, tmp_path: Path) -> None:
    log = tmp_path / "locust.log"
    args = "-f locustfile.py --headless --only-summary --ramp-users 20 --ramp-time 1 --hold-time 120"
    args += " --run-id sig"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "locust", *args.split(), "--results-dir", str(tmp_path)],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while "run sig started" not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(3)  # some operations in flight
            proc.send_signal(sig)
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    text = log.read_text()
    assert code == 0, text[-3000:]
    assert "Traceback" not in text, text[text.find("Traceback") - 200 :][:4000]
    run = json.loads((tmp_path / "sig" / "run.json").read_text())
    assert run["history_complete"] is True and run["rows"] > 100
    ports = announced_ports(text)
    assert len(ports) == 3
    assert listening(ports) == set()
