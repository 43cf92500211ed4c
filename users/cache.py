"""Users that read and write the target's keys through its own read and write paths.

Each user is one *process* of the history: it runs one operation at a time and takes a fresh
process id after an operation whose outcome is unknown (``info``).

In a closed-model run a user waits its ``wait_time`` after each operation. In an open-model run
(``--arrival-rate``) it instead takes its share of the run's schedule (:mod:`cachestorm.arrival`):
each operation is due at a set time, the user sleeps until then if it is early and starts at once
if it is late, and the due time goes into the history as ``t_intended``.
"""

from __future__ import annotations

import random
import time

import gevent
from locust import User, between, task

from cachestorm import keys
from cachestorm.arrival import UserArrivals
from cachestorm.node import node_of


class _CacheUser(User):
    abstract = True
    #: When the current operation is due, ns since the epoch; ``None`` in closed-model runs.
    t_intended: int | None = None
    arrivals: UserArrivals | None = None
    #: One user's share of the open model's arrivals, relative to the other classes': its closed-model
    #: operations per second (1 / its mean wait), so that both models run the same mix of operations.
    open_rate = 1.0

    def on_start(self) -> None:
        self.node = node_of(self.environment)
        o = self.node.options
        assert self.node.operations is not None
        self.ops = self.node.operations
        self.process = self.node.new_process()
        self.keys = keys.from_name(o.key_distribution, o.keys, keys.user_seed(o.seed, self.environment, self))
        self.next_key = self.keys.next
        schedule = o.schedule()
        if schedule is not None:
            # Phases drawn apart so that users spread over the schedule instead of arriving together.
            phase = random.Random(keys.user_seed(o.seed, self.environment, self, "phase")).random()
            slots = self.arrival_slots(o.arrival_users(), self.environment.user_classes)
            self.arrivals = schedule.arrivals(slots, phase)
            self.wait_time = self._until_due  # type: ignore[method-assign]
            due = self.arrivals.after((time.time_ns() - self.node.schedule_started_ns) / 1e9)
            gevent.sleep(self._due(due))

    @classmethod
    def arrival_slots(cls, users: int, user_classes: list[type[User]]) -> float:
        """How many users of this class would share the arrivals if every user were like this one.

        With ``users`` cache users split by class weight, the arrivals per second of the whole
        population are ``users * mean(weight * open_rate) / mean(weight)`` times one unit; this user
        takes ``open_rate`` units of it, so it takes every ``slots``-th arrival.
        """
        classes = [c for c in user_classes if issubclass(c, _CacheUser)] or [cls]
        weights = sum(c.weight for c in classes)
        units = users * sum(c.weight * c.open_rate for c in classes) / weights
        return units / cls.open_rate

    def _due(self, due: float) -> float:
        """Make ``due`` (seconds into the schedule) the current operation's; seconds until then."""
        if due == float("inf"):
            self.t_intended = None
            return 3600.0  # the schedule has no more arrivals: idle until the test stops
        self.t_intended = self.node.schedule_started_ns + int(due * 1e9)
        return max(0.0, (self.t_intended - time.time_ns()) / 1e9)

    def _until_due(self) -> float:
        """The open model's wait: until this user's next operation is due (0 when already late)."""
        assert self.arrivals is not None
        return self._due(self.arrivals.next())

    def renew(self, status: str) -> None:
        if status == "info":
            self.process = self.node.new_process()


class CacheReader(_CacheUser):
    """Read a key through the target's read path (for the reference cache: GET, on a miss load
    from PostgreSQL and fill)."""

    weight = 8
    wait_time = between(0.05, 0.25)
    open_rate = 1 / 0.15

    @task
    def read(self) -> None:
        if self.ops.read(self.process, self.next_key(), self.t_intended) == "info":
            self.process = self.node.new_process()


class CacheWriter(_CacheUser):
    """Write a key through the target's write path (its commit and its own invalidation)."""

    weight = 2
    wait_time = between(0.5, 1.5)
    open_rate = 1 / 1.0

    @task
    def write(self) -> None:
        if self.node.writes_paused:
            return  # a shape is quiescing: readers go on, writes stop
        self.renew(self.ops.write(self.process, self.next_key(), self.t_intended))
