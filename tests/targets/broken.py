"""Targets that break cachestorm's contract, each in one way, for tests/test_targets_python.py.

Each keeps its versions in memory: nothing else is needed to show that the run stops.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from cachestorm.target import Cached


class _InMemory:
    def __init__(self, context: Any) -> None:
        self.versions: dict[str, int] = {}

    def key(self, index: int) -> str:
        return f"k{index}"

    def read(self, key: str) -> Any:
        return self.versions.get(key, 0)

    def write(self, key: str) -> Any:
        self.versions[key] = self.versions.get(key, 0) + 1
        return self.versions[key]

    def reset(self, keys: Sequence[str]) -> None:
        self.versions = {}

    def sweep(self, keys: Sequence[str]) -> Iterator[Cached]:
        return iter(())

    def close(self) -> None:
        pass


class Correct(_InMemory):
    """Keeps the contract: the control beside the broken ones."""


class RepeatsVersions(_InMemory):
    """Its fifth write of a key returns the fourth's version again."""

    def write(self, key: str) -> Any:
        version = super().write(key)
        return 4 if version == 5 else version


class ReturnsNothing(_InMemory):
    """Its writes return nothing."""

    def write(self, key: str) -> Any:
        super().write(key)
        return None


class ReadsText(_InMemory):
    """Its reads return the value, not a version."""

    def read(self, key: str) -> Any:
        return "hello"


class LacksSweep:
    """Not a target: it has no sweep."""

    def key(self, index: int) -> str:
        return str(index)
