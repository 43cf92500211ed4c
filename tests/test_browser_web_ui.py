"""A person's three runs in Locust's web UI, in a real chromium: the form, the verdict, the report.

A real Locust serves its web UI; Playwright fills the start form as a person would (cache-aside
with a fill delay, the positive control), starts the run and waits for what the page shows: the
verdict banner, FAIL, and its report link, whose page must say FAIL too. New then shows the values
last entered; a second run (versioned, PASS) and a third (cache-aside again, FAIL) start and
finish from it. Screenshots are kept in test-artifacts/ (tests/browser.py).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.browser import screenshot
from tests.test_web_ui import start_web_ui

pytestmark = pytest.mark.integration

#: Bounds on what the page must show: a run is 6 s of load, then its close and analysis.
RUN_MS = 120_000
SHOW_MS = 20_000


def field(form: Any, name: str) -> Any:
    """The form's field for the option ``name``: Locust's page names it in camelCase."""
    camel = re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), name)
    return form.locator(f'[name="{camel}"]')


def fill(form: Any, name: str, value: str) -> None:
    field(form, name).fill(value)


def new_run(page: Any) -> Any:
    """Press New once Locust shows the run stopped; the dialog's form, its custom parameters open."""
    page.get_by_role("button", name="New").click(timeout=RUN_MS)
    dialog = page.locator(".MuiModal-root form")
    dialog.get_by_role("button", name="Custom parameters").click()
    dialog.locator('[name="strategy"]').wait_for(timeout=SHOW_MS)
    return dialog


def wait_verdict(page: Any, run_id: str, outcome: str) -> str:
    """Wait until the banner shows a run other than ``run_id`` judged; return its id."""
    page.wait_for_function(
        """([old, outcome]) => {
            const line = document.querySelector('#cachestorm-line');
            const state = document.querySelector('#cachestorm-state');
            return line && state && !line.textContent.startsWith(`run ${old}:`)
                && state.dataset.state === outcome;
        }""",
        arg=[run_id, outcome],
        timeout=RUN_MS,
    )
    line = page.inner_text("#cachestorm-line")
    found = re.match(r"run (\S+):", line)
    assert found is not None, line
    return found.group(1)


def test_three_runs_from_the_form(page: Any, tmp_path: Path) -> None:
    args = "-f tests/locustfiles/contention.py --ramp-time 0 --hold-time 4 --quiesce-time 2"
    args += " --keys 60 --listeners 2 --ramp-users 30"
    proc, base, log = start_web_ui(args, tmp_path)
    try:
        page.goto(base)
        page.get_by_role("button", name="Custom parameters").click()
        form = page.locator("form").first
        # The form as cachestorm lays it out: groups in order, help texts whole, no "%%".
        form.locator(".cachestorm-group").first.wait_for(timeout=SHOW_MS)
        titles = form.locator(".cachestorm-group").all_inner_texts()
        assert titles[:3] == ["Target and services", "Coherence workload", "Load shape"], titles
        assert "80% of operations on 20% of keys" in form.inner_text()
        assert "%%" not in form.inner_text()
        assert "no host attribute set" not in page.content()
        # The coherence scenario: the contention group is hidden.
        assert not form.locator('.cachestorm-group[data-group="Contention"]').is_visible()
        note = form.locator(".cachestorm-shape-note")
        assert "set by the load shape StepRamp" in note.inner_text()
        assert not form.locator('[name="userCount"]').is_visible()
        # cachestorm drives its target, not a host: neither the form nor the header shows one.
        assert not form.locator('[name="host"]').is_visible()
        host_label = page.locator("header p", has_text=re.compile("^Host$"))
        assert host_label.count() == 1 and not host_label.is_visible()
        # A contention scenario shows the contention group, and its help in full.
        field(form, "scenario").select_option("contention")
        contention = form.locator('.cachestorm-group[data-group="Contention"]')
        contention.wait_for(timeout=SHOW_MS)
        assert field(form, "stampede_guard").is_visible()
        field(form, "stampede_guard").scroll_into_view_if_needed()
        screenshot(page, "web-ui-form-contention")
        field(form, "scenario").select_option("coherence")
        contention.wait_for(state="hidden", timeout=SHOW_MS)
        fill(form, "strategy", "cache-aside")
        fill(form, "fill_delay_ms", "50")
        screenshot(page, "web-ui-form")
        form.locator('button[type="submit"]').click()

        first = wait_verdict(page, "", "fail")
        banner = page.inner_text("#cachestorm-run")
        assert "VERDICT: FAIL" in banner and str(tmp_path) in banner, banner
        screenshot(page, "web-ui-first-run-fail")

        # The report is one click away and says the same.
        with page.context.expect_page(timeout=SHOW_MS) as opened:
            page.click("#cachestorm-report")
        report = opened.value
        report.wait_for_load_state()
        assert f"/cachestorm/runs/{first}/report.html" in report.url
        assert "FAIL" in report.inner_text("body")
        screenshot(report, "web-ui-report")
        report.close()
        # Locust's page stops polling while another tab hides it.
        page.bring_to_front()

        # New shows what was entered; the second run changes the strategy and passes.
        dialog = new_run(page)
        assert dialog.locator('[name="strategy"]').input_value() == "cache-aside"
        assert field(dialog, "fill_delay_ms").input_value() == "50"
        field(dialog, "fill_delay_ms").scroll_into_view_if_needed()
        screenshot(page, "web-ui-new-dialog")
        fill(dialog, "strategy", "versioned")
        dialog.locator('button[type="submit"]').click()
        second = wait_verdict(page, first, "pass")
        screenshot(page, "web-ui-second-run-pass")

        dialog = new_run(page)
        assert dialog.locator('[name="strategy"]').input_value() == "versioned"
        fill(dialog, "strategy", "cache-aside")
        dialog.locator('button[type="submit"]').click()
        third = wait_verdict(page, second, "fail")
        screenshot(page, "web-ui-third-run-fail")
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()
    assert len({first, second, third}) == 3
    text = (tmp_path / "locust.log").read_text()
    assert "Traceback" not in text and "ongoing shape test" not in text, text[-3000:]
    for run in (first, second, third):
        assert (tmp_path / run / "report.html").is_file()
