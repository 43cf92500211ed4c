"""Speed and memory of the analysis checks on a synthetic history.

    python bench/checker_speed.py [--ops 10000000] [--keys 100000] [--seed 1] [--anomalies 100]
                                  [--dir DIR] [--chunks N|auto] [--rounds 3] [--profile]

Generates a synthetic results directory with bench/synthetic.py (or reuses one made with the same
parameters, under ``--dir``, default ``/tmp/cachestorm-bench/syn-OPS``), then analyses it in a child
process, so that the generator's memory does not count: ``load_results`` (which refuses ok writes
whose versions repeat or go back, as ``python -m analysis`` does) + ``run_checks`` (every check), or
``analysis.chunked.run_checks_chunked`` with ``--chunks N`` (``--chunked N`` is the same).
``--chunks auto`` partitions as ``python -m analysis --chunks auto`` does (``chunks_for``: by the
row count and the available memory). Reports wall time of load and checks, peak RSS of the child
(``ru_maxrss``), ops/s, bytes per operation and, per planted anomaly kind, the violations found
against the number planted; with ``--rounds N`` the analysis runs N times on the one generated
history and the figures are the medians. ``--profile`` also times each check on its own (a second
pass). Goals: every check on 10M ops in memory in at most 20 s and 3 GB; on 100M ops chunked in at
most 120 s and 3 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GOAL_SECONDS = 20.0
GOAL_CHUNKED_SECONDS = 120.0
GOAL_BYTES = 3 * 1024**3


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _profile(history: Any, run: Any) -> dict[str, float]:
    """Each check timed on its own, in the order and with the arguments run_checks uses."""
    from analysis.options import Options  # noqa: PLC0415
    from analysis.registry import CHECKS, Context  # noqa: PLC0415

    context = Context(history, run, Options.resolve(run), len(history))
    calls = {c.name: (lambda c=c: c.call(context)) for c in CHECKS}
    times = {}
    for name, call in calls.items():
        started = time.perf_counter()
        call()
        times[name] = round(time.perf_counter() - started, 3)
    return times


def child(results: str, chunked: int, profile: bool) -> dict[str, Any]:
    """The analysis itself, in this (child) process: timings, peak RSS and the verdict."""
    started = time.perf_counter()
    from analysis import load_run, run_checks  # noqa: PLC0415
    from analysis.load import load_results  # noqa: PLC0415

    run = load_run(results)
    out: dict[str, Any] = {"import_s": round(time.perf_counter() - started, 3)}
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_start = usage.ru_utime + usage.ru_stime
    rss_start = _maxrss_bytes()
    if chunked:
        from analysis.chunked import run_checks_chunked  # noqa: PLC0415

        t0 = time.perf_counter()
        verdict = run_checks_chunked(results, chunked)
        out["load_s"] = None
        out["check_s"] = round(time.perf_counter() - t0, 3)
        out["rss_after_load"] = None
        rows = verdict.check("history_complete").figures.get("rows_loaded")
    else:
        t0 = time.perf_counter()
        history = load_results(results).history
        assert history is not None
        t1 = time.perf_counter()
        out["rss_after_load"] = _maxrss_bytes()
        verdict = run_checks(history, run)
        t2 = time.perf_counter()
        out["load_s"], out["check_s"] = round(t1 - t0, 3), round(t2 - t1, 3)
        rows = len(history)
    out["rss_before_analysis"] = rss_start
    out["peak_rss"] = _maxrss_bytes()
    # CPU time says what the wall time would be on a machine of its own, the load of others aside.
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out["cpu_s"] = round(usage.ru_utime + usage.ru_stime - cpu_start, 3)
    out["rows"] = rows
    out["checks"] = {
        c.name: {"violations": c.violations, "status": c.status, "reason": c.reason} for c in verdict.checks
    }
    if profile and not chunked:
        out["per_check_s"] = _profile(history, run)
    return out


def ensure_history(directory: Path, ops: int, keys: int, seed: int, anomalies: int) -> dict[str, Any]:
    """The synthetic directory's planted.json, generating the directory unless it matches already."""
    planted_file = directory / "planted.json"
    wanted = {"ops": ops, "keys": keys, "seed": seed, "anomalies": anomalies}
    if planted_file.exists() and (directory / "run.json").exists():
        planted = json.loads(planted_file.read_text(encoding="utf-8"))
        if all(planted.get(k) == v for k, v in wanted.items()):
            return dict(planted)
    # In its own process: Linux keeps a process's peak RSS across fork and exec, so a parent that had
    # generated the history in-process would pass its peak on to the analysis child.
    command = [sys.executable, str(ROOT / "bench" / "synthetic.py"), str(directory)]
    command += ["--ops", str(ops), "--keys", str(keys), "--seed", str(seed), "--anomalies", str(anomalies)]
    subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
    return dict(json.loads(planted_file.read_text(encoding="utf-8")))


def measure(directory: Path, chunked: int = 0, profile: bool = False) -> dict[str, Any]:
    """Run the analysis of ``directory`` in a child process and return its JSON report."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", str(directory)]
    if chunked:
        command += ["--chunked", str(chunked)]
    if profile:
        command.append("--profile")
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"analysis child failed ({done.returncode}):\n{done.stderr}")
    return dict(json.loads(done.stdout))


def report(planted: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """Figures of one measurement, and found versus planted per anomaly kind."""
    rows = int(result["rows"])
    total = (result["load_s"] or 0.0) + result["check_s"]
    found = {
        kind: {
            "planted": n,
            "found": result["checks"][kind]["violations"],
            "exact": result["checks"][kind]["violations"] == n,
        }
        for kind, n in planted["planted"].items()
    }
    return {
        "rows": rows,
        "load_s": result["load_s"],
        "check_s": result["check_s"],
        "total_s": round(total, 3),
        "cpu_s": result.get("cpu_s"),
        "peak_rss_mib": round(result["peak_rss"] / 2**20, 1),
        "rss_after_load_mib": (
            round(result["rss_after_load"] / 2**20, 1) if result["rss_after_load"] else None
        ),
        "rss_before_analysis_mib": round(result["rss_before_analysis"] / 2**20, 1),
        "ops_per_s": round(rows / total) if total else None,
        "checks_only_ops_per_s": round(rows / result["check_s"]) if result["check_s"] else None,
        "bytes_per_op": round(result["peak_rss"] / rows, 1) if rows else None,
        "anomalies": found,
        "all_found": all(v["exact"] for v in found.values()),
        "unexpected_failures": [
            name
            for name, c in result["checks"].items()
            if c["status"] == "FAIL" and name not in planted["planted"]
        ],
        "per_check_s": result.get("per_check_s"),
    }


def _median_report(rounds: list[dict[str, Any]], goal_s: float) -> dict[str, Any]:
    """The median round (by total time) with the medians of its timing and memory figures."""
    by_time = sorted(rounds, key=lambda r: r["total_s"])
    out = dict(by_time[len(by_time) // 2])
    for name in ("load_s", "check_s", "total_s", "cpu_s", "peak_rss_mib", "ops_per_s", "bytes_per_op"):
        values = sorted(r[name] for r in rounds if r[name] is not None)
        out[name] = values[len(values) // 2] if values else None
    out["rounds"] = [{k: r[k] for k in ("total_s", "check_s", "cpu_s", "peak_rss_mib")} for r in rounds]
    out["goal_time"] = out["total_s"] <= goal_s
    out["goal_memory"] = out["peak_rss_mib"] * 2**20 <= GOAL_BYTES
    out["all_found"] = all(r["all_found"] for r in rounds)
    return out


def resolve_chunks(chunks: str, directory: Path) -> int:
    """``--chunks``: a number, or ``auto`` as ``python -m analysis --chunks auto`` chooses it."""
    if chunks != "auto":
        return int(chunks)
    import psutil  # noqa: PLC0415

    from analysis.__main__ import chunks_for  # noqa: PLC0415
    from analysis.load import history_rows  # noqa: PLC0415

    return chunks_for(history_rows(directory), psutil.virtual_memory().available)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--ops", type=int, default=10_000_000)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--anomalies", type=int, default=100)
    parser.add_argument("--dir", type=Path, default=None, help="synthetic results dir (reused if it matches)")
    parser.add_argument(
        "--chunks",
        "--chunked",
        default="0",
        help="analyse with run_checks_chunked(N); auto as the CLI chooses",
    )
    parser.add_argument("--rounds", type=int, default=1, help="analyse N times; report the medians")
    parser.add_argument("--profile", action="store_true", help="also time each check on its own")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.chunks != "auto" and not args.chunks.isdigit():
        parser.error(f"--chunks is {args.chunks!r}: give auto or a number")
    if args.child:
        json.dump(child(args.child, int(args.chunks), args.profile), sys.stdout)
        return 0
    directory = args.dir or Path("/tmp/cachestorm-bench") / f"syn-{args.ops}"
    t0 = time.perf_counter()
    planted = ensure_history(directory, args.ops, args.keys, args.seed, args.anomalies)
    generate_s = round(time.perf_counter() - t0, 3)
    chunks = resolve_chunks(args.chunks, directory)
    # The chunked mode of one partition is still the chunked code path; 0 is in memory.
    rounds = [report(planted, measure(directory, chunks, args.profile)) for _ in range(max(args.rounds, 1))]
    figures = _median_report(rounds, GOAL_SECONDS if not chunks else GOAL_CHUNKED_SECONDS)
    figures = {
        "dir": str(directory),
        "mode": f"chunked({chunks})" if chunks else "in-memory",
        "chunks_asked": args.chunks,
        "generate_or_reuse_s": generate_s,
        "generator": {k: planted.get(k) for k in ("generate_s", "write_s", "rows")},
        "load_average": os.getloadavg(),
        **figures,
    }
    print(json.dumps(figures, indent=2))
    return 0 if figures["all_found"] and not figures["unexpected_failures"] else 1


if __name__ == "__main__":
    sys.exit(main())
