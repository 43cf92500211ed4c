"""Faults on purpose: the nemesis, which kills, pauses and restarts the embedded services mid-run.

``--nemesis`` takes a schedule, either faults at given times since the run's start::

    redis-kill@5s,redis-pause@12s:6s,pg-restart@20s,notifier-kill@28s

(``NAME@AT[:DURATION]``; the duration is how long the fault lasts before it is healed) or one
fault at random every N seconds, ``random:8s``, drawn with ``--seed`` so a run can be replayed.

The faults, each healed by bringing the service back as it was (same port, same data directory):

- ``redis-kill``: SIGKILL redis-server, then restart it (empty: it saves nothing).
- ``redis-pause``: SIGSTOP redis-server, SIGCONT at the end. The default of 6 s is longer than the
  clients' 5 s timeout, so operations in flight become ``info``.
- ``pg-restart``: fast shutdown of PostgreSQL (SIGINT: every session cut off, transactions in
  flight rolled back), then start it again on the same data directory. Not an immediate shutdown
  (SIGQUIT) or a kill: the embedded cluster runs with ``synchronous_commit=off``, so a crash loses
  commits it already acknowledged, and the judge rightly calls the versions going back a broken
  contract; that is a fault of the embedded configuration, not of the system under test.
- ``notifier-kill``: SIGKILL the notifier, then restart it on the port its listeners know.

Network faults between one worker's host and the services (:mod:`cachestorm.netfaults`):
``partition`` (iptables DROP), ``latency`` (netem 200 ms) and ``loss`` (iptables, 30%), each 4 s by
default, act inside the network namespace ``--nemesis-netns NAME`` names, the one the worker runs
in; a single host's loopback services have no such namespace, so without it they are refused.
``random:N`` draws them too only when a namespace is given.

The nemesis is a greenlet on the master (or the local runner), and it only touches services it
started itself (:class:`~cachestorm.services.EmbeddedServices`): given URLs are refused, because
cachestorm cannot kill someone else's Redis. Faults run one at a time; one that falls due while
another is active starts when that one is healed. As Jepsen's final generator does, :meth:`stop`
heals whatever is still active and confirms every service is up before the run's final sweep.

Every fault is part of the history: a row ``f=nemesis``, ``key`` = the fault's name, ``source``
``start`` (``t_invoke`` .. ``t_complete``: the fault being applied) and one with ``source`` ``end``
(healing, until the service answered again; ``status`` ``fail`` when it did not).
"""

from __future__ import annotations

import logging
import random
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import gevent
from gevent.event import Event

from cachestorm import netfaults
from cachestorm.netfaults import NET_FAULTS, NetFaultError
from cachestorm.options import Options, parse_duration
from cachestorm.services import EmbeddedServices, ServiceError, check_pg, check_redis, check_ws

log = logging.getLogger("cachestorm")

#: Each fault and how long it lasts unless the schedule says otherwise (seconds).
FAULTS: dict[str, float] = {
    # Down longer than a fill's delay, so that no fill that read the database before the kill
    # lands its write in the empty Redis that comes back: that would be data loss, not a fault.
    "redis-kill": 1.0,
    # Longer than InstrumentedRedis's 5 s timeout, so that operations in flight time out.
    "redis-pause": 6.0,
    "pg-restart": 1.0,
    "notifier-kill": 1.0,
    **NET_FAULTS,
}
#: The embedded child each fault acts on.
SERVICE = {
    "redis-kill": "redis",
    "redis-pause": "redis",
    "pg-restart": "postgres",
    "notifier-kill": "notifier",
}
NEMESIS = "nemesis"

_AT = re.compile(r"(?P<name>[a-z-]+)@(?P<at>[^:]+)(?::(?P<duration>.+))?")

#: A row of the history, as Coordinator.add_rows takes it.
Row = tuple[Any, ...]


@dataclass(frozen=True)
class Fault:
    name: str
    at_s: float
    duration_s: float


@dataclass(frozen=True)
class Schedule:
    """Faults at fixed times, or (``every_s``) one drawn at random every so many seconds."""

    fixed: tuple[Fault, ...] = ()
    every_s: float | None = None

    def plan(self, seed: int | None, network: bool = False) -> Iterator[Fault]:
        """The faults in the order they fall due; endless for a random schedule.

        A random schedule draws network faults only with ``network`` (a namespace to fault).
        """
        if self.every_s is None:
            yield from sorted(self.fixed, key=lambda f: f.at_s)
            return
        rng = random.Random(seed)
        names = sorted(n for n in FAULTS if network or n not in NET_FAULTS)
        n = 1
        while True:
            name = rng.choice(names)
            yield Fault(name, n * self.every_s, FAULTS[name])
            n += 1


def parse_schedule(spec: str) -> Schedule:
    """The schedule ``spec`` describes; ValueError (one line) when it is not one."""
    spec = spec.strip()
    if spec.startswith("random:"):
        every = parse_duration(spec.removeprefix("random:"))
        if every <= 0:
            raise ValueError("random:N needs N above 0")
        return Schedule(every_s=every)
    faults = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        m = _AT.fullmatch(item)
        if m is None:
            raise ValueError(f"{item!r} is not NAME@TIME[:DURATION], e.g. redis-pause@12s:6s")
        name = m["name"]
        if name not in FAULTS:
            raise ValueError(f"{name!r} is not a fault; use one of {', '.join(sorted(FAULTS))}")
        duration = parse_duration(m["duration"]) if m["duration"] else FAULTS[name]
        faults.append(Fault(name, parse_duration(m["at"]), duration))
    if not faults:
        raise ValueError("no faults given")
    return Schedule(fixed=tuple(faults))


def refusal(o: Options) -> str | None:
    """Why ``--nemesis`` cannot run with these options, in one line, or None."""
    if not o.nemesis:
        return None
    try:
        schedule = parse_schedule(o.nemesis)
    except ValueError as e:
        return f"--nemesis is {o.nemesis!r}: {e}."
    network = any(f.name in NET_FAULTS for f in schedule.fixed) or o.nemesis_netns
    if network and (problem := netfaults.missing(o.nemesis_netns)):
        return f"--nemesis {o.nemesis}: {problem}"
    shaped = any(f.name == "latency" for f in schedule.fixed) or (schedule.every_s and o.nemesis_netns)
    if shaped and (problem := netfaults.netem_missing(o.nemesis_netns)):
        return f"--nemesis {o.nemesis}: {problem}"
    if o.redis_url or o.pg_dsn or o.ws_url:
        return (
            "--nemesis faults only the embedded services cachestorm started itself, and service URLs were "
            "given: drop --redis-url, --pg-dsn and --ws-url (cachestorm cannot kill someone else's Redis)."
        )
    return None


def no_services(services: EmbeddedServices | None) -> str | None:
    """Why the nemesis has nothing to fault once the target is set up, or None."""
    if services is None or services.urls is None:
        return "--nemesis needs the embedded services, and this target started none."
    return None


class Nemesis:
    """Applies a schedule's faults to ``services`` in a greenlet; ``record`` takes its history rows."""

    def __init__(
        self,
        services: EmbeddedServices,
        schedule: Schedule,
        seed: int | None,
        record: Callable[[list[Row]], None],
        netns: str = "",
    ) -> None:
        self.services = services
        self.schedule = schedule
        self.seed = seed
        self.record = record
        self.netns = netns
        self.active: Fault | None = None
        self._stopping = Event()
        self._greenlet: Any = None

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        """Heal what is active, wait for the greenlet, and confirm every service answers."""
        self._stopping.set()
        if self._greenlet is not None:
            # Not killed: it finishes the step it is in (a restart half done would leave a child
            # nobody waits for) and heals on its way out.
            self._greenlet.join(timeout=2 * self.services.startup_timeout)
            if not self._greenlet.dead:
                self._greenlet.kill(block=True)
            self._greenlet = None
        if self.active is not None:
            self._heal(self.active)
        self._confirm_up()

    def _run(self) -> None:
        t0 = time.monotonic()
        for fault in self.schedule.plan(self.seed, network=bool(self.netns)):
            if self._stopping.wait(max(0.0, t0 + fault.at_s - time.monotonic())):
                return
            self._apply(fault)
            self._stopping.wait(fault.duration_s)
            self._heal(fault)

    def _addresses(self) -> list[str]:
        """The services' IPv4 addresses, as the workers are told them."""
        urls = self.services.urls
        assert urls is not None
        hosts = {urlsplit(u).hostname or "" for u in (urls.redis_url, urls.pg_dsn, urls.ws_url)}
        return sorted({socket.gethostbyname(h) for h in hosts if h})

    def _apply(self, fault: Fault) -> None:
        t0 = time.time_ns()
        self.active = fault
        if fault.name in NET_FAULTS:
            try:
                netfaults.apply(fault.name, self.netns, self._addresses())
            except (NetFaultError, OSError, subprocess.SubprocessError) as e:
                # Half applied, perhaps: healed at once, and the row says the fault failed.
                log.error("cachestorm: nemesis: %s could not be applied: %s", fault.name, e)
                self.record([(0, NEMESIS, fault.name, "fail", t0, time.time_ns(), None, None, "start", None)])
                return
            log.info("cachestorm: nemesis: %s in %s for %gs", fault.name, self.netns, fault.duration_s)
            self.record([(0, NEMESIS, fault.name, "ok", t0, time.time_ns(), None, None, "start", None)])
            return
        service = SERVICE[fault.name]
        if fault.name == "redis-pause":
            self.services.pause(service)
        elif fault.name == "pg-restart":
            self.services.kill(service, signal.SIGINT)
        else:
            self.services.kill(service)
        log.info("cachestorm: nemesis: %s for %gs", fault.name, fault.duration_s)
        self.record([(0, NEMESIS, fault.name, "ok", t0, time.time_ns(), None, None, "start", None)])

    def _heal(self, fault: Fault) -> None:
        t0 = time.time_ns()
        status = "ok"
        try:
            if fault.name in NET_FAULTS:
                netfaults.heal(fault.name, self.netns, self._addresses())
            elif fault.name == "redis-pause":
                self.services.resume(SERVICE[fault.name])
                assert self.services.urls is not None
                check_redis(self.services.urls.redis_url)
            else:
                self.services.restart(SERVICE[fault.name])
        except (ServiceError, NetFaultError, OSError, subprocess.SubprocessError) as e:
            status = "fail"
            log.error("cachestorm: nemesis: %s could not be healed: %s", fault.name, e)
        self.active = None
        self.record([(0, NEMESIS, fault.name, status, t0, time.time_ns(), None, None, "end", None)])

    def _confirm_up(self) -> None:
        urls = self.services.urls
        assert urls is not None
        for check, url in ((check_redis, urls.redis_url), (check_pg, urls.pg_dsn), (check_ws, urls.ws_url)):
            try:
                check(url)
            except ServiceError as e:
                log.error("cachestorm: nemesis: after healing, %s", e)
