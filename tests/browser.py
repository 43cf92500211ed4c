"""Playwright driving Debian's chromium, for tests of the web UI and the report.

Never a browser download: Playwright launches ``/usr/bin/chromium`` (``.ci/run`` installs the
``chromium`` package), with the flags this machine's closed network needs. The fixtures
``browser`` and ``page`` (tests/conftest.py) skip, saying why, when chromium is not installed.

Screenshots go to ``test-artifacts/`` at the repository's root (or ``$CACHESTORM_ARTIFACTS``), so
a person can look at what the test saw after the run: :func:`screenshot`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

ARTIFACTS = Path(
    os.environ.get("CACHESTORM_ARTIFACTS", Path(__file__).resolve().parent.parent / "test-artifacts")
)


def chromium_path() -> str | None:
    return os.environ.get("CACHESTORM_CHROMIUM") or shutil.which("chromium")


def screenshot(page: Any, name: str) -> Path:
    """Save a full-page screenshot as test-artifacts/NAME.png and return its path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    out = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(out), full_page=True)
    return out
