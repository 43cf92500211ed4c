"""notebooks/analysis.ipynb, executed by ``jupyter nbconvert --execute``, as its first cell says.

The notebook runs in a real kernel, started by nbconvert in a separate process (the test process is
monkey-patched by gevent, which jupyter_client's threads do not survive) in the notebook's own
directory, as Jupyter starts it, against a results directory named by ``CACHESTORM_RESULTS``. No
cell may raise; each plot cell must draw its figure or print a "No data:" line; and the verdict,
nines and latency the notebook prints on its last line must equal what ``python -m analysis``
wrote to ``summary.json`` for the same run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pandas as pd
import pytest
from nbformat.v4 import new_code_cell

from cachestorm.services import ServiceURLs
from tests.conftest import ROOT, run_analysis, run_locust
from tests.histories import clean_rows

NOTEBOOK = ROOT / "notebooks" / "analysis.ipynb"
#: Tags of the notebook's cells: one per plot, and the cell printing the verdict as JSON.
PLOT, VERDICT_JSON = "plot", "verdict-json"
PLOTS = ("throughput", "latency", "hit ratio", "staleness", "websocket cdf")
PREFIX_PROBE = "import sys; print('kernel prefix:', sys.prefix)"


def tagged(nb: nbformat.NotebookNode, tag: str) -> list[nbformat.NotebookNode]:
    return [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]


def stdout(cell: nbformat.NotebookNode) -> str:
    return "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")


def execute(results: Path, monkeypatch: pytest.MonkeyPatch) -> nbformat.NotebookNode:
    """The notebook executed against ``results``; fails on the first cell that raises."""
    monkeypatch.setenv("CACHESTORM_RESULTS", str(results))  # the kernel inherits this environment
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(new_code_cell(PREFIX_PROBE))  # this copy only: which Python the kernel ran
    # A copy beside the original, so that the kernel starts in notebooks/ as it would for the original.
    copy = NOTEBOOK.parent / f".test-{results.name}-{os.getpid()}.ipynb"
    executed = results / "executed.ipynb"
    nbformat.write(nb, copy)
    try:
        command = [sys.executable, "-m", "nbconvert", "--to", "notebook", "--execute", str(copy)]
        command += ["--ExecutePreprocessor.timeout=120", "--ExecutePreprocessor.kernel_name=python3"]
        command += ["--output-dir", str(results), "--output", executed.name]
        out = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    finally:
        copy.unlink(missing_ok=True)
    assert out.returncode == 0, out.stderr[-3000:]
    nb = nbformat.read(executed, as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors == []
    # The venv's interpreter, which has the analysis dependencies, not some other python3 kernel.
    assert stdout(nb.cells[-1]).strip() == f"kernel prefix: {sys.prefix}"
    return nb


def plot_outcomes(nb: nbformat.NotebookNode) -> dict[str, str]:
    """Per plot cell: ``image`` (one PNG, nothing else said) or ``no data`` (no PNG, one line)."""
    cells = tagged(nb, PLOT)
    assert len(cells) == len(PLOTS)
    outcomes = {}
    for name, cell in zip(PLOTS, cells, strict=True):
        images = sum("image/png" in o.get("data", {}) for o in cell.outputs)
        text = stdout(cell)
        if images == 1 and not text:
            outcomes[name] = "image"
        elif images == 0 and text.startswith("No data:") and text.count("\n") == 1:
            outcomes[name] = "no data"
        else:
            outcomes[name] = f"{images} images, stdout {text!r}"
    return outcomes


def printed_verdict(nb: nbformat.NotebookNode) -> dict[str, Any]:
    (cell,) = tagged(nb, VERDICT_JSON)
    lines = stdout(cell).splitlines()
    assert len(lines) == 1, lines
    result: dict[str, Any] = json.loads(lines[0])
    return result


def from_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """What the notebook's JSON line must say, read from ``summary.json``."""
    nines = summary["nines"]
    measures = {"reads fresh": nines["reads_fresh"]}
    measures.update({f"writes consistent within {m}": e for m, e in nines["writes_consistent"].items()})
    latency = summary["checks"]["latency"]
    return {
        "passed": summary["passed"],
        "checks": {
            name: {"passed": c["passed"], "violations": c["violations"]}
            for name, c in summary["checks"].items()
        },
        "nines": {m: {k: e[k] for k in ("bad", "total", "nines")} for m, e in measures.items()},
        "latency_us": {
            group: {k: stats[k] for k in ("count", "p50", "p95", "p99")}
            for group, stats in latency.items()
            if isinstance(stats, dict) and stats.get("count")
        },
    }


def analyse(results: Path) -> dict[str, Any]:
    """``python -m analysis`` on ``results`` (seed SLAs, as the notebook applies): its summary.json."""
    out = run_analysis(results)
    assert out.returncode in (0, 1, 3), out.stderr  # 3: unknown, as a history without run.json is
    summary: dict[str, Any] = json.loads((results / "summary.json").read_text())
    return summary


def test_the_committed_notebook_is_valid_and_has_no_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert nb.metadata.kernelspec.name == "python3"
    assert nb.cells[0].cell_type == "markdown" and "CACHESTORM_RESULTS" in nb.cells[0].source
    code = [c for c in nb.cells if c.cell_type == "code"]
    dirty = [i for i, c in enumerate(code) if c.outputs or c.execution_count is not None]
    assert dirty == [], "clear the notebook's outputs before committing (Jupyter: Clear All Outputs)"
    assert len(tagged(nb, PLOT)) == len(PLOTS)
    assert len(tagged(nb, VERDICT_JSON)) == 1


def test_plots_without_data_say_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A write, reads that are not stale, a sweep; no run.json and no WebSocket listener.
    results = tmp_path / "planted"
    (results / "history").mkdir(parents=True)
    rows = pd.DataFrame(clean_rows()).astype({"version": "Int64", "value": "Int64"})
    rows.to_parquet(results / "history" / "part-00000.parquet", index=False)
    summary = analyse(results)
    nb = execute(results, monkeypatch)
    assert plot_outcomes(nb) == {
        "throughput": "image",
        "latency": "image",
        "hit ratio": "image",
        "staleness": "no data",
        "websocket cdf": "no data",
    }
    assert printed_verdict(nb) == from_summary(summary)


@pytest.mark.integration
def test_a_real_run_plots_everything_and_matches_the_cli(
    services: ServiceURLs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 5 s of 20 coherence users on 60 keys; cache-aside with a fill delay makes stale reads, so
    # the staleness histogram has data too, and two listeners receive notifications.
    args = "-f tests/locustfiles/contention.py --headless --only-summary --ramp-users 20 --ramp-time 0"
    args += (
        " --hold-time 4 --quiesce-time 1 --keys 60 --strategy cache-aside --fill-delay-ms 50 --listeners 2"
    )
    args += f" --redis-url {services.redis_url} --pg-dsn {services.pg_dsn} --ws-url {services.ws_url}"
    out = run_locust([*args.split(), "--results-dir", str(tmp_path), "--run-id", "nb"], timeout=120)
    # 1: the live view logged its violations as Locust failures (COHERENCE <check>).
    assert out.returncode == 1, out.stderr[-3000:]
    summary = analyse(tmp_path / "nb")
    assert summary["checks"]["stale_read"]["violations"] > 0
    assert summary["checks"]["latency"]["notification"]["count"] > 0
    nb = execute(tmp_path / "nb", monkeypatch)
    assert plot_outcomes(nb) == dict.fromkeys(PLOTS, "image")
    printed = printed_verdict(nb)
    assert printed == from_summary(summary)
    assert printed["checks"]["stale_read"]["violations"] > 0  # the comparison is not of zeros only
