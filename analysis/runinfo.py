"""Checks of the run itself rather than of its history: was every batch collected, was the load
generator too busy to time its users fairly. Both read ``run.json`` only.
"""

from __future__ import annotations

from typing import Any

from analysis.verdict import CheckResult

NO_RUN_NOTE = (
    "run.json is missing: the run did not finish collecting (crashed or killed), "
    "so the history may be partial"
)


def check_history_complete(run: dict[str, Any] | None, rows_loaded: int | None = None) -> CheckResult:
    """Whether the run collected every batch of history from every node, per ``run.json``, and
    every row it wrote is still there.

    An incomplete history proves nothing wrong with the system under test, only that the run cannot
    vouch for what it did not see: the result is unknown (never a pass), with a reason naming what
    is missing, and :mod:`analysis.outcomes` judges every other check in its light.
    """
    name = "history_complete"
    if run is None:
        return CheckResult.skip(name, NO_RUN_NOTE, {"rows_loaded": rows_loaded})
    complete = run.get("history_complete")
    missing: dict[str, list[Any]] = {}
    unreported: list[str] = []
    nodes = run.get("nodes")
    if isinstance(nodes, dict):
        for node, info in nodes.items():
            if not isinstance(info, dict):
                continue
            if info.get("missing_batches"):
                missing[str(node)] = list(info["missing_batches"])
            # A node that never sent its final count may have lost batches nobody can number.
            if info.get("reported_final_count") is False:
                unreported.append(str(node))
    reported = run.get("rows")
    figures: dict[str, Any] = {
        "nodes": len(nodes) if isinstance(nodes, dict) else None,
        "missing_batches": missing,
        "missing_batch_count": sum(len(b) for b in missing.values()),
        "nodes_without_final_count": unreported,
        "rows_reported": reported,
        "rows_loaded": rows_loaded,
    }
    if not isinstance(complete, bool):
        return CheckResult.skip(name, "run.json does not say whether the history is complete", figures)
    gaps = []
    if not complete:
        gaps.append("run.json says the history is incomplete")
    if missing:
        lost = ", ".join(f"{n} {len(b)}" for n, b in missing.items())
        gaps.append(f"batches missing ({lost})")
    if unreported:
        gaps.append(f"no final count from {', '.join(unreported)}")
    # Fewer rows than the run wrote: a part file was lost after the run (more is refused as input).
    lost_rows = (
        reported - rows_loaded
        if isinstance(reported, int) and isinstance(rows_loaded, int) and rows_loaded < reported
        else 0
    )
    if lost_rows:
        gaps.append(f"{lost_rows} of the {reported} rows run.json reports are not in history/")
    violations = max(figures["missing_batch_count"] + len(unreported) + (1 if lost_rows else 0), 1)
    if not gaps:
        return CheckResult(name, passed=True, figures=figures)
    result = CheckResult(name, passed=False, violations=violations, figures=figures)
    result.make_unknown("; ".join(gaps))
    return result


def _node_summaries(run: dict[str, Any], field: str) -> dict[str, dict[str, Any]]:
    """Each node's CPU summary ``field`` of ``run.json``, for the nodes that have one."""
    nodes = run.get("nodes")
    return {
        str(node): info[field]
        for node, info in (nodes.items() if isinstance(nodes, dict) else ())
        if isinstance(info, dict) and isinstance(info.get(field), dict)
    }


def check_generator_cpu(run: dict[str, Any] | None) -> CheckResult:
    """How busy the load generator was: each node's CPU samples, per ``run.json``. Never fails.

    Each Locust process samples its own CPU use once a second (percent of one core). A process at
    90% or more (``busy_percent``, Locust's own warning level) makes its users' greenlets queue for
    the event loop, so the latencies it measures in those seconds include its own wait: the
    figures describe the generator as much as the system. :func:`generator_note` words that for
    the verdict. Skipped for runs from before the samples were recorded.

    Example::

        check_generator_cpu(load_run(results)).figures["busy_seconds"]
    """
    name = "generator_cpu"
    if run is None:
        return CheckResult.skip(name, NO_RUN_NOTE)
    per_node = _node_summaries(run, "cpu_percent")
    if not per_node:
        return CheckResult.skip(name, "run.json has no CPU samples of the load generator")
    busy = {n: c["busy_samples"] * c["interval_s"] for n, c in per_node.items() if c.get("busy_samples")}
    figures: dict[str, Any] = {
        "nodes": len(per_node),
        "max_percent": max(c["max"] for c in per_node.values()),
        "median_percent": max(c["median"] for c in per_node.values()),
        "busy_percent": next(iter(per_node.values())).get("busy_percent"),
        "busy_seconds": sum(busy.values()),
        "busy_nodes": sorted(busy),
        "per_node": per_node,
    }
    hosts = _node_summaries(run, "host_cpu_percent")
    if hosts:
        # Nodes on one host see the same figures; the worst node's seconds are the host's.
        saturated = {
            n: h["busy_samples"] * h["interval_s"] for n, h in hosts.items() if h.get("busy_samples")
        }
        figures |= {
            "host_max_percent": max(h["max"] for h in hosts.values()),
            "host_median_percent": max(h["median"] for h in hosts.values()),
            "host_saturated_seconds": max(saturated.values(), default=0),
            "host_saturated_nodes": sorted(saturated),
        }
    return CheckResult(name, passed=True, figures=figures)


def generator_note(result: CheckResult) -> str | None:
    """The verdict's note when the load generator was busy, or its host saturated
    (:func:`check_generator_cpu`), else None."""
    f = result.figures
    if result.skipped or not (f.get("busy_seconds") or f.get("host_saturated_seconds")):
        return None
    said = []
    if f.get("busy_seconds"):
        said.append(
            f"the load generator was busy: {', '.join(f['busy_nodes'])} at {f['busy_percent']:g}% CPU "
            f"or more for {f['busy_seconds']:g} s (max {f['max_percent']:g}%); latencies measured then "
            "include the generator's own queueing. Spread the users over more processes (--processes) "
            "or machines."
        )
    if f.get("host_saturated_seconds"):
        said.append(
            f"the load generator's host was saturated: {', '.join(f['host_saturated_nodes'])} found "
            f"every CPU of their host {f['busy_percent']:g}% busy or more for "
            f"{f['host_saturated_seconds']:g} s (max {f['host_max_percent']:g}%); latencies measured "
            "then include waiting for a CPU, shared "
            "with whatever else runs there (the embedded services, when the run started them). Run "
            "the generator on machines of its own, or with fewer users per core."
        )
    return " ".join(said)
