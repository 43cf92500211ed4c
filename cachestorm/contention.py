"""Contention workloads on Redis: counters, transfers and fenced locks, each operation recorded.

Three clients, one per workload, each with a safe mode and an unsafe one (the positive control).
Every Redis command goes through :meth:`InstrumentedRedis.call`, so it is timed and reported to
Locust; every operation becomes one history row (docs/history.md, "Contention workloads"). Each
public method returns the status it recorded and raises nothing for expected failures.

Statuses follow Jepsen: ``fail`` only when the operation certainly had no effect (a refusal, an
error before any write was sent, a WATCH abort), ``info`` when a write may or may not have been
applied (a timeout or a lost connection after it was sent, a user stopped mid-operation, a
transaction whose commands partly failed). A read changes nothing, so a read that went wrong for
any reason is ``fail``.

Keys::

    cs:c:<n>                 counter n            cs:c:<n>:lock   its lock (counter mode locked)
    cs:g:<n>:<i>             member i of group n  (the history's key is the group, cs:g:<n>)
    cs:l:<n>                 lock n               cs:l:<n>:fence  its token counter (INCR)
    cs:l:<n>:res             the resource lock n protects
    cs:l:<n>:max             the highest token the resource accepted

docs/contention.md describes the workloads and what each unsafe mode breaks.
"""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Callable
from typing import Any

import gevent
import redis

from cachestorm.clients import InstrumentedRedis, UnknownOutcome
from cachestorm.history import Recorder
from cachestorm.outcomes import Operation, recorded_read

COUNTER_MODES = ("atomic", "locked", "unsafe")
TX_MODES = ("atomic", "unsafe")
LOCK_MODES = ("locked", "unlocked", "unsafe")

COUNTER_PREFIX = "cs:c:"
GROUP_PREFIX = "cs:g:"
LOCK_PREFIX = "cs:l:"
PREFIXES = (COUNTER_PREFIX, GROUP_PREFIX, LOCK_PREFIX)

# Errors of a read: whatever went wrong, a read had no effect.
_READ_ERRORS = (UnknownOutcome, redis.RedisError, ValueError)


def counter_key(n: int) -> str:
    return f"{COUNTER_PREFIX}{n}"


def group_key(n: int) -> str:
    return f"{GROUP_PREFIX}{n}"


def member_key(group: int, i: int) -> str:
    return f"{GROUP_PREFIX}{group}:{i}"


def lock_key(n: int) -> str:
    return f"{LOCK_PREFIX}{n}"


def _int(raw: Any) -> int:
    """A Redis integer string as int; an absent key counts as 0."""
    return 0 if raw is None else int(raw)


def _no_pause() -> None:
    pass


def _sleeper(seconds: float) -> Callable[[], None]:
    if seconds <= 0:
        return _no_pause
    return lambda: gevent.sleep(seconds)


def report_failure(r: InstrumentedRedis, name: str, exc: BaseException) -> None:
    """A Locust failure (request type REDIS) for something that no single call raised."""
    r.fire(
        request_type="REDIS",
        name=name,
        response_time=0.0,
        response_length=0,
        exception=exc,
        context=None,
    )


class LockLost(Exception):
    """A lock was no longer ours when we released it: it had expired (or been taken)."""


class PartialTransaction(Exception):
    """EXEC ran, but some commands in it failed; Redis applied the others (no rollback)."""


# Compare-and-delete: release a lock only if it still holds our token.
# KEYS[1] the lock; ARGV[1] our token.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""

# Acquire a fenced lock: a fresh token from the fence counter, only if the lock is free.
# KEYS[1] the lock, KEYS[2] its fence; ARGV[1] TTL in ms. Returns the token, or nil.
_ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then
    return false
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token, 'PX', ARGV[1])
return token
"""

# The positive control: a "lock" taken whether or not someone holds it, still with a fresh token.
_ACQUIRE_UNSAFE = """
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token, 'PX', ARGV[1])
return token
"""

# The positive control's resource: it accepts every token and only remembers the highest.
_GUARDED_WRITE_UNSAFE = """
local token = tonumber(ARGV[1])
local highest = tonumber(redis.call('GET', KEYS[2]) or '0')
if token > highest then
    redis.call('SET', KEYS[2], ARGV[1])
end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""

# The fenced resource: accept a write only with a token >= the highest accepted so far.
# KEYS[1] the resource, KEYS[2] the highest accepted token; ARGV[1] token, ARGV[2] value.
_GUARDED_WRITE = """
local token = tonumber(ARGV[1])
local highest = tonumber(redis.call('GET', KEYS[2]) or '0')
if token < highest then
    return 0
end
redis.call('SET', KEYS[2], ARGV[1])
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""

# The same guarded update without a lock: take a token and write, in one atomic script.
# KEYS[1] the fence, KEYS[2] the resource, KEYS[3] the highest accepted token; ARGV[1] the value
# (the token is appended). Returns the token, or nil if refused (only if the keys were tampered with).
_UNLOCKED_WRITE = """
local token = redis.call('INCR', KEYS[1])
local highest = tonumber(redis.call('GET', KEYS[3]) or '0')
if token < highest then
    return false
end
redis.call('SET', KEYS[3], token)
redis.call('SET', KEYS[2], ARGV[1] .. token)
return token
"""


class Counters:
    """Increments and reads of counters ``cs:c:<n>`` (f = ``incr`` / ``counter_read``).

    ``atomic``: INCRBY. ``locked``: a lock ``cs:c:<n>:lock`` taken with SET NX PX and a random
    token (retried with short backoff for up to ``lock_wait_ms``), then GET, SET, and a
    compare-and-delete release. ``unsafe``: GET then SET, which loses updates under contention.

    ``between`` runs between the GET and the SET of the read-modify-write modes (by default it
    does nothing); tests replace it to play an interleaving by hand.
    """

    def __init__(
        self,
        r: InstrumentedRedis,
        recorder: Recorder,
        mode: str = "atomic",
        lock_ttl_ms: int = 1000,
        lock_wait_ms: float | None = None,
        window_s: float = 0.0,
    ) -> None:
        if mode not in COUNTER_MODES:
            raise ValueError(f"unknown counter mode {mode!r}: use one of {', '.join(COUNTER_MODES)}")
        self.r = r
        self.client = r.client
        self.record = recorder.record
        self.mode = mode
        self.lock_ttl_ms = int(lock_ttl_ms)
        self.lock_wait_s = (lock_ttl_ms if lock_wait_ms is None else lock_wait_ms) / 1000.0
        self.between: Callable[[], None] = _sleeper(window_s)
        self._release = self.client.register_script(_RELEASE)
        self._rng = random.Random()
        self._incr = {"atomic": self._incr_atomic, "locked": self._incr_locked, "unsafe": self._incr_unsafe}[
            mode
        ]

    def incr(self, process: int, n: int, amount: int = 1) -> str:
        """Add ``amount`` to counter ``n`` and record it (value = amount, source = mode)."""
        key = counter_key(n)
        with Operation(self.record, process, "incr", key, value=amount, source=self.mode) as op:
            op.done(self._incr(op, key, amount))
        return op.status

    def read(self, process: int, n: int) -> str:
        """GET counter ``n`` (absent = 0) and record it (value = the value read)."""
        key = counter_key(n)
        value = recorded_read(
            self.record, process, "counter_read", key, lambda: _int(self.r.call("get", self.client.get, key))
        )
        return "fail" if value is None else "ok"

    # The modes: each returns the status of the increment. ----------------------------------------
    def _incr_atomic(self, op: Operation, key: str, amount: int) -> str:
        op.sent = True
        try:
            self.r.call("incrby", self.client.incrby, key, amount)
        except UnknownOutcome:
            return "info"
        except redis.RedisError:
            return "fail"  # refused by Redis: not applied
        return "ok"

    def _incr_unsafe(self, op: Operation, key: str, amount: int) -> str:
        try:
            current = _int(self.r.call("get", self.client.get, key))
        except _READ_ERRORS:
            return "fail"  # nothing written yet
        self.between()
        return self._set(op, key, current + amount)

    def _incr_locked(self, op: Operation, key: str, amount: int) -> str:
        lock = key + ":lock"
        token = self._lock(lock)
        if token is None:
            return "fail"  # not acquired: nothing written
        try:
            try:
                current = _int(self.r.call("get", self.client.get, key))
            except _READ_ERRORS:
                return "fail"
            self.between()
            return self._set(op, key, current + amount)
        finally:
            self._unlock(lock, token)

    def _set(self, op: Operation, key: str, value: int) -> str:
        op.sent = True
        try:
            self.r.call("set", self.client.set, key, value)
        except UnknownOutcome:
            return "info"
        except redis.RedisError:
            return "fail"
        return "ok"

    def _lock(self, lock: str) -> str | None:
        """Our token once the lock is ours, or None if it was not acquired within the wait."""
        token = secrets.token_hex(8)
        deadline = time.monotonic() + self.lock_wait_s
        backoff = 0.0005
        while True:
            try:
                if self.r.call(
                    "counter_lock", lambda: self.client.set(lock, token, px=self.lock_ttl_ms, nx=True)
                ):
                    return token
            except UnknownOutcome:
                # We may hold it after all: give it back if we do, and treat it as not acquired.
                self._unlock(lock, token, quiet=True)
                return None
            except redis.RedisError:
                return None
            if time.monotonic() >= deadline:
                return None
            gevent.sleep(backoff * (0.5 + self._rng.random()))
            backoff = min(backoff * 2, 0.01)

    def _unlock(self, lock: str, token: str, quiet: bool = False) -> None:
        """Best effort: the increment's status does not depend on it (a lost lock expires by TTL)."""
        try:
            released = self.r.call("counter_unlock", self._release, [lock], [token])
        except (UnknownOutcome, redis.RedisError):
            return
        if not released and not quiet:
            # The critical section outlived the TTL: another client may have held the lock too.
            report_failure(self.r, "counter_lock_lost", LockLost(lock))


class Transfers:
    """Transfers between the members of a group, and atomic reads of a group's sum.

    Group ``n`` has members ``cs:g:<n>:0`` .. ``cs:g:<n>:<size-1>``, all 0 at the start, so the
    sum of a group is 0 whenever no transfer is half done. The history's key is ``cs:g:<n>``.

    ``atomic``: WATCH both keys, GET them, MULTI, DECRBY a, INCRBY b, EXEC. If either key changed
    after the WATCH, EXEC aborts and nothing is applied (``fail``). ``unsafe``: GET a, GET b,
    SET a, a pause (``window_s``), SET b: a reader in between sees the sum off by the amount, and
    two overlapping transfers lose one's update.

    ``between`` runs after the GETs and before the write(s) in atomic mode, and between the two
    SETs in unsafe mode; tests replace it to play an interleaving by hand.
    """

    def __init__(
        self,
        r: InstrumentedRedis,
        recorder: Recorder,
        mode: str = "atomic",
        group_size: int = 4,
        window_s: float | None = None,
    ) -> None:
        if mode not in TX_MODES:
            raise ValueError(f"unknown transaction mode {mode!r}: use one of {', '.join(TX_MODES)}")
        if group_size < 2:
            raise ValueError(f"a group needs at least 2 members, got {group_size}")
        self.r = r
        self.client = r.client
        self.record = recorder.record
        self.mode = mode
        self.group_size = group_size
        if window_s is None:
            window_s = 0.001 if mode == "unsafe" else 0.0
        self.between: Callable[[], None] = _sleeper(window_s)
        self._transfer = self._atomic if mode == "atomic" else self._unsafe

    def members(self, group: int) -> list[str]:
        return [member_key(group, i) for i in range(self.group_size)]

    def transfer(self, process: int, group: int, src: int, dst: int, amount: int) -> str:
        """Move ``amount`` from member ``src`` to member ``dst`` of ``group``; record ``tx_transfer``."""
        if src == dst:
            raise ValueError("a transfer needs two distinct members")
        key = group_key(group)
        with Operation(self.record, process, "tx_transfer", key, value=amount, source=self.mode) as op:
            op.done(self._transfer(op, member_key(group, src), member_key(group, dst), amount))
        return op.status

    def read(self, process: int, group: int) -> str:
        """MGET every member in one command (atomic in Redis); record ``tx_read`` with the sum."""
        total = recorded_read(self.record, process, "tx_read", group_key(group), lambda: self.sum(group))
        return "fail" if total is None else "ok"

    def sum(self, group: int) -> int:
        raws = self.r.call("mget", self.client.mget, self.members(group))
        return sum(_int(v) for v in raws)

    def _atomic(self, op: Operation, a: str, b: str, amount: int) -> str:
        with self.client.pipeline(transaction=True) as pipe:
            try:
                self.r.call("watch", pipe.watch, a, b)
                # Read both (immediate mode while watching): the read of an optimistic transaction.
                self.r.call("mget", pipe.mget, a, b)
                self.between()
                pipe.multi()
                pipe.decrby(a, amount)
                pipe.incrby(b, amount)
            except (UnknownOutcome, redis.RedisError):
                return "fail"  # no write was sent: WATCH and GET change nothing
            op.sent = True
            try:
                replies = self.r.call("multi_exec", pipe.execute, False)
            except UnknownOutcome:
                return "info"
            except redis.WatchError as e:
                # A real abort has no cause. redis-py also turns a connection lost while
                # watching (here: during EXEC) into a WatchError, and then EXEC may have run.
                lost = isinstance(e.__context__, redis.ConnectionError | redis.TimeoutError | OSError)
                return "info" if lost else "fail"
            except redis.RedisError as e:
                # EXECABORT (a command was refused when queued): Redis discarded the transaction.
                aborted = isinstance(e, redis.exceptions.ExecAbortError) or isinstance(
                    e.__context__, redis.exceptions.ExecAbortError
                )
                return "fail" if aborted else "info"
        errors = [reply for reply in replies if isinstance(reply, Exception)]
        if errors:
            # Redis does not roll back a command that failed inside EXEC: the others were applied.
            report_failure(self.r, "multi_exec_partial", PartialTransaction(f"{a} -> {b}: {errors[0]}"))
            return "info"
        return "ok"

    def _unsafe(self, op: Operation, a: str, b: str, amount: int) -> str:
        try:
            va = _int(self.r.call("get", self.client.get, a))
            vb = _int(self.r.call("get", self.client.get, b))
        except _READ_ERRORS:
            return "fail"
        op.sent = True
        try:
            self.r.call("set", self.client.set, a, va - amount)
        except UnknownOutcome:
            return "info"
        except redis.RedisError:
            return "fail"
        self.between()
        try:
            self.r.call("set", self.client.set, b, vb + amount)
        except (UnknownOutcome, redis.RedisError):
            return "info"  # the first SET was applied: half a transfer
        return "ok"


class Locks:
    """Fenced locks ``cs:l:<n>`` and the resource each protects (f = ``lock_acquire``,
    ``guarded_write``, ``lock_release``; value = the fencing token; source = the lock mode).

    ``acquire``: one Lua script takes a fresh token from INCR ``cs:l:<n>:fence`` and sets the lock
    to it with PX ttl, only if the lock is free. ``release``: compare-and-delete on the token.
    ``guarded_write``: the resource accepts a token >= the highest it accepted, so a holder whose
    lock expired and was taken over cannot overwrite the newer holder's write (Kleppmann, "How to
    do distributed locking", 2016). ``unlocked_write``: the same guarded update with no lock, one
    atomic script that takes its token from the fence itself (the lock-free comparison).
    ``unsafe`` mode is the positive control: the lock is taken even when held, and the resource
    accepts any token, so two holders overlap and stale tokens get written.
    """

    def __init__(
        self, r: InstrumentedRedis, recorder: Recorder, mode: str = "locked", ttl_ms: int = 1000
    ) -> None:
        if mode not in LOCK_MODES:
            raise ValueError(f"unknown lock mode {mode!r}: use one of {', '.join(LOCK_MODES)}")
        self.r = r
        self.record = recorder.record
        self.mode = mode
        self.ttl_ms = int(ttl_ms)
        unsafe = mode == "unsafe"
        self._acquire = r.client.register_script(_ACQUIRE_UNSAFE if unsafe else _ACQUIRE)
        self._release = r.client.register_script(_RELEASE)
        self._guarded = r.client.register_script(_GUARDED_WRITE_UNSAFE if unsafe else _GUARDED_WRITE)
        self._unlocked = r.client.register_script(_UNLOCKED_WRITE)

    def acquire(self, process: int, n: int) -> tuple[str, int | None]:
        """(status, token): ``ok`` and the token if acquired, ``fail`` and None if held by another."""
        lock = lock_key(n)
        keys, args = [lock, lock + ":fence"], [self.ttl_ms]
        return self._token_op(process, "lock_acquire", lock, self.mode, self._acquire, keys, args)

    def release(self, process: int, n: int, token: int) -> str:
        """``ok`` if the lock still held our token (now deleted), ``fail`` if it had expired or been taken."""
        lock = lock_key(n)
        return self._run(process, "lock_release", lock, token, self._release, [lock], [token])

    def guarded_write(self, process: int, n: int, token: int) -> str:
        """Write the resource with ``token``: ``ok`` accepted, ``fail`` refused (a higher token won)."""
        lock = lock_key(n)
        keys = [lock + ":res", lock + ":max"]
        return self._run(
            process, "guarded_write", lock, token, self._guarded, keys, [token, f"{process}:{token}"]
        )

    def unlocked_write(self, process: int, n: int) -> tuple[str, int | None]:
        """The guarded update with no lock (f = ``guarded_write``, source = ``unlocked``)."""
        lock = lock_key(n)
        keys = [lock + ":fence", lock + ":res", lock + ":max"]
        return self._token_op(
            process,
            "guarded_write",
            lock,
            "unlocked",
            self._unlocked,
            keys,
            [f"{process}:"],
            "unlocked_write",
        )

    def _token_op(
        self,
        process: int,
        f: str,
        lock: str,
        source: str,
        script: Callable[..., Any],
        keys: list[str],
        args: list[Any],
        name: str = "",
    ) -> tuple[str, int | None]:
        """Run a script that answers a fencing token (done) or nil (refused); record it with the token."""
        with Operation(self.record, process, f, lock, source=source) as op:
            op.sent = True
            token = self.r.call(name or f, script, keys, args)
            if token is None:
                op.done("fail")
            else:
                op.done("ok", value=int(token))
        return op.status, op.value if op.status == "ok" else None

    def _run(
        self,
        process: int,
        f: str,
        key: str,
        token: int,
        script: Callable[..., Any],
        keys: list[str],
        args: list[Any],
    ) -> str:
        """Run a script that answers 1 (done) or 0 (refused) and record it with the token."""
        with Operation(self.record, process, f, key, value=token, source=self.mode) as op:
            op.sent = True
            op.done("ok" if self.r.call(f, script, keys, args) else "fail")
        return op.status


# Run start and stop ------------------------------------------------------------------------------
def _raw(client: InstrumentedRedis | redis.Redis) -> redis.Redis:
    return client.client if isinstance(client, InstrumentedRedis) else client


def reset_contention_keys(client: InstrumentedRedis | redis.Redis, batch: int = 5000) -> int:
    """UNLINK every ``cs:c:*``, ``cs:g:*`` and ``cs:l:*`` key (SCAN, no KEYS). Returns how many."""
    r = _raw(client)
    removed = 0
    for prefix in PREFIXES:
        keys: list[bytes] = []
        for key in r.scan_iter(match=prefix + "*", count=batch):
            keys.append(key)
            if len(keys) >= batch:
                removed += int(r.unlink(*keys))
                keys = []
        if keys:
            removed += int(r.unlink(*keys))
    return removed


def final_counter_reads(
    client: InstrumentedRedis | redis.Redis, recorder: Recorder, counters: int, process: int = 0
) -> dict[int, int | None]:
    """Read every counter once at the end of a run; one ``counter_read`` row each.

    Returns ``{n: value}`` (None where the read failed). With a plain redis.Redis nothing is
    reported to Locust, which suits the master at test stop.
    """
    r = _raw(client)
    values: dict[int, int | None] = {}
    for n in range(counters):
        key = counter_key(n)

        def value(key: str = key) -> int:
            return _int(r.get(key))

        values[n] = recorded_read(recorder.record, process, "counter_read", key, value)
    return values


def final_group_reads(
    client: InstrumentedRedis | redis.Redis,
    recorder: Recorder,
    groups: int,
    group_size: int,
    process: int = 0,
) -> dict[int, int | None]:
    """Read every group's sum once at the end of a run (MGET); one ``tx_read`` row each."""
    r = _raw(client)
    sums: dict[int, int | None] = {}
    for g in range(groups):
        members = [member_key(g, i) for i in range(group_size)]

        def total(members: list[str] = members) -> int:
            raws: list[Any] = r.mget(members)
            return sum(_int(v) for v in raws)

        sums[g] = recorded_read(recorder.record, process, "tx_read", group_key(g), total)
    return sums
