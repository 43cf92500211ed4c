"""What cachestorm needs of a target's versions, checked as the run goes.

The checks assume that, per key, the versions a target's writes return grow by exactly 1 per
committed write, starting from the version the key had at reset. One node sees only its own
writes, so it can catch a write whose version is not an integer, is one another of its writes
already returned, or is at or below a version committed before the write began (a write that
overlapped another may return a lower version than it, but never one lower than what was already
committed when it started). Gaps and repeats across nodes are the analysis's to find.

Example::

    contract = Contract()
    contract.started({"user:1": 4})
    floor = contract.floor("user:1")          # 4, when the write begins
    contract.check_write("user:1", 5, floor)  # fine
    contract.check_write("user:1", 5, floor)  # ContractError: version 5 was already returned
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
        self.committed: dict[str, int] = {}
        self.returned: dict[str, set[int]] = {}

    def started(self, versions: dict[str, int] | None) -> None:
        """A new run: keys start at 0, or at the versions the target's reset reported."""
        self.committed = dict(versions or {})
        self.returned = {}

    def floor(self, key: str) -> int:
        """The highest version of ``key`` known committed now: a write beginning now must exceed it."""
        return self.committed.get(key, 0)

    def note_committed(self, key: str, version: int) -> None:
        """A write's version is known committed, although the write's outcome is not."""
        if version > self.committed.get(key, 0):
            self.committed[key] = version

    def check_write(self, key: str, version: Any, floor: int) -> int:
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
        if version <= floor:
            raise ContractError(
                f"the write of key {key!r} returned version {version}, but version {floor} was already "
                "committed when it began: versions must grow by exactly 1 per committed write "
                "(docs/targets.md)"
            )
        seen = self.returned.setdefault(key, set())
        if version in seen:
            raise ContractError(
                f"two writes of key {key!r} returned version {version}: versions must grow by exactly 1 "
                "per committed write (docs/targets.md)"
            )
        seen.add(version)
        if version > self.committed.get(key, 0):
            self.committed[key] = version
            if len(seen) > 2 * RECENT:
                seen.difference_update([v for v in seen if v <= version - RECENT])
        return version

    @staticmethod
    def read_problem(key: str, got: Any) -> str:
        """Why a read's result ``got`` is not a version, as the line to stop the run with."""
        return (
            f"the read of key {key!r} returned {got!r}: a target's read must return an integer version "
            "(0 or more), or Read(version, source)"
        )
