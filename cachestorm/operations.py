"""Records each operation around the target's call, in the one place that classifies outcomes.

A user asks for "read key number 42" or "write key number 7"; this module turns the number into
the target's key, calls the target, times the call, classifies its outcome and appends one history
row (docs/history.md):

- a read that returns is ``ok``; one that raises certainly had no effect, ``fail``;
- a write that returns is ``ok``; one that raises :class:`~cachestorm.target.NoEffect` is
  ``fail``; :class:`~cachestorm.target.AfterCommit` is ``info`` with the version it committed;
  any other exception (a timeout, a lost connection, the user stopped mid-write) leaves
  its outcome unknown, ``info``;
- a result that breaks the contract (:mod:`cachestorm.contract`) stops the run through
  ``on_broken`` with one line naming the key.

Each method returns the status it recorded, so that a user can take a fresh process id after an
``info`` operation, as the history's process model requires.

Example::

    ops = Operations(target, recorder, fire, on_broken=stop_the_run, keys=10_000)
    status = ops.read(process=1, index=42)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import gevent

from cachestorm.contract import Contract
from cachestorm.history import Recorder
from cachestorm.target import AfterCommit, ContractError, NoEffect

now = time.time_ns
#: Locust's request type for the operations of a target whose own clients report nothing.
REQUEST_TYPE = "TARGET"


class Operations:
    """Reads and writes of one node's target, each recorded as one history operation."""

    def __init__(
        self,
        target: Any,
        recorder: Recorder,
        fire: Callable[..., None],
        on_broken: Callable[[str], None],
        keys: int,
        after_write: Callable[[str, int, int], None] | None = None,
    ) -> None:
        self.target = target
        self.recorder = recorder
        self.append = recorder.append
        self.fire = None if getattr(target, "reports_requests", False) else fire
        self.on_broken = on_broken
        self.contract = Contract()
        #: Index to key, computed once: the target's mapping is not on the hot path.
        self.keys = [target.key(i) for i in range(keys)]
        self.after_write = after_write
        self._read = target.read
        self._write = target.write
        self.broken = False

    def _report(self, name: str, t0: int, t1: int, exc: BaseException | None) -> None:
        if self.fire is not None:
            self.fire(
                request_type=REQUEST_TYPE,
                name=name,
                response_time=(t1 - t0) / 1e6,
                response_length=0,
                exception=exc,
                context=None,
            )

    def _break(self, message: str) -> None:
        if not self.broken:
            self.broken = True
            self.on_broken(message)

    def read(self, process: int, index: int, t_intended: int | None = None) -> str:
        """Read the ``index``-th key; ``t_intended`` is when an open-model schedule meant it to start."""
        key = self.keys[index]
        t0 = now()
        try:
            got = self._read(key)
        except gevent.GreenletExit:
            self.append((process, "read", key, "fail", t0, now(), None, None, None, t_intended))
            raise
        except Exception as e:
            t1 = now()
            self.append((process, "read", key, "fail", t0, t1, None, None, None, t_intended))
            self._report("read", t0, t1, e)
            return "fail"
        t1 = now()
        if type(got) is int:
            version, source = got, None
        else:
            try:
                version, source = got
            except (TypeError, ValueError):
                version, source = got, None
            if type(version) is not int:
                self.append((process, "read", key, "info", t0, t1, None, None, None, t_intended))
                self._break(Contract.read_problem(key, got))
                return "info"
        if version < 0:
            self.append((process, "read", key, "info", t0, t1, None, None, None, t_intended))
            self._break(Contract.read_problem(key, got))
            return "info"
        self.append((process, "read", key, "ok", t0, t1, version, None, source, t_intended))
        if self.fire is not None:
            self._report("read " + source if source else "read", t0, t1, None)
        return "ok"

    def write(self, process: int, index: int, t_intended: int | None = None) -> str:
        """Write the ``index``-th key through the target; ``ok`` only when the call returned."""
        key = self.keys[index]
        floor = self.contract.floor(key)
        t0 = now()
        try:
            got = self._write(key)
        except gevent.GreenletExit:
            # The user was stopped mid-write: the commit may or may not have happened.
            self.append((process, "write", key, "info", t0, now(), None, None, None, t_intended))
            raise
        except NoEffect as e:
            t1 = now()
            self.append((process, "write", key, "fail", t0, t1, None, None, None, t_intended))
            self._report("write", t0, t1, e)
            return "fail"
        except AfterCommit as e:
            t1 = now()
            version = e.version if type(e.version) is int else None
            if version is not None:
                self.contract.note_committed(key, version)
            self.append((process, "write", key, "info", t0, t1, version, None, None, t_intended))
            self._report("write", t0, t1, e)
            return "info"
        except Exception as e:
            t1 = now()
            self.append((process, "write", key, "info", t0, t1, None, None, None, t_intended))
            self._report("write", t0, t1, e)
            return "info"
        t1 = now()
        try:
            version = self.contract.check_write(key, got, floor)
        except ContractError as e:
            self.append((process, "write", key, "info", t0, t1, None, None, None, t_intended))
            self._break(str(e))
            return "info"
        self.append((process, "write", key, "ok", t0, t1, version, None, None, t_intended))
        self._report("write", t0, t1, None)
        if self.after_write is not None:
            self.after_write(key, version, t1)
        return "ok"
