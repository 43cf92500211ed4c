"""The target: the system under test, seen through its own code paths.

cachestorm drives a target and judges what it served. A target is any class with the methods of
:class:`Target`; the user's own file is the whole integration. Choose one with
``--target FILE.py:Class`` or ``--target package.module:Class``; without it, the target is
cachestorm's own reference cache (:class:`cachestorm.reference.ReferenceCache`).

Example, a target for a service's own cache-aside code::

    from cachestorm.target import Cached, NoEffect, Read

    class MyService:
        def __init__(self, context):
            self.app = myapp.connect(context.options.my_dsn)   # options from add_arguments

        @classmethod
        def add_arguments(cls, parser):
            parser.add_argument("--my-dsn", env_var="MY_DSN", default="", is_secret=True)

        def key(self, index):              # the index-th key this run uses
            return f"user:{index}"

        def read(self, key):               # the app's own read path
            user, was_cached = self.app.get_user(key)
            return Read(user.version, "hit" if was_cached else "miss")

        def write(self, key):              # the app's own write path, commit and invalidation
            return self.app.rename_user(key, secrets.token_hex(4)).version

        def reset(self, keys):             # at each run start, on the master only
            self.app.truncate_cache(); self.app.set_versions(keys, 0)

        def sweep(self, keys):             # at test stop, on the master only
            for key in keys:
                yield Cached(key, self.app.cached_version(key), self.app.db_version(key))

        def close(self): self.app.close()

What cachestorm does with it:

- Every node that runs users makes one instance per run, ``Target(context)``, and calls
  :meth:`~Target.read` and :meth:`~Target.write` from its users, timing and recording each call
  around the target (:mod:`cachestorm.operations`): a target writes no history code.
- The master (or the single local runner) makes one more instance to :meth:`~Target.reset` at each
  run start and :meth:`~Target.sweep` at each stop, for the ``divergence`` check.
- Outcomes: a call that returns is ``ok``. A read that raises certainly had no effect: ``fail``. A
  write that raises :class:`NoEffect` is ``fail``; :class:`AfterCommit` is ``info`` with the
  committed version; any other exception (a timeout, a lost
  connection, an error after the commit) leaves its outcome unknown: ``info``.
- The contract: per key, the versions a target's writes return grow by exactly 1 per committed
  write, from the version the key had at reset (0 unless :meth:`~Target.reset` says otherwise). A
  write that returns no integer, or a version at or below one this node already saw committed, and
  a read that returns no integer, break it: the run stops with one line naming the key
  (:mod:`cachestorm.contract`). A table without such a column can get one from
  :mod:`cachestorm.pg_versions`, with no change to the application's code.

Optional members, used when present: ``add_arguments(parser)`` (classmethod: the target's own
options, registered in Locust's parser so they show in the web UI and can come from environment
variables), ``setup(environment)`` and ``teardown()`` (classmethods, on the master, once per
session: start or check the services the target needs), ``run_problem(environment)`` (classmethod,
on the master at each test start: why this run must not start, or None), ``peek(key)`` (what the
cache holds, without filling it: the write probes' read), ``notifications_url()`` (a WebSocket URL
that pushes ``{"key", "version", "commit_ns"}`` per commit, for the WebSocket listeners),
``invalidate_many(keys)`` (drop what the caches hold for ``keys``, for the Invalidator),
``stats()`` (counters sampled every second into the history, e.g. Redis INFO),
``tier_events()`` (on the master at test stop: the :class:`TierEvent` s the system's tiers
logged, for the cascade latency from a commit to each tier), ``needed_checks`` (a class
attribute: analysis check names this target's runs need beyond those of the user classes that
ran, or a dict of names to True or False to add or drop one, e.g. ``{"ws_delivery": False}`` for a
target without notifications; recorded in run.json, see docs/checks.md), ``describe()`` (one
line for the report), and ``reports_requests`` (True when the target's own clients already fire
Locust's request events, as the HTTP target's do; otherwise cachestorm fires ``TARGET read`` and
``TARGET write`` for it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, runtime_checkable


class Read(NamedTuple):
    """What a read served: the version, and where it came from.

    ``source`` is ``"hit"`` (a cache served it), ``"miss"`` (the cache had nothing servable and the
    database did), ``"hit:TIER"`` for a target with several cache tiers (``"hit:l1"``), or None
    when the target cannot tell. A target may return a bare ``int`` instead, the version alone.
    """

    version: int
    source: str | None = None


class Cached(NamedTuple):
    """What one cache tier holds for one key at the sweep, beside the database's version.

    ``version`` is the version a read would be served from this tier, None when it holds
    nothing servable. ``held`` says what it holds: ``entry``, ``tombstone`` (a marker that some
    version was invalidated) or ``absent``; by default it follows ``version``. ``tier`` names the
    tier for targets with several (``"l1"``).
    """

    key: str
    version: int | None
    db_version: int | None
    held: str | None = None
    tier: str | None = None


class TierEvent(NamedTuple):
    """Something a tier did to a key on its own, reported after the run: a cache tier dropping its
    entry on an invalidation, a frontend pushing a change. ``t_ns`` is on the run's clock
    (nanoseconds since the epoch); ``what`` says what happened (``"drop"``, ``"push"``)."""

    key: str
    version: int | None
    tier: str
    what: str
    t_ns: int


class NoEffect(Exception):
    """Raised by a target's write that certainly had no effect (rolled back, refused, a 4xx).

    It is recorded as ``fail``; any other exception from a write is recorded as ``info``.
    """


class AfterCommit(Exception):
    """Raised by a write that committed ``version`` and then failed or timed out in what follows
    (its invalidation, its notification). Recorded as ``info`` with the version, so the analysis
    knows that version exists although the write's effect on the caches is unknown.
    """

    def __init__(self, version: int, reason: str = "") -> None:
        super().__init__(f"version {version} committed, then: {reason}" if reason else str(version))
        self.version = version


class ContractError(Exception):
    """A target broke cachestorm's contract (see the module docstring); the run stops."""


@dataclass(frozen=True)
class TargetContext:
    """What a target instance is given when it is made.

    ``options`` are Locust's parsed options (the target's own among them); ``fire`` is Locust's
    request event (``fire(request_type=, name=, response_time=, response_length=, exception=,
    context=)``), batched the way the run's ``--request-events`` says; ``role`` is ``"users"`` for
    the instance the users call and ``"coordinator"`` for the master's reset and sweep instance.
    ``record`` and ``new_process`` let cachestorm's own reference cache record the rows of its
    internal steps (its fills); a user's target needs neither.
    """

    options: Any
    fire: Callable[..., None]
    role: str
    record: Callable[..., None]
    new_process: Callable[[], int]


@runtime_checkable
class Target(Protocol):
    """The methods every target has. See the module docstring for the optional ones."""

    def __init__(self, context: TargetContext) -> None: ...

    def key(self, index: int) -> str:
        """The ``index``-th key of the run (0 to ``--keys`` - 1): the history's ``key``."""
        ...

    def read(self, key: str) -> Read | int:
        """Read ``key`` through the system's own read path; the version served."""
        ...

    def write(self, key: str) -> int:
        """Write ``key`` through the system's own write path; the version committed."""
        ...

    def reset(self, keys: Sequence[str]) -> dict[str, int] | None:
        """At each run start, on the master: bring ``keys`` to a known state with empty caches.

        Returns None when every key is then at version 0, or each key's version when the target
        cannot reset them (the run then counts from there).
        """
        ...

    def sweep(self, keys: Sequence[str]) -> Iterable[Cached]:
        """At test stop, on the master: what each cache tier holds for ``keys``, beside the database."""
        ...

    def close(self) -> None:
        """Release connections; the instance is not used again."""
        ...


def describe(target: object, spec: str) -> str:
    """One line naming a target instance, for run.json and the report: its own ``describe()``, or
    the ``--target`` it was loaded from."""
    text = getattr(target, "describe", None)
    return str(text()) if callable(text) else spec
