"""Tests of ``RESULTS/report.html`` and of consistency in nines (analysis.report, analysis.nines).

Histories are planted by hand, so every figure the report draws and every nines number is known in
advance. No browser is needed: the page is checked as text, and each embedded PNG by its header.
"""

from __future__ import annotations

import base64
import json
import math
import re
import struct
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from analysis import display
from analysis.__main__ import main
from analysis.checks import CHECK_NAMES, run_checks
from analysis.console import render
from analysis.load import normalise
from analysis.nines import compute_nines, inconsistent_writes, nines, reads_fresh, writes_consistent
from analysis.report import REPORT_FILE, build_report, row_id, users_running
from analysis.thresholds import evaluate_thresholds, parse_thresholds
from tests.histories import MS, row

S = 1_000_000_000
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IMG = re.compile(r'<img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)">')
HEADINGS = (
    "1. Verdict",
    "2. Users and throughput over time",
    "3. Latency percentiles over time",
    "4. Hit ratio and evictions over time",
    "5. Staleness of stale reads",
    "6. WebSocket commit-to-receive latency",
    "7. Stampedes and counter drift",
    "8. Consistency in nines",
    "9. Latency, corrected for coordinated omission",
)
#: What a closed-loop run's report must say about its latencies.
CLOSED_LOOP = (
    "may hide coordinated omission (closed-loop run: each user starts its next operation only when "
    "the previous one ends); run with --arrival-rate for corrected latency"
)


def frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    data = pd.DataFrame(rows)
    for column in ("version", "value"):
        data[column] = data[column].astype("Int64")
    return data


def planted() -> list[dict[str, Any]]:
    """Writes and reads whose nines are worked out by hand in the tests below.

    Ok writes: 9. Ok reads: 8 on keys with writes + 992 fresh reads of cs:e:9 = 1000.
    """
    rows = [
        # cs:e:1: v1 done at 1000 ms, v2 done at 10000 ms; a read of v0 500 ms after v1 completed.
        row("write", 900, 1000, 1, key="cs:e:1"),
        row("write", 9000, 10000, 2, key="cs:e:1"),
        row("read", 1500, 1501, 0, key="cs:e:1", process=2, source="hit"),
        # cs:e:2: v1 done at 1000 ms, last write; a read of v0 3 s later.
        row("write", 900, 1000, 1, key="cs:e:2"),
        row("read", 4000, 4001, 0, key="cs:e:2", process=2, source="hit"),
        # cs:e:3: v1 done at 1000 ms; a read of v0 6 s later.
        row("write", 900, 1000, 1, key="cs:e:3"),
        row("read", 7000, 7001, 0, key="cs:e:3", process=2, source="hit"),
        # cs:e:4: v1 done at 1000, v2 at 1050: the read of v1 at 1120 is stale, but lies in no
        # write's window for M = 100 ms ([1100, 1050) is empty, v2's opens at 1150).
        row("write", 900, 1000, 1, key="cs:e:4"),
        row("write", 1000, 1050, 2, key="cs:e:4"),
        row("read", 1120, 1121, 1, key="cs:e:4", process=2, source="hit"),
        row("read", 1200, 1201, 2, key="cs:e:4", process=2, source="miss"),
        # cs:e:5: a read before any write, one after that sees it, and a failed write to ignore.
        row("read", 500, 501, 0, key="cs:e:5", process=3, source="miss"),
        row("write", 900, 1000, 1, key="cs:e:5"),
        row("write", 1400, 1500, 2, key="cs:e:5", status="fail"),
        row("read", 2000, 2001, 1, key="cs:e:5", process=3, source="hit"),
        # cs:e:6: v1 done at 1000, v2 at 1500; a read of v0 at 1550 is 550 ms after v1 but after v2
        # completed and less than 100 ms after it: it lies in no write's window, for any M.
        row("write", 900, 1000, 1, key="cs:e:6"),
        row("write", 1400, 1500, 2, key="cs:e:6"),
        row("read", 1550, 1551, 0, key="cs:e:6", process=3, source="hit"),
    ]
    rows += [row("read", 20 + i, 21 + i, 0, key="cs:e:9", process=4, source="hit") for i in range(992)]
    return rows


# --------------------------------------------------------------------------------------------------
# Nines


def test_nines_formula_and_cap() -> None:
    assert nines(10, 1000)["nines"] == pytest.approx(2.0)
    assert nines(1, 1000)["nines"] == pytest.approx(3.0)
    assert nines(1, 1000)["at_least"] is False
    clean = nines(0, 1000)
    assert clean["nines"] == pytest.approx(3.0)
    assert clean["max_showable"] == pytest.approx(3.0)
    assert clean["at_least"] is True
    # A million clean samples show about 6 nines at most.
    assert nines(0, 10**6)["max_showable"] == pytest.approx(6.0)
    assert nines(0, 0)["nines"] is None
    with pytest.raises(ValueError):
        nines(2, 1)


def test_reads_fresh_on_planted_history() -> None:
    result = reads_fresh(frame(planted()))
    # Stale: cs:e:1 at 1500, cs:e:2 at 4000, cs:e:3 at 7000, cs:e:4 at 1120, cs:e:6 at 1550.
    assert (result["bad"], result["total"]) == (5, 1000)
    assert result["nines"] == pytest.approx(math.log10(1000 / 5), abs=1e-4)
    assert result["max_showable"] == pytest.approx(3.0)
    assert result["at_least"] is False


def test_reads_fresh_without_stale_reads_is_capped() -> None:
    rows = [row("read", i, i + 1, 0, key="cs:e:9", source="hit") for i in range(100)]
    result = reads_fresh(frame(rows))
    assert (result["bad"], result["total"], result["nines"], result["at_least"]) == (0, 100, 2.0, True)


@pytest.mark.parametrize(
    ("window_ms", "bad"),
    [
        (100, 3),  # cs:e:1's v1 (read 500 ms after), cs:e:2, cs:e:3
        (1000, 2),  # cs:e:2 (3 s after), cs:e:3 (6 s after)
        (5000, 1),  # cs:e:3 only
        (10000, 0),
    ],
)
def test_writes_consistent_on_planted_history(window_ms: int, bad: int) -> None:
    history = frame(planted())
    assert inconsistent_writes(history, window_ms * MS) == (bad, 9)
    result = writes_consistent(history, window_ms * MS)
    expected = math.log10(9 / bad) if bad else math.log10(9)
    assert result["nines"] == pytest.approx(expected, abs=1e-4)
    assert result["max_showable"] == pytest.approx(math.log10(9), abs=1e-4)
    assert result["at_least"] is (bad == 0)


def test_read_exactly_m_after_the_write_counts() -> None:
    rows = [row("write", 0, 1000, 1), row("read", 1100, 1101, 0, process=2, source="hit")]
    assert inconsistent_writes(frame(rows), 100 * MS) == (1, 1)
    assert inconsistent_writes(frame(rows), 101 * MS) == (0, 1)


def test_compute_nines_shape() -> None:
    result = compute_nines(frame(planted()))
    assert set(result["writes_consistent"]) == {"100ms", "1s", "5s"}
    assert result["writes_consistent"]["1s"]["bad"] == 2
    assert compute_nines(None)["skipped"] is True


# --------------------------------------------------------------------------------------------------
# The report


def full_rows() -> list[dict[str, Any]]:
    """The planted history plus rows for every other section, over several seconds."""
    rows = planted()
    # Stampede: two invalidations of cs:e:7, the first followed by 3 loads, the second by 1.
    rows += [
        row("invalidate", 2000, 2001, key="cs:e:7", source="invalidate", process=5),
        *[
            row("db_load", 2010 + i, 2060 + i, 1, key="cs:e:7", source="none", process=6 + i)
            for i in range(3)
        ],
        row("invalidate", 5000, 5001, key="cs:e:7", source="invalidate", process=5),
        row("db_load", 5010, 5060, 1, key="cs:e:7", source="none", process=6),
    ]
    # Counters: cs:c:0 lost one of three increments (drift -1); cs:c:1 is exact.
    rows += [
        row("incr", 1000 + 10 * i, 1005 + 10 * i, key="cs:c:0", value=1, source="unsafe") for i in range(3)
    ]
    rows += [row("incr", 1000, 1005, key="cs:c:1", value=2, source="atomic")]
    rows += [
        row("counter_read", 8000, 8001, key="cs:c:0", value=2, process=0),
        row("counter_read", 8000, 8001, key="cs:c:1", value=2, process=0),
    ]
    # Redis samples once a second: 5 evictions between the second and third samples.
    for i, evicted in enumerate((0, 0, 5, 5)):
        rows.append(row("redis_stat", 1000 * i, 1000 * i + 1, key="evicted_keys", value=evicted, process=0))
    # A WebSocket listener: open, two notifications 2 ms and 30 ms after their commits, close.
    rows += [
        row("ws_open", 100, 101, key=None, process=9),
        row("ws_recv", 1002, 1002, 1, key="cs:e:1", value=1000 * MS, process=9),
        row("ws_recv", 10030, 10030, 2, key="cs:e:1", value=10000 * MS, process=9),
        row("ws_close", 11000, 11001, key=None, process=9),
    ]
    return rows


def write_results(tmp_path: Path, rows: list[dict[str, Any]], t_intended: str | None = None) -> Path:
    """A results dir; ``t_intended`` is ``"invoke"`` (every row due when it started), ``"null"`` (a
    schema v2 column of nulls) or ``None`` (no such column, as in schema v1)."""
    results = tmp_path / "run"
    (results / "history").mkdir(parents=True)
    data = frame(rows)
    if t_intended == "invoke":
        data["t_intended"] = data["t_invoke"]
    elif t_intended == "null":
        data["t_intended"] = pd.array([None] * len(data), dtype="Int64")
    data.to_parquet(results / "history" / "part-00000.parquet", index=False)
    run = {
        "schema_version": 1,
        "run_id": "test-run",
        "started_ns": 0,
        "stopped_ns": 12 * S,
        "options": {"scenario": "coherence", "strategy": "versioned"},
        "clock_uncertainty_ns": 0,
        "nodes": {"local": {"batches": 1, "rows": len(rows), "missing_batches": []}},
        "history_complete": True,
        "rows": len(rows),
    }
    (results / "run.json").write_text(json.dumps(run))
    return results


def headline(page: str) -> tuple[str, str]:
    """The banner's class and its text, tags stripped."""
    found = re.search(r'<p class="banner (\w+)" id="headline">(.*?)</p>', page)
    assert found is not None, "no headline"
    return found[1], re.sub(r"<[^>]+>", "", found[2])


ROW = re.compile(r'<tr id="row-[^"]*" class="row-[^"]*" data-status="([^"]*)"[^>]*><td>([^<]*)</td>')


def row_statuses(page: str) -> dict[str, str]:
    """Every verdict row's name and the status it shows, from the tables' rows."""
    return {name: status for status, name in ROW.findall(page)}


def png_images(page: str) -> list[bytes]:
    return [base64.b64decode(data, validate=True) for data in IMG.findall(page)]


def assert_valid_png(data: bytes) -> None:
    assert data[:8] == PNG_SIGNATURE
    length, kind = struct.unpack(">I4s", data[8:16])
    assert (length, kind) == (13, b"IHDR")
    width, height = struct.unpack(">II", data[16:24])
    assert 200 <= width <= 3000 and 100 <= height <= 3000
    assert data[-8:-4] == b"IEND"


def test_cli_writes_a_self_contained_report(tmp_path: Path) -> None:
    results = write_results(tmp_path, full_rows())
    assert main([str(results), "--thresholds", "none"]) == 1  # stale reads fail the verdict
    page = (results / REPORT_FILE).read_text(encoding="utf-8")

    for heading in HEADINGS:
        assert f">{heading}</h2>" in page, heading
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page.lower() and "<link" not in page.lower()

    # One figure per plotted series: throughput, latency, hit ratio, evictions, staleness,
    # notification CDF, loads per epoch, counter drift.
    images = png_images(page)
    assert len(images) == 8
    assert page.count("<img ") == 8
    for image in images:
        assert_valid_png(image)

    # Every check is in the verdict table, and the failed stale_read shows its worst rows.
    table = page.split("<h3>Checks</h3>", 1)[1].split("</table>", 1)[0]
    for name in CHECK_NAMES:
        assert f"<td>{name}</td>" in table, name
    assert 'id="examples-stale_read"' in page
    examples = page.split('id="examples-stale_read"', 1)[1].split("</table>", 1)[0]
    assert "missed_write" in examples and "<th>age</th>" in examples
    # Times read as offsets from the run's start and UTC wall times, never as epoch nanoseconds.
    assert "+1.500 s (00:00:01.500 UTC)" in examples  # the stale read of cs:e:1 at 1500 ms
    assert "t_complete=+1.000 s (00:00:01.000 UTC)" in examples  # the write it missed
    assert "1500000000" not in examples and "e+" not in examples
    assert examples.count("<tr>") == 1 + 5  # header + the 5 stale reads
    assert "cs:e:3" in examples
    assert "examples-divergence" not in page  # passed checks show no examples

    # The sections that had data describe it.
    assert "5 keys evicted over the run" in page
    assert "Stale as the stale_read check defines it" in page
    assert "2 ok ws_recv rows" in page
    assert "2 epochs with at least one load" in page and "max 3" in page
    assert "2 counters" in page and "Total drift -1" in page
    assert "counted from the history" in page  # no locust_stats_history.csv: the count is named
    assert "active processes" not in page
    # A closed-loop run: no read or write has a t_intended, so the caveat replaces corrected latency,
    # and the latency section points at it.
    omission = page.split('id="omission"', 1)[1]
    assert CLOSED_LOOP in omission
    assert "corrected (t_complete - t_intended)" not in page
    latency = page.split('id="latency"', 1)[1].split("<h2", 1)[0]
    assert CLOSED_LOOP in latency

    # Nines in the page and in summary.json match the hand-computed values.
    summary = json.loads((results / "summary.json").read_text())
    fresh = summary["nines"]["reads_fresh"]
    assert (fresh["bad"], fresh["total"]) == (5, 1000)
    assert fresh["nines"] == pytest.approx(math.log10(200), abs=1e-4)
    assert [summary["nines"]["writes_consistent"][m]["bad"] for m in ("100ms", "1s", "5s")] == [3, 2, 1]
    assert "could show at most 3.00 nines of reads fresh" in page
    assert f"<td>{math.log10(200):.2f}</td>" in page
    assert "no probes were recorded" in page  # the history has no f=probe rows: reads stand in


def test_report_says_no_data_when_rows_are_absent(tmp_path: Path) -> None:
    rows = [row("read", 1000 * i, 1000 * i + 1, 0, key=f"cs:e:{i}", source="hit") for i in range(5)]
    results = write_results(tmp_path, rows)
    # A coherence run without writes, sweep or listeners' rows leaves checks it needs unjudged.
    assert main([str(results), "--thresholds", "none"]) == 3
    page = (results / REPORT_FILE).read_text(encoding="utf-8")
    assert headline(page) == ("UNKNOWN", "UNKNOWN: ws_delivery, divergence")
    assert row_statuses(page)["ws_delivery"] == "UNKNOWN"
    assert "divergence: no sweep rows" in page
    assert "There were no stale reads" in page
    assert "No data: no ws_recv rows" in page
    assert "No data: no db_load rows" in page
    assert "No data: no counter_read rows" in page
    assert "No data: no redis_stat evicted_keys samples" in page
    assert "No data: no op history" not in page
    assert "\u2265 0.70" in page  # 5 clean reads: at least log10(5) nines, and no more showable
    assert len(png_images(page)) == 3  # throughput, latency, hit ratio
    assert "examples-" not in page


def test_locust_user_count_is_used_when_present(tmp_path: Path) -> None:
    results = write_results(tmp_path, full_rows())
    (results / "locust_stats_history.csv").write_text(
        "Timestamp,User Count,Type,Name,Requests/s\n"
        "0,0,,Aggregated,0\n1,5,,Aggregated,3\n2,10,,Aggregated,9\n"
    )
    main([str(results), "--thresholds", "none"])
    page = (results / REPORT_FILE).read_text(encoding="utf-8")
    assert "User Count" in page and "column of locust_stats_history.csv" in page
    assert "counted from the history" not in page


def test_t_intended_removes_the_coordinated_omission_warning(tmp_path: Path) -> None:
    results = write_results(tmp_path, full_rows(), t_intended="invoke")
    main([str(results), "--thresholds", "none"])
    page = (results / REPORT_FILE).read_text(encoding="utf-8")
    assert CLOSED_LOOP not in page
    assert "Open-model run" in page
    # Every operation started when due: corrected and uncorrected rows of each table are equal.
    section = page.split('id="omission"', 1)[1]
    for group in ("read_hit", "read_miss", "write"):
        table = section.split(f"<h3>{group}</h3>", 1)[1].split("</table>", 1)[0]
        cells = re.findall(r'<td class="num">([^<]*)</td>', table)
        assert len(cells) == 3 * 5, group  # three measures, p50 p90 p99 p99.9 max
        assert cells[:5] == cells[5:10], group
        assert cells[10:] == ["0 \u00b5s"] * 5, group  # no start lag
    assert len(png_images(page)) == 9  # the percentile spectrum too


@pytest.mark.parametrize("column", [None, "null"])
def test_closed_loop_note_with_or_without_the_column(tmp_path: Path, column: str | None) -> None:
    # Probes carry a t_intended in every run: they do not make a run open-model.
    rows = [row("read", 100 * i, 100 * i + 1, 0, key=f"cs:e:{i}", source="hit") for i in range(5)]
    results = write_results(tmp_path, rows, t_intended=column)
    probe = frame([row("probe", 50, 51, 0, key="cs:e:1", value=0, source="absent")])
    probe["t_intended"] = pd.array([40 * MS], dtype="Int64")
    probe.to_parquet(results / "history" / "part-00001.parquet", index=False)
    run = json.loads((results / "run.json").read_text())
    (results / "run.json").write_text(json.dumps({**run, "rows": 6}))  # the probe's row too
    main([str(results), "--thresholds", "none"])
    page = (results / REPORT_FILE).read_text(encoding="utf-8")
    assert CLOSED_LOOP in page.split('id="omission"', 1)[1]
    assert "Open-model run" not in page


def as_us(cell: str) -> float:
    """A duration cell of the report (``"1.02 ms"``, ``"998 µs"``) in microseconds."""
    number, unit = cell.replace(",", "").split(" ")
    return float(number) * {"\u00b5s": 1.0, "ms": 1000.0}[unit]


def stalled_schedule(n: int, interval_ms: float, stall: tuple[float, float]) -> list[dict[str, Any]]:
    """A client on a fixed schedule, one operation at a time, each taking 1 ms but stuck in ``stall``.

    Writes every tenth operation, hits otherwise; the operations due during the stall start late.
    """
    rows, free = [], 0.0
    for k in range(n):
        due = k * interval_ms
        start = max(due, free)
        end = (stall[1] if stall[0] <= start < stall[1] else start) + 1.0
        f, version, source = ("write", k // 10 + 1, None) if k % 10 == 0 else ("read", 0, "hit")
        rows.append(
            {**row(f, start, end, version, key=f"cs:e:{k}", source=source), "t_intended": round(due * MS)}
        )
        free = end
    return rows


def test_open_model_section_shows_the_stall(tmp_path: Path) -> None:
    results = write_results(tmp_path, stalled_schedule(2000, 10.0, (5000.0, 6000.0)))
    main([str(results), "--thresholds", "none"])
    page = (results / REPORT_FILE).read_text(encoding="utf-8")
    section = page.split('id="omission"', 1)[1]
    assert ">9. Latency, corrected for coordinated omission</h2>" in page
    assert CLOSED_LOOP not in page
    table = section.split("<h3>read_hit</h3>", 1)[1].split("</table>", 1)[0]
    assert "<th>p99.9</th>" in table and "<th>max</th>" in table
    labels = re.findall(r"<tr><td>([^<]*)</td>", table)
    assert labels == [
        "uncorrected (t_complete - t_invoke)",
        "corrected (t_complete - t_intended)",
        "start lag (t_invoke - t_intended)",
    ]
    cells = [as_us(c) for c in re.findall(r'<td class="num">([^<]*)</td>', table)]
    columns = ("p50", "p90", "p99", "p99.9", "max")
    uncorrected = dict(zip(columns, cells[:5], strict=True))
    corrected = dict(zip(columns, cells[5:10], strict=True))
    # The operation caught in the stall was a write; every hit took 1 ms. But ~100 of the 1800 hits
    # were due during the 1 s stall and waited for it: the corrected p99 is of the stall's order.
    assert uncorrected["max"] <= 1_100
    assert corrected["p99"] >= 500_000 and corrected["max"] >= 900_000
    assert "<h3>write</h3>" in section and "<h3>read_miss</h3>" not in section
    images = png_images(section)
    assert len(images) == 1
    assert_valid_png(images[0])
    assert "1/(1 - percentile)" in section
    assert "The schedule asked for 100.0 operations/s" in section
    # The verdict table names the check as reported only, with both p99s.
    verdict = page.split("<h3>Checks</h3>", 1)[1].split("</table>", 1)[0]
    figure = re.search(r"<td>open_model_latency</td>.*?<td>([^<]*corrected)</td>", verdict)
    assert figure is not None
    assert re.fullmatch(r"read_hit p99 [0-9.,]+ (µs|ms) uncorrected, [0-9.,]+ ms corrected", figure[1])


def test_report_on_a_million_rows_takes_seconds() -> None:
    n = 1_000_000
    rng = np.random.default_rng(7)
    t_invoke = np.sort(rng.integers(0, 60 * S, n))
    f = np.where(rng.random(n) < 0.1, "write", "read")
    keys = rng.integers(0, 10_000, n)
    history = pd.DataFrame(
        {
            "process": rng.integers(0, 500, n),
            "node": "local",
            "f": f,
            "key": pd.Series([f"cs:e:{k}" for k in keys]),
            "status": "ok",
            "t_invoke": t_invoke,
            "t_complete": t_invoke + rng.integers(100_000, 5 * MS, n),
            "version": pd.array(rng.integers(0, 50, n), dtype="Int64"),
            "value": pd.array([None] * n, dtype="Int64"),
            "source": np.where(f == "read", np.where(rng.random(n) < 0.8, "hit", "miss"), None),
        }
    )
    history = normalise(history)
    verdict = run_checks(history, {"run_id": "big", "started_ns": 0})
    started = time.perf_counter()
    page = build_report(verdict, history, compute_nines(history))
    elapsed = time.perf_counter() - started
    assert len(png_images(page)) >= 4
    assert elapsed < 20, f"report took {elapsed:.1f} s"


# --------------------------------------------------------------------------------------------------
# The headline comes from the rows the tables show


def test_a_failed_threshold_is_a_failing_row_the_headline_names(tmp_path: Path) -> None:
    # Every check passes on this clean history; only the impossible read_hit limit fails.
    rows = [
        row("read", 1000 * i, 1000 * i + 2, 0, key=f"cs:e:{i}", process=2, source="hit") for i in range(5)
    ]
    results = write_results(tmp_path, rows)
    limits = tmp_path / "impossible.toml"
    limits.write_text("[latency_p95_ms]\nread_hit = 0.001\n")
    main([str(results), "--thresholds", str(limits)])
    page = (results / REPORT_FILE).read_text(encoding="utf-8")
    statuses = row_statuses(page)
    assert statuses["threshold:latency_p95_ms.read_hit"] == "FAIL"
    status, text = headline(page)
    assert status == "FAIL"
    # The headline names exactly the failing rows (none is covered by another here), and each
    # name links to its row.
    failing = [n for n, s in statuses.items() if s == "FAIL"]
    assert failing == ["threshold:latency_p95_ms.read_hit"]
    assert text == "FAIL: threshold:latency_p95_ms.read_hit"
    anchor = row_id("threshold:latency_p95_ms.read_hit")
    assert f'<a href="#{anchor}">threshold:latency_p95_ms.read_hit</a>' in page
    assert f'<tr id="{anchor}" class="row-FAIL"' in page
    # The latency check passed (it only reports), and its row says the threshold on it failed.
    latency = page.split('id="row-latency"', 1)[1].split("</tr>", 1)[0]
    assert "PASS" in latency and "threshold:latency_p95_ms.read_hit</a>" in latency and "FAIL" in latency
    # Figure and limit in the same unit rules: 2 ms against 1 µs.
    threshold = page.split(f'id="{anchor}"', 1)[1].split("</tr>", 1)[0]
    assert "<td>2 ms</td>" in threshold and "&lt;= 1 \u00b5s" in threshold
    tally = re.sub(r"<[^>]+>", "", page.split('id="tally">', 1)[1].split("</p>", 1)[0])
    assert f"{statuses_count(statuses, 'FAIL')} FAIL" in tally


def statuses_count(statuses: dict[str, str], status: str) -> int:
    return sum(s == status for s in statuses.values())


def test_rows_make_the_outcome_and_cover_repeated_failures() -> None:
    history = frame(full_rows())
    verdict = run_checks(normalise(history), {"run_id": "r", "started_ns": 0, "history_complete": True})
    verdict.thresholds = evaluate_thresholds(
        parse_thresholds({"max_violations": 0, "success_rate_min": 0.5}, "inline"),
        verdict.checks,
        history,
        verdict.run,
        None,
    )
    rows = verdict.rows()
    assert [r.name for r in rows[: len(verdict.checks)]] == [c.name for c in verdict.checks]
    by_name = {r.name: r for r in rows}
    # The stale_read check failed: its max_violations threshold fails too, covered by the check.
    assert by_name["stale_read"].status == "FAIL"
    assert by_name["threshold:max_violations.stale_read"].status == "FAIL"
    assert by_name["threshold:max_violations.stale_read"].covered_by == "stale_read"
    # A skipped threshold is N/A, not SKIP and not PASS.
    assert by_name["threshold:success_rate_min.locust"].status == "N/A"
    outcome, named = verdict.headline()
    assert outcome == verdict.outcome == "fail"
    assert [r.name for r in named] == verdict.failed
    assert {r.name for r in rows if r.status == "FAIL" and r.covered_by is None} == set(verdict.failed)
    assert render(verdict).splitlines()[-1] == f"VERDICT: FAIL ({', '.join(verdict.failed)})"


# --------------------------------------------------------------------------------------------------
# Users over time


def test_users_are_not_fills_probes_or_replaced_processes() -> None:
    """Three users for 3 s: each read's miss fills as a process of its own, each write is probed by
    another, and one user takes a fresh id after an info read. Distinct processes per second (the
    old "active processes") count 7 or more; users running never exceed 3."""
    rows: list[dict[str, Any]] = []
    fill_process = 100
    for user in (1, 2, 3):
        for i in range(30):
            t = 100.0 * i + user
            process = user if not (user == 3 and i >= 11) else 30  # user 3's fresh id after an info
            status = "info" if (user == 3 and i == 10) else "ok"
            rows.append(
                row("read", t, t + 20, 0, key="cs:e:1", process=process, source="miss", status=status)
            )
            rows.append(row("fill", t + 10, t + 11, 0, key="cs:e:1", process=fill_process))
            rows.append(
                row("probe", t + 50, t + 51, 0, key="cs:e:1", process=fill_process + 1, source="absent")
            )
            fill_process += 2
    rows.append(row("sweep", 3100, 3101, 0, key="cs:e:1", process=0, value=0, source="absent"))
    history = normalise(frame(rows))
    seconds = np.arange(0, 3)
    assert users_running(history, 0, seconds).tolist() == [3, 3, 3]
    # The positive control: what the panel used to count.
    sec = history["t_complete"].to_numpy() // S
    distinct = pd.Series(history["process"].to_numpy()).groupby(sec).nunique()
    assert distinct.max() >= 7


# --------------------------------------------------------------------------------------------------
# Formatting: pure functions


@pytest.mark.parametrize(
    ("us", "text"),
    [
        (None, "-"),
        (float("nan"), "-"),
        (0, "0 \u00b5s"),
        (0.5, "0.5 \u00b5s"),
        (3.25, "3.25 \u00b5s"),
        (9.996, "10 \u00b5s"),
        (31.6, "31.6 \u00b5s"),
        (298.8, "299 \u00b5s"),
        (999.4, "999 \u00b5s"),
        (999.7, "1 ms"),  # decided on the rounded figure: not "1,000 µs"
        (1_436.4, "1.44 ms"),
        (31_650.0, "31.6 ms"),
        (354_708.8, "355 ms"),
        (1_338_506.5, "1,339 ms"),
        (-5.0, "-5 \u00b5s"),
    ],
)
def test_durations_read_in_us_or_ms(us: float | None, text: str) -> None:
    assert display.duration_us(us) == text
    assert "e+" not in display.duration_us(us) and "e-" not in display.duration_us(us)


def test_duration_units_and_names() -> None:
    assert display.duration_ms(0.299) == "299 \u00b5s"
    assert display.duration_ns(4_413_500) == "4.41 ms"
    assert display.figure("latency_p99_us", 4413.5) == "4.41 ms"
    assert display.figure("tolerance_ns", 0) == "0 \u00b5s"
    assert display.pair("age_p50_us", 51_300.3) == "age_p50=51.3 ms"
    assert display.label("reads_checked") == "reads_checked"
    # Locust rounds each response time to whole ms: its 0 is "under half a millisecond".
    assert (display.locust_ms(0), display.locust_ms(1), display.locust_ms(None)) == ("<1 ms", "1 ms", "-")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.9211, "0.9211"),
        (0.0003142, "0.0003142"),
        (1.0, "1"),
        (4413.5, "4,414"),
        (1e7 + 0.5, "10,000,000"),
        (12345678901234.0, "12345678901234"),
        (True, "true"),
        (None, "-"),
        (7, "7"),
    ],
)
def test_numbers_never_in_scientific_notation(value: Any, text: str) -> None:
    assert display.number(value) == text


def test_times_are_offsets_and_utc_wall_times() -> None:
    t0 = 1_796_125_304_164_534_004  # 2026-12-01 11:41:44.164534004 UTC
    assert display.timestamp(t0 + 12_345_678_901, t0) == "+12.346 s (11:41:56.510 UTC)"
    assert display.timestamp(t0 - 5_000_000, t0) == "-0.005 s (11:41:44.159 UTC)"
    assert display.wall_time(t0) == "2026-12-01 11:41:44.164 UTC"
    assert display.is_time("t_invoke", 1500 * MS)  # t_* always, even in a planted history
    assert display.is_time("epoch_opened_ns", t0) and not display.is_time("tolerance_ns", 5 * MS)
    assert display.figure("t_complete", t0 + S, t0) == "+1.000 s (11:41:45.164 UTC)"
    nested = display.figure("missed_write", {"row": 9, "t_complete": t0, "age_us": 1500.0}, t0)
    assert nested == "row=9, t_complete=+0.000 s (11:41:44.164 UTC), age=1.5 ms"


def test_console_durations_carry_units() -> None:
    verdict = run_checks(normalise(frame(full_rows())), {"run_id": "r", "started_ns": 0})
    text = render(verdict)
    assert "e+0" not in text
    latency = text.split("LATENCY", 1)[1].split("\n\n", 1)[0]
    write = next(line for line in latency.splitlines() if line.startswith("write "))
    assert write.split()[-2:] == ["1,000", "ms"]  # the max: the 1 s write of cs:e:1's v2
