"""Per-user seeds (keys.user_seed): a run's --seed replays every user's random choices.

The real user classes run their ``on_start`` against a stub node whose process ids are handed out
however a test likes, so that the start order and the process ids can differ between two "runs"
while the users of each class are the same.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from locust import User
from locust.argument_parser import LocustArgumentParser
from locust.env import Environment

import users.cache
import users.contention
import users.invalidator
import users.memory
import users.stampede
import users.websocket
from cachestorm import keys, options
from cachestorm.clients import InstrumentedRedis
from cachestorm.history import Recorder
from tests.conftest import no_events
from users import (
    CacheReader,
    CacheWriter,
    CounterUser,
    Invalidator,
    LockUser,
    MemoryPressureUser,
    StampedeUser,
    TransactionUser,
    WebSocketListener,
)

CLASSES: list[type[User]] = [
    CacheReader,
    CacheWriter,
    CounterUser,
    TransactionUser,
    LockUser,
    StampedeUser,
    Invalidator,
    MemoryPressureUser,
    WebSocketListener,
]
MODULES = (users.cache, users.contention, users.invalidator, users.memory, users.stampede, users.websocket)
DRAWS = 50


def parsed_options(seed: int | None, run_id: str = "run-1") -> Any:
    parser = LocustArgumentParser()
    options.add_arguments(parser)
    users.contention.add_arguments(parser)
    args = ["--run-id", run_id, "--memory-value-bytes", "64"]
    return parser.parse_args(args if seed is None else [*args, "--seed", str(seed)])


class Node:
    """What the users' ``on_start`` takes from cachestorm.node's Node, with chosen process ids."""

    def __init__(self, environment: Environment, processes: Iterator[int]) -> None:
        self.options = options.Options.from_parsed(environment.parsed_options)
        self.processes = processes
        self.recorder = Recorder()
        # Connects lazily, and nothing here sends a command: no server is needed.
        self.r = InstrumentedRedis("redis://127.0.0.1:1/0", no_events)
        self.operations = object()
        self.target = object()
        self.pg = object()
        self.ws_url = "ws://127.0.0.1:1/"
        self.fire = no_events
        self.writes_paused = False

    def new_process(self) -> int:
        return next(self.processes)


class Run:
    """One simulated run: an environment, a node, and the users started on it, by class and ordinal."""

    def __init__(
        self, seed: int | None, processes: Iterator[int], run_id: str = "run-1", worker_index: int = 0
    ) -> None:
        self.environment = Environment(user_classes=CLASSES, parsed_options=parsed_options(seed, run_id))
        self.environment.runner = SimpleNamespace(worker_index=worker_index)  # type: ignore[assignment]
        self.node = Node(self.environment, processes)
        self.users: dict[tuple[str, int], User] = {}

    def start(self, monkeypatch: pytest.MonkeyPatch, cls: type[User]) -> User:
        for module in MODULES:
            monkeypatch.setattr(module, "node_of", lambda _env: self.node)
        user = cls(self.environment)
        user.on_start()
        name, _, ordinal = keys.user_identity(self.environment, user)
        self.users[name, ordinal] = user
        return user


def stream(user: Any) -> list[Any]:
    """The next draws of whatever the user's choices come from."""
    if isinstance(user, MemoryPressureUser):
        return [user.prefix, user.value]
    if hasattr(user, "next_key"):
        return [user.next_key() for _ in range(DRAWS)]
    rng: random.Random = user.rng
    return [rng.random() for _ in range(DRAWS)]


def streams(run: Run) -> dict[tuple[str, int], list[Any]]:
    return {ident: stream(user) for ident, user in run.users.items()}


def start_all(run: Run, monkeypatch: pytest.MonkeyPatch, order: list[type[User]]) -> Run:
    for cls in order:
        run.start(monkeypatch, cls)
    return run


# Three users of each class: interleaved in one run, class after class (in reverse) in the other.
INTERLEAVED = CLASSES * 3
GROUPED = [cls for cls in reversed(CLASSES) for _ in range(3)]


def sparse_ids() -> Iterator[int]:
    """Process ids as a busy node hands them out: others (probes, renewals) take some in between."""
    rng = random.Random(99)
    n = 5000
    while True:
        n += rng.randint(1, 40)
        yield n


def test_same_seed_same_streams_whatever_the_start_order_and_process_ids(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a = start_all(Run(7, itertools.count(1)), monkeypatch, INTERLEAVED)
    b = start_all(Run(7, sparse_ids()), monkeypatch, GROUPED)
    assert {u.process for u in a.users.values() if hasattr(u, "process")} != {
        u.process for u in b.users.values() if hasattr(u, "process")
    }
    sa, sb = streams(a), streams(b)
    assert len(sa) == 3 * len(CLASSES)
    assert sa == sb
    # Users do not replay each other's choices: all of their streams differ.
    assert len({repr(s) for s in sa.values()}) == len(sa)


def test_another_seed_changes_every_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    sa = streams(start_all(Run(7, itertools.count(1)), monkeypatch, INTERLEAVED))
    sb = streams(start_all(Run(8, itertools.count(1)), monkeypatch, INTERLEAVED))
    assert sa.keys() == sb.keys()
    changed = {ident for ident in sa if sa[ident] != sb[ident]}
    # MemoryPressureUser's key names are its identity, not a draw: only its value changes.
    assert changed == set(sa)
    for ordinal in range(3):
        assert sa["MemoryPressureUser", ordinal][0] == sb["MemoryPressureUser", ordinal][0]


def test_another_node_changes_every_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    sa = streams(start_all(Run(7, itertools.count(1)), monkeypatch, INTERLEAVED))
    sb = streams(start_all(Run(7, itertools.count(1), worker_index=1), monkeypatch, INTERLEAVED))
    assert all(sa[ident] != sb[ident] for ident in sa)


def test_unseeded_users_draw_fresh_entropy(monkeypatch: pytest.MonkeyPatch) -> None:
    sa = streams(start_all(Run(None, itertools.count(1)), monkeypatch, CLASSES))
    sb = streams(start_all(Run(None, itertools.count(1)), monkeypatch, CLASSES))
    assert all(sa[ident][1:] != sb[ident][1:] for ident in sa)


@pytest.mark.parametrize("cls", [CacheReader, CacheWriter, CounterUser, TransactionUser, LockUser])
def test_renewing_the_process_keeps_the_stream(monkeypatch: pytest.MonkeyPatch, cls: type[User]) -> None:
    renewing = Run(7, itertools.count(1)).start(monkeypatch, cls)
    steady = Run(7, itertools.count(1)).start(monkeypatch, cls)
    draw: Callable[[Any], Any] = (
        (lambda u: u.next_key()) if hasattr(renewing, "next_key") else (lambda u: u.rng.random())
    )
    before = renewing.process  # type: ignore[attr-defined]
    got, expected = [], []
    for i in range(DRAWS):
        if i % 10 == 5:
            renewing.renew("info")  # type: ignore[attr-defined]
        got.append(draw(renewing))
        expected.append(draw(steady))
    assert renewing.process != before  # type: ignore[attr-defined]
    assert got == expected


def test_websocket_reconnect_keeps_the_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    reconnecting = Run(7, itertools.count(1)).start(monkeypatch, WebSocketListener)
    steady = Run(7, itertools.count(1)).start(monkeypatch, WebSocketListener)
    first = [reconnecting.rng.random() for _ in range(5)]  # type: ignore[attr-defined]
    reconnecting._open()  # type: ignore[attr-defined]  # the notifier is unreachable: ws_open fail
    rest = [reconnecting.rng.random() for _ in range(5)]  # type: ignore[attr-defined]
    assert first + rest == [steady.rng.random() for _ in range(10)]  # type: ignore[attr-defined]


def test_identity_counts_per_class_and_per_run() -> None:
    environment = SimpleNamespace(parsed_options=SimpleNamespace(run_id="a"), runner=None)

    class A:
        pass

    class B:
        pass

    users_ = [A(), B(), A(), A(), B()]
    assert [keys.user_identity(environment, u) for u in users_] == [
        ("A", 0, 0),
        ("B", 0, 0),
        ("A", 0, 1),
        ("A", 0, 2),
        ("B", 0, 1),
    ]
    # Asked again, a user keeps its identity.
    assert keys.user_identity(environment, users_[2]) == ("A", 0, 1)
    # The next run of the same process counts from 0 again.
    environment.parsed_options.run_id = "b"
    assert keys.user_identity(environment, A()) == ("A", 0, 0)
    # A worker's index; -1 (a worker not yet acknowledged) counts as 0.
    worker = SimpleNamespace(parsed_options=None, runner=SimpleNamespace(worker_index=3))
    assert keys.user_identity(worker, A()) == ("A", 3, 0)
    assert keys.user_identity(SimpleNamespace(runner=SimpleNamespace(worker_index=-1)), A())[1] == 0


def test_user_seed() -> None:
    environment = SimpleNamespace(parsed_options=SimpleNamespace(run_id="a"), runner=None)
    user = object.__new__(type("Reader", (), {}))
    assert keys.user_seed(None, environment, user) is None
    assert keys.user_seed(5, environment, user) == keys.derive_seed(5, "Reader", 0, 0)
    assert keys.user_seed(5, environment, user, "phase") == keys.derive_seed(5, "Reader", 0, 0, "phase")
    assert keys.user_seed(5, environment, user, "phase") != keys.user_seed(5, environment, user)
