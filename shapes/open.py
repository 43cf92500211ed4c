"""OpenModel: a fixed population of cache users that follows an arrival-rate schedule."""

from __future__ import annotations

import logging
from typing import Any

from cachestorm.options import Options

from .quiesce import QuiescingShape, Tick

log = logging.getLogger("cachestorm")


def open_model_problem(parsed: Any, shape_name: str) -> str | None:
    """Why ``--arrival-rate``, ``--scenario`` and the shape named ``shape_name`` cannot run
    together, in one line, or ``None`` when they can.

    The arrival rate sets the load only under OpenModel, and OpenModel has nothing to run without
    a rate. The locustfile checks this once at start-up (the command line) and again at each test
    start (a run from the web UI takes the form's values and the shape picked there)::

        open_model_problem(environment.parsed_options, "StepRamp")
    """
    rate = getattr(parsed, "arrival_rate", "")
    if rate and shape_name != "OpenModel":
        return (
            f"--shape is {shape_name!r} but --arrival-rate sets the load: use the OpenModel shape "
            "(chosen by default with --arrival-rate; in the web UI, picked with --class-picker)."
        )
    if not rate and shape_name == "OpenModel":
        return "--shape is 'OpenModel' but --arrival-rate is not set: give a rate, like --arrival-rate 500."
    scenario = getattr(parsed, "scenario", "coherence")
    if rate and scenario != "coherence":
        return (
            f"--scenario is {scenario!r} but --arrival-rate drives the coherence workload only: "
            "use --scenario coherence."
        )
    return None


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
            # Picked in the web UI without a rate: nothing to schedule. Locust asks for a tick
            # before it starts the test, so this refusal comes before any user or reset.
            if not self._warned:
                log.error("cachestorm: %s The run is stopped.", open_model_problem(parsed, "OpenModel"))
                self._warned = True
            return None
        o = Options.from_parsed(parsed)
        schedule = o.schedule()
        assert schedule is not None
        users = o.arrival_users() + max(0, o.listeners)
        hold_time = max(0.0, self.option("hold_time", self.default_hold_time))
        return self.follow([(schedule.ramp_end + hold_time, (users, float(max(users, 1))))])
