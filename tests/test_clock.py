"""Putting a worker's rows on the master's clock: the estimate, its rounds and the shipper."""

from __future__ import annotations

from typing import Any

import gevent

from analysis.options import Options as AnalysisOptions
from cachestorm import node as plugin
from cachestorm.clock import PINGS_PER_ROUND, ClockTrack, Exchange, best
from cachestorm.history import MSG_BATCH, Recorder, Shipper
from cachestorm.options import Options

MS = 1_000_000


def worker_with_shipper(sent: list[tuple[str, Any]] | None = None) -> plugin.Node:
    opts = Options(**{f: None for f in Options.__dataclass_fields__})  # only the shipper is used here
    w = plugin.Node(environment=None, node="w1", options=opts, recorder=Recorder())  # type: ignore[arg-type]
    out = sent if sent is not None else []
    w.shipper = Shipper(w.recorder, lambda kind, data: out.append((kind, data)), "w1", "r1")
    return w


def test_the_shortest_round_trip_gives_the_offset() -> None:
    # The master runs 5 s ahead. A slow exchange whose pong sat in a queue skews the midpoint by
    # 9 ms; the fast one is off by at most its half round trip.
    slow = Exchange(t0=0, t_master=5_000 * MS + 1 * MS, t1=20 * MS)
    fast = Exchange(t0=100 * MS, t_master=5_100 * MS + 1 * MS, t1=102 * MS)
    assert best([slow, fast]) == fast
    track = ClockTrack()
    track.add_round([slow, fast])
    assert track.offset_ns == 5_000 * MS
    assert track.uncertainty_ns == 1 * MS
    # The control: the slow exchange alone would have been 9 ms off.
    assert slow.offset_ns == 4_991 * MS


def test_the_drift_is_followed_and_widens_the_uncertainty() -> None:
    track = ClockTrack()
    for i, offset in enumerate((50 * MS, 52 * MS, 53 * MS)):
        t0 = i * 2_000 * MS
        track.add_round([Exchange(t0, t0 + offset + MS // 10, t0 + MS // 5)])
    s = track.summary()
    assert (s["first_offset_ns"], s["last_offset_ns"], s["rounds"]) == (50 * MS, 53 * MS, 3)
    assert (s["min_offset_ns"], s["max_offset_ns"]) == (50 * MS, 53 * MS)
    # Rows carry the newest estimate: one recorded before a round is off by up to a round's drift.
    assert s["uncertainty_ns"] == MS // 10 + 2 * MS
    track.add_round([])
    assert track.offset_ns == 53 * MS and track.summary()["failed_rounds"] == 1


def test_rows_wait_for_the_first_estimate_then_ship_with_the_newest() -> None:
    sent: list[tuple[str, Any]] = []
    w = worker_with_shipper(sent)
    assert w.shipper is not None
    w.shipper.clock_ready = False
    w.recorder.record(1, "read", "k", "ok", 1_000, 2_000, 1, None, "hit", 1_500)
    assert w.shipper.ship() == 0 and sent == []

    def master(kind: str, data: Any) -> None:
        # Answers later, on the loop, as Locust's receiving greenlet would; its clock is 50 ms ahead.
        gevent.spawn(w.on_clock_pong, {"seq": data["seq"], "t_master": data["t0"] + 50 * MS})

    w.clock_round(w.shipper, master)
    assert w.shipper.clock_ready
    assert abs(w.shipper.clock_offset_ns - 50 * MS) <= w.shipper.clock_uncertainty_ns
    assert w.shipper.ship() == 1
    off = w.shipper.clock_offset_ns
    kind, batch = sent[-1]
    assert kind == MSG_BATCH
    assert [batch["columns"][c] for c in (4, 5, 9)] == [[1_000 + off], [2_000 + off], [1_500 + off]]
    assert w.shipper.clock_summary is not None and w.shipper.clock_summary["rounds"] == 1


def test_a_pong_of_another_ping_is_not_taken(monkeypatch: Any) -> None:
    w = worker_with_shipper()
    assert w.shipper is not None
    w.shipper.clock_ready = False
    pings: list[int] = []

    def late_master(kind: str, data: Any) -> None:
        # Answers the previous ping: a pong that outlived its wait must not pass for this one's.
        pings.append(data["seq"])
        gevent.spawn(w.on_clock_pong, {"seq": data["seq"] - 1, "t_master": data["t0"]})

    monkeypatch.setattr(plugin, "PONG_TIMEOUT_S", 0.01)
    w.clock_round(w.shipper, late_master)
    assert len(pings) == PINGS_PER_ROUND
    assert not w.shipper.clock_ready and w.recorder is not None
    assert w.clock.summary()["failed_rounds"] == 1 and w.clock.summary()["rounds"] == 0


def test_the_tolerance_is_the_worst_nodes_uncertainty() -> None:
    run = {
        "clock_uncertainty_ns": 0,
        "nodes": {"a": {"clock_uncertainty_ns": 300_000}, "b": {"clock_uncertainty_ns": 700_000}},
    }
    o = AnalysisOptions.resolve(run)
    assert (o.tolerance_ns, o.tolerance_from) == (700_000, "run.json clock_uncertainty_ns")
    # The user's tolerance wins; with none anywhere it is 0.
    assert AnalysisOptions.resolve(run, tolerance_ms=2).tolerance_ns == 2 * MS
    assert AnalysisOptions.resolve({"nodes": {"a": {"clock_uncertainty_ns": 0}}}).tolerance_ns == 0
