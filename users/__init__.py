"""Locust user classes: each models one kind of client of the cached service."""

from __future__ import annotations

from users.cache import CacheReader, CacheWriter
from users.websocket import WebSocketListener

__all__ = ["CacheReader", "CacheWriter", "WebSocketListener"]
