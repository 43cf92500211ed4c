"""Every run ends with its analysis; with ``--verdict`` the verdict is also Locust's exit code.

cachestorm fires :data:`cachestorm.events.run_finished` on the master when a run's results are
whole; a locustfile wires this listener to it::

    from cachestorm import events
    from analysis import at_run_end

    events.run_finished.add_listener(at_run_end.judge)

The analysis runs as ``python -m analysis RUN_DIR`` in a process of its own: under gevent a
subprocess lets the master's web UI go on answering while the run is judged (pandas would hold
the one thread for the whole analysis), the load path never imports pandas, and the analysis's
memory goes back to the system when it ends. What it writes (summary.json, report.html) is in the
run's directory; its verdict line goes to the web UI (:func:`cachestorm.webui.record`) and the
console.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from cachestorm import webui

#: Locust's exit code for bad input, which a verdict never overrides.
BAD_INPUT = 2
UNKNOWN = 3
#: What the analysis's exit codes mean (docs/checks.md, "Exit status").
OUTCOMES = {0: "pass", 1: "fail", 2: "bad input", 3: "unknown"}


def judge(environment: Any, run_dir: Path, options: Any, **_kw: Any) -> None:
    """Analyse ``run_dir``, unless ``--end-analysis off`` without ``--verdict``; with ``--verdict``
    the verdict becomes the exit code: 0 pass, 1 fail, 3 unknown, 2 bad input."""
    if not (options.verdict or getattr(options, "end_analysis", True)):
        # Not judged is unknown, never a pass left to be guessed at.
        webui.record(
            environment,
            run_dir,
            "unknown",
            f"not judged (--end-analysis off): run python -m analysis {run_dir}",
        )
        return
    webui.record(environment, run_dir, "analysing", "the analysis is judging the run")
    code, line = analyse(run_dir)
    webui.record(environment, run_dir, OUTCOMES.get(code, "bad input"), line)
    # A run already stopped for bad input (a broken target contract) keeps its exit code.
    if options.verdict and environment.process_exit_code != BAD_INPUT:
        environment.process_exit_code = code


def analyse(run_dir: Path) -> tuple[int, str]:
    """Run ``python -m analysis run_dir``, its output passed on to this process's; return its exit
    code and its verdict in one line."""
    # Locust may have been started from another directory (-f /path/locustfile.py): the
    # analysis package is found where this one was imported from.
    root = str(Path(__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    done = subprocess.run(
        [sys.executable, "-m", "analysis", str(run_dir.resolve())],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": path},
    )
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    if done.returncode < 0:
        # Killed (Ctrl-C reaches the whole process group): nothing was judged, so no pass.
        line = f"the analysis was interrupted (signal {-done.returncode}); run python -m analysis {run_dir}"
        return UNKNOWN, line
    return done.returncode, verdict_line(run_dir, done.returncode, done.stderr)


def verdict_line(run_dir: Path, code: int, stderr: str) -> str:
    """``VERDICT: FAIL (stale_read, divergence)``, as the console shows it, from summary.json; for
    bad input, the analysis's own line saying what was wrong."""
    if code == BAD_INPUT or not (run_dir / "summary.json").is_file():
        lines = [ln for ln in stderr.splitlines() if ln.strip()]
        return lines[-1] if lines else f"the analysis exited with {code} and wrote no summary"
    summary = json.loads((run_dir / "summary.json").read_text())
    outcome = str(summary.get("verdict", "")).upper()
    names = summary.get("failed") if outcome == "FAIL" else summary.get("unknown")
    return f"VERDICT: {outcome} ({', '.join(names)})" if names else f"VERDICT: {outcome}"
