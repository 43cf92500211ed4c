"""The OpenModel shape: all its users at once for the schedule plus the hold, then the quiesce."""

from __future__ import annotations

from typing import Any

import pytest
from locust.argument_parser import get_empty_argument_parser

from cachestorm import options
from cachestorm.messages import MSG_PAUSE_WRITES
from shapes import OpenModel, open_model_problem
from tests.test_shapes_more import attach, users


def parsed(*args: str) -> Any:
    parser = get_empty_argument_parser(add_help=False, default_config_files=[])
    options.add_arguments(parser)
    for name in ("--hold-time", "--quiesce-time"):
        if name not in parser._option_string_actions:
            parser.add_argument(name, type=float, default=None)
    return parser.parse_args(list(args))


def test_users_for_the_ramp_and_hold_then_quiesce(monkeypatch: pytest.MonkeyPatch) -> None:
    shape = OpenModel()
    o = parsed(
        "--arrival-rate", "0:100,30:1000", "--hold-time", "10", "--quiesce-time", "4", "--listeners", "3"
    )
    clock, sent = attach(shape, monkeypatch, o)
    # 1000/s at the peak: 50 cache users by default, plus the 3 listeners.
    assert users(shape, clock, [0, 29.9, 39.9]) == {0: 53, 29.9: 53, 39.9: 53}
    assert sent == []
    assert users(shape, clock, [40.0, 43.9]) == {40.0: 53, 43.9: 53}
    assert sent == [MSG_PAUSE_WRITES]
    assert users(shape, clock, [44.0]) == {44.0: None}
    clock[0] = 0
    tick = shape.tick()
    assert tick is not None and tick[1] == 53  # all of them within about a second


def test_open_users_sets_the_population(monkeypatch: pytest.MonkeyPatch) -> None:
    shape = OpenModel()
    o = parsed("--arrival-rate", "500", "--open-users", "7", "--listeners", "0", "--hold-time", "5")
    clock, _ = attach(shape, monkeypatch, o)
    assert users(shape, clock, [0, 4.9, 5.1]) == {0: 7, 4.9: 7, 5.1: 7}


def test_without_a_rate_it_stops_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    shape = OpenModel()
    clock, _ = attach(shape, monkeypatch, parsed())
    assert users(shape, clock, [0]) == {0: None}


@pytest.mark.parametrize(
    ("args", "shape", "problem"),
    [
        (["--arrival-rate", "100"], "OpenModel", None),
        ([], "StepRamp", None),
        (["--arrival-rate", "100"], "StepRamp", "--shape is 'StepRamp' but --arrival-rate sets the load"),
        (["--arrival-rate", "100"], "Default", "--shape is 'Default' but --arrival-rate sets the load"),
        ([], "OpenModel", "--shape is 'OpenModel' but --arrival-rate is not set"),
    ],
)
def test_which_shapes_an_arrival_rate_goes_with(args: list[str], shape: str, problem: str | None) -> None:
    o = parsed(*args)
    o.scenario = "coherence"
    found = open_model_problem(o, shape)
    assert found == problem if problem is None else (found or "").startswith(problem)


def test_an_arrival_rate_drives_the_coherence_scenario_only() -> None:
    o = parsed("--arrival-rate", "100")
    o.scenario = "contention"
    assert (open_model_problem(o, "OpenModel") or "").startswith("--scenario is 'contention'")
