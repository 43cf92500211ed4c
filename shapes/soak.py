"""Soak: ramp to a steady load, hold it for a long time, then stop."""

from __future__ import annotations

from .quiesce import QuiescingShape, Tick


class Soak(QuiescingShape):
    """Ramp linearly to ``soak_users`` over :attr:`ramp_time` seconds, hold, quiesce, stop.

    Meant for long runs at a moderate load, where what matters is what builds up: entries that
    stay stale, memory, connection churn, the history's size. The spawn rate is
    ``soak_users / ramp_time`` (at least 1 per second), so the target is reached at
    :attr:`ramp_time`; the load is then held for ``soak_time`` seconds. Then, for
    ``quiesce_time`` seconds, the users keep running with writes paused
    (:func:`cachestorm.messages.pause_writes`, sent once), as in StepRamp; then :meth:`tick` returns
    ``None`` and the test stops.

    The settings are the parsed Locust options ``soak_users``, ``soak_time`` and ``quiesce_time``
    when registered and set, else the class defaults; the ramp time is the class attribute
    :attr:`ramp_time`. With the defaults: 200 users at 6.7/s from 0 s (all running by 30 s), held
    until 630 s, writes paused until 635 s, then stop. The count includes ``fixed_count`` users
    (the WebSocket listeners).

    Example, in the locustfile::

        from shapes import Soak

    then ``locust -f locustfile.py --headless --soak-users 300 --soak-time 3600``.
    """

    default_users = 200
    default_soak_time = 600.0
    ramp_time = 30.0
    """Seconds to reach ``soak_users`` (not an option)."""

    def settings(self) -> tuple[int, float]:
        """``(soak users, soak time)``: options, else class defaults."""
        users = max(0, int(self.option("soak_users", self.default_users)))
        soak_time = max(0.0, self.option("soak_time", self.default_soak_time))
        return users, soak_time

    def tick(self) -> Tick | None:
        """``(users, spawn_rate)``: the same tuple while ramping and holding, then ``None``."""
        users, soak_time = self.settings()
        ramp_time = max(0.0, self.ramp_time)
        rate = max(users / ramp_time, 1.0) if ramp_time > 0 else float(max(users, 1))
        # One phase: Locust ramps at `rate` and then holds, since the tick does not change.
        return self.follow([(ramp_time + soak_time, (users, rate))])
