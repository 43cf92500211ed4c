"""Key distributions: which entity id a user touches next.

Each factory returns a :class:`KeyChooser` whose :meth:`KeyChooser.next` gives an entity id in
``[0, n)``. Draws are made with numpy in blocks of :data:`BLOCK` and handed out one at a time, so
``next()`` costs a list-iterator step in the Locust hot path rather than a numpy call.

A chooser is deterministic for a given seed; ``seed=None`` draws fresh entropy. Each Locust user
makes its own chooser with a seed from :func:`user_seed`, so a run's key choices are reproducible
from one global seed (``--seed``) while users do not replay each other's keys. Example::

    from cachestorm import keys

    class CacheUser(User):
        def on_start(self):
            seed = keys.user_seed(self.environment.parsed_options.seed, self.environment, self)
            self.keys = keys.from_name("zipfian", 1_000_000, seed)

        @task
        def read(self):
            entity = self.keys.next()
            ...

See ``docs/workload.md`` for what each distribution is and why scrambled zipfian is the default.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "BLOCK",
    "NAMES",
    "HotspotChooser",
    "KeyChooser",
    "UniformChooser",
    "ZipfianChooser",
    "derive_seed",
    "from_name",
    "hotspot",
    "uniform",
    "user_identity",
    "user_seed",
    "zeta",
    "zipfian",
]

BLOCK = 4096
"""Draws made per numpy call. Part of the sequence's definition: changing it changes what a seed gives."""

NAMES = ("hotspot", "uniform", "zipfian")
"""The names :func:`from_name` accepts."""

Ids = npt.NDArray[np.int64]
_U64 = npt.NDArray[np.uint64]


def derive_seed(seed: int | None, *parts: int | str) -> int | None:
    """Derive a child seed from ``seed`` and ``parts``, stably across processes and runs.

    ``None`` stays ``None`` (unseeded stays unseeded). Python's ``hash()`` is salted per process,
    so workers would disagree; BLAKE2b is not. Parts are hashed with their types, so ``1`` and
    ``"1"`` give different seeds.

    Example::

        seed = derive_seed(options.seed, "stampede", 3)
        rng = random.Random(seed)
    """
    if seed is None:
        return None
    digest = hashlib.blake2b(repr((seed, *parts)).encode(), digest_size=8, person=b"cachestorm.seed").digest()
    return int.from_bytes(digest, "little")


# The attribute a user's ordinal is kept in, and the environment's per-run counters.
_ORDINAL = "_cachestorm_ordinal"
_COUNTERS = "_cachestorm_ordinals"


def user_identity(environment: Any, user: object) -> tuple[str, int, int]:
    """A Locust user's stable identity: ``(class name, node index, ordinal)``.

    The ordinal is ``k`` for the ``k``-th user of its class that this node started in the current
    run (counted from 0, and again from 0 in the next run of the same process); the node index is
    the runner's ``worker_index`` (0 on a local runner). Neither depends on timing, nor on the
    user's process ids: a user keeps its identity when it renews its process after an ``info``
    operation, and Locust creates the users of each class in the same order whenever the user
    counts it is asked for are the same (its dispatcher is deterministic).

    The ordinal is handed out on the user's first call, so call this (or :func:`user_seed`) in
    ``on_start`` before anything that yields to gevent: Locust starts the greenlets of the users
    it spawns in the order it made them, and each runs up to its first yield in that order.

    Example::

        user_identity(environment, reader)   # ("CacheReader", 0, 2): the third CacheReader here
    """
    identity: tuple[str, int, int] | None = getattr(user, _ORDINAL, None)
    if identity is not None:
        return identity
    parsed = getattr(environment, "parsed_options", None)
    run = getattr(parsed, "run_id", None) or ""
    # On each worker Locust sets the run's parsed options (run_id among them) before it starts
    # the run's users, so a new run id means a new run: its users count from 0 again.
    counters: tuple[str, dict[str, int]] | None = getattr(environment, _COUNTERS, None)
    if counters is None or counters[0] != run:
        counters = (run, {})
        setattr(environment, _COUNTERS, counters)
    name = type(user).__name__
    ordinal = counters[1].get(name, 0)
    counters[1][name] = ordinal + 1
    # A master runs no users and a worker not yet acknowledged has index -1: both count as node 0.
    node = max(int(getattr(getattr(environment, "runner", None), "worker_index", 0)), 0)
    identity = (name, node, ordinal)
    setattr(user, _ORDINAL, identity)
    return identity


def user_seed(seed: int | None, environment: Any, user: object, *parts: int | str) -> int | None:
    """The seed of one Locust user's random choices: :func:`derive_seed` of ``seed`` (the run's
    ``--seed``), the user's :func:`user_identity` and ``parts``.

    Two runs with the same seed and the same user counts give every user the same seed, whatever
    the order the users started in and whatever process ids they were given; ``parts`` tell apart
    the streams of one user. ``None`` stays ``None``. Call it once, in ``on_start``, and keep what
    it seeds: a stream must not restart when the user renews its process.

    Example::

        def on_start(self):
            o = self.environment.parsed_options
            self.keys = keys.from_name("zipfian", 10_000, keys.user_seed(o.seed, self.environment, self))
            self.rng = random.Random(keys.user_seed(o.seed, self.environment, self, "phase"))
    """
    return derive_seed(seed, *user_identity(environment, user), *parts)


class KeyChooser:
    """Hands out entity ids in ``[0, n)`` one at a time from numpy-drawn blocks.

    Subclasses implement :meth:`_draw`. Use the factories rather than the classes.
    """

    __slots__ = ("_next", "_rng", "n")

    def __init__(self, n: int, seed: int | None) -> None:
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        self.n = n
        self._rng = np.random.Generator(np.random.PCG64(seed))
        self._next: Callable[[], int] = iter(()).__next__

    def next(self) -> int:
        """The next entity id.

        Example::

            chooser = uniform(100, seed=1)
            entity = chooser.next()   # 0 <= entity < 100
        """
        # try/except costs nothing in 3.11 when nothing is raised, and a bound __next__ saves an
        # attribute lookup plus the builtin next() call on every draw.
        try:
            return self._next()
        except StopIteration:
            # tolist() turns the block into Python ints once, so callers never get numpy scalars.
            self._next = iter(self._draw(BLOCK).tolist()).__next__
            return self._next()

    def _draw(self, size: int) -> Ids:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={self.n})"


class UniformChooser(KeyChooser):
    """Every id equally likely. Made by :func:`uniform`."""

    __slots__ = ()

    def _draw(self, size: int) -> Ids:
        return self._rng.integers(0, self.n, size, dtype=np.int64)


def uniform(n: int, seed: int | None = None) -> UniformChooser:
    """Return a chooser that draws ids uniformly from ``[0, n)``.

    Example::

        chooser = uniform(1_000_000, seed=7)
        chooser.next()
    """
    return UniformChooser(n, seed)


class HotspotChooser(KeyChooser):
    """A hot set taking a fixed share of draws, uniform inside each set. Made by :func:`hotspot`."""

    __slots__ = ("hot_n", "hot_op_fraction")

    def __init__(self, n: int, seed: int | None, hot_fraction: float, hot_op_fraction: float) -> None:
        super().__init__(n, seed)
        if not 0.0 <= hot_fraction <= 1.0:
            raise ValueError(f"hot_fraction must be in [0, 1], got {hot_fraction}")
        if not 0.0 <= hot_op_fraction <= 1.0:
            raise ValueError(f"hot_op_fraction must be in [0, 1], got {hot_op_fraction}")
        self.hot_n = int(n * hot_fraction)
        """Size of the hot set, ids ``[0, hot_n)``."""
        self.hot_op_fraction = hot_op_fraction

    def _draw(self, size: int) -> Ids:
        n, hot_n = self.n, self.hot_n
        if hot_n in (0, n):
            # One of the sets is empty: the split means nothing and the draw is uniform.
            return self._rng.integers(0, n, size, dtype=np.int64)
        is_hot = self._rng.random(size) < self.hot_op_fraction
        hot = self._rng.integers(0, hot_n, size, dtype=np.int64)
        cold = self._rng.integers(hot_n, n, size, dtype=np.int64)
        return np.where(is_hot, hot, cold)


def hotspot(
    n: int, seed: int | None = None, hot_fraction: float = 0.2, hot_op_fraction: float = 0.8
) -> HotspotChooser:
    """Return a chooser where ``hot_op_fraction`` of draws fall in the hot set, the rest in the cold set.

    As in YCSB's hotspot generator the hot set is the contiguous, unscrambled prefix
    ``[0, int(n * hot_fraction))``, so a reader of the history can tell hot ids by value alone.
    Inside each set the draw is uniform. If either set is empty the draw is uniform over ``[0, n)``.

    Example::

        chooser = hotspot(1_000_000, seed=7)              # 80% of draws in ids [0, 200_000)
        chooser = hotspot(1_000_000, seed=7, hot_fraction=0.01, hot_op_fraction=0.5)
    """
    return HotspotChooser(n, seed, hot_fraction, hot_op_fraction)


@functools.lru_cache(maxsize=64)
def zeta(n: int, theta: float) -> float:
    """The generalised harmonic number ``sum(1 / i**theta for i in 1..n)``.

    Vectorised in chunks, so ``n`` = 10 million takes about a tenth of a second and bounded memory;
    cached, so the hundreds of users of one process that share ``n`` pay for it once.

    Example::

        zeta(2, 0.99)   # 1 + 2**-0.99
    """
    chunk = 1 << 20
    total = 0.0
    for start in range(1, n + 1, chunk):
        stop = min(n, start + chunk - 1)
        total += float(np.sum(np.arange(start, stop + 1, dtype=np.float64) ** -theta))
    return total


# FNV-1a, 64-bit (Fowler, Noll, Vo), byte by byte over the 8 little-endian octets as YCSB's
# Utils.fnvhash64 does.
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_BYTE = np.uint64(0xFF)
_EIGHT = np.uint64(8)

# Fixed, not seeded: every user and every run must agree on which ids are the hot ones, or the
# hot keys would not be contended.
_ROUND_KEYS = tuple(
    np.uint64(k) for k in (0x9E3779B97F4A7C15, 0xD1B54A32D192ED03, 0x8CB92BA72F3D8DD7, 0xC13FA9A902A6328F)
)


def _fnv1a64(values: _U64) -> _U64:
    h = np.full(values.shape, _FNV_OFFSET, dtype=np.uint64)
    v = values.copy()
    for _ in range(8):
        h ^= v & _BYTE
        h *= _FNV_PRIME  # uint64 arrays wrap mod 2**64, which is what FNV wants
        v >>= _EIGHT
    return h


class _Scrambler:
    """A fixed bijection of ``[0, n)``: a 4-round Feistel network with FNV-1a as round function,
    cycle-walked down from the next even power of two (Black and Rogaway, "Ciphers with Arbitrary
    Finite Domains", CT-RSA 2002).
    """

    __slots__ = ("_half", "_mask", "_n", "_shift")

    def __init__(self, n: int) -> None:
        bits = max(2, (n - 1).bit_length())
        bits += bits & 1
        self._n = np.uint64(n)
        self._half = np.uint64(bits // 2)
        self._mask = np.uint64((1 << (bits // 2)) - 1)
        # FNV-1a's low output bits depend only on the low bits of the input bytes; the high bits
        # see every byte, so the round function takes those.
        self._shift = np.uint64(64 - bits // 2)

    def __call__(self, ranks: Ids) -> Ids:
        out = self._permute(ranks.astype(np.uint64))
        outside = out >= self._n
        # The domain is under 4n, so few values need more than a couple of extra rounds.
        while outside.any():
            out[outside] = self._permute(out[outside])
            outside = out >= self._n
        return out.astype(np.int64)

    def _permute(self, x: _U64) -> _U64:
        left, right = x >> self._half, x & self._mask
        for key in _ROUND_KEYS:
            left, right = right, left ^ (_fnv1a64(right ^ key) >> self._shift)
        return (left << self._half) | right


SCRAMBLE_TABLE_MAX = 1 << 17
"""Key spaces up to this size scramble through a lookup table, built once per process and shared by
its users. The Feistel network cost a new user 1.7 ms on its first draw (a block of 4096), paid
while Locust spawned a batch of users at once; with the table the first draw takes 0.2 ms
(docs/performance.md). Larger key spaces keep computing each block, as a table of millions of ids
would take seconds to build."""


@functools.lru_cache(maxsize=4)
def _scramble_table(n: int) -> Ids:
    """The scramble of ``[0, n)`` as a table: ``table[rank]`` is the id of ``rank``."""
    return _Scrambler(n)(np.arange(n, dtype=np.int64))


class ZipfianChooser(KeyChooser):
    """Scrambled zipfian over ``[0, n)``. Made by :func:`zipfian`."""

    __slots__ = ("_alpha", "_eta", "_one_cut", "_scramble", "_zetan", "theta")

    def __init__(self, n: int, seed: int | None, theta: float) -> None:
        super().__init__(n, seed)
        if not 0.0 < theta < 1.0:
            raise ValueError(f"theta must be in (0, 1), got {theta}")
        self.theta = theta
        self._zetan = zeta(n, theta)
        self._alpha = 1.0 / (1.0 - theta)
        # Gray et al.'s constants. For n <= 2 the two explicit cut-offs below cover every draw and
        # eta would be 0/0.
        self._eta = 0.0
        if n > 2:
            self._eta = (1.0 - (2.0 / n) ** (1.0 - theta)) / (1.0 - zeta(2, theta) / self._zetan)
        self._one_cut = 1.0 + 0.5**theta
        # The same bijection either way (tests/test_keys.py), so a seed gives the same ids.
        self._scramble: Callable[[Ids], Ids] = (
            _scramble_table(n).take if n <= SCRAMBLE_TABLE_MAX else _Scrambler(n)
        )

    def _ranks(self, size: int) -> Ids:
        """Zipfian ranks, 0 the most popular (Gray et al. 1994, as in YCSB's ZipfianGenerator)."""
        u = self._rng.random(size)
        uz = u * self._zetan
        ranks = np.ones(size, dtype=np.int64)
        if self.n > 2:
            base = np.maximum(self._eta * u - self._eta + 1.0, 0.0)
            tail = (self.n * base**self._alpha).astype(np.int64)
            # Float rounding can land exactly on n at u close to 1.
            np.minimum(tail, self.n - 1, out=tail)
            ranks = np.where(uz < self._one_cut, ranks, tail)
        ranks[uz < 1.0] = 0
        return ranks

    def _draw(self, size: int) -> Ids:
        return self._scramble(self._ranks(size))

    def id_of_rank(self, rank: int) -> int:
        """The entity id that zipfian rank ``rank`` maps to (rank 0 is the hottest id).

        Example::

            hottest = zipfian(1_000_000).id_of_rank(0)
        """
        if not 0 <= rank < self.n:
            raise ValueError(f"rank must be in [0, {self.n}), got {rank}")
        return int(self._scramble(np.array([rank], dtype=np.int64))[0])


def zipfian(n: int, seed: int | None = None, theta: float = 0.99) -> ZipfianChooser:
    """Return a chooser that draws ids with YCSB-style scrambled zipfian popularity.

    A rank ``r`` in ``[0, n)`` is drawn with probability ``(r + 1) ** -theta / zeta(n, theta)``
    (Gray et al., "Quickly Generating Billion-Record Synthetic Databases", SIGMOD 1994), then
    mapped to an id by a fixed FNV-1a-based permutation of ``[0, n)``, so the popular ids are spread
    over the key space instead of being 0, 1, 2, ... (Cooper et al., "Benchmarking Cloud Serving
    Systems with YCSB", SoCC 2010). The mapping is the same for every seed: all users share the
    same hot ids. ``theta`` must be in (0, 1); 0.99 is YCSB's default.

    Unlike YCSB, ranks are drawn over ``n`` itself rather than a 10-billion-item space, and the
    scramble is a bijection rather than ``fnv(rank) % n``: the top id gets exactly
    ``1 / zeta(n, theta)`` of the draws and every id is reachable. ``docs/workload.md`` explains.

    Example::

        chooser = zipfian(1_000_000, seed=7)
        chooser.next()
        chooser.id_of_rank(0)   # the hottest id
    """
    return ZipfianChooser(n, seed, theta)


def from_name(name: str, n: int, seed: int | None) -> KeyChooser:
    """Return the chooser called ``name`` (one of :data:`NAMES`) with its default parameters.

    Example::

        chooser = from_name(options.key_distribution, options.entities, seed)
    """
    if name == "zipfian":
        return zipfian(n, seed)
    if name == "hotspot":
        return hotspot(n, seed)
    if name == "uniform":
        return uniform(n, seed)
    raise ValueError(f"unknown key distribution {name!r}; valid names: {', '.join(NAMES)}")
