"""Open-model arrivals: when each operation of a run is meant to start.

In Locust's usual closed model a user starts its next operation only when the previous one has
ended (plus a wait). A server that stalls for a second then simply receives fewer requests, and the
requests that would have been sent during the stall are never timed: the latency figures look
better than what a real client population would see (Gil Tene calls this coordinated omission).
In the open model, operations are due on a fixed schedule whatever happens to earlier ones, each
operation's intended start is recorded (``t_intended`` in the history), and latency is measured
from it, as wrk2 does.

A :class:`Schedule` is a rate over time, piecewise linear between ``(seconds, rate)`` points and
constant after the last one (``--arrival-rate``, parsed by
:func:`cachestorm.options.parse_schedule`). The run's arrivals are split between ``users`` users,
each taking every ``users``-th arrival from a random phase, so the whole population follows the
schedule however many nodes it is spread over.

Example::

    schedule = Schedule(((0.0, 100.0), (30.0, 1000.0)))   # 100/s ramping to 1000/s at 30 s
    arrivals = schedule.arrivals(users=200, phase=0.37)
    arrivals.after(12.5)    # seconds since the start at which this user's next operation is due
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass


class Schedule:
    """An arrival rate over time: linear between ``(seconds, rate)`` points, held after the last."""

    def __init__(self, points: Sequence[tuple[float, float]]) -> None:
        if not points or points[0][0] != 0.0:
            raise ValueError("a schedule starts with a point at 0 s")
        self.times = [float(t) for t, _ in points]
        self.rates = [float(r) for _, r in points]
        # Arrivals due by each point: the area under the rate, a trapezoid per segment.
        self.counts = [0.0]
        for i in range(1, len(points)):
            dt = self.times[i] - self.times[i - 1]
            self.counts.append(self.counts[-1] + dt * (self.rates[i - 1] + self.rates[i]) / 2)

    @property
    def peak(self) -> float:
        """The highest rate of the schedule, per second."""
        return max(self.rates)

    @property
    def ramp_end(self) -> float:
        """Seconds to the last point, after which the rate holds."""
        return self.times[-1]

    def rate(self, t: float) -> float:
        """Arrivals per second due at ``t`` seconds after the start."""
        i = bisect_right(self.times, t) - 1
        if i < 0:
            return self.rates[0]
        if i >= len(self.times) - 1:
            return self.rates[-1]
        t0, t1 = self.times[i], self.times[i + 1]
        return self.rates[i] + (self.rates[i + 1] - self.rates[i]) * (t - t0) / (t1 - t0)

    def count(self, t: float) -> float:
        """Arrivals due in ``[0, t]``: the integral of :meth:`rate`."""
        if t <= 0:
            return 0.0
        i = min(bisect_right(self.times, t) - 1, len(self.times) - 1)
        u = t - self.times[i]
        r0 = self.rates[i]
        slope = 0.0
        if i < len(self.times) - 1:
            slope = (self.rates[i + 1] - r0) / (self.times[i + 1] - self.times[i])
        return self.counts[i] + r0 * u + slope * u * u / 2

    def time_of(self, n: float) -> float:
        """When the arrival count reaches ``n``: the inverse of :meth:`count` (``inf`` if never)."""
        if n <= 0:
            return 0.0
        i = bisect_right(self.counts, n) - 1
        # Within a segment with rate r0 and slope s, u solves s*u^2/2 + r0*u = d. The form
        # 2d / (r0 + sqrt(r0^2 + 2sd)) is that root without cancellation when s is near 0.
        d = n - self.counts[i]
        r0 = self.rates[i]
        if i == len(self.times) - 1:
            return self.times[i] + d / r0 if r0 > 0 else math.inf
        slope = (self.rates[i + 1] - r0) / (self.times[i + 1] - self.times[i])
        disc = r0 * r0 + 2 * slope * d
        if disc <= 0 or r0 + math.sqrt(disc) <= 0:
            return math.inf  # cannot happen for n below the next point's count; kept for safety
        return self.times[i] + 2 * d / (r0 + math.sqrt(disc))

    def arrivals(self, users: float, phase: float) -> UserArrivals:
        """One user's share of the arrivals when ``users`` share them equally; ``phase`` is in ``[0, 1)``.

        ``users`` need not be whole: a user that takes a larger share than others (a reader beside
        writers) takes every ``users``-th arrival with ``users`` the population's size in users like it.
        """
        if not users > 0:
            raise ValueError(f"users is {users}: the arrivals need a share above 0")
        return UserArrivals(self, users, phase)


@dataclass
class UserArrivals:
    """The arrivals of one user: those numbered ``(k + phase) * users`` for k = 0, 1, 2...

    The user walks through them with :meth:`after`; an operation due while the user was still busy
    with the previous one is not skipped but started late, and its lateness is what the corrected
    latency shows.
    """

    schedule: Schedule
    users: float
    phase: float
    k: int = -1

    def after(self, t: float) -> float:
        """The first of this user's arrivals due at ``t`` or later, and make it the current one."""
        k = math.ceil(self.schedule.count(t) / self.users - self.phase)
        self.k = max(k, self.k + 1)
        return self.schedule.time_of((self.k + self.phase) * self.users)

    def next(self) -> float:
        """This user's next arrival after the current one, due or not."""
        self.k += 1
        return self.schedule.time_of((self.k + self.phase) * self.users)


def default_users(schedule: Schedule) -> int:
    """Users to share a schedule when ``--open-users`` is not given: one per 20 operations a second
    of the peak rate (each user then has 50 ms between its arrivals), at least 10, at most 2000."""
    return max(10, min(2000, math.ceil(schedule.peak / 20)))
