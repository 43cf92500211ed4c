"""Spike: a steady baseline, a sudden burst of users, recovery at the baseline, then stop."""

from __future__ import annotations

from .quiesce import Phase, QuiescingShape, Tick


class Spike(QuiescingShape):
    """Hold a baseline, jump to a spike almost at once, drop back to the baseline, quiesce, stop.

    Four phases:

    - warm-up, ``spike_warmup`` seconds at ``spike_base_users``, reached in the first half of the
      warm-up (so the cache is warm and the load steady when the spike comes);
    - spike, ``spike_time`` seconds at ``spike_users``; the spawn rate is the larger of the two
      user counts per second, so Locust adds (and later removes) the difference within about a
      second;
    - recovery, ``spike_recovery`` seconds back at ``spike_base_users``, removed at that same
      rate: does the cache settle once the burst is over?
    - quiesce, ``quiesce_time`` seconds with the recovery's users still running but writes paused
      (:func:`cachestorm.messages.pause_writes`, sent once), as in StepRamp; then :meth:`tick`
      returns ``None`` and the test stops.

    A phase of 0 seconds is skipped; the quiesce keeps the user count of the last phase that ran.
    The settings are the parsed Locust options ``spike_base_users``, ``spike_users``,
    ``spike_warmup``, ``spike_time``, ``spike_recovery`` and ``quiesce_time`` when registered and
    set, else the class defaults. With the defaults: 50 users from 0 s (at 5/s), 500 from 20 s
    (at 500/s), 50 again from 35 s, writes paused from 55 s, stop at 60 s. The counts include
    ``fixed_count`` users (the WebSocket listeners).

    Example, in the locustfile::

        from shapes import Spike

    then ``locust -f locustfile.py --spike-users 2000 --spike-time 30``.
    """

    default_base_users = 50
    default_spike_users = 500
    default_warmup = 20.0
    default_spike_time = 15.0
    default_recovery = 20.0

    def settings(self) -> tuple[int, int, float, float, float]:
        """``(base users, spike users, warm-up, spike time, recovery)``: options, else defaults."""
        base = max(0, int(self.option("spike_base_users", self.default_base_users)))
        spike = max(0, int(self.option("spike_users", self.default_spike_users)))
        warmup = max(0.0, self.option("spike_warmup", self.default_warmup))
        spike_time = max(0.0, self.option("spike_time", self.default_spike_time))
        recovery = max(0.0, self.option("spike_recovery", self.default_recovery))
        return base, spike, warmup, spike_time, recovery

    def phases(self) -> list[Phase]:
        """The warm-up, spike and recovery phases for the current settings."""
        base, spike, warmup, spike_time, recovery = self.settings()
        # Locust wants a positive spawn rate even when nothing changes.
        warm_rate = max(base / (warmup / 2), 1.0) if warmup > 0 else 1.0
        jump_rate = float(max(spike, base, 1))
        return [
            (warmup, (base, warm_rate)),
            (spike_time, (spike, jump_rate)),
            (recovery, (base, jump_rate)),
        ]

    def tick(self) -> Tick | None:
        """``(users, spawn_rate)`` for the current phase, or ``None`` once it is all over."""
        return self.follow(self.phases())
