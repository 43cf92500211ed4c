"""What cachestorm needs of a target's versions, checked as the run goes.

The checks assume that, per key, the versions a target's writes return grow by exactly 1 per
committed write, starting from the version the key had at reset. One node sees only its own
writes, so it can catch a write whose version is not an integer, is at or below the key's start,
or was already committed by another of its writes; gaps and repeats across nodes are the
analysis's to find. Concurrent writes of one key may return out of order (the one that committed
version 10 may answer after the one that committed 11), so a lower version is no fault in itself.

Example::

    contract = Contract()
    contract.started({"user:1": 4})
    contract.check_write("user:1", 5)     # fine
    contract.check_write("user:1", 5)     # ContractError: version 5 of user:1 was already committed
"""

from __future__ import annotations

from typing import Any

from cachestorm.target import ContractError

#: How far below a key's highest version a late answer is still checked for a repeat: beyond it,
#: writes would have to be this many deep in flight on one key, and the set would only grow.
RECENT = 1024


class Contract:
    """The highest version this node saw committed per key, and the checks against it."""

    def __init__(self) -> None:
        #: The highest version seen committed per key.
        self.committed: dict[str, int] = {}
        self.start: dict[str, int] = {}
        #: Per key, the versions seen committed within RECENT of its highest.
        self.recent: dict[str, set[int]] = {}

    def started(self, versions: dict[str, int] | None) -> None:
        """A new run: keys start at 0, or at the versions the target's reset reported."""
        self.committed = dict(versions or {})
        self.start = dict(versions or {})
        self.recent = {}

    def check_write(self, key: str, version: Any) -> int:
        """``version`` as returned by a write of ``key``, or :class:`ContractError` saying what is wrong."""
        if version is None:
            raise ContractError(
                f"the write of key {key!r} returned nothing: a target's write must return the version "
                "it committed"
            )
        if type(version) is not int:
            raise ContractError(
                f"the write of key {key!r} returned {version!r}, not an integer version: a target's "
                "write must return the version it committed"
            )
        start = self.start.get(key, 0)
        if version <= start:
            raise ContractError(
                f"the write of key {key!r} returned version {version}, but the key started the run at "
                f"version {start}: versions must grow by exactly 1 per committed write (docs/targets.md)"
            )
        seen = self.recent.setdefault(key, set())
        if version in seen:
            raise ContractError(
                f"the write of key {key!r} returned version {version}, which another write already "
                "committed: versions must grow by exactly 1 per committed write (docs/targets.md)"
            )
        seen.add(version)
        highest = self.committed.get(key, start)
        if version > highest:
            self.committed[key] = version
            if len(seen) > RECENT:
                seen.difference_update([v for v in seen if v <= version - RECENT])
        return version

    @staticmethod
    def read_problem(key: str, got: Any) -> str:
        """Why a read's result ``got`` is not a version, as the line to stop the run with."""
        return (
            f"the read of key {key!r} returned {got!r}: a target's read must return an integer version "
            "(0 or more), or Read(version, source)"
        )
