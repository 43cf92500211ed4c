"""What cachestorm needs of a target's versions, checked as the run goes.

The checks assume that, per key, the versions a target's writes return grow by exactly 1 per
committed write, starting from the version the key had at reset. One node sees only its own
writes, so it can catch a write whose version is not an integer or is at or below one it already
saw committed for the key; gaps and repeats across nodes are the analysis's to find.

Example::

    contract = Contract()
    contract.started({"user:1": 4})
    contract.check_write("user:1", 5)     # fine
    contract.check_write("user:1", 5)     # ContractError: version 5 of user:1 was already committed
"""

from __future__ import annotations

from typing import Any

from cachestorm.target import ContractError


class Contract:
    """The highest version this node saw committed per key, and the checks against it."""

    def __init__(self) -> None:
        self.committed: dict[str, int] = {}

    def started(self, versions: dict[str, int] | None) -> None:
        """A new run: keys start at 0, or at the versions the target's reset reported."""
        self.committed = dict(versions or {})

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
        before = self.committed.get(key, 0)
        if version <= before:
            raise ContractError(
                f"the write of key {key!r} returned version {version}, but version {before} was already "
                "committed: versions must grow by exactly 1 per committed write (docs/targets.md)"
            )
        self.committed[key] = version
        return version

    @staticmethod
    def read_problem(key: str, got: Any) -> str:
        """Why a read's result ``got`` is not a version, as the line to stop the run with."""
        return (
            f"the read of key {key!r} returned {got!r}: a target's read must return an integer version "
            "(0 or more), or Read(version, source)"
        )
