"""docs/grafana/cachestorm.json reads only what the live view's /metrics exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from analysis.live import LIVE_CHECKS, Snapshot, metrics_text

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "docs" / "grafana" / "cachestorm.json"
METRIC = re.compile(r"\b(cachestorm_[a-z0-9_]+)(\{[^}]*\})?")


def queries(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def selectors(expr: str) -> list[tuple[str, dict[str, str]]]:
    """Each metric an expression reads, with its label matchers."""
    return [
        (m.group(1), dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))) for m in METRIC.finditer(expr)
    ]


def exposed() -> set[str]:
    body, content_type = metrics_text(Snapshot())
    assert content_type.startswith("text/plain")
    return {f.name for f in text_string_to_metric_families(body.decode())}


def test_the_dashboard_is_valid_json_and_queries_only_exposed_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["panels"] and dashboard["uid"]
    names = exposed()
    read = [s for q in queries(dashboard) for s in selectors(q)]
    assert read, "the dashboard queries nothing"
    for name, labels in read:
        assert name in names, name
        if "check" in labels:
            assert labels["check"] in LIVE_CHECKS, labels
    # Every panel has at least one query, each naming a cachestorm metric.
    assert all(p["targets"] for p in dashboard["panels"])
    assert all(selectors(q) for q in queries(dashboard))
