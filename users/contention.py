"""Users that contend on shared Redis state: counters, transfers and fenced locks.

Each user is one *process* of the history: one operation per task, and a fresh process id after
an operation whose outcome is unknown (``info``). Keys are drawn uniformly with a per-user
``random.Random`` seeded from the run's seed and the user's identity (``keys.user_seed``), which
a renewed process id does not change. The Redis side (scripts, modes,
statuses) is :mod:`cachestorm.contention`; docs/contention.md describes the workloads.

The options are registered by :func:`add_arguments`, which locustfile.py adds to Locust's
``init_command_line_parser``; run.json records them with every other custom option.
"""

from __future__ import annotations

import random
from typing import Any

import gevent
from locust import User, between, task

from cachestorm import keys
from cachestorm.contention import (
    COUNTER_MODES,
    LOCK_MODES,
    TX_MODES,
    Counters,
    Locks,
    Transfers,
    final_counter_reads,
    final_group_reads,
)
from cachestorm.history import Recorder
from cachestorm.node import node_of

# The share of locked critical sections that hold the lock for a random 0 to 1.2 x TTL before the
# guarded write, so that some locks expire while held and the fencing tokens have work to do.
SLOW_HOLD_FRACTION = 0.05
SLOW_HOLD_MAX_TTLS = 1.2


def add_arguments(parser: Any) -> None:
    """Register the contention options on Locust's (configargparse) parser."""
    parser.add_argument(
        "--counter-mode",
        env_var="CACHESTORM_COUNTER_MODE",
        choices=COUNTER_MODES,
        default="atomic",
        help="CounterUser: atomic (INCRBY), locked (SET NX PX lock around GET/SET), "
        "unsafe (GET then SET: loses updates, the positive control).",
    )
    parser.add_argument(
        "--counters",
        env_var="CACHESTORM_COUNTERS",
        type=int,
        default=10,
        help="CounterUser: number of counters.",
    )
    parser.add_argument(
        "--tx-mode",
        env_var="CACHESTORM_TX_MODE",
        choices=TX_MODES,
        default="atomic",
        help="TransactionUser: atomic (WATCH/MULTI/EXEC), unsafe (separate GETs and SETs: a group's "
        "sum is seen off zero, the positive control).",
    )
    parser.add_argument(
        "--tx-groups", env_var="CACHESTORM_TX_GROUPS", type=int, default=10, help="TransactionUser: groups."
    )
    parser.add_argument(
        "--tx-group-size",
        env_var="CACHESTORM_TX_GROUP_SIZE",
        type=int,
        default=4,
        help="TransactionUser: keys per group (at least 2).",
    )
    parser.add_argument(
        "--lock-mode",
        env_var="CACHESTORM_LOCK_MODE",
        choices=LOCK_MODES,
        default="locked",
        help="LockUser: locked (acquire, fenced write, release), unlocked (the fenced write alone, "
        "as one atomic script, for comparison), unsafe (no mutual exclusion, no fencing: positive control).",
    )
    parser.add_argument(
        "--locks", env_var="CACHESTORM_LOCKS", type=int, default=5, help="LockUser: number of locks."
    )
    parser.add_argument(
        "--lock-ttl-ms",
        env_var="CACHESTORM_LOCK_TTL_MS",
        type=int,
        default=1000,
        help="Lock TTL in ms, for LockUser's locks and the counter locks of --counter-mode locked.",
    )


def problems(parsed: Any) -> list[str]:
    """One line per invalid contention option, like cachestorm.options.Options.problems()."""
    out = []
    for flag, name, least in (
        ("--counters", "counters", 1),
        ("--tx-groups", "tx_groups", 1),
        ("--tx-group-size", "tx_group_size", 2),
        ("--locks", "locks", 1),
        ("--lock-ttl-ms", "lock_ttl_ms", 1),
    ):
        value = int(getattr(parsed, name))
        if value < least:
            out.append(f"{flag} is {value}: it must be at least {least}.")
    return out


class _ContentionUser(User):
    abstract = True
    wait_time = between(0.0, 0.05)

    def on_start(self) -> None:
        self.node = node_of(self.environment)
        assert self.node.r is not None
        self.r = self.node.r
        self.opts = self.environment.parsed_options
        self.process = self.node.new_process()
        self.rng = random.Random(keys.user_seed(self.node.options.seed, self.environment, self))

    def renew(self, status: str) -> None:
        if status == "info":
            self.process = self.node.new_process()


class CounterUser(_ContentionUser):
    """Increments counters by 1 (f = ``incr``) and now and then reads one (f = ``counter_read``)."""

    def on_start(self) -> None:
        super().on_start()
        o = self.opts
        self.counters = Counters(self.r, self.node.recorder, o.counter_mode, lock_ttl_ms=o.lock_ttl_ms)
        self.n = int(o.counters)

    @staticmethod
    def final_reads(r: Any, recorder: Recorder, parsed: Any) -> None:
        """At test stop (the plugin's hook): read every counter once, as process 0."""
        final_counter_reads(r, recorder, int(parsed.counters), process=0)

    @task(9)
    def incr(self) -> None:
        self.renew(self.counters.incr(self.process, self.rng.randrange(self.n), 1))

    @task(1)
    def read(self) -> None:
        self.counters.read(self.process, self.rng.randrange(self.n))


class TransactionUser(_ContentionUser):
    """Moves 1..10 between two members of a group (f = ``tx_transfer``) and reads group sums
    (f = ``tx_read``), which must always be 0."""

    def on_start(self) -> None:
        super().on_start()
        o = self.opts
        self.transfers = Transfers(self.r, self.node.recorder, o.tx_mode, int(o.tx_group_size))
        self.groups = int(o.tx_groups)

    @staticmethod
    def final_reads(r: Any, recorder: Recorder, parsed: Any) -> None:
        """At test stop (the plugin's hook): read every group's sum once, as process 0."""
        final_group_reads(r, recorder, int(parsed.tx_groups), int(parsed.tx_group_size), process=0)

    @task(4)
    def transfer(self) -> None:
        src, dst = self.rng.sample(range(self.transfers.group_size), 2)
        amount = self.rng.randint(1, 10)
        group = self.rng.randrange(self.groups)
        self.renew(self.transfers.transfer(self.process, group, src, dst, amount))

    @task(1)
    def read(self) -> None:
        self.transfers.read(self.process, self.rng.randrange(self.groups))


class LockUser(_ContentionUser):
    """Acquire a lock, write its resource with the fencing token, release (three rows).

    In ``unlocked`` mode, the guarded write alone, with a token taken from the fence.
    """

    def on_start(self) -> None:
        super().on_start()
        o = self.opts
        self.locks = Locks(self.r, self.node.recorder, o.lock_mode, int(o.lock_ttl_ms))
        self.n = int(o.locks)
        self.slow_hold_s = SLOW_HOLD_MAX_TTLS * self.locks.ttl_ms / 1000.0

    @task
    def critical_section(self) -> None:
        n = self.rng.randrange(self.n)
        if self.locks.mode == "unlocked":
            status, _ = self.locks.unlocked_write(self.process, n)
            self.renew(status)
            return
        status, token = self.locks.acquire(self.process, n)
        self.renew(status)
        if token is None:
            return
        if self.rng.random() < SLOW_HOLD_FRACTION:
            # Held long enough, sometimes, for the lock to expire before the write.
            self.hold(self.rng.uniform(0.0, self.slow_hold_s))
        self.renew(self.locks.guarded_write(self.process, n, token))
        self.renew(self.locks.release(self.process, n, token))

    def hold(self, seconds: float) -> None:
        gevent.sleep(seconds)  # other users run meanwhile
