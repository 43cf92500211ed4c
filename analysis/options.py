"""The knobs of an analysis, resolved from the command line and ``run.json``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from analysis.ops import DEFAULT_LOCK_TTL_MS, NS_PER_MS, NS_PER_S


def _ns(value: Any) -> int:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
    return int(value) if ok else 0


def run_clock_uncertainty(run: dict[str, Any] | None) -> int:
    """The largest clock uncertainty of the run's nodes, in ns (0 when run.json gives none).

    Every node's own figure counts, not only the run-wide one: a run.json written by hand or by
    an older collector may carry only one of them, and the tolerance must cover the worst node.
    """
    run = run or {}
    nodes = run.get("nodes")
    per_node = (
        [_ns(n.get("clock_uncertainty_ns")) for n in nodes.values() if isinstance(n, dict)]
        if isinstance(nodes, dict)
        else []
    )
    return max([_ns(run.get("clock_uncertainty_ns")), *per_node])


@dataclass(frozen=True)
class Options:
    """Knobs of the analysis, in nanoseconds.

    ``tolerance_ns`` widens every "before" across processes to absorb clock uncertainty between
    hosts; ``ws_grace_ns`` is how long after opening / before closing a WebSocket connection a
    write is not yet / no longer expected to be delivered.
    """

    tolerance_ns: int = 0
    ws_grace_ns: int = NS_PER_S
    examples: int = 5
    tolerance_from: str = "default"
    lock_ttl_ns: int = DEFAULT_LOCK_TTL_MS * NS_PER_MS
    stampede_guard: str | None = None

    @classmethod
    def resolve(
        cls,
        run: dict[str, Any] | None,
        tolerance_ms: float | None = None,
        ws_grace_s: float | None = None,
        examples: int = 5,
    ) -> Options:
        """Options from the CLI values, falling back on ``run.json``'s clock uncertainty."""
        if tolerance_ms is not None:
            tolerance, source = round(tolerance_ms * NS_PER_MS), "--tolerance"
        else:
            tolerance, source = 0, "default"
            uncertainty = run_clock_uncertainty(run)
            if uncertainty > 0:
                tolerance, source = uncertainty, "run.json clock_uncertainty_ns"
        grace = NS_PER_S if ws_grace_s is None else round(ws_grace_s * NS_PER_S)
        run_options = (run or {}).get("options")
        run_options = run_options if isinstance(run_options, dict) else {}
        ttl_ms = run_options.get("lock_ttl_ms")
        if not isinstance(ttl_ms, int | float) or isinstance(ttl_ms, bool) or ttl_ms <= 0:
            ttl_ms = DEFAULT_LOCK_TTL_MS
        guard = run_options.get("stampede_guard")
        return cls(
            tolerance_ns=max(int(tolerance), 0),
            ws_grace_ns=max(int(grace), 0),
            examples=examples,
            tolerance_from=source,
            lock_ttl_ns=round(ttl_ms * NS_PER_MS),
            stampede_guard=guard if isinstance(guard, str) else None,
        )

    def to_dict(self) -> dict[str, Any]:
        """The options as reported in ``summary.json``."""
        return {
            "tolerance_ns": self.tolerance_ns,
            "tolerance_from": self.tolerance_from,
            "ws_grace_s": self.ws_grace_ns / NS_PER_S,
            "lock_ttl_ms": self.lock_ttl_ns / NS_PER_MS,
            "stampede_guard": self.stampede_guard,
        }
