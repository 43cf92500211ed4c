"""Shared base for shapes that run a list of phases and then quiesce, as StepRamp does.

A :class:`QuiescingShape` describes its load as phases, each ``(duration, tick)``: for
``duration`` seconds :meth:`~locust.LoadTestShape.tick` returns ``tick``. After the last phase
comes the quiesce: the last tick is kept for ``quiesce_time`` seconds (so Locust changes nothing)
while :func:`cachestorm.messages.pause_writes` has told every node to stop writing, sent once on
entering the quiesce. Then ``tick()`` returns ``None`` and Locust stops the test.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

from locust import LoadTestShape

from cachestorm.messages import pause_writes

if TYPE_CHECKING:
    from locust import User

Tick: TypeAlias = "tuple[int, float] | tuple[int, float, list[type[User]]]"
"""What a phase makes ``tick()`` return: ``(users, spawn_rate)``, optionally with user classes."""

Phase: TypeAlias = "tuple[float, Tick]"
"""``(duration in seconds, tick)``; phases with a duration of 0 or less are skipped."""


class QuiescingShape(LoadTestShape):
    """Base for shapes made of timed phases followed by a quiesce (not a shape by itself).

    Subclasses implement ``tick()`` by building their phases and returning
    ``self.follow(phases)``. Settings come from the parsed Locust options through
    :meth:`option`; ``quiesce_time`` (``--quiesce-time``, shared with StepRamp) sets the length of
    the quiesce, else :attr:`default_quiesce_time`.
    """

    abstract = True
    default_quiesce_time = 5.0
    _quiescing = False

    def _options(self) -> Any:
        return self.runner.environment.parsed_options if self.runner is not None else None

    def option(self, name: str, default: float) -> float:
        """The parsed option ``name`` as a float, or ``default`` if unregistered or ``None``."""
        value = getattr(self._options(), name, None)
        return default if value is None else float(value)

    def quiesce_time(self) -> float:
        """Seconds of quiesce after the last phase (never negative)."""
        return max(0.0, self.option("quiesce_time", self.default_quiesce_time))

    def reset_time(self) -> None:
        """Locust calls this when a run starts: a new run pauses writes again when it quiesces."""
        super().reset_time()
        self._quiescing = False

    def follow(self, phases: Sequence[Phase], run_time: float | None = None) -> Tick | None:
        """The tick for ``run_time`` (default: now): its phase's, the quiesce's, or ``None`` at the end.

        The quiesce keeps the tick of the last phase that lasted, so the user count (and class
        list) stays as it was. With no phases at all there is nothing to keep: ``None``.
        """
        if run_time is None:
            run_time = self.get_run_time()
        start = 0.0
        last: Tick | None = phases[-1][1] if phases else None
        for duration, tick in phases:
            if duration <= 0:
                continue
            if run_time < start + duration:
                self._quiescing = False  # also covers a new run that reset_time() did not announce
                return tick
            start += duration
            last = tick
        if last is None or run_time >= start + self.quiesce_time():
            return None
        if not self._quiescing and self.runner is not None:
            pause_writes(self.runner)
        self._quiescing = True
        return last
