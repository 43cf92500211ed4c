"""Wires cachestorm into a Locust environment: services, run lifecycle and the op history.

Usage, from a locustfile::

    from locust import events
    from cachestorm import options, plugin

    events.init_command_line_parser.add_listener(options.add_arguments)

    @events.init.add_listener
    def _(environment, **_kwargs):
        plugin.register(environment)

What happens, by role:

- The master (or the single local runner) starts the embedded Redis, PostgreSQL and notifier when
  no URLs were given, or checks the given ones, and puts the URLs in the parsed options, which
  Locust sends to every worker with each spawn message. At each test start it picks a run id,
  resets every entity to version 0 and drops the run's cache keys. At each test stop it drains the
  workers' history, sweeps every key for divergence, and writes RESULTS/<run-id>/run.json.
- Every node that runs users (the local runner, or each worker) records rows and ships them to the
  master in numbered batches, and sends its final count when its users have stopped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any

import gevent
import psutil
import psycopg
import redis
from locust.argument_parser import default_args_dict
from locust.env import Environment
from locust.runners import (
    STATE_CLEANUP,
    STATE_STOPPED,
    STATE_STOPPING,
    LocalRunner,
    MasterRunner,
    WorkerRunner,
)

from cachestorm import locust_fixes, schema, secrecy
from cachestorm.cache import CacheClient
from cachestorm.clients import InstrumentedPG, InstrumentedRedis
from cachestorm.history import MSG_BATCH, MSG_END, ROW_COLUMNS, Collector, Recorder, Shipper
from cachestorm.options import Options
from cachestorm.probes import Prober
from cachestorm.request_stats import BatchedRequests
from cachestorm.services import EmbeddedServices, ServiceError, check_pg, check_redis, check_ws, redact
from cachestorm.strategies import held, parse
from cachestorm.strategies import make as make_strategy

log = logging.getLogger("cachestorm")

MSG_DRAIN = "cachestorm_drain"
MSG_PAUSE_WRITES = "cachestorm_pause_writes"
MSG_CLOCK_PING = "cachestorm_clock_ping"
MSG_CLOCK_PONG = "cachestorm_clock_pong"
SHIP_INTERVAL_S = 1.0
GRACEFUL_STOP_S = 10.0
# A node's process ids live in their own range so that they are unique across the run.
NODE_PROCESS_STRIDE = 1 << 40


def boot_id() -> str:
    """Identifies this host's running kernel: processes with the same boot id share one clock."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return f"unknown-{uuid.getnode()}"


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


def fatal(message: str, code: int = 2) -> None:
    """Print one line and leave, taking every child process (services, forked workers) along."""
    sys.stderr.write(f"cachestorm: {message}\n")
    sys.stderr.flush()
    stop_services()
    with contextlib.suppress(Exception):
        children = psutil.Process().children(recursive=True)
        for child in children:
            child.terminate()
        psutil.wait_procs(children, timeout=5)
    os._exit(code)


_services: EmbeddedServices | None = None


def stop_services() -> None:
    global _services
    if _services is not None:
        _services.stop()
        _services = None


@dataclass
class Worker:
    """The user-running side of a node: clients, recorder and shipper."""

    environment: Environment
    node: str
    options: Options
    recorder: Recorder
    cache: CacheClient | None = None
    pg: InstrumentedPG | None = None
    r: InstrumentedRedis | None = None
    ws_url: str = ""
    fire: Any = None
    pool_urls: tuple[str, str] = ("", "")
    # Set by a shape's quiesce phase; user classes that write check it before each write.
    writes_paused: bool = False
    shipper: Shipper | None = None
    ship_greenlet: Any = None
    prober: Prober | None = None
    # Time zero of an open-model run's arrival schedule on this node (cachestorm.arrival).
    schedule_started_ns: int = 0
    _processes: Any = field(default_factory=lambda: count(1))
    process_base: int = 0

    def new_process(self) -> int:
        return self.process_base + next(self._processes)

    def start_run(self) -> None:
        parsed = self.environment.parsed_options
        self.options = Options.from_parsed(parsed)
        runner = self.environment.runner
        if isinstance(runner, WorkerRunner):
            self.process_base = (max(runner.worker_index, 0) + 1) * NODE_PROCESS_STRIDE
        o = self.options
        if self.fire is None:
            batched = o.request_events == "batched"
            self.fire = (
                BatchedRequests(self.environment).fire if batched else self.environment.events.request.fire
            )
        # Pools live across runs; a run started from the web UI with other URLs gets new ones.
        if self.r is None or self.pool_urls != (o.redis_url, o.pg_dsn):
            self.close()
            self.r = InstrumentedRedis(o.redis_url, self.fire, pool_size=o.redis_pool_size)
            self.pg = InstrumentedPG(o.pg_dsn, self.fire, o.pg_pool_size)
            self.pool_urls = (o.redis_url, o.pg_dsn)
        assert self.pg is not None
        # Rebuilt every run: the strategy and fill delay may have been changed in the web UI.
        strategy = make_strategy(o.strategy, self.r, o.ttl_ms)
        # Probes only feed the history: with it off (a cost measurement), they would be load alone.
        probe_rate = o.probe_rate if o.history else 0.0
        self.prober = Prober(self.r, self.recorder, o.probe_delays_s(), probe_rate, self.new_process)
        self.cache = CacheClient(self.r, self.pg, strategy, self.recorder, o.fill_delay_ms, self.prober)
        if o.arrival_rate:
            # Before any user starts, so that the schedule's first operations do not wait for them.
            self.pg.warm(o.arrival_users())
        self.schedule_started_ns = time.time_ns()
        self.ws_url = o.ws_url
        self.writes_paused = False
        self.recorder.enabled = o.history
        self.recorder.take()
        assert runner is not None
        self.shipper = Shipper(
            self.recorder,
            runner.send_message,
            self.node,
            o.run_id,
            schedule_started_ns=self.schedule_started_ns if o.arrival_rate else 0,
            cpu_interval_s=SHIP_INTERVAL_S,
        )
        self.ship_greenlet = gevent.spawn(self._ship_loop, self.shipper)
        if isinstance(runner, WorkerRunner):
            runner.send_message(
                MSG_CLOCK_PING, {"node": self.node, "t0": time.time_ns(), "boot_id": boot_id()}
            )

    def on_clock_pong(self, data: dict[str, Any]) -> None:
        if self.shipper is None:
            return
        t1 = time.time_ns()
        if data["boot_id"] == boot_id():
            return  # one kernel, one clock: no offset to estimate
        rtt = t1 - int(data["t0"])
        self.shipper.clock_offset_ns = int(data["t_master"]) - (int(data["t0"]) + t1) // 2
        self.shipper.clock_uncertainty_ns = rtt // 2

    def _ship_loop(self, shipper: Shipper) -> None:
        process = psutil.Process()
        process.cpu_percent()  # the first call starts the measurement and returns 0
        while True:
            gevent.sleep(SHIP_INTERVAL_S)
            shipper.ship()
            # Whether this process kept up with its users: the analysis warns when it did not.
            shipper.cpu_samples.append(process.cpu_percent())

    def end_run(self) -> None:
        """Users have stopped: ship the last rows and the final count.

        Asked again (a drain after a normal stop), it resends the count, which the collector takes
        idempotently: the first one may not have arrived.
        """
        if self.prober is not None:
            self.prober.stop()
        if self.ship_greenlet is not None:
            self.ship_greenlet.kill(block=True)
            self.ship_greenlet = None
        if self.shipper is not None:
            self.shipper.end()

    def close(self) -> None:
        for client in (self.r, self.pg):
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()
        self.r = self.pg = None


@dataclass
class Master:
    """The coordinating side: services, per-run reset, collection, sweep and run.json."""

    environment: Environment
    node: str
    options: Options
    collector: Collector | None = None
    run_dir: Path | None = None
    started_ns: int = 0
    first_run_id: str = ""
    stats_greenlet: Any = None
    # The services this session talks to: (redis_url, pg_dsn, ws_url).
    urls: tuple[str, str, str] = ("", "", "")

    def setup_services(self) -> None:
        global _services
        parsed = self.environment.parsed_options
        assert parsed is not None
        o = self.options
        flags = {"--redis-url": o.redis_url, "--pg-dsn": o.pg_dsn, "--ws-url": o.ws_url}
        given = [flag for flag, url in flags.items() if url]
        if 0 < len(given) < len(flags):
            missing = [flag for flag in flags if flag not in given]
            fatal(
                f"{', '.join(given)} given but {', '.join(missing)} not: "
                "give all three service URLs, or none to start embedded services."
            )
        try:
            if not given:
                log.info(
                    "cachestorm: no service URLs given, starting embedded Redis, PostgreSQL and notifier"
                )
                _services = EmbeddedServices()
                urls = _services.start(
                    redis_maxmemory=o.redis_maxmemory or None,
                    redis_eviction_policy=o.redis_eviction_policy if o.redis_maxmemory else None,
                )
                parsed.redis_url, parsed.pg_dsn, parsed.ws_url = urls.redis_url, urls.pg_dsn, urls.ws_url
                log.info(
                    "cachestorm: embedded services: redis %s, postgresql %s, notifier %s",
                    redact(urls.redis_url),
                    redact(urls.pg_dsn),
                    urls.ws_url,
                )
            else:
                check_redis(o.redis_url)
                check_pg(o.pg_dsn)
                check_ws(o.ws_url)
                with psycopg.connect(o.pg_dsn, autocommit=True) as conn:
                    schema.install(conn)
        except ServiceError as e:
            fatal(str(e))
        self.options = Options.from_parsed(parsed)
        self.urls = (parsed.redis_url, parsed.pg_dsn, parsed.ws_url)

    def adopt_urls(self) -> str | None:
        """Take the URLs of a run started from the web UI, whose form posts every field.

        A blank field keeps the session's service; a new URL is checked first. Returns what is
        wrong, in one line, when a new URL does not work: the run must not start against it.
        """
        parsed = self.environment.parsed_options
        assert parsed is not None
        posted = (parsed.redis_url, parsed.pg_dsn, parsed.ws_url)
        wanted = tuple(new or old for new, old in zip(posted, self.urls, strict=True))
        if wanted != self.urls:
            try:
                for check, new, old in zip((check_redis, check_pg, check_ws), wanted, self.urls, strict=True):
                    if new != old:
                        check(new)
                with psycopg.connect(wanted[1], autocommit=True) as conn:
                    schema.install(conn)
            except ServiceError as e:
                parsed.redis_url, parsed.pg_dsn, parsed.ws_url = self.urls
                return str(e)
            self.urls = (wanted[0], wanted[1], wanted[2])
        parsed.redis_url, parsed.pg_dsn, parsed.ws_url = self.urls
        return None

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
        self.collector = Collector(self.run_dir, run_id)
        runner = self.environment.runner
        if isinstance(runner, MasterRunner):
            self.collector.expected_nodes = {c.id for c in runner.clients.ready + runner.clients.running}
        self.started_ns = time.time_ns()
        try:
            reset_state(o)
        except (redis.RedisError, psycopg.Error) as e:
            log.error("cachestorm: could not reset the run's state: %s", e)
            raise
        self.stats_greenlet = gevent.spawn(sample_redis_stats, o, self.collector, self.node)
        log.info("cachestorm: run %s started, results in %s", run_id, self.run_dir)

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
        while c.waiting_for() and time.monotonic() < deadline:
            if not asked:
                runner.send_message(MSG_DRAIN, {"run": c.run_id})
                asked = True
            gevent.sleep(0.05)
        if c.waiting_for():
            log.error(
                "cachestorm: no final history count from %s: run.json will say the history is incomplete",
                ", ".join(sorted(c.waiting_for())),
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
        rows = recorder.take()
        if rows:
            c.add_rows(self.node, [list(col) for col in zip(*rows, strict=True)])

    def finish_run(self) -> None:
        c = self.collector
        if c is None or c.finalized:
            return
        self.drain()
        if self.stats_greenlet is not None:
            self.stats_greenlet.kill(block=True)
            self.stats_greenlet = None
        try:
            self.final_reads(c)
        except (redis.RedisError, psycopg.Error) as e:
            log.error("cachestorm: the final reads failed: %s", e)
        sweep_ok = True
        try:
            sweep(self.options, c, self.node)
        except (redis.RedisError, psycopg.Error) as e:
            sweep_ok = False
            log.error("cachestorm: the divergence sweep failed: %s", e)
        o = self.options
        meta = {
            "started_ns": self.started_ns,
            "stopped_ns": time.time_ns(),
            "sweep_complete": sweep_ok,
            "options": run_options(self.environment.parsed_options, o),
            "locust": {
                "runner": type(self.environment.runner).__name__,
                "user_classes": sorted(u.__name__ for u in self.environment.user_classes),
            },
        }
        run = c.finalize(meta)
        assert self.run_dir is not None
        latest = self.run_dir.parent / "latest"
        with contextlib.suppress(OSError):
            if latest.is_symlink() or latest.exists():
                latest.unlink()
            latest.symlink_to(self.run_dir.name)
        state = "complete" if run["history_complete"] else "INCOMPLETE"
        print(
            f"cachestorm: run {c.run_id}: {run['rows']} history rows ({state}) in {self.run_dir}", flush=True
        )
        if o.verdict:
            # Imported only when asked for: the analysis pulls in pandas, which the load path never needs.
            from analysis.__main__ import main as analyse  # noqa: PLC0415

            code = analyse([str(self.run_dir)])
            self.environment.process_exit_code = code


def run_options(parsed: Any, o: Options) -> dict[str, Any]:
    """What run.json records of the options: every non-Locust option (cachestorm's and any a user
    module registered, such as the contention workloads' modes), URLs with passwords hidden."""
    locust_own = default_args_dict()
    custom = {k: v for k, v in vars(parsed).items() if k not in locust_own}
    merged = {**custom, **vars(o)}
    return {k: (redact(v) if isinstance(v, str) else v) for k, v in sorted(merged.items())}


def reset_state(o: Options) -> None:
    """Every entity at version 0, and none of cachestorm's keys in Redis (``cs:*``: entries,
    tombstones, leases, counters, groups, locks, stampede and memory-pressure keys)."""
    with psycopg.connect(o.pg_dsn, autocommit=True) as conn:
        schema.install(conn)
        schema.reset(conn, o.keys)
    r = redis.Redis.from_url(o.redis_url)
    try:
        batch: list[bytes] = []
        for key in r.scan_iter(match="cs:*", count=5000):
            batch.append(key)
            if len(batch) >= 5000:
                r.unlink(*batch)
                batch = []
        if batch:
            r.unlink(*batch)
    finally:
        r.close()


REDIS_STATS = {"stats": ("evicted_keys", "keyspace_hits", "keyspace_misses"), "memory": ("used_memory",)}
STATS_INTERVAL_S = 1.0


def sample_redis_stats(o: Options, collector: Collector, node: str) -> None:
    """Every second, record INFO's eviction and hit counters (f=redis_stat) until killed."""
    r = redis.Redis.from_url(o.redis_url, socket_timeout=5)
    try:
        while True:
            t0 = time.time_ns()
            try:
                values = {}
                for section, names in REDIS_STATS.items():
                    info = r.info(section)
                    values.update({n: int(info[n]) for n in names if n in info})
            except redis.RedisError as e:
                log.warning("cachestorm: could not sample Redis INFO: %s", e)
            else:
                t1 = time.time_ns()
                n = len(values)
                collector.add_rows(
                    node,
                    [
                        [0] * n,
                        ["redis_stat"] * n,
                        list(values),
                        ["ok"] * n,
                        [t0] * n,
                        [t1] * n,
                        [None] * n,
                        list(values.values()),
                        [None] * n,
                        [None] * n,
                    ],
                )
            gevent.sleep(STATS_INTERVAL_S)
    finally:
        r.close()


def sweep(o: Options, collector: Collector, node: str) -> None:
    """Record, for every key, what Redis holds beside what PostgreSQL holds (f=sweep)."""
    with psycopg.connect(o.pg_dsn, autocommit=True) as conn:
        db = conn.execute(schema.READ_ALL_VERSIONS).fetchall()
    r = redis.Redis.from_url(o.redis_url)
    t = time.time_ns()
    cols: list[list[Any]] = [[] for _ in ROW_COLUMNS]
    try:
        for start in range(0, len(db), 1000):
            chunk = db[start : start + 1000]
            keys = [schema.entity_key(i) for i, _ in chunk]
            raws: list[bytes | None] = r.mget(keys)  # type: ignore[assignment]
            for key, (_, db_version), raw in zip(keys, chunk, raws, strict=True):
                entry, tomb = parse(raw)
                source = held(entry, tomb)
                cached = entry if entry is not None else tomb
                row = (0, "sweep", key, "ok", t, t, cached, db_version, source, None)
                for col, v in zip(cols, row, strict=True):
                    col.append(v)
    finally:
        r.close()
    collector.add_rows(node, cols)


RunRule = Callable[[Environment], "str | None"]
"""A check of a run's settings at its start: what is wrong, in one line, or None."""


@dataclass
class Plugin:
    environment: Environment
    worker: Worker | None
    master: Master | None
    # Checked on the master (or local runner) at each test start, beside the options' own checks.
    run_rules: Sequence[RunRule] = ()
    # The current run was refused at its start: nothing was reset or recorded, and users stop.
    refused: bool = False

    def on_test_start(self, **_kw: Any) -> None:
        problem = self.run_problem()
        self.refused = problem is not None
        if problem is not None:
            log.error("cachestorm: %s The run is stopped.", problem)
            runner = self.environment.runner
            if runner is not None and not isinstance(runner, WorkerRunner):
                gevent.spawn(runner.stop)
            return
        if self.master is not None:
            self.master.start_run()
        if self.worker is not None:
            self.worker.start_run()

    def run_problem(self) -> str | None:
        """Why this run must not start, in one line, or None.

        Start-up checks see the command line only; a run started from the web UI takes the form's
        values, so each run is checked again here. The shape lives on the master, so the rules
        (``run_rules``) and the service URLs are checked there; a worker checks option values.
        """
        parsed = self.environment.parsed_options
        problems = Options.from_parsed(parsed).problems()
        if problems:
            return problems[0]
        if self.master is None:
            return None
        for rule in self.run_rules:
            problem = rule(self.environment)
            if problem is not None:
                return problem
        return self.master.adopt_urls()

    def on_test_stop(self, **_kw: Any) -> None:
        if self.refused:
            return  # nothing was started, so there is nothing to ship or close
        # Order matters on a local runner: the node ships its last rows before the run is closed.
        if self.worker is not None:
            self.worker.end_run()
        if self.master is not None:
            self.master.finish_run()

    def on_quitting(self, **_kw: Any) -> None:
        runner = self.environment.runner
        if self.master is not None and runner is not None:
            # Ctrl-C or SIGTERM: close the run properly before the services go away.
            runner.stop()
            self.master.finish_run()
        if self.worker is not None:
            self.worker.close()
        stop_services()


def pause_writes(runner: Any) -> None:
    """Ask every node to stop writing for the rest of the run (users keep running).

    Locust cannot stop one user class while keeping the user count: its dispatcher applies a new
    class list only to users it spawns next. So the writers stay, and skip their writes.
    """
    runner.send_message(MSG_PAUSE_WRITES, None)


def interrupt_main_greenlet() -> None:
    """Raise KeyboardInterrupt in the main greenlet, which is where Locust expects Ctrl-C."""
    gevent.get_hub().parent.throw(KeyboardInterrupt())


def route_signals(environment: Environment) -> None:
    """Deliver Ctrl-C and SIGTERM to the main greenlet, where Locust closes the test.

    SIGINT: Python raises KeyboardInterrupt in whichever frame is running, and under load that is
    often a user's greenlet, which then dies with a traceback before gevent passes the interrupt
    on. Handled by gevent instead, it always lands in the main greenlet.

    SIGTERM: Locust joins a headless shape test before it installs its own SIGTERM handler, so
    until the shape ends SIGTERM would kill the process with the run half written. Meanwhile it
    takes the Ctrl-C path: the test stops, the run is closed, the services are stopped. In every
    other mode Locust's own handler is in place and this one stands aside.
    """
    parsed = environment.parsed_options

    def on_sigterm() -> None:
        runner = environment.runner
        if parsed is None or not parsed.headless or environment.shape_class is None or runner is None:
            return
        if runner.state in (STATE_STOPPING, STATE_STOPPED, STATE_CLEANUP):
            return  # the shape is over and Locust's handler is installed
        interrupt_main_greenlet()

    gevent.signal_handler(signal.SIGINT, interrupt_main_greenlet)
    gevent.signal_handler(signal.SIGTERM, on_sigterm)


def register(environment: Environment, run_rules: Sequence[RunRule] = ()) -> Plugin:
    """Attach cachestorm to ``environment``; call it from the ``init`` event.

    ``run_rules`` are checked at each test start on the master; a run that breaks one is stopped
    with its line in the log (see :meth:`Plugin.run_problem`).
    """
    locust_fixes.apply()
    secrecy.protect(environment)
    runner = environment.runner
    parsed = environment.parsed_options
    if parsed is None:
        raise RuntimeError("cachestorm needs Locust's parsed options (run it through the locust command)")
    o = Options.from_parsed(parsed)
    problems = o.problems()
    if problems:
        fatal(problems[0])
    node = (
        runner.client_id
        if isinstance(runner, WorkerRunner)
        else "master"
        if isinstance(runner, MasterRunner)
        else "local"
    )
    master = Master(environment, node, o) if isinstance(runner, LocalRunner | MasterRunner) else None
    worker = (
        Worker(environment, node, o, Recorder(o.history))
        if isinstance(runner, LocalRunner | WorkerRunner)
        else None
    )
    plugin = Plugin(environment, worker, master, run_rules)
    route_signals(environment)
    if master is not None:
        master.first_run_id = o.run_id
        if not environment.stop_timeout:
            # Locust's default kills users mid-task at stop: a writer killed between its commit and
            # its invalidation leaves a stale entry that the divergence sweep would rightly count.
            # Let each user finish its current operation; the master sends this to the workers.
            environment.stop_timeout = GRACEFUL_STOP_S
        master.setup_services()
    if runner is not None:
        if master is not None:
            runner.register_message(MSG_BATCH, lambda environment, msg, **kw: master.on_batch(msg.data))
            runner.register_message(MSG_END, lambda environment, msg, **kw: master.on_end(msg.data))
        if isinstance(runner, MasterRunner):

            def pong(environment: Environment, msg: Any, **_kw: Any) -> None:
                runner.send_message(
                    MSG_CLOCK_PONG,
                    {"t0": msg.data["t0"], "t_master": time.time_ns(), "boot_id": boot_id()},
                    client_id=msg.node_id,
                )

            runner.register_message(MSG_CLOCK_PING, pong)
        if worker is not None:

            def on_pause(environment: Environment, msg: Any, **_kw: Any) -> None:
                worker.writes_paused = True

            runner.register_message(MSG_PAUSE_WRITES, on_pause)
        if isinstance(runner, WorkerRunner) and worker is not None:

            def drain(environment: Environment, msg: Any, **_kw: Any) -> None:
                # Runner.stop() fires test_stop, which ships the last rows; if the users had
                # already stopped, it returns at once and end_run resends the final count.
                runner.stop()
                worker.end_run()

            runner.register_message(MSG_DRAIN, drain)
            runner.register_message(
                MSG_CLOCK_PONG, lambda environment, msg, **kw: worker.on_clock_pong(msg.data)
            )
    environment.events.test_start.add_listener(plugin.on_test_start)
    environment.events.test_stop.add_listener(plugin.on_test_stop)
    environment.events.quitting.add_listener(plugin.on_quitting)
    environment.cachestorm = plugin  # type: ignore[attr-defined]
    return plugin


def node_worker(environment: Environment) -> Worker:
    """The user-running side of this node, for user classes' ``on_start``.

    In a run refused at its start, it ends the calling user instead (its ``on_stop`` still runs).
    """
    plugin: Plugin | None = getattr(environment, "cachestorm", None)
    if plugin is None or plugin.worker is None:
        raise RuntimeError("cachestorm.plugin.register(environment) was not called in the init event")
    if plugin.refused:
        # The run was refused at its start and is being stopped. Leave as a kill would: Locust
        # logs a StopUser raised in on_start with its traceback, once per user.
        raise gevent.GreenletExit()
    return plugin.worker
