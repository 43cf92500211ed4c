"""report.html of real short runs, as headless chromium renders it: does the page hold what it claims?

Two runs of readers and writers contending on 40 keys: ``cache-aside`` with a 50 ms fill delay (the
positive control: it serves stale reads) and ``versioned`` (the safe strategy). The broken run is
analysed with a thresholds file holding an impossible read_hit limit, so a threshold fails beside
the failed checks; the safe run once with only ``max_violations`` (it must pass) and once with the
impossible limit (a fail made by a threshold alone, every check passing: the headline must still
point at a failing row). Screenshots land in test-artifacts/.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from PIL import Image

from cachestorm.services import ServiceURLs
from tests.browser import screenshot
from tests.conftest import run_analysis, run_locust

pytestmark = pytest.mark.integration

CONTENTION = "tests/locustfiles/contention.py"
USERS = 20
IMPOSSIBLE = "max_violations = 0\n[latency_p95_ms]\nread_hit = 0.001\n"
ONLY_VIOLATIONS = "max_violations = 0\n"
#: An offset from the run's start and the UTC wall time, to the millisecond.
TIME = re.compile(r"[+-]\d+\.\d{3} s \(\d\d:\d\d:\d\d\.\d{3} UTC\)")
SCIENTIFIC = re.compile(r"\d[eE][+-]?\d")
EPOCH_NS = re.compile(r"\b1\d{18}\b")


def run(services: ServiceURLs, results: Path, strategy: str) -> Path:
    args = f"-f {CONTENTION} --headless --only-summary --ramp-users {USERS} --ramp-time 0 --hold-time 5"
    args += f" --quiesce-time 1 --keys 40 --strategy {strategy} --fill-delay-ms 50 --listeners 2"
    urls = ["--redis-url", services.redis_url, "--pg-dsn", services.pg_dsn, "--ws-url", services.ws_url]
    out = run_locust([*args.split(), "--results-dir", str(results), "--run-id", strategy, *urls])
    # The live view makes the broken run's violations Locust failures: Locust exits 1 on them.
    assert out.returncode == (1 if strategy == "cache-aside" else 0), out.stderr[-3000:]
    return results / strategy


def analysed(run_dir: Path, copy: str, thresholds: str, expected_exit: int) -> Path:
    """A copy of ``run_dir`` analysed with the given thresholds (the analysis writes in place)."""
    target = run_dir.parent / copy
    shutil.copytree(run_dir, target)
    limits = run_dir.parent / f"{copy}.toml"
    limits.write_text(thresholds)
    out = run_analysis(target, "--thresholds", str(limits))
    assert out.returncode == expected_exit, out.stdout[-3000:] + out.stderr[-2000:]
    # The console report follows the same rules as the page: no figure in scientific notation.
    assert "LATENCY" in out.stdout and not SCIENTIFIC.search(out.stdout), out.stdout
    return target


@pytest.fixture(scope="module")
def runs(services: ServiceURLs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    base = tmp_path_factory.mktemp("report-runs")
    broken = run(services, base, "cache-aside")
    safe = run(services, base, "versioned")
    yield {
        "broken": analysed(broken, "broken-impossible", IMPOSSIBLE, 1),
        "safe": analysed(safe, "safe", ONLY_VIOLATIONS, 0),
        "safe-impossible": analysed(safe, "safe-impossible", IMPOSSIBLE, 1),
    }


def open_report(page: Any, results: Path) -> None:
    page.goto((results / "report.html").as_uri())
    page.wait_for_selector("#headline")


def rows(page: Any) -> list[dict[str, Any]]:
    """Every verdict row the page shows: name (first cell), status, covered_by, id."""
    found: list[dict[str, Any]] = page.eval_on_selector_all(
        "tr[data-status]",
        """trs => trs.map(tr => ({id: tr.id, name: tr.cells[0].innerText.trim(),
            status: tr.dataset.status, covered: tr.dataset.coveredBy || null,
            shown: tr.cells[1].innerText.trim()}))""",
    )
    return found


def headline(page: Any) -> tuple[str, list[str], list[str]]:
    """The banner's text, the names it gives and the row ids its links point at."""
    text = page.inner_text("#headline")
    names = page.eval_on_selector_all("#headline a", "as => as.map(a => a.innerText)")
    targets = page.eval_on_selector_all("#headline a", "as => as.map(a => a.hash.slice(1))")
    return text, names, targets


def assert_headline_matches_rows(page: Any, outcome: str, summary: dict[str, Any]) -> list[dict[str, Any]]:
    shown = rows(page)
    assert shown, "no verdict rows on the page"
    for r in shown:
        assert r["shown"] == r["status"], r  # the status cell says what the row's status is
    text, names, targets = headline(page)
    assert text.split(":")[0] == outcome
    by_id = {r["id"]: r for r in shown}
    if outcome == "FAIL":
        # Each name links to a row that fails, and every failing row is named or covered by a named one.
        assert names and all(by_id[t]["status"] == "FAIL" for t in targets)
        assert [by_id[t]["name"] for t in targets] == names
        uncovered = [r["name"] for r in shown if r["status"] == "FAIL" and r["covered"] is None]
        assert names == uncovered
        assert all(r["covered"] is None or r["covered"] in names for r in shown if r["status"] == "FAIL")
        assert names == summary["failed"]
    else:
        assert names == [] and not [r for r in shown if r["status"] in ("FAIL", "UNKNOWN")]
    tally = page.inner_text("#tally")
    for status in ("FAIL", "UNKNOWN", "PASS", "N/A"):
        assert f"{sum(r['status'] == status for r in shown)} {status}" in tally, (status, tally)
    return shown


def assert_cells_readable(page: Any) -> None:
    cells: list[str] = page.eval_on_selector_all("td", "tds => tds.map(td => td.innerText)")
    assert cells
    assert [c for c in cells if SCIENTIFIC.search(c)] == []
    assert [c for c in cells if EPOCH_NS.search(c)] == []
    captions: str = page.eval_on_selector_all(".caption", "ps => ps.map(p => p.innerText).join(' ')")
    assert not SCIENTIFIC.search(captions)


def assert_figures_labelled(page: Any, expected: int) -> None:
    """Every figure is drawn and says, for each of its panels, the title and what each axis counts:
    from the alt text, and from the PNG's own metadata (written by the figure that was drawn)."""
    images = page.eval_on_selector_all(
        "img", "imgs => imgs.map(i => ({alt: i.alt, src: i.src, w: i.naturalWidth, done: i.complete}))"
    )
    assert len(images) >= expected
    for image in images:
        assert image["done"] and image["w"] > 200, image["alt"]
        png = Image.open(io.BytesIO(base64.b64decode(image["src"].split(",", 1)[1])))
        panels = json.loads(png.info["Description"])
        assert panels, image["alt"]
        for panel in panels:
            assert panel["title"] and panel["x"] and panel["y"], (image["alt"], panel)
            assert f"x: {panel['x']}; y: {panel['y']}" in image["alt"]
        assert "us)" not in image["alt"] and " ops/s" not in image["alt"]


def test_the_broken_run_shows_its_failures_and_the_threshold(runs: dict[str, Path], page: Any) -> None:
    results = runs["broken"]
    summary = json.loads((results / "summary.json").read_text())
    open_report(page, results)
    shown = assert_headline_matches_rows(page, "FAIL", summary)
    status = {r["name"]: r["status"] for r in shown}
    assert status["stale_read"] == "FAIL"  # the positive control
    assert status["threshold:latency_p95_ms.read_hit"] == "FAIL"
    assert "threshold:latency_p95_ms.read_hit" in headline(page)[1]
    assert page.is_visible("#row-threshold-latency_p95_ms\\.read_hit")
    assert_cells_readable(page)

    # The stale reads' worst rows: times as offsets and wall times, every one of them.
    table = page.locator("#examples-stale_read + table")
    heads = table.locator("th").all_inner_texts()
    assert "t_invoke" in heads and "t_complete" in heads
    for column in ("t_invoke", "t_complete"):
        index = heads.index(column) + 1
        times = table.locator(f"tbody td:nth-child({index})").all_inner_texts()
        assert times and all(TIME.fullmatch(t.replace("\n", " ")) for t in times), times
    missed = table.locator(f"tbody td:nth-child({heads.index('missed_write') + 1})").all_inner_texts()
    assert all(TIME.search(m.replace("\n", " ")) for m in missed), missed

    assert_figures_labelled(page, expected=5)
    # Users: never more than the run spawned, though fills and probes (a process each) are many.
    caption = page.inner_text("#throughput ~ .caption")
    peak = int(re.search(r"Peak (\d+) users", caption)[1])  # type: ignore[index]
    assert 0 < peak <= USERS
    history = pd.read_parquet(results / "history")
    sec = (history["t_complete"] - history["t_invoke"].min()) // 1_000_000_000
    assert history.groupby(sec)["process"].nunique().max() > USERS  # what "active processes" counted
    screenshot(page, "report-broken-cache-aside")


def test_the_safe_run_passes_and_a_threshold_alone_fails_it(runs: dict[str, Path], page: Any) -> None:
    safe = runs["safe"]
    open_report(page, safe)
    assert_headline_matches_rows(page, "PASS", json.loads((safe / "summary.json").read_text()))
    assert page.inner_text("#headline") == "PASS"
    assert_cells_readable(page)
    # Throughput, latency, hit ratio, notification latency; no stale reads, so no staleness histogram.
    assert_figures_labelled(page, expected=4)
    screenshot(page, "report-safe-versioned")

    # The case: every check passes, one threshold fails. The headline names it, and it is a
    # failing row on the page, linked from the check whose figure it judges.
    impossible = runs["safe-impossible"]
    open_report(page, impossible)
    summary = json.loads((impossible / "summary.json").read_text())
    shown = assert_headline_matches_rows(page, "FAIL", summary)
    checks = [r for r in shown if not r["name"].startswith("threshold:")]
    assert {r["status"] for r in checks} <= {"PASS", "N/A"}
    assert headline(page)[1] == ["threshold:latency_p95_ms.read_hit"]
    latency = page.inner_text("#row-latency")
    assert "threshold:latency_p95_ms.read_hit FAIL" in " ".join(latency.split())
    assert_cells_readable(page)
    screenshot(page, "report-safe-threshold-fails")
