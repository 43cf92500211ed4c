"""The session's embedded services, and the way out that takes them along.

A target that starts services for the session (the reference cache's Redis, PostgreSQL and
notifier) hands them to :func:`adopt`; :func:`stop` stops them when Locust quits, and
:func:`fatal` when cachestorm must leave at once.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, Protocol

import psutil


class Stoppable(Protocol):
    def stop(self) -> None: ...


_services: list[Any] = []


def adopt(services: Stoppable) -> None:
    """Stop ``services`` when the session ends, or at :func:`fatal`."""
    _services.append(services)


def stop() -> None:
    """Stop every adopted service, newest first."""
    while _services:
        services = _services.pop()
        with contextlib.suppress(Exception):
            services.stop()


def fatal(message: str, code: int = 2) -> None:
    """Print one line and leave, taking every child process (services, forked workers) along."""
    sys.stderr.write(f"cachestorm: {message}\n")
    sys.stderr.flush()
    stop()
    with contextlib.suppress(Exception):
        children = psutil.Process().children(recursive=True)
        for child in children:
            child.terminate()
        psutil.wait_procs(children, timeout=5)
    os._exit(code)
