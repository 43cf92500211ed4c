"""cachestorm's command-line options, registered as Locust custom arguments.

Being Locust arguments, they show in the web UI's start form and travel from the master to the
workers with every spawn message. Each can also come from an environment variable (the name in
brackets in ``locust --help``), which is how docker-compose wires the services by URL.

Usage, in a locustfile::

    from locust import events
    from cachestorm import options

    @events.init_command_line_parser.add_listener
    def _(parser):
        options.add_arguments(parser)
"""

from __future__ import annotations

import argparse
import itertools
import re
from dataclasses import dataclass
from typing import Any

from cachestorm import target_loader
from cachestorm.arrival import Schedule, default_users
from cachestorm.history import FLUSH_INTERVAL_S, PART_ROWS
from cachestorm.strategies import STRATEGIES

SCENARIOS = ("coherence", "contention", "all")
STAMPEDE_GUARDS = ("none", "lock", "xfetch")
EVICTION_POLICIES = (
    "noeviction",
    "allkeys-lru",
    "allkeys-lfu",
    "allkeys-random",
    "volatile-lru",
    "volatile-lfu",
    "volatile-random",
    "volatile-ttl",
)
DISTRIBUTIONS = ("zipfian", "hotspot", "uniform")

#: The web UI's start form, in this order: (title, the options it holds). An option in none of
#: them, a target's own for instance, goes in the first group; the contention group is shown only
#: for the scenarios that run contention users (cachestorm.webui).
FORM_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Target and services", ("target", "redis_url", "pg_dsn", "ws_url", "results_dir")),
    (
        "Coherence workload",
        (
            "scenario",
            "strategy",
            "fill_delay_ms",
            "keys",
            "key_distribution",
            "seed",
            "payload_bytes",
            "listeners",
            "ttl_ms",
            "pg_pool_size",
            "redis_pool_size",
            "probe_rate",
            "probe_delays",
            "history",
            "request_events",
            "verdict",
        ),
    ),
    (
        "Load shape",
        (
            "shape",
            "ramp_users",
            "ramp_time",
            "hold_time",
            "quiesce_time",
            "spike_base_users",
            "spike_users",
            "spike_warmup",
            "spike_time",
            "spike_recovery",
            "soak_users",
            "soak_time",
            "stages",
            "arrival_rate",
            "open_users",
        ),
    ),
    (
        "Contention",
        (
            "counter_mode",
            "counters",
            "tx_mode",
            "tx_groups",
            "tx_group_size",
            "lock_mode",
            "locks",
            "lock_ttl_ms",
            "stampede_guard",
            "stampede_keys",
            "stampede_interval",
            "recompute_ms",
            "invalidate_batch",
            "redis_maxmemory",
            "redis_eviction_policy",
            "memory_value_bytes",
        ),
    ),
)
#: The scenarios whose runs use the contention group's options.
CONTENTION_SCENARIOS = ("contention", "all")


def add_arguments(parser: Any) -> None:
    """Register every cachestorm option on Locust's (configargparse) parser."""
    # Locust's UI flags (is_secret, include_in_web_ui) work on the parser itself, not on groups.
    group = parser
    group.add_argument(
        "--target",
        env_var="CACHESTORM_TARGET",
        default="",
        help="The system under test: FILE.py:Class or package.module:Class (docs/targets.md). "
        "Empty: cachestorm's own reference cache (Redis + PostgreSQL + notifier, --strategy).",
        # Fixed for the session: its options and services are set up at start-up, before any run.
        include_in_web_ui=False,
    )
    _add_target_arguments(parser)
    group.add_argument(
        "--redis-url",
        env_var="CACHESTORM_REDIS_URL",
        default="",
        is_secret=True,
        help="Redis URL, e.g. redis://:password@host:6379/0. Empty: start an embedded Redis.",
    )
    group.add_argument(
        "--pg-dsn",
        env_var="CACHESTORM_PG_DSN",
        default="",
        is_secret=True,
        help="PostgreSQL DSN, e.g. postgresql://user:password@host/db. Empty: start an embedded PostgreSQL.",
    )
    group.add_argument(
        "--ws-url",
        env_var="CACHESTORM_WS_URL",
        default="",
        help="WebSocket URL of the notifier (python -m cachestorm.notifier). Empty: start one.",
    )
    group.add_argument(
        "--services-bind",
        env_var="CACHESTORM_SERVICES_BIND",
        default="127.0.0.1",
        help="Address the embedded services listen on: an IP of this host, or 0.0.0.0 for all. "
        "Beyond loopback, Redis and PostgreSQL ask for a random password, which their URLs carry.",
        include_in_web_ui=False,
    )
    group.add_argument(
        "--services-advertise",
        env_var="CACHESTORM_SERVICES_ADVERTISE",
        default="",
        help="Host the embedded services' URLs name, for workers on other machines. "
        "Empty: the --services-bind address.",
        include_in_web_ui=False,
    )
    group.add_argument(
        "--results-dir",
        env_var="CACHESTORM_RESULTS_DIR",
        default="results",
        help="Each test run writes its history and run.json to RESULTS_DIR/<run-id>/.",
    )
    group.add_argument(
        "--keys", env_var="CACHESTORM_KEYS", type=int, default=10000, help="Number of entities (cache keys)."
    )
    group.add_argument(
        "--strategy",
        env_var="CACHESTORM_STRATEGY",
        default="versioned",
        help="versioned: leased fills under version compare-and-set, safe under eviction. "
        "versioned-cas: the same without leases (unsafe once a tombstone is evicted). "
        "cache-aside: delete on write, unguarded fill (has the stale-set race).",
    )
    group.add_argument(
        "--fill-delay-ms",
        env_var="CACHESTORM_FILL_DELAY_MS",
        type=float,
        default=0.0,
        help="Sleep between the database read and the cache fill on a miss: widens the race window.",
    )
    group.add_argument(
        "--key-distribution",
        env_var="CACHESTORM_KEY_DISTRIBUTION",
        choices=DISTRIBUTIONS,
        default="zipfian",
        help="zipfian (YCSB scrambled, theta 0.99), hotspot (80%% of operations on 20%% of keys), uniform.",
    )
    group.add_argument(
        "--seed",
        env_var="CACHESTORM_SEED",
        type=int,
        default=None,
        help="Seed for key choices. Unset: a random seed, recorded in run.json.",
    )
    group.add_argument(
        "--nemesis",
        env_var="CACHESTORM_NEMESIS",
        default="",
        help="Faults on purpose against the embedded services (docs/reliability.md): "
        "NAME@TIME[:DURATION],... e.g. redis-kill@5s,redis-pause@12s:6s,pg-restart@20s,notifier-kill@28s, "
        "or random:8s (one every 8 s, drawn with --seed). Each is healed before the final sweep.",
        # Fixed for the session: it needs the services the session started.
        include_in_web_ui=False,
    )
    group.add_argument(
        "--nemesis-netns",
        env_var="CACHESTORM_NEMESIS_NETNS",
        default="",
        help="The network namespace of a worker's host, where --nemesis applies its network faults "
        "(partition, latency, loss) toward the services, with ip netns exec (root, iptables, tc).",
        include_in_web_ui=False,
    )
    group.add_argument(
        "--payload-bytes",
        env_var="CACHESTORM_PAYLOAD_BYTES",
        type=int,
        default=64,
        help="Payload size per entity.",
    )
    group.add_argument(
        "--listeners",
        env_var="CACHESTORM_LISTENERS",
        type=int,
        default=10,
        help="Fixed number of WebSocketListener users (taken out of the total user count).",
    )
    group.add_argument(
        "--pg-pool-size",
        env_var="CACHESTORM_PG_POOL_SIZE",
        type=int,
        default=40,
        help="PostgreSQL connections per Locust process.",
    )
    group.add_argument(
        "--redis-pool-size",
        env_var="CACHESTORM_REDIS_POOL_SIZE",
        type=int,
        default=200,
        help="Redis connections per Locust process.",
    )
    group.add_argument(
        "--ramp-users", env_var="CACHESTORM_RAMP_USERS", type=int, default=500, help="StepRamp: peak users."
    )
    group.add_argument(
        "--ramp-time",
        env_var="CACHESTORM_RAMP_TIME",
        type=float,
        default=60.0,
        help="StepRamp: seconds to reach the peak.",
    )
    group.add_argument(
        "--hold-time",
        env_var="CACHESTORM_HOLD_TIME",
        type=float,
        default=15.0,
        help="StepRamp: seconds at the peak.",
    )
    group.add_argument(
        "--quiesce-time",
        env_var="CACHESTORM_QUIESCE_TIME",
        type=float,
        default=5.0,
        help="Every shape: seconds at the end with writes paused, reads going on (shows lasting staleness).",
    )
    for flag, kind, default, text in (
        ("--spike-base-users", int, 50, "Spike: users before and after the spike."),
        ("--spike-users", int, 500, "Spike: users during the spike."),
        ("--spike-warmup", float, 20.0, "Spike: seconds at the baseline before the spike."),
        ("--spike-time", float, 15.0, "Spike: seconds at the spike."),
        ("--spike-recovery", float, 20.0, "Spike: seconds back at the baseline after the spike."),
        ("--soak-users", int, 200, "Soak: users, reached over 30 s."),
        ("--soak-time", float, 600.0, "Soak: seconds held after the ramp."),
    ):
        env = "CACHESTORM_" + flag[2:].upper().replace("-", "_")
        group.add_argument(flag, env_var=env, type=kind, default=default, help=text)
    group.add_argument(
        "--stages",
        env_var="CACHESTORM_STAGES",
        default="",
        help="Stages shape: a .json or .toml file of stages (users, spawn rate, duration, user classes).",
    )
    group.add_argument(
        "--scenario",
        env_var="CACHESTORM_SCENARIO",
        choices=SCENARIOS,
        default="coherence",
        help="Which users run, unless classes are named on the command line: coherence (readers, writers, "
        "listeners), contention (counters, transactions, locks, stampedes, invalidations), all.",
    )
    group.add_argument(
        "--shape",
        env_var="CACHESTORM_SHAPE",
        default="",
        help="Load shape: StepRamp (default; OpenModel with --arrival-rate), Spike, Soak, Stages (with "
        "--stages) or OpenModel. It sets the number of users over time, in the web UI too.",
    )
    group.add_argument(
        "--ttl-ms",
        env_var="CACHESTORM_TTL_MS",
        type=int,
        default=0,
        help="TTL in ms of cache entries filled on a miss (0: none); after expiry a read refreshes.",
    )
    group.add_argument(
        "--stampede-guard",
        env_var="CACHESTORM_STAMPEDE_GUARD",
        choices=STAMPEDE_GUARDS,
        default="lock",
        help="StampedeUser: none (every miss recomputes), lock (one recomputation per epoch), "
        "xfetch (early, needs --ttl-ms).",
    )
    group.add_argument(
        "--stampede-keys",
        env_var="CACHESTORM_STAMPEDE_KEYS",
        type=int,
        default=3,
        help="StampedeUser: hot keys.",
    )
    group.add_argument(
        "--stampede-interval",
        env_var="CACHESTORM_STAMPEDE_INTERVAL",
        type=float,
        default=2.0,
        help="StampedeTrigger: seconds between invalidations of every hot key.",
    )
    group.add_argument(
        "--recompute-ms",
        env_var="CACHESTORM_RECOMPUTE_MS",
        type=float,
        default=50.0,
        help="StampedeUser: work added to each database load, the expensive recomputation.",
    )
    group.add_argument(
        "--invalidate-batch",
        env_var="CACHESTORM_INVALIDATE_BATCH",
        type=int,
        default=100,
        help="Invalidator: keys per bulk invalidation.",
    )
    group.add_argument(
        "--redis-maxmemory",
        env_var="CACHESTORM_REDIS_MAXMEMORY",
        default="",
        help="Embedded Redis: maxmemory, e.g. 64mb; also adds MemoryPressureUser to contention runs.",
    )
    group.add_argument(
        "--redis-eviction-policy",
        env_var="CACHESTORM_REDIS_EVICTION_POLICY",
        choices=EVICTION_POLICIES,
        default="allkeys-lru",
        help="Embedded Redis: maxmemory-policy, applied with --redis-maxmemory.",
    )
    group.add_argument(
        "--memory-value-bytes",
        env_var="CACHESTORM_MEMORY_VALUE_BYTES",
        type=int,
        default=65536,
        help="MemoryPressureUser: size of each value it writes.",
    )
    group.add_argument(
        "--arrival-rate",
        env_var="CACHESTORM_ARRIVAL_RATE",
        default="",
        help="Open model: start cache operations on a schedule at this many per second over the whole "
        "run, not when the previous one ends, and record each one's intended start (t_intended). "
        "A rate (500) or a ramp of SECONDS:RATE points (0:100,30:1000,90:1000). Empty: closed model.",
    )
    group.add_argument(
        "--open-users",
        env_var="CACHESTORM_OPEN_USERS",
        type=int,
        default=0,
        help="Open model: cache users that share the arrivals (the OpenModel shape runs this many, plus "
        "the listeners). 0: one per 20 operations a second of the peak rate, at least 10, at most 2000.",
    )
    group.add_argument(
        "--probe-rate",
        env_var="CACHESTORM_PROBE_RATE",
        type=float,
        default=1.0,
        help="Fraction of ok writes re-read from the cache at each probe delay after they complete "
        "(f=probe rows; the 'writes consistent within M' nines). 0: no probes.",
    )
    group.add_argument(
        "--probe-delays",
        env_var="CACHESTORM_PROBE_DELAYS",
        default="100ms,1s,5s",
        help="The delays M after a write's completion at which its probes read the cache.",
    )
    group.add_argument(
        "--history",
        env_var="CACHESTORM_HISTORY",
        choices=("on", "off"),
        default="on",
        help="Record the op history (off only to measure its cost).",
    )
    group.add_argument(
        "--request-events",
        env_var="CACHESTORM_REQUEST_EVENTS",
        choices=("batched", "each"),
        default="batched",
        help="batched: successful calls merged into Locust's stats in bulk every 0.25 s (same figures, "
        "less overhead); each: one Locust request event per call, for your own request listeners.",
    )
    group.add_argument(
        "--verdict",
        env_var="CACHESTORM_VERDICT",
        action="store_true",
        default=False,
        help="Make the verdict of the analysis that ends every run Locust's exit code "
        "(0 pass, 1 fail, 3 unknown).",
    )
    group.add_argument(
        "--end-analysis",
        env_var="CACHESTORM_END_ANALYSIS",
        choices=("on", "off"),
        default="on",
        help="on: every run ends with the analysis (summary.json, report.html). off: none unless "
        "--verdict (for a test that runs the analysis itself, or to measure the analysis's cost).",
        include_in_web_ui=False,
    )
    group.add_argument(
        "--drain-timeout",
        env_var="CACHESTORM_DRAIN_TIMEOUT",
        type=float,
        default=30.0,
        help="Seconds the master waits at test stop for every worker's last history batch.",
        include_in_web_ui=False,
    )
    group.add_argument(
        "--clock-sync",
        env_var="CACHESTORM_CLOCK_SYNC",
        choices=("on", "off"),
        default="on",
        help="on: every worker measures its clock's offset to the master's every few seconds and "
        "ships its rows on the master's clock. off: the workers' clocks are trusted as they are "
        "(only to show what an unsynchronised clock does to the verdict).",
        include_in_web_ui=False,
    )
    group.add_argument(
        "--check-services",
        env_var="CACHESTORM_CHECK_SERVICES",
        choices=("on", "off"),
        default="on",
        help="on: at each run start the master writes a run marker into its Redis and PostgreSQL "
        "and every worker reads it back through its own URLs, and stops the run if they lead "
        "elsewhere (docs/services.md). off: no marker, no check (only to measure what the check "
        "costs: a worker on the wrong services then goes unnoticed).",
        include_in_web_ui=False,
    )
    group.add_argument(
        "--history-flush-s",
        env_var="CACHESTORM_HISTORY_FLUSH_S",
        type=float,
        default=FLUSH_INTERVAL_S,
        help="Seconds after which the master writes the history rows it holds as a Parquet part, "
        "so that a crash of the master loses at most about that much. 0: a part only every "
        f"{PART_ROWS} rows (to measure what the periodic parts cost).",
        include_in_web_ui=False,
    )
    group.add_argument(
        "--run-id", env_var="CACHESTORM_RUN_ID", default="", include_in_web_ui=False, help=argparse.SUPPRESS
    )
    # Set by the master at each run start, for the workers' check of their services (cachestorm.marker).
    group.add_argument("--run-marker", default="", include_in_web_ui=False, help=argparse.SUPPRESS)


def _add_target_arguments(parser: Any) -> None:
    """Register the chosen target's own options, read before the command line is parsed."""
    spec = target_loader.spec_before_parsing()
    if not spec:
        return
    try:
        cls = target_loader.load(spec)
    except target_loader.TargetLoadError:
        return  # said in one line at start-up (cachestorm.plugin.register), not mid-parse
    add = getattr(cls, "add_arguments", None)
    if callable(add):
        add(parser)


@dataclass(frozen=True)
class Options:
    """The cachestorm options of one node, read from Locust's parsed options."""

    target: str
    redis_url: str
    pg_dsn: str
    ws_url: str
    results_dir: str
    keys: int
    strategy: str
    fill_delay_ms: float
    key_distribution: str
    seed: int | None
    payload_bytes: int
    listeners: int
    pg_pool_size: int
    redis_pool_size: int
    history: bool
    scenario: str
    ttl_ms: int
    redis_maxmemory: str
    redis_eviction_policy: str
    request_events: str
    arrival_rate: str
    open_users: int
    probe_rate: float
    probe_delays: str
    verdict: bool
    drain_timeout: float
    run_id: str
    history_flush_s: float = FLUSH_INTERVAL_S
    clock_sync: bool = True
    nemesis: str = ""
    nemesis_netns: str = ""
    check_services: bool = True
    end_analysis: bool = True

    @classmethod
    def from_parsed(cls, parsed: Any) -> Options:
        return cls(
            target=getattr(parsed, "target", "") or "",
            redis_url=parsed.redis_url or "",
            pg_dsn=parsed.pg_dsn or "",
            ws_url=parsed.ws_url or "",
            results_dir=parsed.results_dir,
            keys=int(parsed.keys),
            strategy=parsed.strategy,
            fill_delay_ms=float(parsed.fill_delay_ms),
            key_distribution=parsed.key_distribution,
            seed=None if parsed.seed in (None, "") else int(parsed.seed),
            payload_bytes=int(parsed.payload_bytes),
            listeners=int(parsed.listeners),
            pg_pool_size=int(parsed.pg_pool_size),
            redis_pool_size=int(parsed.redis_pool_size),
            history=parsed.history != "off",
            scenario=parsed.scenario,
            ttl_ms=int(parsed.ttl_ms or 0),
            redis_maxmemory=parsed.redis_maxmemory or "",
            redis_eviction_policy=parsed.redis_eviction_policy,
            request_events=parsed.request_events,
            arrival_rate=parsed.arrival_rate or "",
            open_users=int(parsed.open_users or 0),
            probe_rate=float(parsed.probe_rate),
            probe_delays=parsed.probe_delays or "",
            verdict=bool(parsed.verdict),
            drain_timeout=float(parsed.drain_timeout),
            run_id=parsed.run_id or "",
            history_flush_s=float(getattr(parsed, "history_flush_s", FLUSH_INTERVAL_S)),
            clock_sync=getattr(parsed, "clock_sync", "on") != "off",
            nemesis=getattr(parsed, "nemesis", "") or "",
            nemesis_netns=getattr(parsed, "nemesis_netns", "") or "",
            check_services=getattr(parsed, "check_services", "on") != "off",
            end_analysis=getattr(parsed, "end_analysis", "on") != "off",
        )

    def schedule(self) -> Schedule | None:
        """The open-model arrival schedule, or ``None`` for a closed-model run."""
        return Schedule(parse_schedule(self.arrival_rate)) if self.arrival_rate else None

    def arrival_users(self) -> int:
        """How many cache users share the open-model arrivals (``--open-users`` or automatic)."""
        schedule = self.schedule()
        if self.open_users or schedule is None:
            return self.open_users
        return default_users(schedule)

    def probe_delays_s(self) -> tuple[float, ...]:
        """The probe delays M, in seconds, ascending."""
        return parse_durations(self.probe_delays)

    def problems(self) -> list[str]:
        """One line per invalid option value: which option, what is wrong, what to do."""
        out = []
        if self.keys < 1:
            out.append(f"--keys is {self.keys}: it must be at least 1.")
        if self.fill_delay_ms < 0:
            out.append(f"--fill-delay-ms is {self.fill_delay_ms}: it must be 0 or more.")
        if self.strategy not in STRATEGIES:
            # Looked up at check time: a locustfile or target file may have registered its own.
            out.append(f"--strategy is {self.strategy!r}: use one of {', '.join(STRATEGIES)}.")
        if self.key_distribution not in DISTRIBUTIONS:
            out.append(
                f"--key-distribution is {self.key_distribution!r}: use one of {', '.join(DISTRIBUTIONS)}."
            )
        if self.payload_bytes < 0:
            out.append(f"--payload-bytes is {self.payload_bytes}: it must be 0 or more.")
        if self.listeners < 0:
            out.append(f"--listeners is {self.listeners}: it must be 0 or more.")
        if self.pg_pool_size < 1:
            out.append(f"--pg-pool-size is {self.pg_pool_size}: it must be at least 1.")
        if self.ttl_ms < 0:
            out.append(f"--ttl-ms is {self.ttl_ms}: it must be 0 (no TTL) or more.")
        if self.redis_maxmemory and not re.fullmatch(r"\d+(?:[kmg]b?)?", self.redis_maxmemory.lower()):
            out.append(f"--redis-maxmemory is {self.redis_maxmemory!r}: use bytes or a size like 64mb.")
        if self.redis_pool_size < 1:
            out.append(f"--redis-pool-size is {self.redis_pool_size}: it must be at least 1.")
        if self.history_flush_s < 0:
            out.append(f"--history-flush-s is {self.history_flush_s}: it must be 0 or more.")
        if self.open_users < 0:
            out.append(f"--open-users is {self.open_users}: it must be 0 (automatic) or more.")
        if not 0.0 <= self.probe_rate <= 1.0:
            out.append(f"--probe-rate is {self.probe_rate}: it must be between 0 and 1.")
        try:
            parse_durations(self.probe_delays)
        except ValueError as e:
            out.append(f"--probe-delays is {self.probe_delays!r}: {e}")
        if self.arrival_rate:
            try:
                parse_schedule(self.arrival_rate)
            except ValueError as e:
                out.append(f"--arrival-rate is {self.arrival_rate!r}: {e}")
        return out


_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m)?")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}


def parse_duration(text: str) -> float:
    """Seconds in ``text``: ``250ms``, ``1.5s``, ``2m``, or a bare number of seconds."""
    m = _DURATION.fullmatch(text.strip().lower())
    if m is None:
        raise ValueError(f"{text.strip()!r} is not a duration; write it like 100ms, 1s or 2m")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def parse_durations(text: str) -> tuple[float, ...]:
    """``100ms,1s,5s`` as seconds, ascending, each above 0; empty means none.

    Example::

        >>> parse_durations("1s,100ms")
        (0.1, 1.0)
    """
    parts = [p for p in text.split(",") if p.strip()]
    values = sorted({parse_duration(p) for p in parts})
    if any(v <= 0 for v in values):
        raise ValueError("every delay must be above 0; write them like 100ms,1s,5s")
    return tuple(values)


def parse_schedule(text: str) -> tuple[tuple[float, float], ...]:
    """An arrival schedule as ``((seconds, rate), ...)`` points, linear between them.

    ``500`` is a constant 500 operations per second, ``((0.0, 500.0),)``. ``0:100,30:1000,90:1000``
    ramps from 100/s at 0 s to 1000/s at 30 s and holds it; the last rate holds until the test
    stops. Times take the units of :func:`parse_duration` (``30s``, ``2m``).

    Example::

        >>> parse_schedule("0:100,30s:1000")
        ((0.0, 100.0), (30.0, 1000.0))
    """
    hint = "write a rate like 500, or SECONDS:RATE points like 0:100,30:1000,90:1000"
    text = text.strip()
    if ":" not in text:
        try:
            rate = float(text)
        except ValueError:
            raise ValueError(f"not a rate; {hint}") from None
        points: tuple[tuple[float, float], ...] = ((0.0, rate),)
    else:
        out = []
        for part in text.split(","):
            at, sep, rate_text = part.partition(":")
            if not sep:
                raise ValueError(f"{part.strip()!r} is not a SECONDS:RATE point; {hint}")
            try:
                out.append((parse_duration(at), float(rate_text)))
            except ValueError:
                raise ValueError(f"{part.strip()!r} is not a SECONDS:RATE point; {hint}") from None
        points = tuple(out)
        if points[0][0] != 0.0:
            points = ((0.0, points[0][1]), *points)
        if any(b[0] <= a[0] for a, b in itertools.pairwise(points)):
            raise ValueError(f"the times must increase; {hint}")
    if any(not (r >= 0.0) or r == float("inf") for _, r in points) or max(r for _, r in points) <= 0:
        raise ValueError(f"rates must be finite, 0 or more, and not all 0; {hint}")
    return points
