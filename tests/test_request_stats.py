"""Batched request statistics must equal what one Locust event per call gives."""

from __future__ import annotations

import random

from locust.env import Environment

from cachestorm.request_stats import BatchedRequests


def test_batched_stats_equal_per_call_stats() -> None:
    rng = random.Random(7)
    calls = [
        ("REDIS" if i % 3 else "PG", "get" if i % 3 else "select", rng.expovariate(1 / 3.0))
        for i in range(5000)
    ]
    calls += [("REDIS", "get", 250.0), ("REDIS", "get", 4321.0)]  # past 100 ms Locust buckets coarsely
    each, batched = Environment(), Environment()
    for env in (each, batched):
        env.create_local_runner()  # the runner attaches Locust's statistics listener
    b = BatchedRequests(batched)
    for fire in (each.events.request.fire, b.fire):
        for request_type, name, ms in calls:
            fire(
                request_type=request_type,
                name=name,
                response_time=ms,
                response_length=0,
                exception=None,
                context=None,
            )
    b.flush()
    for key in (("get", "REDIS"), ("select", "PG")):
        e, f = each.stats.get(*key), batched.stats.get(*key)
        assert (e.num_requests, e.min_response_time, e.max_response_time) == (
            f.num_requests,
            f.min_response_time,
            f.max_response_time,
        )
        assert abs(e.total_response_time - f.total_response_time) < 1e-6 * e.total_response_time
        assert e.response_times == f.response_times
        for p in (0.5, 0.95, 0.99, 0.999):
            assert e.get_response_time_percentile(p) == f.get_response_time_percentile(p)
    assert each.stats.total.num_requests == batched.stats.total.num_requests == len(calls)


def test_failures_are_fired_one_by_one() -> None:
    env = Environment()
    env.create_local_runner()
    seen: list[object] = []
    env.events.request.add_listener(lambda **kw: seen.append(kw["exception"]))
    b = BatchedRequests(env)
    err = ConnectionError("refused")
    b.fire(request_type="REDIS", name="get", response_time=1.0, exception=err)
    b.fire(request_type="REDIS", name="get", response_time=1.0)
    assert seen == [err]  # the success waits for the flush and never reaches other listeners
    assert env.stats.get("get", "REDIS").num_failures == 1
    b.flush()
    assert env.stats.get("get", "REDIS").num_requests == 2
