"""What the fault-matrix tests (test_nemesis.py, test_netfaults.py) read back from a faulted run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from analysis import load_history
from tests.conftest import run_analysis

COHERENCE = ("stale_read", "future_read", "monotonic_read", "divergence")


def judged(run_dir: Path) -> tuple[dict[str, Any], Any]:
    """The run's summary.json after the analysis (thresholds off: a fault is allowed to be slow),
    with its exit code, the nemesis rows and the coherence counts added; and its history."""
    verdict = run_analysis(run_dir, "--thresholds", "none")
    summary: dict[str, Any] = json.loads((run_dir / "summary.json").read_text())
    summary["exit_code"] = verdict.returncode
    history = load_history(run_dir)
    faults = history.loc[history["f"] == "nemesis"]
    summary["fault_rows"] = sorted(zip(faults["key"], faults["source"], faults["status"], strict=True))
    summary["rows"] = len(history)
    summary["info"] = int((history["status"] == "info").sum())
    summary["violations"] = {c: summary["checks"][c]["violations"] for c in COHERENCE}
    return summary, history


def print_figures(run_id: str, summary: dict[str, Any], **more: Any) -> None:
    """One JSON line of the figures docs/reliability.md quotes (pytest -s shows them)."""
    figures = {"run": run_id, "rows": summary["rows"], "info": summary["info"]}
    figures |= {"violations": summary["violations"], **more}
    figures |= {"ws_delivery": summary["checks"]["ws_delivery"]["outcome"], "verdict": summary["verdict"]}
    print(json.dumps(figures))
