"""Estimating a worker's clock offset to the master's, NTP-style, and following its drift.

A worker pings the master a few times per round; the master stamps each ping with its own clock.
Of one round, only the exchange with the shortest round trip counts: the master's stamp fell
somewhere within that round trip, so the midpoint is off by at most half of it. The rounds repeat
during the whole run, so that a clock drifting away from the master's is followed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

#: Exchanges per round, and seconds between rounds.
PINGS_PER_ROUND = 8
ROUND_INTERVAL_S = 2.0
#: How long one ping may wait for its pong before the round goes on without it.
PONG_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class Exchange:
    """One ping and its pong: sent at ``t0`` and answered at ``t1`` (worker's clock), stamped
    ``t_master`` by the master in between."""

    t0: int
    t_master: int
    t1: int

    @property
    def rtt_ns(self) -> int:
        return self.t1 - self.t0

    @property
    def offset_ns(self) -> int:
        """What to add to the worker's clock to read the master's."""
        return self.t_master - (self.t0 + self.t1) // 2


def best(exchanges: Sequence[Exchange]) -> Exchange | None:
    """The exchange with the shortest round trip (None for none): the tightest bound on the offset."""
    usable = [e for e in exchanges if e.rtt_ns >= 0]
    return min(usable, key=lambda e: e.rtt_ns, default=None)


@dataclass
class ClockTrack:
    """The offset estimates of one worker over a run, one per round.

    ``uncertainty_ns`` bounds the error of every timestamp the worker shipped: the worst half
    round trip of a round, plus the largest change between two consecutive rounds. The second
    term is there because rows are shipped with the newest estimate (not interpolated), so a row
    recorded just before a round may carry that round's estimate, which the drift has moved by
    at most one round's change.
    """

    offsets: list[int] = field(default_factory=list)
    half_rtts: list[int] = field(default_factory=list)
    failed_rounds: int = 0

    @property
    def ready(self) -> bool:
        return bool(self.offsets)

    @property
    def offset_ns(self) -> int:
        return self.offsets[-1] if self.offsets else 0

    @property
    def uncertainty_ns(self) -> int:
        if not self.offsets:
            return 0
        step = max((abs(b - a) for a, b in zip(self.offsets, self.offsets[1:], strict=False)), default=0)
        return max(self.half_rtts) + step

    def add_round(self, exchanges: Sequence[Exchange]) -> Exchange | None:
        """Take one round's exchanges; returns the one used (None: no pong came, estimate kept)."""
        chosen = best(exchanges)
        if chosen is None:
            self.failed_rounds += 1
            return None
        self.offsets.append(chosen.offset_ns)
        # Half a round trip, rounded up: an odd nanosecond must not shrink the bound.
        self.half_rtts.append((chosen.rtt_ns + 1) // 2)
        return chosen

    def summary(self, sync: bool = True) -> dict[str, Any]:
        """What run.json keeps of the estimates, per node."""
        return {
            "sync": "on" if sync else "off",
            "rounds": len(self.offsets),
            "failed_rounds": self.failed_rounds,
            "pings_per_round": PINGS_PER_ROUND,
            "round_interval_s": ROUND_INTERVAL_S,
            "first_offset_ns": self.offsets[0] if self.offsets else None,
            "last_offset_ns": self.offsets[-1] if self.offsets else None,
            "min_offset_ns": min(self.offsets, default=None),
            "max_offset_ns": max(self.offsets, default=None),
            "max_half_rtt_ns": max(self.half_rtts, default=None),
            "uncertainty_ns": self.uncertainty_ns,
        }
