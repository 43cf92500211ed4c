"""The Coherence tab in a real browser: a cache-aside run with a fill delay, started from the web
UI's form, shows its stale reads rising while it goes; stopped by hand, its verdict and report are
one click away, and a second run starts from New.

Locust's UI renders the tab from ``extendedTabs`` / ``extendedTables`` and fills it from the
``extended_stats`` of the /stats/requests answer it polls every 2 s (analysis/live.py).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.browser import screenshot
from tests.test_browser_web_ui import RUN_MS, fill, new_run, wait_verdict
from tests.test_web_ui import start_web_ui

pytestmark = pytest.mark.integration


def stale_count(page: Any) -> int | None:
    """The Violations cell of the tab's stale_read row, or None while the row is not shown."""
    row = page.locator("table tr", has_text="stale_read").first
    if row.count() == 0:
        return None
    cells = row.locator("td").all_inner_texts()
    return int(cells[2]) if len(cells) > 2 and cells[2].strip().isdigit() else None


def test_the_coherence_tab_shows_stale_reads_rise(page: Any, tmp_path: Path) -> None:
    args = "-f tests/locustfiles/contention.py --ramp-time 0 --hold-time 40 --quiesce-time 1"
    args += " --keys 40 --listeners 2 --ramp-users 30"
    proc, base, log = start_web_ui(args, tmp_path)
    try:
        page.goto(base + "/")
        # The StepRamp shape sets the user count (--ramp-users): the form's own count is disabled.
        page.get_by_role("button", name="Custom parameters").click()
        page.locator("input[name=strategy]").fill("cache-aside")
        page.locator("input[name=fillDelayMs]").fill("50")
        page.get_by_role("button", name=re.compile("start", re.I)).click()
        page.get_by_role("tab", name="Coherence").click()
        page.locator("table tr", has_text="verdict so far").wait_for(timeout=30_000)

        # Bounded waits on what the page shows: a first stale read, then a higher count.
        deadline = time.monotonic() + 40
        seen: list[tuple[float, int]] = []
        while time.monotonic() < deadline:
            n = stale_count(page)
            if n is not None and (not seen or n != seen[-1][1]):
                seen.append((time.monotonic(), n))
            if len([s for s in seen if s[1] > 0]) >= 2:
                break
            page.wait_for_timeout(250)
        rising = [s for s in seen if s[1] > 0]
        assert len(rising) >= 2, (seen, log.name)
        # The tab refreshes with the UI's 2 s poll: a new count within 5 s of the one before.
        assert rising[1][1] > rising[0][1]
        assert rising[1][0] - rising[0][0] <= 5.0, rising
        page.locator("table tr", has_text="verdict so far").filter(has_text="FAIL").wait_for(timeout=10_000)
        shot = screenshot(page, "coherence-tab")
        assert shot.stat().st_size > 10_000
        # The same violations are Locust failures, in its own Failures tab.
        page.get_by_role("tab", name="Failures").click()
        page.locator("table tr", has_text="COHERENCE").filter(has_text="stale_read").wait_for(timeout=10_000)
        screenshot(page, "coherence-failures")

        # Stopped by hand mid-run: the run is closed and judged, its verdict shown with the report.
        page.get_by_role("button", name="Stop").click()
        first = wait_verdict(page, "", "fail")
        # The tab ends on the run's own figures: "verdict", no longer "verdict so far".
        page.get_by_role("tab", name="Coherence").click()
        final = page.locator("table tr").filter(has=page.locator("td", has_text=re.compile(r"^verdict$")))
        final.filter(has_text="FAIL").wait_for(timeout=30_000)
        assert page.locator("table tr", has_text="verdict so far").count() == 0
        screenshot(page, "coherence-stopped-run")
        with page.context.expect_page(timeout=RUN_MS) as opened:
            page.click("#cachestorm-report")
        report = opened.value
        report.wait_for_load_state()
        assert f"/cachestorm/runs/{first}/report.html" in report.url
        assert "FAIL" in report.locator("#headline").inner_text()
        screenshot(report, "coherence-stopped-run-report")
        report.close()
        page.bring_to_front()

        # A second run starts from New, and the tab follows it.
        dialog = new_run(page)
        fill(dialog, "strategy", "versioned")
        dialog.locator('button[type="submit"]').click()
        second = wait_verdict(page, first, "running")
        assert second != first
        page.get_by_role("tab", name="Coherence").click()
        page.locator("table tr", has_text="verdict so far").wait_for(timeout=30_000)
        screenshot(page, "coherence-second-run")
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()
