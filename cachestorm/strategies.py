"""Cache strategies: how a miss fills the cache and how a write invalidates it.

All store an entry as the string ``v<version>:<payload>`` so that every read knows which version
it got. They differ in what a fill and an invalidation may do:

``cache-aside``
    The textbook pattern: a write deletes the key; a miss reads the database and SETs the result,
    unguarded. It has the stale-set race of "Scaling Memcache at Facebook" (Nishtala et al.,
    NSDI 2013, section 3.2.1): a reader loads version 5, a writer commits 6 and deletes the key,
    then the reader's SET puts 5 back, and it stays until the next write.

``versioned-cas``
    An invalidation leaves a tombstone ``t<version>``: "version <version> is committed, hold
    nothing older". A fill is a Lua compare-and-set that installs version d only if the key is
    empty, holds a tombstone t <= d, or holds an entry e < d. That closes the race while the
    tombstone is there, but not once Redis has evicted it under memory pressure: the key is then
    empty and the late fill of version 5 goes in. This is the case of Meta's "Cache made
    consistent" (2022), kept as the positive control for eviction.

``versioned`` (the default)
    ``versioned-cas`` plus leases, as in section 3.2.1 of the Memcache paper. Before its database
    read, a reader takes a lease on the key (``SET cs:lease:<key> <token> NX PX``); an
    invalidation deletes the lease; a fill installs only while the reader's own lease is still
    there, and under the same version rules. Whichever order the reader's database read, the
    writer's commit and the cache updates happen in, a fill whose read may predate a commit finds
    its lease deleted. Eviction only deletes, so an evicted lease or tombstone makes a fill fail,
    never succeed wrongly: the price is a miss. While one reader holds a lease, other readers of
    the key wait for its fill and read the cache again, as the paper's clients do
    (:meth:`cachestorm.cache.CacheClient.read`): a reader that went to the database instead could
    see a version committed but not yet invalidated, then the older cached one on its next read.
"""

from __future__ import annotations

import secrets
from typing import Any, Protocol

from cachestorm.clients import InstrumentedRedis

ENTRY = ord("v")
TOMBSTONE = ord("t")
LEASE_PREFIX = "cs:lease:"
# Longer than any database read plus fill delay; a lease that outlives it only fails its fill.
# It also bounds how long a reader without the lease waits for the holder's fill.
LEASE_TTL_MS = 10_000


def encode_entry(version: int, payload: str) -> str:
    return f"v{version}:{payload}"


def parse(raw: bytes | None) -> tuple[int | None, int | None]:
    """``(entry_version, tombstone_version)`` of a raw cache value; None where absent."""
    if raw is None:
        return None, None
    if raw[0] == ENTRY:
        return int(raw[1 : raw.index(b":")]), None
    if raw[0] == TOMBSTONE:
        return None, int(raw[1:])
    raise ValueError(f"unrecognised cache value {raw[:40]!r}")


def held(entry: int | None, tombstone: int | None) -> str:
    """What :func:`parse` found, as the history's ``source`` of a sweep or probe row."""
    return "entry" if entry is not None else "tombstone" if tombstone is not None else "absent"


class Strategy(Protocol):
    name: str

    def lease(self, key: str) -> str | None:
        """Called on a miss, before the database read: a token to fill with, or None when another
        reader is filling this key and this one should not."""
        ...

    def fill(self, key: str, version: int, payload: str, token: str) -> bool:
        """Try to install ``version``; True when it was installed."""
        ...

    def invalidate(self, key: str, version: int) -> None:
        """Called after ``version`` of ``key`` committed."""
        ...

    def invalidate_many(self, keys: list[str]) -> None:
        """Drop what is cached for ``keys`` in one pipelined round trip (no write happened)."""
        ...


class CacheAside:
    """Delete on write, unguarded SET on fill."""

    name = "cache-aside"

    def __init__(self, r: InstrumentedRedis, ttl_ms: int = 0) -> None:
        self.r = r
        self.ttl_ms = ttl_ms

    def lease(self, key: str) -> str | None:
        return ""

    def fill(self, key: str, version: int, payload: str, token: str) -> bool:
        entry = encode_entry(version, payload)
        self.r.call("set", lambda: self.r.client.set(key, entry, px=self.ttl_ms or None))
        return True

    def invalidate(self, key: str, version: int) -> None:
        self.r.call("delete", self.r.client.delete, key)

    def invalidate_many(self, keys: list[str]) -> None:
        self.r.call("unlink_many", self.r.client.unlink, *keys)


# The version rules shared by both versioned strategies. KEYS[1] the entry; ARGV[1] the version
# read from the database; ARGV[2] the encoded entry; ARGV[3] the entry's TTL in ms (0: none).
_CAS = """
local cur = redis.call('GET', KEYS[1])
local d = tonumber(ARGV[1])
if cur then
    local kind = string.sub(cur, 1, 1)
    local v = tonumber(string.match(cur, '^[vt](%d+)'))
    if kind == 'v' and v >= d then return 0 end
    if kind == 't' and v > d then return 0 end
end
if tonumber(ARGV[3]) > 0 then
    redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
else
    redis.call('SET', KEYS[1], ARGV[2])
end
"""

_FILL_CAS = _CAS + "return 1\n"

# KEYS[2] the lease; ARGV[4] the reader's token. The lease is checked first and given back.
_FILL_LEASED = (
    """
if redis.call('GET', KEYS[2]) ~= ARGV[4] then return 0 end
redis.call('DEL', KEYS[2])
"""
    + _CAS
    + "return 1\n"
)

# KEYS[1] the entry; ARGV[1] the version just committed; KEYS[2], when given, the lease to revoke.
_INVALIDATE = """
if KEYS[2] then redis.call('DEL', KEYS[2]) end
local cur = redis.call('GET', KEYS[1])
local w = tonumber(ARGV[1])
if cur then
    local v = tonumber(string.match(cur, '^[vt](%d+)'))
    if v >= w then return 0 end
end
redis.call('SET', KEYS[1], 't' .. ARGV[1])
return 1
"""

# KEYS[1] the entry, KEYS[2] its lease. An entry becomes the tombstone of its own version, so a
# fill may still install that version or a newer one, never an older one; the lease is revoked.
_DEMOTE = """
redis.call('DEL', KEYS[2])
local cur = redis.call('GET', KEYS[1])
if cur and string.sub(cur, 1, 1) == 'v' then
    redis.call('SET', KEYS[1], 't' .. string.match(cur, '^v(%d+)'))
end
return 1
"""


def _demote_many(r: InstrumentedRedis, script: Any, keys: list[str]) -> None:
    def run() -> None:
        pipe = r.client.pipeline(transaction=False)
        for key in keys:
            script(keys=[key, LEASE_PREFIX + key], client=pipe)
        pipe.execute()

    r.call("demote_many", run)


class VersionedCAS:
    """Version compare-and-set fills and tombstone invalidations, without leases."""

    name = "versioned-cas"

    def __init__(self, r: InstrumentedRedis, ttl_ms: int = 0) -> None:
        self.r = r
        self.ttl_ms = ttl_ms
        self._fill = r.client.register_script(_FILL_CAS)
        self._invalidate = r.client.register_script(_INVALIDATE)
        self._demote = r.client.register_script(_DEMOTE)

    def lease(self, key: str) -> str | None:
        return ""

    def fill(self, key: str, version: int, payload: str, token: str) -> bool:
        args = [version, encode_entry(version, payload), self.ttl_ms]
        return bool(self.r.call("fill_cas", self._fill, [key], args))

    def invalidate(self, key: str, version: int) -> None:
        self.r.call("tombstone", self._invalidate, [key], [version])

    def invalidate_many(self, keys: list[str]) -> None:
        _demote_many(self.r, self._demote, keys)


class Versioned:
    """Leased fills under the version rules, and invalidations that revoke the lease."""

    name = "versioned"

    def __init__(self, r: InstrumentedRedis, ttl_ms: int = 0) -> None:
        self.r = r
        self.ttl_ms = ttl_ms
        self._fill = r.client.register_script(_FILL_LEASED)
        self._invalidate = r.client.register_script(_INVALIDATE)
        self._demote = r.client.register_script(_DEMOTE)

    def lease(self, key: str) -> str | None:
        token = secrets.token_hex(8)
        set_lease = self.r.client.set
        taken = self.r.call("lease", lambda: set_lease(LEASE_PREFIX + key, token, px=LEASE_TTL_MS, nx=True))
        return token if taken else None

    def fill(self, key: str, version: int, payload: str, token: str) -> bool:
        args = [version, encode_entry(version, payload), self.ttl_ms, token]
        return bool(self.r.call("fill_leased", self._fill, [key, LEASE_PREFIX + key], args))

    def invalidate(self, key: str, version: int) -> None:
        self.r.call("tombstone", self._invalidate, [key, LEASE_PREFIX + key], [version])

    def invalidate_many(self, keys: list[str]) -> None:
        _demote_many(self.r, self._demote, keys)


STRATEGIES: dict[str, Any] = {s.name: s for s in (Versioned, VersionedCAS, CacheAside)}


def register(cls: Any) -> Any:
    """Add a strategy class (``cls(r, ttl_ms)`` with the :class:`Strategy` methods) under ``cls.name``.

    It is then a valid ``--strategy`` value of the reference cache. Usable as a decorator::

        @register
        class WriteThrough(CacheAside):
            name = "write-through"
    """
    STRATEGIES[cls.name] = cls
    return cls


def make(name: str, r: InstrumentedRedis, ttl_ms: int = 0) -> Strategy:
    """The strategy called ``name``; its fills give entries a TTL of ``ttl_ms`` (0: none)."""
    try:
        return STRATEGIES[name](r, ttl_ms)
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}: use one of {', '.join(STRATEGIES)}") from None
