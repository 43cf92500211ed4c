"""Probes: re-read a sample of written keys from the cache a set delay M after each write.

Meta measures cache consistency as "N nines of writes consistent within M" ("Cache made
consistent", 2022): after a write, does the cache still serve something older than it once M has
passed? Reads by users only answer that for keys someone happens to read at the right moment, so a
sample of ok writes (``--probe-rate``) gets a probe per delay (``--probe-delays``, by default
100 ms, 1 s and 5 s): a plain GET of the key at the write's completion time plus M, recorded as an
``f=probe`` row of the history (docs/history.md). The analysis counts a probe as inconsistent when
Redis held an entry older than the probed write (analysis/nines.py).

A probe reads the cache through the target's ``peek`` (:mod:`cachestorm.target`), not through
its read path: a miss must not fill the cache, and a probe must not change what it measures. The
reference cache's peek is a plain GET, shown in Locust's statistics as ``REDIS probe_get``.

Example::

    prober = Prober(target.peek, recorder, delays_s=(0.1, 1.0, 5.0), rate=0.5, new_process=count().__next__)
    prober.after_write("cs:e:42", version=7, done_ns=time.time_ns())
    ...
    prober.stop()   # at test stop, before the last history batch is shipped
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence

import gevent
from gevent.pool import Group

from cachestorm.history import Recorder
from cachestorm.target import Cached


class Prober:
    """Schedules the probes of sampled writes on greenlets of its own, and records their rows."""

    def __init__(
        self,
        peek: Callable[[str], Cached],
        recorder: Recorder,
        delays_s: Sequence[float],
        rate: float,
        new_process: Callable[[], int],
        rng: random.Random | None = None,
    ) -> None:
        self.peek = peek
        self.recorder = recorder
        self.delays_ns = sorted(int(d * 1e9) for d in delays_s)
        self.rate = rate if self.delays_ns else 0.0
        self.new_process = new_process
        self.random = (rng or random.Random()).random
        self.group = Group()
        self.probed = 0

    def after_write(self, key: str, version: int, done_ns: int) -> None:
        """Called after each ok write: probe it with probability ``rate``."""
        if self.rate <= 0.0 or self.random() >= self.rate:
            return
        self.probed += 1
        self.group.spawn(self._probe, key, version, done_ns)

    def _probe(self, key: str, version: int, done_ns: int) -> None:
        # One greenlet does a write's probes in turn, so it is one process of the history.
        process = self.new_process()
        for delay in self.delays_ns:
            due = done_ns + delay
            wait = due - time.time_ns()
            if wait > 0:
                gevent.sleep(wait / 1e9)
            t0 = time.time_ns()
            try:
                cached = self.peek(key)
            except Exception:
                # A peek changes nothing: a probe that failed certainly had no effect.
                done = time.time_ns()
                self.recorder.record(process, "probe", key, "fail", t0, done, None, version, None, due)
                continue
            source = cached.held or ("entry" if cached.version is not None else "absent")
            done = time.time_ns()
            self.recorder.record(process, "probe", key, "ok", t0, done, cached.version, version, source, due)

    def stop(self) -> None:
        """Drop the probes still waiting: the run is over, and a row after the last batch is lost."""
        self.group.kill(block=True, timeout=5)
