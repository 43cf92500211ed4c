"""Tests for shapes.StepRamp with a fake runner and a fake clock."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from cachestorm.messages import MSG_PAUSE_WRITES
from shapes import StepRamp


def make_shape(monkeypatch: pytest.MonkeyPatch, options: Any = None) -> tuple[StepRamp, list[float]]:
    """A StepRamp whose run time is ``clock[0]``; ``options`` plays ``parsed_options``."""
    shape = StepRamp()
    sent: list[str] = []
    shape.runner = SimpleNamespace(  # type: ignore[assignment]
        environment=SimpleNamespace(parsed_options=options),
        sent=sent,
        send_message=lambda kind, data=None: sent.append(kind),
    )
    clock = [0.0]
    monkeypatch.setattr(shape, "get_run_time", lambda: clock[0])
    return shape, clock


def users_at(shape: StepRamp, clock: list[float], t: float) -> int | None:
    clock[0] = t
    result = shape.tick()
    return None if result is None else result[0]


def test_defaults_step_hold_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    shape, clock = make_shape(monkeypatch)
    expected = {
        0.0: 50,
        7.0: 50,
        14.9: 50,
        15.0: 100,
        29.0: 100,
        30.0: 250,
        44.0: 250,
        45.0: 500,
        59.9: 500,
        60.0: 500,  # the peak by ramp_time
        70.0: 500,  # held
        74.9: 500,
        75.0: 500,  # quiescing: readers only
        79.9: 500,
        80.0: None,  # ramp + hold + quiesce over: stop
        100.0: None,
    }
    assert {t: users_at(shape, clock, t) for t in expected} == expected


def test_spawn_rate_reaches_each_step_within_half_its_dwell(monkeypatch: pytest.MonkeyPatch) -> None:
    shape, clock = make_shape(monkeypatch)
    dwell = 15.0
    previous = 0
    for step in range(4):
        clock[0] = step * dwell + 1
        result = shape.tick()
        assert result is not None
        users, rate = result
        assert (users - previous) / rate <= dwell / 2 + 1e-9
        previous = users


def test_quiesce_pauses_writes_once(monkeypatch: pytest.MonkeyPatch) -> None:
    shape, clock = make_shape(monkeypatch)
    sent = shape.runner.sent  # type: ignore[union-attr]
    for t in (10.0, 74.0):
        clock[0] = t
        assert shape.tick() is not None
    assert sent == []
    for t in (75.0, 76.0, 79.0):
        clock[0] = t
        assert shape.tick() == (500, 500.0)  # same users, writes paused
    assert sent == [MSG_PAUSE_WRITES]
    clock[0] = 1.0  # the web UI starts the same shape again: a new run pauses again
    shape.tick()
    clock[0] = 76.0
    shape.tick()
    assert sent == [MSG_PAUSE_WRITES, MSG_PAUSE_WRITES]


def test_parsed_options_none(monkeypatch: pytest.MonkeyPatch) -> None:
    shape, _ = make_shape(monkeypatch, options=None)
    assert shape.settings() == (500, 60.0, 15.0)


def test_no_runner_uses_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    shape = StepRamp()
    monkeypatch.setattr(shape, "get_run_time", lambda: 0.0)
    assert shape.tick() == (50, 50 / 7.5)


def test_options_override_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    options = SimpleNamespace(ramp_users=1000, ramp_time=120, hold_time=30, quiesce_time=0)
    shape, clock = make_shape(monkeypatch, options)
    assert shape.settings() == (1000, 120.0, 30.0)
    assert users_at(shape, clock, 0) == 100
    assert users_at(shape, clock, 30) == 200
    assert users_at(shape, clock, 60) == 500
    assert users_at(shape, clock, 90) == 1000
    assert users_at(shape, clock, 149) == 1000
    assert users_at(shape, clock, 150) is None


def test_unset_options_fall_back(monkeypatch: pytest.MonkeyPatch) -> None:
    # Registered with default=None, or some not registered at all.
    options = SimpleNamespace(ramp_users=None, ramp_time=20)
    shape, _ = make_shape(monkeypatch, options)
    assert shape.settings() == (500, 20.0, 15.0)


def test_small_peak_never_drops_to_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    shape, clock = make_shape(
        monkeypatch, SimpleNamespace(ramp_users=4, ramp_time=8, hold_time=0, quiesce_time=0)
    )
    assert [users_at(shape, clock, t) for t in (0, 2, 4, 6, 8)] == [1, 1, 2, 4, None]


def test_zero_ramp_time_goes_straight_to_peak(monkeypatch: pytest.MonkeyPatch) -> None:
    shape, clock = make_shape(
        monkeypatch, SimpleNamespace(ramp_users=10, ramp_time=0, hold_time=5, quiesce_time=1)
    )
    clock[0] = 0.0
    assert shape.tick() == (10, 10.0)
    assert users_at(shape, clock, 5.5) == 10
    assert users_at(shape, clock, 6) is None


def test_is_a_concrete_shape() -> None:
    assert StepRamp.abstract is False
    assert StepRamp.__doc__
