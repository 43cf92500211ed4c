"""Putting a remote worker's rows on the master's clock."""

from __future__ import annotations

import time
from typing import Any

from cachestorm import node as plugin
from cachestorm.history import Recorder, Shipper
from cachestorm.options import Options


def worker_with_shipper() -> plugin.Node:
    opts = Options(**{f: None for f in Options.__dataclass_fields__})  # only the shipper is used here
    w = plugin.Node(environment=None, node="w1", options=opts, recorder=Recorder())  # type: ignore[arg-type]
    w.shipper = Shipper(w.recorder, lambda kind, data: None, "w1", "r1")
    return w


def test_a_worker_on_another_host_estimates_its_offset(monkeypatch: Any) -> None:
    w = worker_with_shipper()
    t0 = time.time_ns()
    # The master's clock runs 5 s ahead; the pong comes back after a 2 ms round trip.
    monkeypatch.setattr(plugin.time, "time_ns", lambda: t0 + 2_000_000)
    w.on_clock_pong({"t0": t0, "t_master": t0 + 1_000_000 + 5_000_000_000, "boot_id": "another-host"})
    assert w.shipper is not None
    assert w.shipper.clock_offset_ns == 5_000_000_000
    assert w.shipper.clock_uncertainty_ns == 1_000_000


def test_a_worker_on_the_masters_host_keeps_its_clock() -> None:
    w = worker_with_shipper()
    t0 = time.time_ns()
    w.on_clock_pong({"t0": t0, "t_master": t0 + 5_000_000_000, "boot_id": plugin.boot_id()})
    assert w.shipper is not None
    assert (w.shipper.clock_offset_ns, w.shipper.clock_uncertainty_ns) == (0, 0)
