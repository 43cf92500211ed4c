"""cachestorm: Locust load tests that prove a Redis cache in front of PostgreSQL stays coherent."""

from __future__ import annotations

__version__ = "0.1.0"
