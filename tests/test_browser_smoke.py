"""The browser fixture itself: Debian's chromium renders a local page, and its screenshot is kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.browser import screenshot


def test_chromium_renders_a_local_page(page: Any, tmp_path: Path) -> None:
    html = tmp_path / "p.html"
    html.write_text("<h1 id=t>cachestorm</h1>")
    page.goto(html.as_uri())
    assert page.inner_text("#t") == "cachestorm"
    shot = screenshot(page, "browser-smoke")
    assert shot.stat().st_size > 1000
