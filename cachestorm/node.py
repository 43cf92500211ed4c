"""The user-running side of a Locust node: its target, recorder, shipper and probes.

Every node that runs users (the single local runner, or each worker) has one :class:`Node`. At
each test start it makes the run's target instance and the :class:`~cachestorm.operations.Operations`
the users call, and starts shipping history batches to the master; at each stop it ships the last
rows and its final count. User classes reach it with :func:`node_of` in their ``on_start``.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any

import gevent
import gevent.event
import psutil
from locust.env import Environment
from locust.runners import WorkerRunner

from cachestorm import locust_fixes, target_loader
from cachestorm.clock import PINGS_PER_ROUND, PONG_TIMEOUT_S, ROUND_INTERVAL_S, ClockTrack, Exchange
from cachestorm.history import Recorder, Shipper
from cachestorm.operations import Operations
from cachestorm.options import Options
from cachestorm.probes import Prober
from cachestorm.request_stats import BatchedRequests
from cachestorm.target import Cached, TargetContext

log = logging.getLogger("cachestorm")

SHIP_INTERVAL_S = 1.0
# A node's process ids live in their own range so that they are unique across the run.
NODE_PROCESS_STRIDE = 1 << 40
MSG_CLOCK_PING = "cachestorm_clock_ping"


def boot_id() -> str:
    """Identifies this host's running kernel. Processes with the same boot id usually share one
    clock, but not always (a process under libfaketime), so the clock is measured regardless."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return f"unknown-{uuid.getnode()}"


def _no_peek(key: str) -> Cached:
    raise NotImplementedError("this target has no peek: its writes are not probed")


@dataclass
class Node:
    """One node's users' view of the run: the target's operations, the recorder and the shipper."""

    environment: Environment
    node: str
    options: Options
    recorder: Recorder
    #: Called with one line when the target breaks the contract: the run must stop.
    on_broken: Callable[[str], None] = lambda message: None
    target: Any = None
    operations: Operations | None = None
    fire: Any = None
    batched: BatchedRequests | None = None
    #: The target's notifier for WebSocket listeners ("" when it has none).
    ws_url: str = ""
    # Set by a shape's quiesce phase; user classes that write check it before each write.
    writes_paused: bool = False
    shipper: Shipper | None = None
    ship_greenlet: Any = None
    prober: Prober | None = None
    # Time zero of an open-model run's arrival schedule on this node (cachestorm.arrival).
    schedule_started_ns: int = 0
    _processes: Any = field(default_factory=lambda: count(1))
    process_base: int = 0
    clock: ClockTrack = field(default_factory=ClockTrack)
    clock_greenlet: Any = None
    # The ping awaiting its pong: its number, and where on_clock_pong puts (t_master, t1).
    _ping: tuple[int, Any] | None = None
    _ping_seq: Any = field(default_factory=lambda: count(1))

    def new_process(self) -> int:
        return self.process_base + next(self._processes)

    @property
    def r(self) -> Any:
        """The reference cache's Redis client, for the contention workloads that use it directly."""
        return self._reference_part("r")

    @property
    def pg(self) -> Any:
        """The reference cache's PostgreSQL client, for the contention workloads that use it directly."""
        return self._reference_part("pg")

    def _reference_part(self, name: str) -> Any:
        part = getattr(self.target, name, None)
        if part is None:
            raise RuntimeError(
                "the contention workloads run against the reference cache's Redis and PostgreSQL; "
                f"this run's target ({self.options.target}) has no {name!r}"
            )
        return part

    def start_run(self) -> None:
        parsed = self.environment.parsed_options
        self.options = o = Options.from_parsed(parsed)
        runner = self.environment.runner
        if isinstance(runner, WorkerRunner):
            self.process_base = (max(runner.worker_index, 0) + 1) * NODE_PROCESS_STRIDE
        if self.fire is None:
            if o.request_events == "batched":
                self.batched = BatchedRequests(self.environment)
                self.fire = self.batched.fire
            else:
                self.fire = self.environment.events.request.fire
        self.recorder.enabled = o.history
        self.recorder.take()
        # A new instance every run: the target and its options may have changed in the web UI.
        self.close()
        cls = target_loader.load(o.target)
        self.target = target = cls(
            TargetContext(parsed, self.fire, "users", self.recorder.record, self.new_process)
        )
        # Probes only feed the history: with it off (a cost measurement), they would be load alone.
        peek = getattr(target, "peek", None)
        probe_rate = o.probe_rate if o.history and peek is not None else 0.0
        self.prober = Prober(
            peek or _no_peek, self.recorder, o.probe_delays_s(), probe_rate, self.new_process
        )
        self.operations = Operations(
            target, self.recorder, self.fire, self.on_broken, o.keys, after_write=self.prober.after_write
        )
        warm = getattr(target, "warm", None)
        if o.arrival_rate and callable(warm):
            # Before any user starts, so that the schedule's first operations do not wait for them.
            warm(o.arrival_users())
        notifications = getattr(target, "notifications_url", None)
        self.ws_url = str(notifications() or "") if callable(notifications) else ""
        self.schedule_started_ns = time.time_ns()
        self.writes_paused = False
        assert runner is not None
        self.shipper = Shipper(
            self.recorder,
            runner.send_message,
            self.node,
            o.run_id,
            schedule_started_ns=self.schedule_started_ns if o.arrival_rate else 0,
            cpu_interval_s=SHIP_INTERVAL_S,
        )
        if self.clock_greenlet is not None:  # a run started again without a stop in between
            self.clock_greenlet.kill(block=True)
        self.clock = ClockTrack()
        if isinstance(runner, WorkerRunner):
            self.shipper.clock_summary = self.clock.summary(sync=o.clock_sync)
            if o.clock_sync:
                self.shipper.clock_ready = False
                self.clock_greenlet = gevent.spawn(self._clock_loop, self.shipper, runner.send_message)
        self.ship_greenlet = gevent.spawn(self._ship_loop, self.shipper)

    def started(self, versions: dict[str, int] | None) -> None:
        """The master's reset said where each key's versions start (None: all at 0)."""
        if self.operations is not None:
            self.operations.contract.started(versions)

    def on_clock_pong(self, data: dict[str, Any]) -> None:
        t1 = time.time_ns()  # first: anything before it would widen the round trip
        waiting = self._ping
        if waiting is not None and waiting[0] == data.get("seq"):
            waiting[1].set((int(data["t_master"]), t1))

    def ping(self, send: Callable[[str, Any], None]) -> Exchange | None:
        """One exchange with the master (None: no pong within PONG_TIMEOUT_S)."""
        seq = next(self._ping_seq)
        answer: Any = gevent.event.AsyncResult()
        self._ping = (seq, answer)
        t0 = time.time_ns()
        send(MSG_CLOCK_PING, {"node": self.node, "seq": seq, "t0": t0, "boot_id": boot_id()})
        try:
            t_master, t1 = answer.get(timeout=PONG_TIMEOUT_S)
        except gevent.Timeout:
            return None
        finally:
            self._ping = None
        return Exchange(t0, t_master, t1)

    def clock_round(self, shipper: Shipper, send: Callable[[str, Any], None]) -> None:
        """Estimate the offset anew and have the shipper apply it from its next batch on."""
        exchanges = [e for e in (self.ping(send) for _ in range(PINGS_PER_ROUND)) if e is not None]
        chosen = self.clock.add_round(exchanges)
        if chosen is None:
            log.warning("cachestorm: no clock pong from the master this round; keeping the last estimate")
        elif self.clock.ready:
            shipper.clock_offset_ns = self.clock.offset_ns
            shipper.clock_uncertainty_ns = self.clock.uncertainty_ns
            shipper.clock_ready = True
        shipper.clock_summary = self.clock.summary()

    def _clock_loop(self, shipper: Shipper, send: Callable[[str, Any], None]) -> None:
        while True:
            self.clock_round(shipper, send)
            gevent.sleep(ROUND_INTERVAL_S)

    def _ship_loop(self, shipper: Shipper) -> None:
        process = psutil.Process()
        process.cpu_percent()  # the first call starts the measurement and returns 0
        psutil.cpu_percent()  # the same for the host's
        while True:
            gevent.sleep(SHIP_INTERVAL_S)
            shipper.ship()
            # Whether this process kept up with its users, and whether its host had a CPU to
            # give it: the analysis warns when either did not.
            shipper.cpu_samples.append(process.cpu_percent())
            shipper.host_cpu_samples.append(psutil.cpu_percent())

    def end_run(self) -> None:
        """Users have stopped: ship the last rows and the final count.

        Asked again (a drain after a normal stop), it resends the count, which the collector takes
        idempotently: the first one may not have arrived.
        """
        if self.prober is not None:
            self.prober.stop()
        if self.clock_greenlet is not None:
            self.clock_greenlet.kill(block=True)
            self.clock_greenlet = None
        if self.ship_greenlet is not None:
            self.ship_greenlet.kill(block=True)
            self.ship_greenlet = None
        if self.batched is not None:
            self.batched.flush()
        runner = self.environment.runner
        if isinstance(runner, WorkerRunner):
            # Before the last rows: the master judges the run once it has them, and Locust's
            # figures of it must then be whole too.
            locust_fixes.report_stats_now(runner)
        if self.shipper is not None:
            self.shipper.end()

    def close(self) -> None:
        if self.target is not None:
            with contextlib.suppress(Exception):
                self.target.close()
        self.target = None


def node_of(environment: Environment) -> Node:
    """The user-running side of this node, for user classes' ``on_start``.

    In a run refused at its start, it ends the calling user instead (its ``on_stop`` still runs).
    """
    session = getattr(environment, "cachestorm", None)
    if session is None or session.node is None:
        raise RuntimeError("cachestorm.plugin.register(environment) was not called in the init event")
    if session.refused:
        # The run was refused at its start and is being stopped. Leave as a kill would: Locust
        # logs a StopUser raised in on_start with its traceback, once per user.
        raise gevent.GreenletExit()
    node: Node = session.node
    return node
