"""The open model's schedule arithmetic and the parsing of --arrival-rate and --probe-delays."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from locust import User

from cachestorm.arrival import Schedule, default_users
from cachestorm.options import parse_duration, parse_durations, parse_schedule
from users import CacheReader, CacheWriter, WebSocketListener


def test_a_constant_rate_is_one_point() -> None:
    s = Schedule(parse_schedule("500"))
    assert s.rate(0) == s.rate(123.4) == 500
    assert s.count(2.0) == pytest.approx(1000)
    assert s.time_of(1000) == pytest.approx(2.0)


def test_a_ramp_integrates_to_the_trapezoid_and_time_of_inverts_it() -> None:
    s = Schedule(parse_schedule("0:100,30s:1000,1m:1000"))
    assert s.rate(15) == pytest.approx(550)
    # 30 s ramping 100 -> 1000 is 16,500 arrivals; then 1000/s.
    assert s.count(30) == pytest.approx(16_500)
    assert s.count(40) == pytest.approx(26_500)
    assert s.count(100) == pytest.approx(16_500 + 70_000)
    for t in (0.001, 0.5, 7.25, 29.999, 30.0, 30.001, 45.0, 59.0, 61.0, 250.0):
        assert s.time_of(s.count(t)) == pytest.approx(t, rel=1e-9, abs=1e-9)


def test_a_ramp_down_to_zero_ends_the_arrivals() -> None:
    s = Schedule(parse_schedule("0:200,10:0"))
    assert s.count(10) == pytest.approx(1000)
    assert s.count(50) == pytest.approx(1000)
    assert s.time_of(999.999) < 10
    assert s.time_of(1000.5) == math.inf


def test_users_with_random_phases_share_the_schedule() -> None:
    s = Schedule(parse_schedule("0:100,20:1000"))
    users, horizon = 50, 20.0
    rng = random.Random(7)
    times: list[float] = []
    for _ in range(users):
        a = s.arrivals(users, rng.random())
        t = a.after(0.0)
        while t < horizon:
            times.append(t)
            t = a.next()
    # Every user walks its own arrivals in order, and together they follow the ramp.
    assert len(times) == pytest.approx(s.count(horizon), rel=0.02)
    counts, _ = np.histogram(times, bins=[0, 5, 10, 15, 20])
    expected = [s.count(b) - s.count(a) for a, b in ((0, 5), (5, 10), (10, 15), (15, 20))]
    assert counts == pytest.approx(expected, rel=0.1)


def test_a_late_user_resumes_at_the_first_arrival_due_and_never_goes_back() -> None:
    s = Schedule(parse_schedule("100"))
    a = s.arrivals(users=10, phase=0.5)
    first = a.after(3.0)
    assert 3.0 <= first < 3.0 + 10 / 100
    second = a.next()
    assert second == pytest.approx(first + 0.1)
    # Asking again for an earlier time still moves forward: an arrival is never handed out twice.
    assert a.after(0.0) > second


def test_default_users_scale_with_the_peak() -> None:
    assert default_users(Schedule(parse_schedule("100"))) == 10
    assert default_users(Schedule(parse_schedule("0:100,10:4000"))) == 200
    assert default_users(Schedule(parse_schedule("1000000"))) == 2000


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("fast", "not a rate"),
        ("0:100,0:200", "the times must increase"),
        ("0:100,10s", "not a SECONDS:RATE point"),
        ("-5", "rates must be finite"),
        ("0", "not all 0"),
        ("inf", "rates must be finite"),
    ],
)
def test_bad_schedules_say_what_to_write(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as e:
        parse_schedule(text)
    assert "0:100,30:1000" in str(e.value)


def test_durations() -> None:
    assert parse_duration("250ms") == pytest.approx(0.25)
    assert parse_duration("2m") == 120
    assert parse_duration("1.5") == 1.5
    assert parse_durations("5s,100ms,1s") == pytest.approx((0.1, 1.0, 5.0))
    assert parse_durations("") == ()
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("soon")
    with pytest.raises(ValueError, match="above 0"):
        parse_durations("0s,1s")


def test_the_open_model_keeps_the_closed_models_mix() -> None:
    # Readers wait 0.15 s on average and writers 1 s: one write per 26.7 reads in the closed model.
    classes: list[type[User]] = [CacheReader, CacheWriter, WebSocketListener]
    users = 100
    readers, writers = users * 8 // 10, users * 2 // 10
    read_share = readers / CacheReader.arrival_slots(users, classes)
    write_share = writers / CacheWriter.arrival_slots(users, classes)
    assert read_share + write_share == pytest.approx(1.0)
    closed = (8 / 0.15) / (8 / 0.15 + 2 / 1.0)
    assert read_share == pytest.approx(closed)
