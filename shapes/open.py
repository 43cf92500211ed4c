"""OpenModel: a fixed population of cache users that follows an arrival-rate schedule."""

from __future__ import annotations

import logging

from cachestorm.options import Options

from .quiesce import QuiescingShape, Tick

log = logging.getLogger("cachestorm")


class OpenModel(QuiescingShape):
    """Start the open model's users at once, run the ``--arrival-rate`` schedule, quiesce, stop.

    In an open-model run the load is set by the arrival rate, not by the user count: the users
    (``--open-users``, or one per 20 operations a second of the peak rate) only share the
    schedule's arrivals (:mod:`cachestorm.arrival`). So the shape has one phase: all of them,
    spawned within about a second, for the schedule's ramp (its last point) plus ``hold_time``
    seconds at the last rate. Then comes the quiesce of every cachestorm shape (writes paused for
    ``quiesce_time`` seconds), then :meth:`tick` returns ``None``. The user count includes the
    WebSocket listeners (``fixed_count``).

    ``locustfile.py`` picks this shape whenever ``--arrival-rate`` is given. Example::

        locust -f locustfile.py --headless --arrival-rate 0:200,30:2000 --hold-time 60
    """

    default_hold_time = 15.0
    _warned = False

    def tick(self) -> Tick | None:
        parsed = self._options()
        if parsed is None or not getattr(parsed, "arrival_rate", ""):
            # Chosen in the web UI's picker without a rate: nothing to schedule.
            if not self._warned:
                log.warning("cachestorm: the OpenModel shape needs --arrival-rate; stopping the test")
                self._warned = True
            return None
        o = Options.from_parsed(parsed)
        schedule = o.schedule()
        assert schedule is not None
        users = o.arrival_users() + max(0, o.listeners)
        hold_time = max(0.0, self.option("hold_time", self.default_hold_time))
        return self.follow([(schedule.ramp_end + hold_time, (users, float(max(users, 1))))])
