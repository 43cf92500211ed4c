"""Stages: a load shape read from a JSON or TOML file of timed stages.

File format (the extension picks the parser; see docs/workload.md)::

    # stages.toml                                   // stages.json
    [[stage]]                                       {"stages": [
    duration = 30        # seconds, > 0               {"duration": 30, "users": 50,
    users = 50           # integer, >= 0                 "spawn_rate": 10,
    spawn_rate = 10      # users/second, > 0             "user_classes": ["CacheReader"]},
    user_classes = ["CacheReader"]   # optional         ...
                                                    ]}

:func:`load_stages` reads and checks a file and raises :class:`StagesError`, whose message is one
line naming the file and the problem, so that a caller can print it and exit.
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from locust.exception import StopTest

from .quiesce import Phase, QuiescingShape, Tick

if TYPE_CHECKING:
    from locust import User

FIELDS = ("duration", "users", "spawn_rate", "user_classes")
"""The fields a stage may have; all but ``user_classes`` are required."""


class StagesError(ValueError):
    """A stages file that cannot be used; ``str(error)`` is one line: ``<path>: <problem>``."""


@dataclass(frozen=True)
class Stage:
    """``users`` users (reached at ``spawn_rate`` per second) for ``duration`` seconds.

    ``user_classes`` names the user classes Locust spawns from in this stage; ``None`` means all.
    """

    duration: float
    users: int
    spawn_rate: float
    user_classes: tuple[str, ...] | None = None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "table"}.get(
        type(value), type(value).__name__
    )


def _number(where: str, name: str, value: Any) -> float:
    # bool is an int to Python, never a duration or a rate to us.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise StagesError(f"{where}: '{name}' must be a number, got {_kind(value)} {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise StagesError(f"{where}: '{name}' must be a number > 0, got {value!r}")
    return float(value)


def _stage(where: str, raw: Any) -> Stage:
    if not isinstance(raw, dict):
        raise StagesError(f"{where}: must be a table of fields, got {_kind(raw)}")
    unknown = [key for key in raw if key not in FIELDS]
    if unknown:
        raise StagesError(f"{where}: unknown field '{unknown[0]}' (fields: {', '.join(FIELDS)})")
    for name in FIELDS[:3]:
        if name not in raw:
            raise StagesError(f"{where}: missing '{name}'")
    duration = _number(where, "duration", raw["duration"])
    spawn_rate = _number(where, "spawn_rate", raw["spawn_rate"])
    users = raw["users"]
    if isinstance(users, bool) or not isinstance(users, int):
        raise StagesError(f"{where}: 'users' must be an integer, got {_kind(users)} {users!r}")
    if users < 0:
        raise StagesError(f"{where}: 'users' must be an integer >= 0, got {users}")
    classes = raw.get("user_classes")
    if classes is None and "user_classes" not in raw:
        return Stage(duration, users, spawn_rate)
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) and c for c in classes):
        raise StagesError(
            f"{where}: 'user_classes' must be a non-empty list of user class names, got {classes!r}"
        )
    twice = next((c for i, c in enumerate(classes) if c in classes[:i]), None)
    if twice is not None:
        raise StagesError(f"{where}: 'user_classes' lists '{twice}' twice")
    return Stage(duration, users, spawn_rate, tuple(classes))


def _parse(path: Path) -> tuple[Any, str]:
    """The parsed document and the name of its stage list (``stages`` or ``stage``)."""
    suffix = path.suffix.lower()
    if suffix not in (".json", ".toml"):
        raise StagesError(f"{path}: unknown stages file type '{suffix}' (use .json or .toml)")
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise StagesError(f"{path}: stages file not found") from None
    except OSError as err:
        raise StagesError(f"{path}: cannot read the stages file: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise StagesError(f"{path}: not UTF-8 text (byte {err.start})") from None
    if suffix == ".json":
        try:
            return json.loads(text), "stages"
        except json.JSONDecodeError as err:
            raise StagesError(
                f"{path}: not valid JSON: {err.msg} (at line {err.lineno}, column {err.colno})"
            ) from None
    try:
        return tomllib.loads(text), "stage"
    except tomllib.TOMLDecodeError as err:
        # tomllib's message already ends with "(at line L, column C)" when it knows where.
        raise StagesError(f"{path}: not valid TOML: {' '.join(str(err).split())}") from None


def load_stages(path: str | os.PathLike[str], known_classes: Iterable[str] | None = None) -> list[Stage]:
    """The stages of the JSON or TOML file at ``path``, checked; raises :class:`StagesError`.

    With ``known_classes`` (user class names, e.g. ``[c.__name__ for c in env.user_classes]``)
    every ``user_classes`` name must be one of them, too. Pure: reads the file, nothing else.
    """
    path = Path(path)
    doc, key = _parse(path)
    table = "a [[stage]] table" if key == "stage" else 'a top-level "stages" list'
    if not isinstance(doc, dict):
        raise StagesError(f"{path}: no stages: expected {table}, got a {_kind(doc)}")
    unknown = [k for k in doc if k != key]
    if unknown:
        raise StagesError(f"{path}: unknown top-level key '{unknown[0]}' (expected {table} only)")
    raw = doc.get(key)
    if raw is None or raw == []:
        raise StagesError(f"{path}: no stages: expected {table}")
    if not isinstance(raw, list):
        raise StagesError(f"{path}: no stages: '{key}' must be a list of tables, got {_kind(raw)}")
    stages = [_stage(f"{path}: stage {i}", item) for i, item in enumerate(raw, start=1)]
    if known_classes is not None:
        check_classes(path, stages, known_classes)
    return stages


def check_classes(path: str | os.PathLike[str], stages: Sequence[Stage], known: Iterable[str]) -> None:
    """Raise :class:`StagesError` for the first stage naming a class not in ``known``."""
    names = sorted(set(known))
    for i, stage in enumerate(stages, start=1):
        for name in stage.user_classes or ():
            if name not in names:
                valid = ", ".join(names) or "none"
                raise StagesError(f"{path}: stage {i}: unknown user class '{name}' (valid: {valid})")


class Stages(QuiescingShape):
    """Run the stages of a JSON or TOML file in order, then quiesce and stop.

    The file is ``parsed_options.stages`` (``--stages FILE``); it is read on the first tick of a
    run (again for every run the web UI starts, so edits between runs count) unless
    :attr:`stages` was set beforehand, e.g. from :func:`load_stages` at startup. Stage ``i`` lasts
    its ``duration`` seconds, during which :meth:`tick` returns ``(users, spawn_rate)``. After the
    last stage its tick is kept for ``quiesce_time`` seconds with writes paused, as in StepRamp;
    then :meth:`tick` returns ``None`` and the test stops.

    ``user_classes`` in a stage makes the tick ``(users, spawn_rate, classes)``, the classes being
    the runner's user classes of those names. Locust only spawns the users it adds from these
    classes; users already running are not switched (see docs/workload.md). Because Locust keeps
    the last class list it was given when a tick has none, once any stage names classes, the
    stages without ``user_classes`` return all the runner's user classes.

    A file that cannot be used stops the test with its one-line error (Locust's ``StopTest``; exit
    code 2 in a headless run).

    Example, in the locustfile::

        from shapes import Stages

    then ``locust -f locustfile.py --stages shapes/examples/stages.toml``.
    """

    stages: list[Stage] | None = None
    _stages_from: str | None = None

    def reset_time(self) -> None:
        """A new run: read the file again (unless the stages were set directly)."""
        super().reset_time()
        if self._stages_from is not None:
            self.stages = None

    def load(self) -> list[Stage]:
        """The stages: those set on the shape, else the file's (read now), class names checked."""
        if self.stages is None:
            path = getattr(self._options(), "stages", None)
            if not path:
                raise StagesError("no stages file: pass --stages FILE (a .json or .toml file)")
            stages = load_stages(path)
            self.stages, self._stages_from = stages, str(path)
        return self.stages

    def phases(self) -> list[Phase]:
        """One phase per stage, user class names mapped to the runner's user classes."""
        stages = self.load()
        if not any(stage.user_classes for stage in stages):
            return [(stage.duration, (stage.users, stage.spawn_rate)) for stage in stages]
        runner_classes: list[type[User]] = list(getattr(self.runner, "user_classes", None) or [])
        by_name = {cls.__name__: cls for cls in runner_classes}
        check_classes(self._stages_from or "stages", stages, by_name)
        phases: list[Phase] = []
        for stage in stages:
            classes = [by_name[name] for name in stage.user_classes] if stage.user_classes else runner_classes
            phases.append((stage.duration, (stage.users, stage.spawn_rate, classes)))
        return phases

    def tick(self) -> Tick | None:
        """The current stage's tick, the quiesce's, or ``None`` once it is all over."""
        try:
            phases = self.phases()
        except StagesError as err:
            options = self._options()
            if self.runner is not None and getattr(options, "headless", False):
                self.runner.environment.process_exit_code = 2
            # Locust logs a StopTest's message (no traceback) and stops the test.
            raise StopTest(str(err)) from None
        return self.follow(phases)
