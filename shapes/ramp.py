"""Step ramp: climb in steps to a peak user count, hold it, then stop the test."""

from __future__ import annotations

import math

from locust import LoadTestShape

from cachestorm.messages import pause_writes

STEPS = (0.1, 0.2, 0.5, 1.0)
"""Fractions of the peak user count, one per step, each held for a quarter of the ramp time."""


class StepRamp(LoadTestShape):
    """Ramp to a peak in steps (10%, 20%, 50%, 100% of the peak), hold the peak, then stop.

    Each step lasts ``ramp_time / 4`` seconds and its spawn rate reaches the step's user count in
    half that time, so every step spends its second half at a steady load. After ``ramp_time``
    the peak is held for ``hold_time`` seconds. Then, for ``quiesce_time`` seconds, the users keep
    running but writes stop (:func:`cachestorm.messages.pause_writes`), so that whatever the cache
    still holds wrong once writes have stopped shows as the lasting inconsistency it is; then
    :meth:`tick` returns ``None`` and the test stops. The user count includes users with
    ``fixed_count`` (the WebSocket listeners).

    The peak, ramp time and hold time come from the parsed Locust options ``ramp_users``,
    ``ramp_time``, ``hold_time`` and ``quiesce_time`` (``--ramp-users`` etc.) when they are
    registered and set, else from the class defaults. With the defaults: 50 users from 0 s, 100
    from 15 s, 250 from 30 s, 500 from 45 s (reached by 52.5 s), held until 75 s, readers only
    until 80 s, then stop.

    Example, in the locustfile (Locust uses a shape class the locustfile defines or imports)::

        from shapes import StepRamp

    then ``locust -f locustfile.py --ramp-users 1000 --ramp-time 120 --hold-time 30``.
    """

    default_users = 500
    default_ramp_time = 60.0
    default_hold_time = 15.0
    default_quiesce_time = 5.0
    _quiescing = False

    def _option(self, name: str, default: float) -> float:
        options = self.runner.environment.parsed_options if self.runner is not None else None
        value = getattr(options, name, None)
        # An option registered with default=None, or not registered at all, means "use ours".
        return default if value is None else float(value)

    def settings(self) -> tuple[int, float, float]:
        """The ``(peak users, ramp time, hold time)`` in effect: options, else class defaults."""
        peak = int(self._option("ramp_users", self.default_users))
        ramp_time = max(0.0, self._option("ramp_time", self.default_ramp_time))
        hold_time = max(0.0, self._option("hold_time", self.default_hold_time))
        return peak, ramp_time, hold_time

    def tick(self) -> tuple[int, float] | None:
        """``(users, spawn_rate)`` for the current step, or ``None`` once it is all over."""
        peak, ramp_time, hold_time = self.settings()
        quiesce_time = max(0.0, self._option("quiesce_time", self.default_quiesce_time))
        run_time = self.get_run_time()
        if run_time >= ramp_time + hold_time + quiesce_time:
            return None
        if run_time >= ramp_time + hold_time:
            if not self._quiescing and self.runner is not None:
                pause_writes(self.runner)
            self._quiescing = True
            return peak, float(max(peak, 1))
        self._quiescing = False  # a new run (the web UI reuses the shape)
        if ramp_time <= 0:
            # No steps to fit into: go straight to the peak within about a second.
            return peak, float(max(peak, 1))
        dwell = ramp_time / len(STEPS)
        step = min(int(run_time // dwell), len(STEPS) - 1)
        # ceil keeps every step at one user or more for small peaks.
        users = math.ceil(peak * STEPS[step])
        previous = math.ceil(peak * STEPS[step - 1]) if step > 0 else 0
        spawn_rate = max(users - previous, 1) / (dwell / 2)
        # Locust wants a positive rate even for a step that adds no users.
        return users, max(spawn_rate, 1.0)
