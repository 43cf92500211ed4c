"""Locust user classes: each models one kind of client of the cached service."""

from __future__ import annotations

from users import contention, scenarios
from users.cache import CacheReader, CacheWriter
from users.contention import CounterUser, LockUser, TransactionUser
from users.invalidator import Invalidator
from users.memory import MemoryPressureUser
from users.stampede import StampedeTrigger, StampedeUser
from users.websocket import WebSocketListener

__all__ = [
    "CacheReader",
    "CacheWriter",
    "CounterUser",
    "Invalidator",
    "LockUser",
    "MemoryPressureUser",
    "StampedeTrigger",
    "StampedeUser",
    "TransactionUser",
    "WebSocketListener",
    "contention",
    "scenarios",
]
