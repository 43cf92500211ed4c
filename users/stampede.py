"""Cache stampedes: many users missing on the same hot keys at the same moment.

A ``StampedeTrigger`` (one per run) invalidates the hot keys every ``--stampede-interval``
seconds; with ``--ttl-ms`` the entries also expire on their own. Every ``StampedeUser`` reads the
hot keys in a tight loop, so each invalidation or expiry opens an *epoch* in which many users miss
at once. What they do about it is the guard (``--stampede-guard``):

- ``none``: every user that misses recomputes (the positive control: a stampede).
- ``lock``: the first to take ``SET <key>:lock NX PX`` recomputes; the others poll until the
  value is back. After taking the lock it looks again (the value may have been refilled while it
  waited), so across all workers there is exactly one recomputation per epoch.
- ``xfetch``: probabilistic early recomputation (Vattani, Chierichetti and Lowenstein, "Optimal
  Probabilistic Cache Stampede Prevention", VLDB 2015): before a TTL runs out, a reader recomputes
  early with a probability that grows as expiry nears, ``now - delta * beta * ln(rand) >= expiry``.
  It needs ``--ttl-ms``; against explicit invalidation it behaves like ``none``.

Each recomputation is one ``db_load`` row (a real database read plus ``--recompute-ms`` of work);
each invalidation or expiry is an ``invalidate`` row. The hot keys are ``cs:s:<n>``, loaded from
entity ``n``, apart from the coherence workload's keys.
"""

from __future__ import annotations

import math
import random
import secrets
import time

import gevent
import psycopg
import redis
from locust import User, constant, task

from cachestorm import keys
from cachestorm.clients import UnknownOutcome
from cachestorm.node import node_of

now = time.time_ns
KEY_PREFIX = "cs:s:"
LOCK_TTL_MS = 5_000
XFETCH_BETA = 1.0
# Release a lock only if it is still ours: it may have expired and been taken by another user.
RELEASE_LUA = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


def stampede_key(n: int) -> str:
    return f"{KEY_PREFIX}{n}"


def encode(version: int, delta_ms: float, expiry_ms: float, payload: str) -> str:
    # delta (how long the recomputation took) and expiry travel with the value for xfetch.
    return f"v{version}:{delta_ms:.3f}:{expiry_ms:.3f}:{payload}"


def decode(raw: bytes) -> tuple[int, float, float]:
    version, delta, expiry, _ = raw[1:].split(b":", 3)
    return int(version), float(delta), float(expiry)


class StampedeUser(User):
    """Reads the hot keys as fast as it can; on a miss, recomputes the way the guard says."""

    wait_time = constant(0.005)

    def on_start(self) -> None:
        self.node = node_of(self.environment)
        self.process = self.node.new_process()
        parsed = self.environment.parsed_options
        self.guard: str = getattr(parsed, "stampede_guard", "none")
        self.hot = int(getattr(parsed, "stampede_keys", 3))
        self.recompute_s = float(getattr(parsed, "recompute_ms", 50.0)) / 1000.0
        self.ttl_ms = int(getattr(parsed, "ttl_ms", 0) or 0)
        self.rng = random.Random(keys.user_seed(self.node.options.seed, self.environment, self))
        assert self.node.r is not None and self.node.pg is not None
        self.r = self.node.r
        self.pg = self.node.pg
        self.record = self.node.recorder.record
        self.release = self.r.client.register_script(RELEASE_LUA)

    @task
    def read(self) -> None:
        n = self.rng.randrange(self.hot)
        key = stampede_key(n)
        try:
            raw = self.r.get(key)
            if raw is not None:
                if self.guard == "xfetch" and self.ttl_ms and self._early(raw):
                    self._recompute(n, key)
                return
            if self.guard == "lock":
                self._locked_recompute(n, key)
            else:
                self._recompute(n, key)
        except (redis.RedisError, psycopg.Error, UnknownOutcome, LookupError):
            # A failed read or recomputation leaves the epoch to the others; Locust counts it.
            return

    def _early(self, raw: bytes) -> bool:
        _, delta_ms, expiry_ms = decode(raw)
        return time.time() * 1000 - delta_ms * XFETCH_BETA * math.log(self.rng.random() or 1e-12) >= expiry_ms

    def _recompute(self, n: int, key: str) -> None:
        t0 = now()
        version, payload = self.pg.read(n)
        gevent.sleep(self.recompute_s)  # the expensive part of the recomputation
        t1 = now()
        self.record(self.process, "db_load", key, "ok", t0, t1, version, None, self.guard)
        delta_ms = (t1 - t0) / 1e6
        expiry_ms = t1 / 1e6 + self.ttl_ms if self.ttl_ms else 0.0
        value = encode(version, delta_ms, expiry_ms, payload)
        if self.ttl_ms:
            self.r.call("set", lambda: self.r.client.set(key, value, px=self.ttl_ms))
            # The epoch this fill's TTL will open, stamped now (Redis does not report expiries).
            t_exp = int(expiry_ms * 1e6)
            self.record(self.process, "invalidate", key, "ok", t_exp, t_exp, None, None, "expire")
        else:
            self.r.call("set", self.r.client.set, key, value)

    def _locked_recompute(self, n: int, key: str) -> None:
        lock = key + ":lock"
        token = secrets.token_hex(8)
        deadline = time.monotonic() + 2 * LOCK_TTL_MS / 1000
        while time.monotonic() < deadline:
            if self.r.call("lock", lambda: self.r.client.set(lock, token, px=LOCK_TTL_MS, nx=True)):
                try:
                    # Double-checked: the value may have come back while this user waited.
                    if self.r.get(key) is None:
                        self._recompute(n, key)
                finally:
                    self.r.call("unlock", self.release, [lock], [token])
                return
            gevent.sleep(0.005)
            if self.r.get(key) is not None:
                return  # the lock holder filled it


class StampedeTrigger(User):
    """Invalidates every hot key at once, every ``--stampede-interval`` seconds."""

    fixed_count = 1

    def wait_time(self) -> float:
        return float(getattr(self.environment.parsed_options, "stampede_interval", 2.0))

    def on_start(self) -> None:
        self.node = node_of(self.environment)
        self.process = self.node.new_process()
        self.hot = int(getattr(self.environment.parsed_options, "stampede_keys", 3))
        assert self.node.r is not None
        self.r = self.node.r

    @task
    def invalidate(self) -> None:
        keys = [stampede_key(n) for n in range(self.hot)]
        t0 = now()
        try:
            self.r.call("unlink_hot", self.r.client.unlink, *keys)
        except (redis.RedisError, UnknownOutcome):
            return
        t1 = now()
        for key in keys:
            self.node.recorder.record(self.process, "invalidate", key, "ok", t0, t1, None, None, "invalidate")
