"""The coordinating side of a run, on the master or the single local runner.

At each test start the :class:`Coordinator` picks a run id, writes ``RESULTS/<run-id>/run.started.json``,
points ``RESULTS/latest`` at the run and has the target reset its keys; while the run goes, it has
the collector write parts every few seconds and watches for workers Locust has marked missing; at
each stop it drains the workers' history (not waiting for the lost ones), has the target sweep its
keys for divergence, writes ``RESULTS/<run-id>/run.json`` and fires :data:`cachestorm.events.run_finished`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import time
import uuid
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any

import gevent
import redis
from locust.argument_parser import default_args_dict
from locust.env import Environment
from locust.runners import STATE_MISSING, MasterRunner

from cachestorm import embedded, events, locust_fixes, target_loader
from cachestorm.history import ROW_COLUMNS, Collector, Recorder
from cachestorm.nemesis import Nemesis, parse_schedule
from cachestorm.options import Options
from cachestorm.services import redact
from cachestorm.target import TargetContext, describe

log = logging.getLogger("cachestorm")

MSG_DRAIN = "cachestorm_drain"
STATS_INTERVAL_S = 1.0
# How often the master checks for a due part and for missing workers: well under the flush interval.
TICK_S = 0.5


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


def _no_fire(**_kw: Any) -> None:
    return None


@dataclass
class Coordinator:
    """Per-run reset, collection, sweep and run.json."""

    environment: Environment
    node: str
    options: Options
    collector: Collector | None = None
    run_dir: Path | None = None
    started_ns: int = 0
    first_run_id: str = ""
    stats_greenlet: Any = None
    tick_greenlet: Any = None
    #: When each worker was first seen missing in this run (ns), cleared if it comes back.
    missing_since: dict[str, int] | None = None
    #: The master's own instance of the run's target, for its reset, stats and sweep.
    target: Any = None
    #: What the target's reset said of each key's starting version (None: all at 0).
    start_versions: dict[str, int] | None = None
    #: Set when a node reported that the target broke the contract: the run's one line.
    contract_broken: str = ""
    #: Set when the run was stopped for another reason (a worker on the wrong services): its line.
    stopped_for: str = ""
    #: The run's faults on purpose (--nemesis), healed at its stop.
    nemesis: Nemesis | None = None

    def start_run(self) -> None:
        parsed = self.environment.parsed_options
        assert parsed is not None
        run_id = self.first_run_id or new_run_id()
        self.first_run_id = ""
        parsed.run_id = run_id
        if parsed.seed in (None, ""):
            # Recorded in run.json, so a run's key choices can be replayed.
            parsed.seed = secrets.randbits(31)
        self.options = o = Options.from_parsed(parsed)
        self.run_dir = Path(o.results_dir) / run_id
        env = self.environment
        self.collector = Collector(
            self.run_dir,
            run_id,
            flush_interval_s=o.history_flush_s,
            on_rows=lambda node, batch, uncertainty: events.rows_collected.fire(
                environment=env, node=node, batch=batch, clock_uncertainty_ns=uncertainty
            ),
            on_end=lambda node: events.node_finished.fire(environment=env, node=node),
        )
        self.contract_broken = ""
        self.stopped_for = ""
        self.missing_since = {}
        runner = self.environment.runner
        if isinstance(runner, MasterRunner):
            self.collector.expected_nodes = {c.id for c in runner.clients.ready + runner.clients.running}
        self.started_ns = time.time_ns()
        self.collector.start(
            {
                "started_ns": self.started_ns,
                "target": {"spec": o.target or target_loader.DEFAULT},
                "options": run_options(parsed, o),
                "locust": {"runner": type(runner).__name__},
            }
        )
        point_latest(self.run_dir)
        events.run_started.fire(
            environment=self.environment,
            run_dir=self.run_dir,
            options=o,
            expected_nodes=sorted(self.collector.expected_nodes),
        )
        self.stop_tick()
        self.tick_greenlet = gevent.spawn(self._tick, self.collector)
        self.close_target()
        processes = count(1)
        self.target = target_loader.load(o.target)(
            TargetContext(parsed, _no_fire, "coordinator", Recorder(False).record, processes.__next__)
        )
        keys = self.keys()
        try:
            self.start_versions = self.target.reset(keys)
        except Exception as e:
            log.error("cachestorm: the target could not reset the run's keys: %s", redact(str(e)))
            raise
        if self.start_versions:
            # Every key's starting version goes into the history, so the analysis counts from there.
            t = time.time_ns()
            rows = [
                (0, "initial", k, "ok", t, t, int(v), None, None, None)
                for k, v in self.start_versions.items()
            ]
            self.collector.add_rows(self.node, [list(c) for c in zip(*rows, strict=True)])
        if callable(getattr(self.target, "stats", None)):
            self.stats_greenlet = gevent.spawn(self._sample_stats, self.collector)
        self.start_nemesis(self.collector)
        log.info("cachestorm: run %s started, results in %s", run_id, self.run_dir)

    def start_nemesis(self, collector: Collector) -> None:
        services = embedded.session_services()
        if not self.options.nemesis or services is None:
            return
        self.nemesis = Nemesis(
            services,
            parse_schedule(self.options.nemesis),
            self.options.seed,
            lambda rows: add_rows(collector, self.node, rows),
            self.options.nemesis_netns,
        )
        self.nemesis.start()

    def keys(self) -> list[str]:
        assert self.target is not None
        return [self.target.key(i) for i in range(self.options.keys)]

    def _sample_stats(self, collector: Collector) -> None:
        """Every second, record the target's counters (f=redis_stat) until killed."""
        while True:
            t0 = time.time_ns()
            try:
                values = dict(self.target.stats())
            except Exception as e:
                log.warning("cachestorm: could not sample the target's stats: %s", redact(str(e)))
            else:
                t1 = time.time_ns()
                rows = [
                    (0, "redis_stat", name, "ok", t0, t1, None, int(v), None, None)
                    for name, v in values.items()
                ]
                if rows:
                    collector.add_rows(self.node, [list(c) for c in zip(*rows, strict=True)])
            gevent.sleep(STATS_INTERVAL_S)

    def _tick(self, collector: Collector) -> None:
        """Until killed: write a part when one is due, and note workers Locust marked missing."""
        while True:
            gevent.sleep(TICK_S)
            try:
                collector.flush_due()
            except OSError as e:
                log.error("cachestorm: could not write a history part: %s", e)
            self.watch_workers(collector)

    def watch_workers(self, collector: Collector) -> None:
        runner = self.environment.runner
        if not isinstance(runner, MasterRunner) or self.missing_since is None:
            return
        for node in collector.expected_nodes | set(collector.nodes):
            client = runner.clients.get(node)
            if client is None or client.state == STATE_MISSING:
                self.missing_since.setdefault(node, time.time_ns())
            else:
                self.missing_since.pop(node, None)

    def lost_workers(self, collector: Collector) -> set[str]:
        """Workers still owing their final count that Locust has marked missing or forgotten."""
        self.watch_workers(collector)
        return collector.waiting_for() & set(self.missing_since or ())

    def stop_tick(self) -> None:
        if self.tick_greenlet is not None:
            self.tick_greenlet.kill(block=True)
            self.tick_greenlet = None

    def on_batch(self, data: dict[str, Any]) -> None:
        if self.collector is not None:
            self.collector.add_batch(data)

    def on_end(self, data: dict[str, Any]) -> None:
        if self.collector is not None:
            self.collector.add_end(data)

    def drain(self) -> None:
        """Wait for every worker's last batch. In a headless quit, Locust stops the master before
        the workers, so ask them to stop and flush rather than wait for a stop that comes later."""
        runner = self.environment.runner
        c = self.collector
        if c is None or not isinstance(runner, MasterRunner):
            return
        deadline = time.monotonic() + self.options.drain_timeout
        asked = False
        # Marked lost already (a worker that refused its services): its reason stands.
        known = {n for n, tally in c.nodes.items() if tally.lost}
        # A worker Locust marked missing stopped sending heartbeats: waiting for it would only
        # delay the run's end by the whole timeout.
        while c.waiting_for() - self.lost_workers(c) - known and time.monotonic() < deadline:
            if not asked:
                runner.send_message(MSG_DRAIN, {"run": c.run_id})
                asked = True
            gevent.sleep(0.05)
        for node in sorted(self.lost_workers(c) - known):
            since = (self.missing_since or {})[node]
            c.mark_lost(node, f"Locust marked the worker missing (no heartbeat) at {since} ns")
            log.error(
                "cachestorm: worker %s was lost mid-run: its history ends at its last batch, and "
                "run.json will say the history is incomplete",
                node,
            )
        if c.waiting_for() - self.lost_workers(c) - known:
            log.error(
                "cachestorm: no final history count from %s: run.json will say the history is incomplete",
                ", ".join(sorted(c.waiting_for() - self.lost_workers(c) - known)),
            )

    def final_reads(self, c: Collector) -> None:
        """Run the ``final_reads(redis, recorder, parsed_options)`` hook of each user class that
        has one (e.g. CounterUser reads every counter once the users have stopped)."""
        hooks = [
            h
            for h in dict.fromkeys(getattr(u, "final_reads", None) for u in self.environment.user_classes)
            if h
        ]
        if not hooks:
            return
        recorder = Recorder()
        r = redis.Redis.from_url(self.options.redis_url, socket_timeout=5)
        try:
            for hook in hooks:
                hook(r, recorder, self.environment.parsed_options)
        finally:
            r.close()
        add_rows(c, self.node, recorder.take())

    def sweep(self, c: Collector) -> None:
        """Record, for every key and cache tier, what the cache holds beside the database (f=sweep)."""
        assert self.target is not None
        t = time.time_ns()
        cols: list[list[Any]] = [[] for _ in ROW_COLUMNS]
        for cached in self.target.sweep(self.keys()):
            held = cached.held or ("entry" if cached.version is not None else "absent")
            source = f"{held}:{cached.tier}" if cached.tier else held
            row = (0, "sweep", cached.key, "ok", t, t, cached.version, cached.db_version, source, None)
            for col, v in zip(cols, row, strict=True):
                col.append(v)
        c.add_rows(self.node, cols)

    def tier_events(self, c: Collector) -> None:
        """Record what the target's tiers did on their own (f=tier_event), when it can tell."""
        report = getattr(self.target, "tier_events", None)
        if not callable(report):
            return
        rows = [
            (0, "tier_event", e.key, "ok", e.t_ns, e.t_ns, e.version, None, f"{e.what}:{e.tier}", None)
            for e in report()
        ]
        add_rows(c, self.node, rows)

    def finish_run(self) -> None:
        c = self.collector
        if c is None or c.finalized:
            return
        if self.nemesis is not None:
            # Healed first, as Jepsen's final generator does: the last operations, the final reads
            # and the sweep see every service up.
            self.nemesis.stop()
            self.nemesis = None
        self.drain()
        self.stop_tick()
        if self.stats_greenlet is not None:
            self.stats_greenlet.kill(block=True)
            self.stats_greenlet = None
        try:
            self.final_reads(c)
        except Exception as e:
            log.error("cachestorm: the final reads failed: %s", redact(str(e)))
        try:
            self.tier_events(c)
        except Exception as e:
            log.error("cachestorm: the target's tier events could not be read: %s", redact(str(e)))
        sweep_ok = True
        try:
            self.sweep(c)
        except Exception as e:
            sweep_ok = False
            log.error("cachestorm: the divergence sweep failed: %s", redact(str(e)))
        o = self.options
        meta = {
            "started_ns": self.started_ns,
            "stopped_ns": time.time_ns(),
            "sweep_complete": sweep_ok,
            "target": {
                "spec": o.target or target_loader.DEFAULT,
                "description": describe(self.target, o.target) if self.target is not None else "",
                "start_versions": "reported" if self.start_versions else "zero",
                "needed_checks": needed_checks(self.target) if self.target is not None else None,
            },
            "contract_broken": self.contract_broken or None,
            "stopped_for": self.stopped_for or None,
            "options": run_options(self.environment.parsed_options, o),
            "locust": {
                "runner": type(self.environment.runner).__name__,
                "user_classes": sorted(u.__name__ for u in self.environment.user_classes),
                # A locustfile's subclass of CacheReader needs what CacheReader needs.
                "user_class_bases": sorted(
                    {b.__name__ for u in self.environment.user_classes for b in u.__mro__[1:]}
                    - {"User", "object"}
                ),
            },
        }
        self.close_target()
        try:
            # The run-end analysis reads them next; Locust writes their final version only at exit.
            locust_fixes.write_csv_now(self.environment)
        except (OSError, ValueError) as e:
            log.warning("cachestorm: Locust's --csv files could not be brought up to date (%s)", e)
        run = c.finalize(meta)
        assert self.run_dir is not None
        state = "complete" if run["history_complete"] else "INCOMPLETE"
        print(
            f"cachestorm: run {c.run_id}: {run['rows']} history rows ({state}) in {self.run_dir}", flush=True
        )
        events.run_finished.fire(environment=self.environment, run_dir=self.run_dir, options=o)

    def close_target(self) -> None:
        if self.target is not None:
            with contextlib.suppress(Exception):
                self.target.close()
        self.target = None


def point_latest(run_dir: Path) -> None:
    """Make ``RESULTS/latest`` name ``run_dir`` from the run's start, replacing it in one rename so
    that a reader never finds it missing."""
    latest = run_dir.parent / "latest"
    tmp = run_dir.parent / f".latest.{os.getpid()}"
    with contextlib.suppress(OSError):
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        tmp.symlink_to(run_dir.name)
        os.replace(tmp, latest)


def add_rows(collector: Collector, node: str, rows: list[tuple[Any, ...]]) -> None:
    """Add rows recorded on the master itself to the run's history."""
    if rows:
        collector.add_rows(node, [list(c) for c in zip(*rows, strict=True)])


def needed_checks(target: Any) -> dict[str, bool] | None:
    """The target's say on which analysis checks its runs need (``needed_checks``: names, or names
    to True/False), for run.json; None when it says nothing.

    A target that pushes no notifications gives its WebSocket listeners nothing to hear, so
    ``ws_delivery`` is not needed unless it says otherwise.
    """
    declared = getattr(target, "needed_checks", None)
    if isinstance(declared, dict):
        needs = {str(k): bool(v) for k, v in declared.items()}
    else:
        needs = dict.fromkeys((str(k) for k in declared or ()), True)
    notifications = getattr(target, "notifications_url", None)
    try:
        pushes = bool(notifications()) if callable(notifications) else False
    except Exception:
        pushes = True  # cannot tell: the listeners' own rows will say
    if not pushes:
        needs.setdefault("ws_delivery", False)
    return needs or None


def run_options(parsed: Any, o: Options) -> dict[str, Any]:
    """What run.json records of the options: every non-Locust option (cachestorm's, the target's
    and any a user module registered, such as the contention workloads' modes), URLs with
    passwords hidden."""
    locust_own = default_args_dict()
    custom = {k: v for k, v in vars(parsed).items() if k not in locust_own}
    merged = {**custom, **vars(o)}
    return {k: (redact(v) if isinstance(v, str) else v) for k, v in sorted(merged.items())}
