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
from dataclasses import dataclass
from typing import Any

STRATEGIES = ("versioned", "cache-aside")
DISTRIBUTIONS = ("zipfian", "hotspot", "uniform")


def add_arguments(parser: Any) -> None:
    """Register every cachestorm option on Locust's (configargparse) parser."""
    # Locust's UI flags (is_secret, include_in_web_ui) work on the parser itself, not on groups.
    group = parser
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
        choices=STRATEGIES,
        default="versioned",
        help="versioned: fills guarded by version compare-and-set and tombstones. "
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
        help="StepRamp: seconds of reads with writers stopped, before the end (shows lasting staleness).",
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
        help="Run the analysis when the test stops and make its verdict Locust's exit code.",
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
        "--run-id", env_var="CACHESTORM_RUN_ID", default="", include_in_web_ui=False, help=argparse.SUPPRESS
    )


@dataclass(frozen=True)
class Options:
    """The cachestorm options of one node, read from Locust's parsed options."""

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
    request_events: str
    verdict: bool
    drain_timeout: float
    run_id: str

    @classmethod
    def from_parsed(cls, parsed: Any) -> Options:
        return cls(
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
            request_events=parsed.request_events,
            verdict=bool(parsed.verdict),
            drain_timeout=float(parsed.drain_timeout),
            run_id=parsed.run_id or "",
        )

    def problems(self) -> list[str]:
        """One line per invalid option value: which option, what is wrong, what to do."""
        out = []
        if self.keys < 1:
            out.append(f"--keys is {self.keys}: it must be at least 1.")
        if self.fill_delay_ms < 0:
            out.append(f"--fill-delay-ms is {self.fill_delay_ms}: it must be 0 or more.")
        if self.strategy not in STRATEGIES:
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
        if self.redis_pool_size < 1:
            out.append(f"--redis-pool-size is {self.redis_pool_size}: it must be at least 1.")
        return out
