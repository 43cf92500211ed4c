"""Cache strategies: how a miss fills the cache and how a write invalidates it.

Both store an entry as the string ``v<version>:<payload>`` so that every read knows which version
it got. They differ in what a fill and an invalidation may do:

``cache-aside``
    The textbook pattern: a write deletes the key; a miss reads the database and SETs the result,
    unguarded. It has the stale-set race of "Scaling Memcache at Facebook" (Nishtala et al.,
    NSDI 2013, section 3.2.1): a reader loads version 5, a writer commits 6 and deletes the key,
    then the reader's SET puts 5 back, and it stays until the next write.

``versioned``
    Immune to that race. An invalidation leaves a tombstone ``t<version>`` saying "version
    <version> is committed: hold nothing older". A fill is a Lua compare-and-set that installs
    version d only if the key is empty, holds a tombstone t <= d, or holds an entry e < d. So no
    fill can install a version older than one already written or invalidated, whichever order the
    reader's database read, the writer's commit and the two cache updates happen in.
"""

from __future__ import annotations

from typing import Protocol

from cachestorm.clients import InstrumentedRedis

ENTRY = ord("v")
TOMBSTONE = ord("t")


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


class Strategy(Protocol):
    name: str

    def fill(self, key: str, version: int, payload: str) -> bool:
        """Try to install ``version``; True when it was installed."""
        ...

    def invalidate(self, key: str, version: int) -> None:
        """Called after ``version`` of ``key`` committed."""
        ...


class CacheAside:
    """Delete on write, unguarded SET on fill."""

    name = "cache-aside"

    def __init__(self, r: InstrumentedRedis) -> None:
        self.r = r

    def fill(self, key: str, version: int, payload: str) -> bool:
        self.r.call("set", self.r.client.set, key, encode_entry(version, payload))
        return True

    def invalidate(self, key: str, version: int) -> None:
        self.r.call("delete", self.r.client.delete, key)


# KEYS[1] the entry; ARGV[1] the version read from the database; ARGV[2] the encoded entry.
_FILL = """
local cur = redis.call('GET', KEYS[1])
local d = tonumber(ARGV[1])
if cur then
    local kind = string.sub(cur, 1, 1)
    local v = tonumber(string.match(cur, '^[vt](%d+)'))
    if kind == 'v' and v >= d then return 0 end
    if kind == 't' and v > d then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""

# KEYS[1] the entry; ARGV[1] the version just committed.
_INVALIDATE = """
local cur = redis.call('GET', KEYS[1])
local w = tonumber(ARGV[1])
if cur then
    local v = tonumber(string.match(cur, '^[vt](%d+)'))
    if v >= w then return 0 end
end
redis.call('SET', KEYS[1], 't' .. ARGV[1])
return 1
"""


class Versioned:
    """Version compare-and-set fills and tombstone invalidations, each one Lua script."""

    name = "versioned"

    def __init__(self, r: InstrumentedRedis) -> None:
        self.r = r
        self._fill = r.client.register_script(_FILL)
        self._invalidate = r.client.register_script(_INVALIDATE)

    def fill(self, key: str, version: int, payload: str) -> bool:
        return bool(self.r.call("fill_cas", self._fill, [key], [version, encode_entry(version, payload)]))

    def invalidate(self, key: str, version: int) -> None:
        self.r.call("tombstone", self._invalidate, [key], [version])


def make(name: str, r: InstrumentedRedis) -> Strategy:
    if name == "versioned":
        return Versioned(r)
    if name == "cache-aside":
        return CacheAside(r)
    raise ValueError(f"unknown strategy {name!r}: use versioned or cache-aside")
